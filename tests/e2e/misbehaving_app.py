"""An ASGI application that fails the ways uvicorn answers with its own text/plain 500:
an exception escaping before any response, a lost database connection escaping, a
cancellation, and returning without a response. ``tests/e2e/test_uvicorn_500.py`` serves it
with Unlearnd's HTTP protocols in a real uvicorn process. Each failure is chosen by path."""

from __future__ import annotations

import asyncio

from sqlalchemy import exc as sa_exc


class _ConnectionLost(Exception):
    sqlstate = "08006"


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path == "/readyz":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})
    elif path == "/raise":
        raise RuntimeError("escaped every handler")
    elif path == "/database-lost":
        raise sa_exc.OperationalError("SELECT 1", {}, _ConnectionLost("server closed the connection"))
    elif path == "/cancelled":
        raise asyncio.CancelledError()
    elif path == "/no-response":
        return
    elif path == "/raise-after-start":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
        raise RuntimeError("failed mid-response")
