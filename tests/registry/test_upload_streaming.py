"""An artifact upload is streamed to the store as it arrives, through the real HTTP server:
never held whole in the API's memory, and never read at all for a caller who may not upload.
Each test sends a body's first part and then waits: a server that buffered the body before
running the route would answer nothing until the rest came."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

MIB = 1024 * 1024


def _open(server: str, headers: dict[str, str], declared: int) -> socket.socket:
    address = urlsplit(server)
    sock = socket.create_connection((address.hostname, address.port), timeout=30)
    lines = ["POST /v1/artifacts HTTP/1.1", f"Host: {address.hostname}", f"Content-Length: {declared}",
             "Content-Type: application/octet-stream", *(f"{k}: {v}" for k, v in headers.items())]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock


def _status_within(sock: socket.socket, seconds: float) -> int | None:
    """The response's status if one starts within ``seconds``; None if the server stays silent."""
    sock.settimeout(seconds)
    try:
        head = sock.recv(65536)
    except TimeoutError:
        return None
    return int(head.split(b" ", 2)[1]) if head else None


def _response(sock: socket.socket) -> tuple[int, dict]:
    sock.settimeout(60)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split(b" ", 2)[1]), json.loads(body)


def test_an_upload_without_a_key_is_refused_before_its_body_is_read(server):
    sock = _open(server, {}, declared=512 * MIB)
    try:
        sock.sendall(b"x" * MIB)  # a five-hundredth of what it declares
        assert _status_within(sock, 10) == 401
    finally:
        sock.close()


def test_an_upload_declaring_more_than_the_limit_is_refused_at_once(server, make_client):
    ml = make_client("ml")
    # The limit (4 GiB by default) is stated by the header already: nothing is read or written.
    sock = _open(server, ml.headers, declared=5 * 1024**3)
    try:
        assert _status_within(sock, 10) == 413
    finally:
        sock.close()


def test_an_upload_reaches_the_store_while_it_is_still_arriving(server, make_client, env):
    ml = make_client("ml")
    incoming = Path(env["UNLEARND_DATA_DIR"]) / "artifacts" / ".incoming"
    chunk, chunks = b"\x07" * MIB, 24
    sock = _open(server, ml.headers, declared=len(chunk) * chunks)
    try:
        sock.sendall(chunk * (chunks // 2))
        staged = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and staged < (chunks // 2 - 1) * MIB:
            staged = sum(p.stat().st_size for p in incoming.glob("upload-*")) if incoming.exists() else 0
            time.sleep(0.05)
        # Half the body is on disk while the other half has not been sent.
        assert staged >= (chunks // 2 - 1) * MIB, f"{staged} bytes staged of {chunks // 2} MiB sent"
        sock.sendall(chunk * (chunks - chunks // 2))
        status, body = _response(sock)
    finally:
        sock.close()
    assert status == 201, body
    assert body["sha256"] == hashlib.sha256(chunk * chunks).hexdigest() and body["size_bytes"] == len(chunk) * chunks
