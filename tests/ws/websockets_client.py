"""Python's `websockets` library against evloop's `ws` codec: what a library user sees.

Run by tests/websocket.rs with target/venv/bin/python (scripts/test installs the library):
    python tests/ws/websockets_client.py echo ws://127.0.0.1:PORT/   (an echo listener)
    python tests/ws/websockets_client.py room ws://127.0.0.1:PORT/   (a broadcast listener)
Prints one line per check that passed; exits non-zero at the first that fails.
"""

import sys

from websockets.sync.client import connect


def echo(url):
    with connect(url, max_size=4 * 1024 * 1024, compression=None) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        print("text ok", flush=True)

        ws.send(b"\x00\x01\xfe\xff")
        assert ws.recv(timeout=10) == b"\x00\x01\xfe\xff"
        print("binary ok", flush=True)

        # 1 MiB of UTF-8 (two bytes a character), sent as 16 fragments of 64 KiB.
        big = "\u00e9" * (512 * 1024)
        ws.send([big[i:i + 32 * 1024] for i in range(0, len(big), 32 * 1024)])
        assert ws.recv(timeout=30) == big
        print("1 MiB in fragments ok", flush=True)

        ws.close(code=1000, reason="done")
        received = ws.protocol.close_rcvd
        assert received is not None and received.code == 1000, received
        print("close 1000 ok", flush=True)

    # permessage-deflate, as browsers and this library offer it by default.
    with connect(url, max_size=4 * 1024 * 1024) as ws:
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        assert "permessage-deflate" in extensions, extensions
        text = "compress me, " * 5000
        ws.send(text)
        assert ws.recv(timeout=10) == text
        ws.send(b"\x00" * 100000)
        assert ws.recv(timeout=10) == b"\x00" * 100000
        print("deflate ok", flush=True)


def room(url):
    """A member that compresses and one that does not, in one room: each gets the other's
    lines (the room frames a line once for each)."""
    with connect(url, compression="deflate") as squeezed, connect(url, compression=None) as plain:
        assert "permessage-deflate" in squeezed.response.headers.get("Sec-WebSocket-Extensions", "")
        # Until both are in the room a line may reach nobody: repeat until it arrives.
        for attempt in range(50):
            plain.send("hello %d" % attempt)
            try:
                line = squeezed.recv(timeout=0.1)
                break
            except TimeoutError:
                continue
        assert line.endswith(": hello %d" % attempt), line
        squeezed.send("and back")
        line = plain.recv(timeout=10)
        while not line.endswith(": and back"):
            line = plain.recv(timeout=10)
        print("room of compressed and plain members ok", flush=True)


if __name__ == "__main__":
    {"echo": echo, "room": room}[sys.argv[1]](sys.argv[2])
