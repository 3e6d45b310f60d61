"""The sum client of the classic socket-programming course: one blocking TCP socket,
sendall() the numbers with no newline, recv(1024) the answer.

Run:  python3 examples/clients/sum_client.py [HOST [PORT [NUMBERS]]]
      (default: 127.0.0.1 7102 "50,40", the server's raw sum listener) -> Sum: 90
"""
import socket
import sys

host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
port = int(sys.argv[2]) if len(sys.argv) > 2 else 7102
numbers = sys.argv[3] if len(sys.argv) > 3 else "50,40"

client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
client.connect((host, port))
client.sendall(numbers.encode())
answer = client.recv(1024)
client.close()
print("Sum:", answer.decode())
