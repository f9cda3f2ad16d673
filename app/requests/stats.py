"""Aggregates over deletion requests for monitoring; no identifier leaves this module."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.database import utcnow
from app.requests.models import DeletionRequest, RequestStatus

TERMINAL = (RequestStatus.COMPLETED, RequestStatus.REJECTED, RequestStatus.FAILED, RequestStatus.CANCELLED)


def counts_by_status_and_basis(session: Session) -> list[tuple[str, str, int]]:
    rows = session.execute(
        select(DeletionRequest.status, DeletionRequest.legal_basis, func.count())
        .group_by(DeletionRequest.status, DeletionRequest.legal_basis)
    )
    return [(status, basis, count) for status, basis, count in rows]


def open_deadline_slack_seconds(session: Session, now: datetime | None = None) -> list[float]:
    """Seconds left until each open request's due date (negative: overdue)."""
    now = now or utcnow()
    due = session.scalars(select(DeletionRequest.due_at).where(DeletionRequest.status.not_in(TERMINAL)))
    return [(_aware(at) - now).total_seconds() for at in due]


def completion_seconds(session: Session, window: timedelta, now: datetime | None = None) -> list[float]:
    """Received-to-completed times of the requests completed within ``window``."""
    since = (now or utcnow()) - window
    rows = session.execute(
        select(DeletionRequest.received_at, DeletionRequest.completed_at)
        .where(DeletionRequest.completed_at.is_not(None), DeletionRequest.completed_at >= since)
    )
    return [(_aware(done) - _aware(received)).total_seconds() for received, done in rows]


def _aware(at: datetime) -> datetime:
    # SQLite hands back naive datetimes; every stored time is UTC.
    return at if at.tzinfo else at.replace(tzinfo=UTC)
