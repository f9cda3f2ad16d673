"""Routes whose common case is answered at the HTTP edge, before Starlette's routing (intake's hot path).

FastAPI solves an endpoint's dependencies, parses its JSON body and validates it afresh on
every call, and Starlette's router, exception middleware and request/response wrappers each
wrap the call again; for a one-statement endpoint under load that was a third of the
process's CPU (single intake: route matching against every route of the API alone was 7%).
A ``direct_route`` is declared like any route (its OpenAPI entry, its FastAPI handler), and
carries a ``DirectAnswer`` that the edge (app/api/edge.py) calls for the route's exact method
and path: it answers the common case itself (a cached bearer key of a role the route allows,
a JSON body that validates with ``model_validate_json``, one parse in Rust, and headers within
their declared lengths) by running ``serve`` with a session in one worker-thread hop, as a
sync endpoint would. A key whose client is not cached (every few seconds,
``auth_cache_seconds``) is looked up and its role checked in that same hop, raising what the
declared dependencies raise (401, 403). Anything else (no bearer key, a secret that does not
match a cached client, a wrong role, a body that does not validate, an overlong header) goes
through the app's router to the declared handler, so every refusal is the one it always was.
A service error is answered with the same problem document the app's handler writes.

A route given ``together`` (single intake) commits in groups: a cached client's calls that
arrive while an earlier group of its is being written go together in the next one, one
worker-thread hop and one transaction for all (app/core/coalesce.py), each still answered only
once it is committed. Under 32 clients that took single intake from 0.47x to 1.9x a bare
one-row insert endpoint's throughput (medians, benchmarks/results/intake.md): the hop, the
session, the round trips, the commit and the sealing that each request paid alone were most of
its cost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.types import Message, Scope, Send

from app.api.deps import check_role, end_session
from app.core.auth import ApiClient, Role, authenticate, authenticate_cached
from app.core.coalesce import GroupCommit
from app.core.database import get_sessionmaker, utcnow
from app.core.errors import Unauthenticated, UnlearndError
from app.core.inputs import is_json_media_type
from app.core.problems import domain_problem_response
from app.core.transient import is_retryable, is_unavailable

# serve(session, client, body, request, headers) -> the response; headers: each declared one's value or None.
Serve = Callable[[Session, ApiClient, Any, Request, dict[str, str | None]], Response]
Declared = Callable[[], Awaitable[None]]
# The largest group of calls one transaction answers (``together``).
MAX_GROUP = 64


class DirectCall(NamedTuple):
    """One call of a group: its validated body, its request, its declared headers, when it arrived."""

    body: Any
    request: Request
    headers: dict[str, str | None]
    received_at: datetime


# together(session, client, calls) -> each call's response, or the service error that refuses it.
Together = Callable[[Session, ApiClient, Sequence[DirectCall]], Sequence[Response | UnlearndError]]


class DirectAnswer:
    """A route's common case, answered without FastAPI's request machinery."""

    def __init__(self, *, body: type[BaseModel], roles: tuple[Role, ...], serve: Serve,
                 together: Together | None = None, headers: dict[str, int] | None = None) -> None:
        self.body, self.serve, self.together = body, serve, together
        self.allowed = frozenset(roles)
        # header name (lower case) -> the max_length its declared parameter enforces
        self.limits = dict(headers or {})
        self.route: APIRoute | None = None  # set when the route is built: its template labels metrics
        self.groups = GroupCommit(self._answer_group, max_group=MAX_GROUP)

    async def __call__(self, scope: Scope, body: bytes, send: Send, declared: Declared) -> None:
        """Answer the request whose whole body is ``body``, or run ``declared`` (the app's router)."""
        found = _first_headers(scope, (b"authorization", b"content-type"))
        authorization, content_type = found.get(b"authorization"), found.get(b"content-type")
        caller = _caller(authorization, self.allowed)
        model = _model(body, content_type, self.body) if caller is not None else None
        request = Request(scope)
        values = {name: request.headers.get(name) for name in self.limits}
        if model is None or any(v is not None and len(v) > self.limits[n] for n, v in values.items()):
            await declared()
            return
        assert caller is not None
        scope["route"] = self.route
        try:
            if self.together is not None and isinstance(caller, ApiClient):
                request.state.client_id = caller.id
                call = DirectCall(model, request, values, utcnow())
                response = await self.groups.submit(caller.id, (caller, call))
            else:
                response = await run_in_threadpool(_in_session, self.serve, caller, self.allowed, model, request,
                                                   values)
        except UnlearndError as error:
            response = domain_problem_response(request, error)
        await response(scope, _nothing_more, send)

    def _answer_group(self, group: Sequence[tuple[ApiClient, DirectCall]]) -> list[Response | BaseException]:
        """Every call of a group (one client's) in one transaction. When the transaction fails for
        a reason that is not the database's (a transient failure is every call's, and each is
        retried or answered 503 at the edge), each call runs again alone, so that one call's
        failure is its own and not the group's."""
        try:
            return list(self._in_one_session(group))
        except Exception as error:
            if len(group) == 1 or is_retryable(error) or is_unavailable(error):
                raise
        answers: list[Response | BaseException] = []
        for one in group:
            try:
                answers.extend(self._in_one_session([one]))
            except Exception as error:  # noqa: BLE001 - this call's own failure, answered to it alone
                answers.append(error)
        return answers

    def _in_one_session(self, group: Sequence[tuple[ApiClient, DirectCall]]) -> Sequence[Response | UnlearndError]:
        assert self.together is not None
        session = get_sessionmaker()()
        try:
            answers = self.together(session, group[0][0], [call for _, call in group])
        except BaseException:
            end_session(session, commit=False)
            raise
        end_session(session, commit=True)
        return answers


def direct_route(
    *, body: type[BaseModel], roles: tuple[Role, ...], serve: Serve, together: Together | None = None,
    headers: dict[str, int] | None = None,
) -> type[APIRoute]:
    """An ``APIRoute`` class (``route_class_override``) whose common case the edge answers with
    ``serve``, or, given ``together``, with the calls of the same client that arrived meanwhile
    (group commit; ``serve`` then answers a caller whose client is not cached yet);
    ``headers``: header name (lower case) -> the max_length its declared parameter enforces."""
    return _route_answered_by(DirectAnswer(body=body, roles=roles, serve=serve, together=together, headers=headers))


def _route_answered_by(answer: DirectAnswer | DirectRead) -> type[APIRoute]:
    """The route class carrying ``answer`` (found by ``direct_answers``), which learns its route when built."""

    class DirectRoute(APIRoute):
        direct = answer

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            answer.route = self

    return DirectRoute


# read(client, path parameters) -> the response, on the event loop; None for the declared path.
Read = Callable[[ApiClient, dict[str, Any]], Awaitable[Response | None]]


class DirectRead:
    """A read route's common case (a GET with path parameters, no body), answered at the edge:
    a cached bearer key of an allowed role and a path its template matches (Starlette's own
    regular expression and convertors) go straight to ``read``; anything else to the router."""

    def __init__(self, *, roles: tuple[Role, ...], read: Read) -> None:
        self.allowed, self.read = frozenset(roles), read
        self.route: APIRoute | None = None

    def match(self, path: str) -> dict[str, Any] | None:
        assert self.route is not None
        found = self.route.path_regex.match(path)
        if found is None:
            return None
        return {name: self.route.param_convertors[name].convert(value) for name, value in found.groupdict().items()}

    async def __call__(self, scope: Scope, params: dict[str, Any], send: Send, declared: Declared) -> None:
        caller = _caller(_first_headers(scope, (b"authorization",)).get(b"authorization"), self.allowed)
        if not isinstance(caller, ApiClient):
            await declared()
            return
        scope["route"] = self.route
        request = Request(scope)
        request.state.client_id = caller.id
        try:
            response = await self.read(caller, params)
        except UnlearndError as error:
            response = domain_problem_response(request, error)
        if response is None:
            await declared()
            return
        await response(scope, _nothing_more, send)


def direct_read(*, roles: tuple[Role, ...], read: Read) -> type[APIRoute]:
    """An ``APIRoute`` class (``route_class_override``) for a GET whose common case the edge answers with ``read``."""
    return _route_answered_by(DirectRead(roles=roles, read=read))


def direct_answers(routes: Iterable[Any]) -> dict[tuple[str, str], DirectAnswer | DirectRead]:
    """(method, path) -> its direct answer, for every direct route among ``routes`` (a read's
    path is its template): the routes of routers included with no prefix of their own, so that
    a route's path is the one served."""
    return {(method, route.path): route.direct
            for route in routes if isinstance(getattr(route, "direct", None), DirectAnswer | DirectRead)
            for method in route.methods}


def _first_headers(scope: Scope, names: tuple[bytes, ...]) -> dict[bytes, str]:
    """The first value of each of the named headers the request has (lower-case names), read
    straight off the ASGI scope: a ``Request``'s header mapping is built for the whole list."""
    found: dict[bytes, str] = {}
    for name, value in scope["headers"]:
        if name in names and name not in found:
            found[name] = value.decode("latin-1")
    return found


def _caller(authorization: str | None, allowed: frozenset[Role]) -> ApiClient | str | None:
    """The caller's cached client when its key checks out and its role is allowed; its bearer key
    when its client is not cached (looked up with the session); None for the declared path."""
    scheme, _, key = (authorization or "").partition(" ")
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


def _model(raw: bytes, content_type: str | None, model: type[BaseModel]) -> BaseModel | None:
    if not raw or not is_json_media_type(content_type or ""):
        return None
    try:
        return model.model_validate_json(raw)
    except ValidationError:
        return None


async def _nothing_more() -> Message:
    # The body was read whole at the edge; a response never asks for more.
    return {"type": "http.disconnect"}


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
