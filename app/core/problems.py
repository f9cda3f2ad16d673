"""RFC 9457 problem details for every error the API returns, mapped in this one place."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.core.errors import UnlearndError

PROBLEM_BASE = "https://unlearnd.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"
# What a 503 tells a client to wait before trying again: a lost connection or a busy
# database is back well within this, and the outbox has kept anything already accepted.
RETRY_AFTER_SECONDS = 2
log = logging.getLogger("unlearnd.http")


def problem_response(
    request: Request,
    *,
    status: int,
    slug: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    body = {
        "type": PROBLEM_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        **extensions,
    }
    request_id = getattr(request.state, "request_id", None)
    if request_id:
        body["request_id"] = request_id
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def domain_problem_response(request: Request, exc: UnlearndError) -> JSONResponse:
    """The answer to a service error, wherever it is caught (the app's handler, the edge's direct routes)."""
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
    if exc.status == 503:
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    headers.update(exc.headers)
    return problem_response(
        request, status=exc.status, slug=exc.slug, title=exc.title, detail=exc.detail,
        headers=headers, **exc.extensions,
    )


def problem_document(exc: UnlearndError, *, instance: str) -> dict[str, Any]:
    """The RFC 9457 body for a service error: what the handler sends, and what a batch
    endpoint lists for each item it refused."""
    return {
        "type": PROBLEM_BASE + exc.slug, "title": exc.title, "status": exc.status, "detail": exc.detail,
        "instance": instance, **exc.extensions,
    }


def _location(loc: tuple[Any, ...]) -> str:
    # Drop the "body"/"query" prefix so the field reads as the client wrote it.
    if loc and loc[0] in {"body", "query", "path", "header"}:
        named = [str(p) for p in loc[1:] if isinstance(p, str)] if len(loc) > 1 else []
        return ".".join(str(p) for p in loc[1:]) if named else str(loc[0])
    return ".".join(str(p) for p in loc)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path. Starlette's own 405 names only the first
    route that matched the path, and GET and POST of one path are usually two routes."""
    allowed = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        probe = {**request.scope, "method": method}
        if any(route.matches(probe)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(UnlearndError)
    async def _domain(request: Request, exc: UnlearndError) -> JSONResponse:
        return domain_problem_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": _location(tuple(err.get("loc", ()))), "message": err.get("msg", ""), "type": err.get("type", "")}
            for err in exc.errors()
        ]
        first = errors[0] if errors else {"field": "", "message": "invalid request"}
        malformed = any(e["type"] == "json_invalid" for e in errors)
        return problem_response(
            request,
            status=422,
            slug="malformed-json" if malformed else "invalid-input",
            title="Malformed JSON body" if malformed else "Invalid input",
            detail=f"{first['field']}: {first['message']}" if first["field"] else first["message"],
            field=first["field"],
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        titles = {404: "Not found", 405: "Method not allowed", 413: "Payload too large"}
        headers = dict(exc.headers) if exc.headers else {}
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return problem_response(
            request, status=exc.status_code, slug=f"http-{exc.status_code}",
            title=titles.get(exc.status_code, "HTTP error"), detail=str(exc.detail), headers=headers or None,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        return problem_response(
            request, status=500, slug="internal-error", title="Internal error",
            detail="An unexpected error occurred; it has been logged with the request id.",
            headers={"Connection": "close"},  # the server closes it after re-raising; say so
        )


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details; validation problems add `field` and `errors`.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
        "field": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}, "type": {"type": "string"}},
            },
        },
    },
    "additionalProperties": True,
}
_PROBLEM_DESCRIPTIONS = {
    "401": "Missing, malformed or revoked API key",
    "403": "The key's role may not do this",
    "404": "No such resource, or not this caller's",
    "409": "Conflicts with the resource's current state",
    "413": "Body larger than the service accepts",
    "415": "Body is not application/json",
    "422": "Invalid input",
    "503": "A dependency is unavailable; retry after `Retry-After` seconds",
}


def _problem_codes(path: str, operation: dict[str, Any]) -> list[str]:
    """The problem statuses an operation can answer with, from what the service's layers send."""
    codes = ["422", "503"]  # input guard (NUL in any path or query) and transient database errors
    parameters = operation.get("parameters", [])
    if any(p.get("in") == "header" and p.get("name", "").lower() == "authorization" for p in parameters):
        codes += ["401", "403"]
    if path.startswith("/v1/"):  # looks something up, may meet a state it refuses
        codes += ["404", "409"]
    if "requestBody" in operation:
        codes += ["413", "415"]
    return codes


def install_problem_openapi(app: FastAPI) -> None:
    """Declare every problem status in OpenAPI with the schema and media type actually sent,
    in place of FastAPI's default 422 (a validation schema this service never returns)."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        schemas["Problem"] = PROBLEM_SCHEMA
        reference = {"$ref": "#/components/schemas/Problem"}
        for path, item in schema.get("paths", {}).items():
            for operation in item.values():
                responses = operation.setdefault("responses", {})
                for code in _problem_codes(path, operation):
                    described = responses.get(code, {}).get("description") if code != "422" else None
                    responses[code] = {
                        "description": described or _PROBLEM_DESCRIPTIONS[code],
                        "content": {PROBLEM_MEDIA_TYPE: {"schema": reference}},
                    }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
