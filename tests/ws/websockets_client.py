"""Python's `websockets` library against evloop's `ws` echo: what a library user sees.

Run by tests/websocket.rs with target/venv/bin/python (scripts/test installs the library):
    python tests/ws/websockets_client.py ws://127.0.0.1:PORT/
Prints one line per check that passed; exits non-zero at the first that fails.
"""

import sys

from websockets.sync.client import connect


def main(url):
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


if __name__ == "__main__":
    main(sys.argv[1])
