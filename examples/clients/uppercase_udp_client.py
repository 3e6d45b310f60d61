"""The uppercase client of the classic course, over UDP: no connection, one datagram out,
one back.

Run:  python3 examples/clients/uppercase_udp_client.py [HOST [PORT [SENTENCE]]]
      (default: 127.0.0.1 7101 "hello world") -> From server: HELLO WORLD
"""
import socket
import sys

host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
port = int(sys.argv[2]) if len(sys.argv) > 2 else 7101
sentence = sys.argv[3] if len(sys.argv) > 3 else "hello world"

client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
client.settimeout(5)  # UDP may drop: do not wait forever
client.sendto(sentence.encode(), (host, port))
modified, server = client.recvfrom(2048)
client.close()
print("From server:", modified.decode())
