"""A chat client in the classic course's style: select() over the keyboard and the socket,
so lines typed go to the room and lines from the room are printed as they come. The server's
broadcast room (line framing: one message per line) is on port 7003.

Run:  python3 examples/clients/chat_client.py [HOST [PORT]]    (default: 127.0.0.1 7003)
      Type lines; every other member sees "<your address>: <line>". Ctrl-D leaves.
"""
import select
import socket
import sys

host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
port = int(sys.argv[2]) if len(sys.argv) > 2 else 7003

client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
client.connect((host, port))
print("Connected as %s:%d" % client.getsockname(), flush=True)
received = b""
while True:
    readable, _, _ = select.select([sys.stdin, client], [], [])
    if sys.stdin in readable:
        line = sys.stdin.readline()
        if not line:  # end of input: leave the room
            break
        client.sendall(line.encode())
    if client in readable:
        data = client.recv(1024)
        if not data:
            print("The server closed the connection", flush=True)
            break
        received += data
        # One message per line; a recv may hold several, or half of one.
        while b"\n" in received:
            message, received = received.split(b"\n", 1)
            print(message.decode(), flush=True)
client.close()
