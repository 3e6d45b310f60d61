"""The echo client of the classic course: send each message, print the echo.

Run:  python3 examples/clients/echo_client.py [HOST [PORT [MESSAGE...]]]
      (default: 127.0.0.1 7100 "hello") -> Echo: hello
"""
import socket
import sys

host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
port = int(sys.argv[2]) if len(sys.argv) > 2 else 7100
messages = sys.argv[3:] or ["hello"]

client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
client.connect((host, port))
for message in messages:
    client.sendall(message.encode())
    echo = client.recv(1024)
    print("Echo:", echo.decode())
client.close()
