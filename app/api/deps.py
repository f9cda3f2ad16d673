"""FastAPI dependencies: the request's unit of work and the caller's role.

They live here, not in core, so that ``app.core.database`` and ``app.core.auth`` (and so
every worker process) stay free of the web framework. Routers live in their rooms, so this
module sits just above core in the house plan (pyproject.toml's import-linter contract).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from app.core.auth import ApiClient, Role, authenticate
from app.core.database import session_scope
from app.core.errors import Forbidden, Unauthenticated


def get_session() -> Iterator[Session]:
    with session_scope() as session:
        yield session


# scope="function": commit runs when the endpoint returns and *before* the response is sent,
# so a failed commit is an error response, never a 2xx for a request that was not stored.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_current_client(
    request: Request,
    session: SessionDep,
    authorization: Annotated[str | None, Header()] = None,
) -> ApiClient:
    if not authorization:
        raise Unauthenticated("missing Authorization: Bearer <key> header")
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthenticated("Authorization header must be 'Bearer <key>'")
    client = authenticate(session, key.strip())
    request.state.client_id = client.id
    return client


CurrentClient = Annotated[ApiClient, Depends(get_current_client)]


def require_roles(*roles: Role):  # noqa: ANN201 - returns a FastAPI dependency
    allowed = frozenset(roles)

    # async: a check on what is already in memory, so it runs on the event loop instead of
    # taking a thread-pool hop (a wait for the GIL under load) on every request.
    async def dependency(client: CurrentClient) -> ApiClient:
        if client.role_enum not in allowed:
            raise Forbidden(
                f"role '{client.role}' may not do this; needs one of: "
                + ", ".join(sorted(r.value for r in allowed))
            )
        return client

    return dependency


AdminClient = Annotated[ApiClient, Depends(require_roles(Role.ADMIN))]
PortalClient = Annotated[ApiClient, Depends(require_roles(Role.PORTAL, Role.ADMIN))]
# Who may submit a deletion request: portals (subjects), ml keys (selector removals), admins (both);
# the requests service checks which kind each role may send.
RequestSubmitter = Annotated[ApiClient, Depends(require_roles(Role.PORTAL, Role.ML, Role.ADMIN))]
MLClient = Annotated[ApiClient, Depends(require_roles(Role.ML, Role.ADMIN))]
ReaderClient = Annotated[ApiClient, Depends(require_roles(Role.ML, Role.AUDITOR, Role.ADMIN))]
AuditorClient = Annotated[ApiClient, Depends(require_roles(Role.AUDITOR, Role.ADMIN))]
# Who may read deletion requests: portals and ml keys (their own: an ml key reads back the
# selector removals it submitted), auditors and admins (all).
RequestViewer = Annotated[ApiClient, Depends(require_roles(Role.PORTAL, Role.ML, Role.AUDITOR, Role.ADMIN))]
