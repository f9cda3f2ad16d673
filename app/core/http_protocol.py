"""uvicorn's HTTP protocols, answering a request it cannot parse with an RFC 9457 problem.

A malformed request line, an invalid header or a broken chunked body never reaches the
ASGI app: uvicorn answers ``400`` itself, with a ``text/plain`` body. These subclasses of
its two HTTP/1.1 implementations send the same 400 as ``application/problem+json``, shaped
like every other problem the API sends, and still close the connection (the stream cannot
be trusted after a parse error). ``unlearnd serve`` and ``unlearnd run`` pass
``ProblemHTTPProtocol`` to uvicorn; with plain uvicorn, ``--http app.core.http_protocol:ProblemHTTPProtocol``.

uvicorn also answers ``500`` itself, in ``text/plain``, when the application raises before
starting a response (an exception that escapes every handler, or a ``BaseException``) or
returns without starting one. Both protocols wrap the application they are given in
``ProblemGuard``, the outermost layer, which sends that answer as a problem document first:
``503`` with ``Retry-After`` when the database was unreachable, else ``500``, with
``Connection: close`` either way. uvicorn's own path is then never taken.

Only the API process imports this module (it imports uvicorn).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import h11
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from app.core.inputs import send_problem
from app.core.problems import PROBLEM_BASE, PROBLEM_MEDIA_TYPE, RETRY_AFTER_SECONDS
from app.core.transient import is_unavailable

log = logging.getLogger("unlearnd.http")

MALFORMED_DETAIL = "the request is not valid HTTP/1.1 (request line, header or body framing); it was not processed"


def malformed_request_body() -> bytes:
    """The problem document for a request uvicorn could not parse (no path is known, so no instance)."""
    return json.dumps({
        "type": PROBLEM_BASE + "malformed-request", "title": "Malformed HTTP request", "status": 400,
        "detail": MALFORMED_DETAIL,
    }).encode()


class ProblemGuard:
    """The outermost ASGI layer: no request ends in uvicorn's text/plain 500.

    An exception that escapes the application before a response started is answered with a
    problem document (503 + ``Retry-After`` if the database was unavailable, else 500) and
    logged; a ``BaseException`` (cancellation, interpreter exit) is answered the same way and
    then re-raised. An application that returns without starting a response gets the 500
    problem. Once a response has started, nothing can be sent in its place: uvicorn closes
    the connection, as it would have."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as error:
            if started:
                raise
            log.exception("an error escaped the application", extra={"path": scope.get("path")})
            await _send_failure(scope, send, error)
            return
        except BaseException as error:
            if not started:
                await _send_failure(scope, send, error)
            raise
        if not started:
            log.error("the application returned without a response", extra={"path": scope.get("path")})
            await _send_failure(scope, send, None)


async def _send_failure(scope: Scope, send: Send, error: BaseException | None) -> None:
    close = (b"connection", b"close")
    if error is not None and is_unavailable(error):
        await send_problem(
            scope, send, status=503, slug="service-unavailable", title="Service unavailable",
            detail="the database is unavailable or busy; retry the request (with the same Idempotency-Key)",
            headers=[(b"retry-after", str(RETRY_AFTER_SECONDS).encode()), close],
        )
        return
    await send_problem(
        scope, send, status=500, slug="internal-error", title="Internal error",
        detail="An unexpected error occurred; it has been logged with the request id.", headers=[close],
    )


class ProblemH11Protocol(H11Protocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app = ProblemGuard(self.app)

    def send_400_response(self, msg: str) -> None:
        body = malformed_request_body()
        headers = [
            (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body),
                      h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()


ProblemHTTPProtocol: type[asyncio.Protocol]
try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools comes with uvicorn[standard]
    ProblemHTTPProtocol = ProblemH11Protocol
else:

    class ProblemHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.app = ProblemGuard(self.app)

        def send_400_response(self, msg: str) -> None:
            body = malformed_request_body()
            head = [b"HTTP/1.1 400 Bad Request\r\n"]
            for name, value in self.server_state.default_headers:
                head.extend([name, b": ", value, b"\r\n"])
            head.extend([
                b"content-type: ", PROBLEM_MEDIA_TYPE.encode(), b"\r\n",
                b"content-length: ", str(len(body)).encode(), b"\r\n",
                b"connection: close\r\n\r\n",
            ])
            self.transport.write(b"".join(head) + body)
            self.transport.close()

    ProblemHTTPProtocol = ProblemHttpToolsProtocol
