"""The uppercase client of the classic course, over TCP: send a sentence, print what comes
back in capitals.

Run:  python3 examples/clients/uppercase_client.py [HOST [PORT [SENTENCE]]]
      (default: 127.0.0.1 7101 "hello world") -> From server: HELLO WORLD
"""
import socket
import sys

host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
port = int(sys.argv[2]) if len(sys.argv) > 2 else 7101
sentence = sys.argv[3] if len(sys.argv) > 3 else "hello world"

client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
client.connect((host, port))
client.sendall(sentence.encode())
modified = client.recv(1024)
client.close()
print("From server:", modified.decode())
