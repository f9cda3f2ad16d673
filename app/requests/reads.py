"""Reading deletion requests: listing, one request, its history. Kept apart from ``service``
(intake and lifecycle, which load lineage and the registry) so ``unlearnd requests list`` and
``show`` import only the requests room's models; ``service`` re-exports these names."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select, tuple_
from sqlalchemy.orm import Session

from app.core.auth import ApiClient
from app.core.errors import InvalidInput, NotFound
from app.core.roles import sees_every_client
from app.requests.models import DeletionRequest, LegalBasis, RequestStatus, RequestTransition


@dataclass(frozen=True)
class RequestFilters:
    status: RequestStatus | None = None
    legal_basis: LegalBasis | None = None
    due_before: datetime | None = None
    external_ref: str | None = None


@dataclass(frozen=True)
class RequestPage:
    items: list[DeletionRequest]
    next_cursor: str | None


def visible(query: Select[Any], viewer: ApiClient | None) -> Select[Any]:
    """A portal (or an ml key) sees only its own requests; admins and auditors see all."""
    if viewer is None or sees_every_client(viewer.role):
        return query
    return query.where(DeletionRequest.client_id == viewer.id)


def get_request(session: Session, request_id: str, viewer: ApiClient | None = None) -> DeletionRequest:
    request = session.scalar(visible(select(DeletionRequest).where(DeletionRequest.id == request_id), viewer))
    if request is None:
        raise NotFound(f"no deletion request {request_id}")
    return request


def history(session: Session, request_id: str) -> list[RequestTransition]:
    query = select(RequestTransition).where(RequestTransition.request_id == request_id).order_by(RequestTransition.id)
    return list(session.scalars(query))


def list_requests(
    session: Session,
    *,
    viewer: ApiClient | None = None,
    filters: RequestFilters = RequestFilters(),
    cursor: str | None = None,
    limit: int = 50,
) -> RequestPage:
    """Newest first, ordered by (received_at, id) so pages never skip or repeat a row."""
    query = visible(select(DeletionRequest), viewer)
    if filters.status is not None:
        query = query.where(DeletionRequest.status == filters.status.value)
    if filters.legal_basis is not None:
        query = query.where(DeletionRequest.legal_basis == filters.legal_basis.value)
    if filters.due_before is not None:
        query = query.where(DeletionRequest.due_at < filters.due_before)
    if filters.external_ref is not None:
        query = query.where(DeletionRequest.external_ref == filters.external_ref)
    if cursor:
        after_received, after_id = _decode_cursor(cursor)
        query = query.where(tuple_(DeletionRequest.received_at, DeletionRequest.id) < tuple_(after_received, after_id))
    query = query.order_by(DeletionRequest.received_at.desc(), DeletionRequest.id.desc()).limit(limit + 1)
    rows = list(session.scalars(query))
    items = rows[:limit]
    next_cursor = _encode_cursor(items[-1]) if len(rows) > limit else None
    return RequestPage(items=items, next_cursor=next_cursor)


def _encode_cursor(last: DeletionRequest) -> str:
    raw = json.dumps([last.received_at.isoformat(), last.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        received, request_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(received), str(request_id)
    except (ValueError, TypeError, binascii.Error):
        raise InvalidInput("cursor is not one this API issued", field="cursor") from None
