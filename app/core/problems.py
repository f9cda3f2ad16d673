"""RFC 9457 problem details for every error the API returns, mapped in this one place."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.errors import UnlearndError

PROBLEM_BASE = "https://unlearnd.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"
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


def _location(loc: tuple[Any, ...]) -> str:
    # Drop the "body"/"query" prefix so the field reads as the client wrote it.
    if loc and loc[0] in {"body", "query", "path", "header"}:
        named = [str(p) for p in loc[1:] if isinstance(p, str)] if len(loc) > 1 else []
        return ".".join(str(p) for p in loc[1:]) if named else str(loc[0])
    return ".".join(str(p) for p in loc)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(UnlearndError)
    async def _domain(request: Request, exc: UnlearndError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return problem_response(
            request, status=exc.status, slug=exc.slug, title=exc.title, detail=exc.detail,
            headers=headers, **exc.extensions,
        )

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
        return problem_response(
            request, status=exc.status_code, slug=f"http-{exc.status_code}",
            title=titles.get(exc.status_code, "HTTP error"), detail=str(exc.detail),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        return problem_response(
            request, status=500, slug="internal-error", title="Internal error",
            detail="An unexpected error occurred; it has been logged with the request id.",
        )
