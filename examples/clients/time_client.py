"""The time client (RFC 868), a lesson in byte order: the server sends the seconds since
1900-01-01 as a 32-bit unsigned integer in network byte order ("!I" to struct). Subtract
the 70 years to 1970 and it is a Unix time.

Run:  python3 examples/clients/time_client.py [--udp] [HOST [PORT]]
      (default: 127.0.0.1 7037) -> Time: 3972931199 (2025-11-24T12:39:59Z)
"""
import socket
import struct
import sys
import time

SECONDS_1900_TO_1970 = 2208988800

args = [arg for arg in sys.argv[1:] if arg != "--udp"]
udp = "--udp" in sys.argv
host = args[0] if len(args) > 0 else "127.0.0.1"
port = int(args[1]) if len(args) > 1 else 7037

if udp:
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(5)
    client.sendto(b"", (host, port))
    data, server = client.recvfrom(1024)
else:
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.connect((host, port))
    data = b""
    while len(data) < 4:
        chunk = client.recv(4 - len(data))
        if not chunk:
            break
        data += chunk
client.close()
(since_1900,) = struct.unpack("!I", data)
unix = since_1900 - SECONDS_1900_TO_1970
print("Time: %d (%s)" % (since_1900, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))))
