"""Routes whose common case skips FastAPI's request machinery (intake's hot path).

FastAPI solves an endpoint's dependencies, parses its JSON body and validates it afresh on
every call; for a one-statement endpoint under load that was a quarter of the process's CPU
(single intake: the session and bearer-key dependencies, header and body parameters, their
cache keys). A ``direct_route`` answers the common case itself: a cached bearer key of a role
the route allows, a JSON body that validates (``model_validate_json``: one parse, in Rust)
and headers within their declared lengths. Its ``serve`` runs with a session in one
worker-thread hop, as a sync endpoint would; a key whose client is not cached (every few
seconds, ``auth_cache_seconds``) is looked up and its role checked in that same hop, raising
what the declared dependencies raise (401, 403). Anything else (no bearer key, a secret that
does not match a cached client, a wrong role, a body that does not validate, an overlong
header) is handed to the route's FastAPI handler as declared, so every refusal is the one it
always was, and the OpenAPI schema is the declared endpoint's.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.api.deps import check_role, end_session
from app.core.auth import ApiClient, Role, authenticate, authenticate_cached
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
                caller = _caller(request, allowed)
                model = await _body(request, body) if caller is not None else None
                values = {name: request.headers.get(name) for name in limits}
                if model is None or any(v is not None and len(v) > limits[n] for n, v in values.items()):
                    return await declared(request)
                assert caller is not None
                return await run_in_threadpool(_in_session, serve, caller, allowed, model, request, values)

            return handler

    return DirectRoute


def _caller(request: Request, allowed: frozenset[Role]) -> ApiClient | str | None:
    """The caller's cached client when its key checks out and its role is allowed; its bearer key
    when its client is not cached (looked up with the session); None for the declared path."""
    scheme, _, key = (request.headers.get("authorization") or "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        return None
    try:
        client = authenticate_cached(key)
    except Unauthenticated:
        return None
    if client is None:
        return key
    return client if client.role_enum in allowed else None


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


def _in_session(serve: Serve, caller: ApiClient | str, allowed: frozenset[Role], model: BaseModel,
                request: Request, headers: dict[str, str | None]) -> Response:
    session = get_sessionmaker()()
    try:
        client = caller if isinstance(caller, ApiClient) else check_role(authenticate(session, caller), allowed)
        request.state.client_id = client.id
        response = serve(session, client, model, request, headers)
    except BaseException:
        end_session(session, commit=False)
        raise
    end_session(session, commit=True)
    return response
