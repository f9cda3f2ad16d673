"""Requests uvicorn cannot parse get a 400 problem document, not text/plain (issue 21).

Raw bytes over a socket to a real server process: ``unlearnd serve`` (uvicorn's httptools
protocol, the one shipped) and uvicorn's h11 protocol named on uvicorn's own command line.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import _free_port
from tests.e2e.conftest import Service, clean_environment, http_ready, wait_until

MALFORMED = {
    "garbage request line": b"THIS IS NOT HTTP\r\n\r\n",
    "space in a header name": b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
    "header without a colon": b"GET /healthz HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
    "control byte in a header value": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "non-numeric content-length": b"POST /v1/deletion-requests HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    "broken chunk size": (b"POST /v1/deletion-requests HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                          b"Content-Type: application/json\r\n\r\nZZ\r\n{}\r\n0\r\n\r\n"),
}


def _exchange(port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(raw)
        chunks = []
        while True:  # the server closes the connection after a parse error
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def _parse(reply: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = reply.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


@pytest.fixture(params=["serve-httptools", "uvicorn-h11"])
def server_port(request, env, processes, tmp_path) -> int:
    settings = clean_environment(**env)
    port = _free_port()
    if request.param == "serve-httptools":
        service = processes.start("serve", ["serve", "--port", str(port)], settings)
    else:
        log_path = tmp_path / "uvicorn-h11.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--port", str(port),
                 "--http", "app.core.http_protocol:ProblemH11Protocol", "--log-level", "warning"],
                env=settings, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                cwd=Path(__file__).resolve().parents[2],
            )
        service = Service("uvicorn-h11", process, log_path)
        processes.started.append(service)
    wait_until(lambda: http_ready(f"http://127.0.0.1:{port}"), timeout=120, what="server ready", watch=(service,))
    return port


def test_malformed_http_is_a_400_problem_and_the_connection_closes(server_port):
    for case, raw in MALFORMED.items():
        reply = _exchange(server_port, raw)
        status, headers, body = _parse(reply)
        assert status == 400, (case, reply)
        assert headers["content-type"] == "application/problem+json", (case, reply)
        assert headers["connection"] == "close", (case, reply)
        assert int(headers["content-length"]) == len(body), (case, reply)
        problem = json.loads(body)
        assert problem["status"] == 400 and problem["type"].endswith("/malformed-request"), (case, problem)
        assert problem["title"] and problem["detail"], (case, problem)
    # A well-formed request on a fresh connection is served as before.
    status, headers, body = _parse(_exchange(server_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    assert status == 200, body
