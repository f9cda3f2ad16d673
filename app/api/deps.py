"""FastAPI dependencies: the request's unit of work and the caller's role.

They live here, not in core, so that ``app.core.database`` and ``app.core.auth`` (and so
every worker process) stay free of the web framework. Routers live in their rooms, so this
module sits just above core in the house plan (pyproject.toml's import-linter contract).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Annotated

from anyio import CancelScope, CapacityLimiter, to_thread
from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.core.auth import ApiClient, Role, authenticate, authenticate_cached
from app.core.database import get_sessionmaker
from app.core.errors import Forbidden, Unauthenticated


async def get_session() -> AsyncIterator[Session]:
    """``session_scope`` for a request. Async, so that opening the session (no I/O) costs no
    hand-off to a worker thread; the commit (or rollback) and close are one hand-off."""
    session = get_sessionmaker()()
    try:
        yield session
    except BaseException:
        await _ended(session, commit=False)
        raise
    await _ended(session, commit=True)


async def _ended(session: Session, *, commit: bool) -> None:
    if commit and not session.in_transaction():
        # The endpoint committed in its own worker thread (``commit_now``): closing holds no
        # connection and does no I/O, so it needs no hand-off.
        session.close()
        return
    # As FastAPI ends a sync dependency: shielded, so a cancelled request still returns its
    # connection, and outside the shared thread limit, so ending a session never waits behind
    # requests that themselves wait for a pooled connection.
    with CancelScope(shield=True):
        await to_thread.run_sync(functools.partial(end_session, session, commit=commit), limiter=CapacityLimiter(1))


def end_session(session: Session, *, commit: bool) -> None:
    """Commit (or roll back) and close a request's session."""
    try:
        if commit:
            session.commit()
        else:
            session.rollback()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def commit_now(session: Session) -> None:
    """Commit at the end of a sync endpoint, in the worker thread it already runs in, sparing
    the hand-off to another thread that the dependency's commit costs (a hot path's). Still
    before the response, so a failed commit is an error response."""
    session.commit()


# scope="function": commit runs when the endpoint returns and *before* the response is sent,
# so a failed commit is an error response, never a 2xx for a request that was not stored.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


# The caller's client and role checks are async: a key whose client is cached is checked on the
# event loop, where a sync dependency would cost a hand-off to a worker thread (and back) on
# every call; only a cache miss reads the database, in a worker thread.
async def get_current_client(
    request: Request,
    session: SessionDep,
    authorization: Annotated[str | None, Header()] = None,
) -> ApiClient:
    if not authorization:
        raise Unauthenticated("missing Authorization: Bearer <key> header")
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthenticated("Authorization header must be 'Bearer <key>'")
    client = authenticate_cached(key.strip()) or await run_in_threadpool(authenticate, session, key.strip())
    request.state.client_id = client.id
    return client


CurrentClient = Annotated[ApiClient, Depends(get_current_client)]


def require_roles(*roles: Role):  # noqa: ANN201 - returns a FastAPI dependency
    allowed = frozenset(roles)

    # async: a check on what is already in memory, so it runs on the event loop instead of
    # taking a thread-pool hop (a wait for the GIL under load) on every request.
    async def dependency(client: CurrentClient) -> ApiClient:
        return check_role(client, allowed)

    return dependency


def check_role(client: ApiClient, allowed: frozenset[Role]) -> ApiClient:
    if client.role_enum not in allowed:
        raise Forbidden(
            f"role '{client.role}' may not do this; needs one of: " + ", ".join(sorted(r.value for r in allowed))
        )
    return client


AdminClient = Annotated[ApiClient, Depends(require_roles(Role.ADMIN))]
PORTAL_ROLES = (Role.PORTAL, Role.ADMIN)
PortalClient = Annotated[ApiClient, Depends(require_roles(*PORTAL_ROLES))]
# Who may submit a deletion request: portals (subjects), ml keys (selector removals), admins (both);
# the requests service checks which kind each role may send.
SUBMITTER_ROLES = (Role.PORTAL, Role.ML, Role.ADMIN)
RequestSubmitter = Annotated[ApiClient, Depends(require_roles(*SUBMITTER_ROLES))]
MLClient = Annotated[ApiClient, Depends(require_roles(Role.ML, Role.ADMIN))]
READER_ROLES = (Role.ML, Role.AUDITOR, Role.ADMIN)
ReaderClient = Annotated[ApiClient, Depends(require_roles(*READER_ROLES))]
AuditorClient = Annotated[ApiClient, Depends(require_roles(Role.AUDITOR, Role.ADMIN))]
# Who may read deletion requests: portals and ml keys (their own: an ml key reads back the
# selector removals it submitted), auditors and admins (all).
RequestViewer = Annotated[ApiClient, Depends(require_roles(Role.PORTAL, Role.ML, Role.AUDITOR, Role.ADMIN))]
