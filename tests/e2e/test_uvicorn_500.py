"""uvicorn's own text/plain 500 is never sent: a failure that escapes the application is a
problem document (issue 21).

A real uvicorn process per HTTP implementation (httptools, as ``unlearnd serve`` ships it,
and h11), serving an application that fails outside any handler of its own
(``tests/e2e/misbehaving_app.py``), with Unlearnd's protocol classes named on uvicorn's
command line as ``unlearnd serve`` passes them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import _free_port
from tests.e2e.conftest import Service, clean_environment, http_ready, wait_until
from tests.e2e.test_malformed_http import _exchange, _parse

pytestmark = pytest.mark.slow


@pytest.fixture(params=["ProblemHTTPProtocol", "ProblemH11Protocol"])
def port(request, processes, tmp_path) -> int:
    port = _free_port()
    log_path = tmp_path / f"{request.param}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "tests.e2e.misbehaving_app:app", "--port", str(port),
             "--http", f"app.core.http_protocol:{request.param}", "--log-level", "warning"],
            env=clean_environment(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            cwd=Path(__file__).resolve().parents[2],
        )
    service = Service(request.param, process, log_path)
    processes.started.append(service)
    wait_until(lambda: http_ready(f"http://127.0.0.1:{port}"), timeout=120, what="server ready", watch=(service,))
    return port


def _get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    return _parse(_exchange(port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()))


@pytest.mark.parametrize(("path", "status", "slug"), [
    ("/raise", 500, "internal-error"),
    ("/cancelled", 500, "internal-error"),
    ("/no-response", 500, "internal-error"),
    ("/database-lost", 503, "service-unavailable"),
])
def test_a_failure_escaping_the_application_is_a_problem_not_text_plain(port, path, status, slug):
    code, headers, body = _get(port, path)  # the server closes the connection after it
    assert code == status, body
    assert headers["content-type"] == "application/problem+json", (headers, body)
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    problem = json.loads(body)
    assert problem["status"] == status
    assert problem["type"].endswith("/" + slug)
    assert problem["instance"] == path
    if status == 503:
        assert int(headers["retry-after"]) >= 1
    # the server is still serving
    assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=30).status_code == 200


def test_a_failure_after_the_response_started_closes_the_connection(port):
    """Nothing can replace a response already under way: the connection closes short of the
    declared length, so the client sees a truncated response, never a second status."""
    reply = _exchange(port, b"GET /raise-after-start HTTP/1.1\r\nHost: x\r\n\r\n")
    code, headers, body = _parse(reply)
    assert code == 200
    assert len(body) < int(headers["content-length"])
    assert reply.count(b"HTTP/1.1") == 1
