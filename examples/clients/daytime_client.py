"""The daytime client (RFC 867): connect, read until the server closes, print the line.
With --udp, send an empty datagram and print the one that comes back.

Run:  python3 examples/clients/daytime_client.py [--udp] [HOST [PORT]]
      (default: 127.0.0.1 7013) -> Daytime: 2026-11-21T23:59:59Z
"""
import socket
import sys

args = [arg for arg in sys.argv[1:] if arg != "--udp"]
udp = "--udp" in sys.argv
host = args[0] if len(args) > 0 else "127.0.0.1"
port = int(args[1]) if len(args) > 1 else 7013

if udp:
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(5)
    client.sendto(b"", (host, port))
    data, server = client.recvfrom(1024)
else:
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.connect((host, port))
    data = b""
    while True:
        chunk = client.recv(1024)
        if not chunk:  # the server closed: that was all
            break
        data += chunk
client.close()
print("Daytime:", data.decode().strip())
