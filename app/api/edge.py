"""The HTTP edge: what every request passes through before a route sees it, in one pure-ASGI layer.

In order: a request id (taken from ``X-Request-ID`` when printable and at most 64 characters,
else new) for logs, problems and the response header; the body size limit (413); the body
read once and kept, so a retry can replay it (an artifact upload's is not: it streams to its
route as it arrives, under the same limit, and is not retried); the input guard (NUL in path or query, a
non-JSON body, JSON that is not JSON: 415 / 422, see ``app.core.inputs``); the route, run
again once after a deadlock or serialization failure, a 503 with ``Retry-After`` when the
database is unavailable (``app.core.transient``); then the request's log line and metrics
sample, and, once the response is sent, the ``after_response`` hook (the audit sealer).

One layer, where there were five stacked middlewares: each wrapped ``receive`` and ``send``
again, and under load their awaits and closures were a measurable share of intake's CPU.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.direct import DirectAnswer, DirectRead
from app.core.inputs import BODY_METHODS, body_refusal, path_refusal, send_problem
from app.core.logging import request_id_var
from app.core.transient import REPLAYED_METHODS, answer_retrying, replaying

_http_log = logging.getLogger("unlearnd.http")


class AfterResponse(Protocol):
    """Work a request leaves for after its response (and its log line) is done."""

    def begin(self) -> Any: ...

    async def end(self, token: Any) -> None: ...


class BodyTooLarge(Exception):
    pass


class EdgeMiddleware:
    def __init__(
        self, app: ASGIApp, *, max_bytes: int, streamed: dict[str, int] | None = None,
        larger: dict[str, int] | None = None, on_response: Callable[[Scope, int, float], None] | None = None,
        after_response: AfterResponse | None = None, retries: int = 1,
        direct: Callable[[], dict[tuple[str, str], DirectAnswer | DirectRead]] | None = None,
    ) -> None:
        self.app = app
        # (method, path) -> the route's answer without the router (app/api/direct.py); read
        # from the app's routes once, at the first request, when every router is included.
        self._direct_routes = direct
        self.max_bytes = max_bytes
        # path -> limit for endpoints that stream their body to disk (artifact uploads): the
        # body passes through unbuffered and unguarded, counted against the limit as it goes.
        self.streamed = dict(streamed or {})
        # path -> a larger limit enforced here (bulk intake's many requests in one body).
        self.larger = dict(larger or {})
        self.on_response = on_response
        self.after_response = after_response
        self.retries = retries

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        pending = self.after_response.begin() if self.after_response is not None else None
        incoming = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
        request_id = incoming if 0 < len(incoming) <= 64 and incoming.isprintable() else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        marker = (b"x-request-id", request_id.encode())
        response = [500, False]  # status, started

        async def marked_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                response[0], response[1] = message["status"], True
                message["headers"] = [*message.get("headers", []), marker]
            await send(message)

        try:
            await self._serve(scope, receive, marked_send, lambda: response[1])
        finally:
            request_id_var.reset(token)
            elapsed = time.perf_counter() - started
            if _http_log.isEnabledFor(logging.INFO):
                _http_log.info("request", extra={"method": scope["method"], "path": scope["path"],
                                                 "status": response[0], "ms": round(elapsed * 1000, 2)})
            if self.on_response is not None:
                self.on_response(scope, response[0], elapsed)
            if self.after_response is not None:
                await self.after_response.end(pending)

    @functools.cached_property
    def _found(self) -> dict[tuple[str, str], DirectAnswer | DirectRead]:
        return self._direct_routes() if self._direct_routes is not None else {}

    @functools.cached_property
    def direct(self) -> dict[tuple[str, str], DirectAnswer]:
        return {key: answer for key, answer in self._found.items() if isinstance(answer, DirectAnswer)}

    @functools.cached_property
    def direct_reads(self) -> list[DirectRead]:
        return [answer for (method, _), answer in self._found.items()
                if method == "GET" and isinstance(answer, DirectRead)]

    def _direct_read(self, path: str) -> tuple[DirectRead | None, dict[str, Any] | None]:
        for read in self.direct_reads:
            if (params := read.match(path)) is not None:
                return read, params
        return None, None

    async def _serve(self, scope: Scope, receive: Receive, send: Send, started: Callable[[], bool]) -> None:
        path, method = scope["path"], scope["method"]
        streamed = path in self.streamed
        limit = self.streamed[path] if streamed else self.larger.get(path, self.max_bytes)
        if _declared_length(scope) > limit:
            await _too_large(scope, send, limit)
            return
        messages: list[Message] = []
        # A streamed body goes to its route as it arrives: buffered here, a multi-GB upload would
        # sit in memory whole, read before the route could refuse the caller. It cannot be
        # replayed, so it is not retried (a transient failure is a 503; the upload is idempotent).
        retries = 0 if streamed else self.retries
        if method in REPLAYED_METHODS and not streamed:
            try:
                messages = await _read_all(receive, limit)
            except BodyTooLarge:
                await _too_large(scope, send, limit)
                return
        else:
            receive = _counting(receive, limit)
        if not streamed:
            refusal = path_refusal(scope)
            if refusal is None and method in BODY_METHODS:
                if messages and messages[-1]["type"] == "http.disconnect":
                    return
                body = b"".join(m.get("body", b"") for m in messages)
                refusal = body_refusal(scope, body)
                messages = [{"type": "http.request", "body": body, "more_body": False}]
            if refusal is not None:
                await send_problem(scope, send, **refusal)
                return

        def attempt() -> Any:
            return self.app(scope, replaying(messages, receive), send)

        read, params = self._direct_read(path) if method == "GET" else (None, None)
        if read is not None:
            declared_read = attempt

            def attempt() -> Any:
                return read(scope, params, send, declared_read)

        direct = self.direct.get((method, path)) if messages else None
        if direct is not None:
            declared, body = attempt, b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")

            def attempt() -> Any:
                return direct(scope, body, send, declared)

        try:
            await answer_retrying(attempt, scope, send, started, retries)
        except BodyTooLarge:  # a body the route read itself (not buffered here) ran over
            if not started():
                await _too_large(scope, send, limit)


def _declared_length(scope: Scope) -> int:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0


async def _read_all(receive: Receive, limit: int | None) -> list[Message]:
    messages: list[Message] = []
    seen, more = 0, True
    while more:
        message = await receive()
        messages.append(message)
        more = message["type"] == "http.request" and message.get("more_body", False)
        if message["type"] == "http.request" and limit is not None:
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge
    return messages


def _counting(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge
        return message

    return counted


async def _too_large(scope: Scope, send: Send, limit: int) -> None:
    await send_problem(scope, send, status=413, slug="payload-too-large", title="Payload too large",
                       detail=f"request body exceeds {limit} bytes")
