"""Webhook fixtures: a real HTTP receiver that verifies every signature with the
``standardwebhooks`` library, and settings with a shrunk retry schedule."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.conftest import reset_caches

# Retries at 0.3 s and a little more: a test sees several without waiting minutes.
RETRY_SCHEDULE = [0.3, 0.5, 0.5, 1, 1, 1, 1, 1, 1]


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float
    verified_by: list[int]  # indexes of the secrets the signature verified with

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


class _Server(ThreadingHTTPServer):
    # A listen backlog like a real server's: http.server's default of 5 drops connections
    # under concurrent deliveries, and each dropped SYN costs the sender a 1 s retransmit.
    request_queue_size = 128
    daemon_threads = True


Behaviour = Callable[["Received"], tuple[int, dict[str, str]]]


@dataclass
class Receiver:
    """A threaded http.server on a free loopback port. ``behaviour`` picks each answer."""

    port: int = 0
    secrets: list[str] = field(default_factory=list)
    behaviour: Behaviour = lambda _: (200, {})  # noqa: E731
    received: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _arrived: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self._arrived = threading.Condition(self._lock)
        if not self.port:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                self.port = sock.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def _verify(self, body: bytes, headers: dict[str, str]) -> list[int]:
        good = []
        for index, secret in enumerate(self.secrets):
            try:
                Webhook(secret).verify(body, headers)
                good.append(index)
            except WebhookVerificationError:
                pass
        return good

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                item = Received(headers, body, time.monotonic(), receiver._verify(body, headers))
                with receiver._arrived:
                    receiver.received.append(item)
                    receiver._arrived.notify_all()
                status, extra = receiver.behaviour(item)
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_: object) -> None:
                pass

        self._server = _Server(("127.0.0.1", self.port), Handler)
        # A short poll interval: shutdown() waits for the serving loop to look (0.5 s by default).
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 60.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._arrived:
            while not predicate(list(self.received)):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"receiver: condition not met in {timeout}s; got {len(self.received)}")
                self._arrived.wait(min(left, 0.5))
            return list(self.received)

    def unique(self) -> list[Received]:
        """One per webhook-id (first arrival): what a de-duplicating receiver keeps."""
        seen: dict[str, Received] = {}
        for item in list(self.received):
            seen.setdefault(item.webhook_id, item)
        return list(seen.values())


@pytest.fixture
def webhook_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The test environment with loopback allow-listed and retries in fractions of a second."""
    values = {
        "UNLEARND_WEBHOOK_ALLOWED_HOSTS": json.dumps(["127.0.0.1"]),
        "UNLEARND_WEBHOOK_RETRY_SCHEDULE_SECONDS": json.dumps(RETRY_SCHEDULE),
        "UNLEARND_WEBHOOK_TIMEOUT_SECONDS": "3",
        "UNLEARND_WEBHOOK_SWEEP_INTERVAL_SECONDS": "0.3",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    env.update(values)
    reset_caches()
    return env


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver().start()
    yield started
    started.stop()


@pytest.fixture
def make_receiver() -> Iterator[Callable[..., Receiver]]:
    receivers: list[Receiver] = []

    def factory(**kwargs: Any) -> Receiver:
        item = Receiver(**kwargs).start()
        receivers.append(item)
        return item

    yield factory
    for item in receivers:
        item.stop()


def wait_until(predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def submission(email: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "subject": [{"type": "email", "value": email}],
        "legal_basis": "gdpr_art17",
        "jurisdiction": "EU",
        "identity_verification": {"method": "email_link", "verified_at": "2025-01-01T00:00:00+00:00"},
    }
    body.update(overrides)
    return body
