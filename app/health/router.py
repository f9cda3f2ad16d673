from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.core.database import get_engine
from app.core.queue import get_celery

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _check_database() -> str | None:
    try:
        with get_engine().connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        return f"database: {type(exc).__name__}"
    return None


def _check_broker() -> str | None:
    try:
        with get_celery().connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:
        return f"broker: {type(exc).__name__}"
    return None


@router.get("/readyz", responses={503: {"description": "a dependency is unreachable"}})
def readyz() -> JSONResponse:
    failures = [f for f in (_check_database(), _check_broker()) if f]
    if failures:
        return JSONResponse(
            {
                "type": "https://unlearnd.dev/problems/not-ready",
                "title": "Not ready",
                "status": 503,
                "detail": "; ".join(failures),
                "instance": "/readyz",
            },
            status_code=503,
            media_type="application/problem+json",
        )
    return JSONResponse({"status": "ready", "database": "ok", "broker": "ok"})
