"""Transient database failures: retried once when that is safe, otherwise a 503 with Retry-After.

A deadlock or serialization failure means PostgreSQL rolled the whole transaction back, so
running the request again from the start is exactly what the client would do, only sooner.
A lost connection (database restart, ``pg_terminate_backend``) or an exhausted pool is not
retried here: a commit may have been in flight, and the client's Idempotency-Key makes its own
retry safe. Either way the answer is a problem document, never a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import exc as sa_exc
from starlette.types import Message, Receive, Scope, Send

from app.core.inputs import send_problem
from app.core.problems import RETRY_AFTER_SECONDS

log = logging.getLogger("unlearnd.http")
# serialization_failure, deadlock_detected
RETRYABLE_SQLSTATES = {"40001", "40P01"}


def _sqlstate(error: BaseException) -> str | None:
    return getattr(getattr(error, "orig", None), "sqlstate", None)


def is_retryable(error: BaseException) -> bool:
    return isinstance(error, sa_exc.DBAPIError) and _sqlstate(error) in RETRYABLE_SQLSTATES


def is_unavailable(error: BaseException) -> bool:
    """The database could not be reached or used just now; nothing about the request was wrong."""
    if isinstance(error, sa_exc.TimeoutError):  # connection pool exhausted
        return True
    if isinstance(error, sa_exc.DBAPIError):
        return error.connection_invalidated or isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError)
    return False


# Methods whose body is buffered, so that a retry can replay it.
REPLAYED_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def answer_retrying(
    attempt: Callable[[], Awaitable[None]], scope: Scope, send: Send, started: Callable[[], bool], retries: int = 1,
) -> None:
    """Run ``attempt`` (one run of the request, its body replayed); once more after a deadlock or
    serialization failure, a 503 problem when the database is unavailable. ``started``: whether
    a response began (nothing can be answered in its place then; the error propagates)."""
    tries = 0
    while True:
        try:
            await attempt()
            return
        except Exception as error:
            if started():
                raise
            if is_retryable(error) and tries < retries:
                tries += 1
                log.warning("retrying after a transient database error",
                            extra={"path": scope["path"], "sqlstate": _sqlstate(error)})
                continue
            if not (is_retryable(error) or is_unavailable(error)):
                raise
            log.warning("database unavailable", extra={"path": scope["path"], "error": type(error).__name__,
                                                        "sqlstate": _sqlstate(error)})
            await send_problem(
                scope, send, status=503, slug="service-unavailable", title="Service unavailable",
                detail="the database is unavailable or busy; retry the request (with the same Idempotency-Key)",
                headers=[(b"retry-after", str(RETRY_AFTER_SECONDS).encode())],
            )
            return


def replaying(messages: list[Message], receive: Receive) -> Receive:
    """The buffered messages again, then the connection's own (a disconnect)."""
    pending = list(messages)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay
