"""One signed POST to one endpoint, dialled at the address the SSRF guard approved.

The standard library's client is used on purpose: it lets the socket connect to a fixed
IP while the Host header and the TLS server name (and certificate check) use the URL's
host, it never follows redirects (a 3xx is a failure), and it reads no more of the
response than the 2 KiB the delivery log keeps.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from app.core.database import utcnow
from app.webhooks.ssrf import Destination

RESPONSE_EXCERPT_BYTES = 2048
USER_AGENT = "Unlearnd-Webhooks/1"


@dataclass(frozen=True)
class Response:
    status_code: int | None
    latency_ms: float
    excerpt: str | None
    error: str | None
    retry_after_seconds: float | None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, destination: Destination, timeout: float) -> None:
        super().__init__(destination.host, destination.port, timeout=timeout)
        self._address = destination.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, destination: Destination, timeout: float) -> None:
        super().__init__(destination.host, destination.port, timeout=timeout, context=ssl.create_default_context())
        self._address = destination.address

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        # Server name and certificate are checked against the URL's host, not the address.
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, (parsedate_to_datetime(value) - utcnow()).total_seconds())
    except (TypeError, ValueError):
        return None


def post(destination: Destination, body: bytes, headers: dict[str, str], timeout: float) -> Response:
    connection_type = _PinnedHTTPSConnection if destination.scheme == "https" else _PinnedHTTPConnection
    connection = connection_type(destination, timeout)
    started = time.monotonic()
    try:
        connection.request(
            "POST", destination.path, body=body,
            headers={**headers, "Content-Type": "application/json", "User-Agent": USER_AGENT},
        )
        response = connection.getresponse()
        excerpt = response.read(RESPONSE_EXCERPT_BYTES)
        return Response(
            status_code=response.status,
            latency_ms=(time.monotonic() - started) * 1000,
            excerpt=excerpt.decode("utf-8", errors="replace"),
            error=None,
            retry_after_seconds=_retry_after(response.getheader("Retry-After")),
        )
    except (OSError, http.client.HTTPException) as exc:
        return Response(None, (time.monotonic() - started) * 1000, None, f"{type(exc).__name__}: {exc}"[:500], None)
    finally:
        connection.close()
