"""The typed client and `unlearnd --url` against a real API process (uvicorn on PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from app.client import ApiError, AsyncClient, Client, DeletionRequestDetail, DeletionRequestOut, RetryPolicy
from tests.conftest import issue_certificate_now

# Each test starts an API process (seconds).
pytestmark = pytest.mark.slow

FAST_RETRY = RetryPolicy(attempts=4, backoff_seconds=0.05, max_wait_seconds=0.5)


def body(email: str, **extra) -> dict:
    return {"subject": [{"type": "email", "value": email}], "legal_basis": "gdpr_art17", "jurisdiction": "EU", **extra}


def test_sync_client_submits_lists_shows_and_downloads_a_certificate(server, make_client):
    from app.certificates.verify import verify_certificate_file
    from app.core.signing import public_key_from_jwk

    portal = make_client("portal")
    with Client(server, portal.api_key, retry=FAST_RETRY) as unlearnd:
        created = unlearnd.submit_request(body("ann@example.org", external_ref="c-1"))
        assert isinstance(created, DeletionRequestOut)
        assert (created.status, created.outcome) == ("completed", "no_data_found")  # nobody holds ann's data
        detail = unlearnd.get_request(created.id)
        assert isinstance(detail, DeletionRequestDetail)
        assert [step.to_status for step in detail.history][-1] == "completed"
        page = unlearnd.list_requests(external_ref="c-1")
        assert [r.id for r in page.items] == [created.id]
        assert created.id in {r.id for r in unlearnd.iter_requests()}

        with pytest.raises(ApiError) as refused:
            unlearnd.get_request("00000000-0000-0000-0000-000000000000")
        assert refused.value.status == 404 and refused.value.problem["status"] == 404
        # The schema is the API's own: a field it does not know is refused before anything is sent.
        with pytest.raises(ValidationError, match="surprise"):
            unlearnd.submit_request({"subject": [{"type": "email", "value": "x@example.org"}],
                                     "legal_basis": "gdpr_art17", "surprise": 1})
        with pytest.raises(ApiError) as invalid:  # the server's own checks answer as problems
            unlearnd.submit_request({"subject": [], "records": [], "legal_basis": "gdpr_art17"})
        assert invalid.value.status == 422 and invalid.value.problem["status"] == 422

        issue_certificate_now(created.id)  # what the worker's outbox task does on completion
        signed = unlearnd.certificate(created.id)
        keys = {jwk["kid"]: public_key_from_jwk(jwk)
                for jwk in httpx.get(f"{server}/.well-known/unlearnd-keys").json()["keys"]}
        assert verify_certificate_file(signed, keys).request_id == created.id
        assert unlearnd.certificate(created.id, jws=True).count(b".") == 2  # compact JWS


def test_async_client_does_the_same(server, make_client):
    portal = make_client("portal")

    async def scenario() -> tuple[str, str, list[str]]:
        async with AsyncClient(server, portal.api_key, retry=FAST_RETRY) as unlearnd:
            created = await unlearnd.submit_request(body("bob@example.org"))
            detail = await unlearnd.get_request(created.id)
            seen = [r.id async for r in unlearnd.iter_requests()]
            return created.id, detail.id, seen

    created, shown, seen = asyncio.run(scenario())
    assert created == shown and seen == [created]


class _LosesTheFirstAnswer(ThreadingHTTPServer):
    """In front of the API: the first POST reaches the server, but its answer is lost (the
    client sees a 503), as when a proxy fails after the request was committed."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        self.keys: list[str | None] = []
        front = self

        class Handler(BaseHTTPRequestHandler):
            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                content = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = httpx.request(self.command, upstream + self.path, content=content, headers=headers,
                                       timeout=30)
                if self.command == "POST":
                    front.keys.append(self.headers.get("Idempotency-Key"))
                    if len(front.keys) == 1:
                        self.send_response(503)
                        self.send_header("Retry-After", "0")
                        self.send_header("Content-Type", "application/problem+json")
                        problem = json.dumps({"title": "Service Unavailable", "status": 503}).encode()
                        self.send_header("Content-Length", str(len(problem)))
                        self.end_headers()
                        self.wfile.write(problem)
                        return
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "content-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = _relay  # noqa: N815

            def log_message(self, *_: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def test_a_retried_submission_keeps_its_idempotency_key_and_makes_one_request(server, make_client):
    portal = make_client("portal")
    front = _LosesTheFirstAnswer(server)
    try:
        with Client(front.url, portal.api_key, retry=FAST_RETRY) as unlearnd:
            created = unlearnd.submit_request(body("carol@example.org", external_ref="retry-1"))
    finally:
        front.shutdown()
        front.server_close()
    assert len(front.keys) == 2 and front.keys[0] and front.keys[0] == front.keys[1]
    with Client(server, portal.api_key) as unlearnd:
        assert [r.id for r in unlearnd.list_requests(external_ref="retry-1").items] == [created.id]


def test_connection_errors_are_retried_then_reported():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here
    with Client(f"http://127.0.0.1:{port}", "ulk_x_y", retry=FAST_RETRY) as unlearnd, pytest.raises(ApiError) as gone:
        unlearnd.list_requests()
    assert "cannot reach the server" in str(gone.value)


def test_cli_talks_to_a_remote_server(server, make_client, tmp_path, monkeypatch):
    from app.cli import main

    portal = make_client("portal")
    # No data dir here: the remote commands must not need one.
    monkeypatch.chdir(tmp_path)
    runner = CliRunner(env={"UNLEARND_URL": server, "UNLEARND_API_KEY": portal.api_key})
    submitted = runner.invoke(main, ["requests", "submit", "--email", "dan@example.org", "--legal-basis", "ccpa_1798_105",
                                     "--external-ref", "cli-1"])
    assert submitted.exit_code == 0, submitted.output
    request_id = json.loads(submitted.output)["id"]
    listed = runner.invoke(main, ["requests", "list"])
    assert listed.exit_code == 0, listed.output
    header, row = listed.output.splitlines()[:2]
    assert header.split()[:3] == ["ID", "STATUS", "DUE"] and "GUARANTEE" in header
    assert row.startswith(request_id) and "no_data_found" in row and "cli-1" in row
    shown = runner.invoke(main, ["--url", server, "requests", "show", request_id])
    assert shown.exit_code == 0 and json.loads(shown.output)["history"], shown.output

    issue_certificate_now(request_id)
    downloaded = runner.invoke(main, ["certificate", "download", request_id, "-o", str(tmp_path / "c.json")])
    assert downloaded.exit_code == 0, downloaded.output
    verified = runner.invoke(main, ["certificate", "verify", str(tmp_path / "c.json"),
                                    "--keys-url", f"{server}/.well-known/unlearnd-keys"])
    assert verified.exit_code == 0 and verified.output.startswith("valid:"), verified.output

    wrong_key = CliRunner(env={"UNLEARND_URL": server, "UNLEARND_API_KEY": "ulk_nope_nope"})
    denied = wrong_key.invoke(main, ["requests", "list"])
    assert denied.exit_code == 1 and "401" in denied.output and "Traceback" not in denied.output
