"""Routes whose common case skips FastAPI's request machinery (intake's hot path).

FastAPI solves an endpoint's dependencies, parses its JSON body and validates it afresh on
every call; for a one-statement endpoint under load that was a quarter of the process's CPU
(single intake: the session and bearer-key dependencies, header and body parameters, their
cache keys). A ``direct_route`` answers the common case itself: a cached bearer key of a role
the route allows, a JSON body that validates (``model_validate_json``: one parse, in Rust)
and headers within their declared lengths. Its ``serve`` runs with a session in one
worker-thread hop, as a sync endpoint would. Anything else (no key, an uncached, unknown or
revoked key, a wrong role, a body that does not validate, an overlong header) is handed to
the route's FastAPI handler as declared, so every refusal is the one it always was, and the
OpenAPI schema is the declared endpoint's.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.api.deps import end_session
from app.core.auth import ApiClient, Role, authenticate_cached
from app.core.database import get_sessionmaker
from app.core.errors import Unauthenticated
from app.core.inputs import is_json_media_type

# serve(session, client, body, request, headers) -> the response; headers: each declared one's value or None.
Serve = Callable[[Session, ApiClient, Any, Request, dict[str, str | None]], Response]


def direct_route(
    *, body: type[BaseModel], roles: tuple[Role, ...], serve: Serve, headers: dict[str, int] | None = None,
) -> type[APIRoute]:
    """An ``APIRoute`` class (``route_class_override``) answering with ``serve`` when it can.
    ``headers``: header name (lower case) -> the max_length its declared parameter enforces."""
    allowed = frozenset(roles)
    limits = dict(headers or {})

    class DirectRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            declared = super().get_route_handler()

            async def handler(request: Request) -> Response:
                client = _cached_client(request, allowed)
                model = await _body(request, body) if client is not None else None
                values = {name: request.headers.get(name) for name in limits}
                if model is None or any(v is not None and len(v) > limits[n] for n, v in values.items()):
                    return await declared(request)
                assert client is not None
                request.state.client_id = client.id
                return await run_in_threadpool(_in_session, serve, client, model, request, values)

            return handler

    return DirectRoute


def _cached_client(request: Request, allowed: frozenset[Role]) -> ApiClient | None:
    """The caller, when its bearer key checks out against a cached client of an allowed role."""
    scheme, _, key = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    try:
        client = authenticate_cached(key.strip())
    except Unauthenticated:
        return None
    return client if client is not None and client.role_enum in allowed else None


async def _body(request: Request, model: type[BaseModel]) -> BaseModel | None:
    if not is_json_media_type(request.headers.get("content-type") or ""):
        return None
    raw = await request.body()
    if not raw:
        return None
    try:
        return model.model_validate_json(raw)
    except ValidationError:
        return None


def _in_session(serve: Serve, client: ApiClient, model: BaseModel, request: Request,
                headers: dict[str, str | None]) -> Response:
    session = get_sessionmaker()()
    try:
        response = serve(session, client, model, request, headers)
    except BaseException:
        end_session(session, commit=False)
        raise
    end_session(session, commit=True)
    return response
