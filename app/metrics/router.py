from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response

from app.api.deps import SessionDep
from app.core.config import get_settings
from app.metrics import service

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition"}},
)
def metrics(request: Request, session: SessionDep, authorization: Annotated[str | None, Header()] = None) -> Response:
    """Prometheus metrics: an admin key, or a scraper at an address in UNLEARND_METRICS_ALLOW_CIDRS."""
    scheme, _, key = (authorization or "").partition(" ")
    service.authorize_scrape(
        session, request.client.host if request.client else None,
        key.strip() if scheme.lower() == "bearer" else None, get_settings().metrics_allow_cidrs,
    )
    body, content_type = service.exposition(session)
    return Response(body, media_type=content_type)
