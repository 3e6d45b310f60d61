"""A file download client for the server's `file` listener (--listen file=ADDR --files DIR):
send "LIST" or "GET <name>", read the "OK <size>" line, then exactly size bytes, however many
recv() calls that takes. TCP is a byte stream: one recv is never "the file".

Run:  python3 examples/clients/file_client.py HOST PORT             (list the files)
      python3 examples/clients/file_client.py HOST PORT NAME [OUT]  (download NAME to OUT)
"""
import socket
import sys

USAGE = """usage: python3 examples/clients/file_client.py HOST PORT [NAME [OUT]]
  HOST PORT             list the files
  HOST PORT NAME [OUT]  download NAME to OUT (default: NAME)
against a server with a file listener, e.g.
  evloop-server --listen file=127.0.0.1:7200 --files DIR"""

if not 3 <= len(sys.argv) <= 5 or not sys.argv[2].isdigit():
    print(USAGE, file=sys.stderr)
    sys.exit(2)
host, port = sys.argv[1], int(sys.argv[2])
name = sys.argv[3] if len(sys.argv) > 3 else None
out = sys.argv[4] if len(sys.argv) > 4 else name

client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
try:
    client.connect((host, port))
except OSError as error:
    print("Cannot connect to %s:%d: %s" % (host, port, error.strerror or error), file=sys.stderr)
    sys.exit(1)
reader = client.makefile("rb")
client.sendall(b"LIST\n" if name is None else ("GET %s\n" % name).encode())
status = reader.readline().decode().strip()
if not status.startswith("OK "):
    print("Server said:", status)
    sys.exit(1)
count = int(status[3:])
if name is None:
    for _ in range(count):
        print(reader.readline().decode().strip())
else:
    received = 0
    with open(out, "wb") as target:
        while received < count:
            chunk = reader.read(min(65536, count - received))
            if not chunk:
                print("The server closed after %d of %d bytes" % (received, count))
                sys.exit(1)
            target.write(chunk)
            received += len(chunk)
    print("Saved %s: %d bytes" % (out, received))
client.close()
