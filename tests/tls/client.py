"""Python's `ssl` module against evloop's tls:// listeners: what TLS clients see.

Run by tests/tls.rs (plain python3 for ssl; target/venv's for websockets):
    client.py echo HOST PORT CAFILE           TLS 1.2 and 1.3, a line echoed each
    client.py drain HOST PORT CAFILE          echo, then (on a line on stdin) expect close_notify
    client.py file HOST PORT CAFILE NAME SIZE download NAME over TLS, check its size
    client.py wss HOST PORT CAFILE            websockets over wss://, echo
    client.py cert HOST PORT CAFILE           print the certificate's SHA-256
Prints one line per check that passed; exits non-zero at the first that fails.
"""

import hashlib
import socket
import ssl
import sys


def context(cafile, version=None):
    ctx = ssl.create_default_context(cafile=cafile)
    if version == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    elif version == "1.3":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def connect(host, port, cafile, version=None):
    raw = socket.create_connection((host, int(port)), timeout=10)
    return context(cafile, version).wrap_socket(raw, server_hostname="localhost")


def read_line(conn):
    line = b""
    while not line.endswith(b"\n"):
        chunk = conn.recv(1)
        if not chunk:
            raise AssertionError("closed while a line was expected: %r" % line)
        line += chunk
    return line


def echo(host, port, cafile):
    for version in ["1.2", "1.3"]:
        with connect(host, port, cafile, version) as conn:
            conn.sendall(b"hello over TLS\n")
            assert read_line(conn) == b"hello over TLS\n"
            expected = "TLSv1.2" if version == "1.2" else "TLSv1.3"
            assert conn.version() == expected, conn.version()
            print("TLS %s echo ok" % version, flush=True)


def drain(host, port, cafile):
    with connect(host, port, cafile) as conn:
        conn.sendall(b"before the drain\n")
        assert read_line(conn) == b"before the drain\n"
        print("ready", flush=True)
        sys.stdin.readline()
        # A clean end is close_notify then EOF: recv gives b"". Without close_notify,
        # Python raises SSLEOFError ("EOF occurred in violation of protocol").
        assert conn.recv(100) == b""
        print("close_notify ok", flush=True)


def download(host, port, cafile, name, size):
    with connect(host, port, cafile) as conn:
        conn.sendall(b"GET %s\n" % name.encode())
        header = read_line(conn)
        assert header == b"OK %s\n" % size.encode(), header
        left = int(size)
        digest = hashlib.sha256()
        while left:
            chunk = conn.recv(min(left, 65536))
            assert chunk, "the file ended early"
            digest.update(chunk)
            left -= len(chunk)
        print("file %s" % digest.hexdigest(), flush=True)


def wss(host, port, cafile):
    from websockets.sync.client import connect as ws_connect

    with ws_connect("wss://localhost:%s/" % port, ssl=context(cafile),
                    sock=socket.create_connection((host, int(port)))) as ws:
        ws.send("hello over wss")
        assert ws.recv(timeout=10) == "hello over wss"
        print("wss echo ok", flush=True)


def cert(host, port, cafile):
    with connect(host, port, cafile) as conn:
        print(hashlib.sha256(conn.getpeercert(binary_form=True)).hexdigest(), flush=True)


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    {"echo": echo, "drain": drain, "file": download, "wss": wss, "cert": cert}[mode](*args)
