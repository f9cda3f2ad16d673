"""Aggregates over webhook deliveries for monitoring: what is waiting, what failed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.database import utcnow
from app.webhooks.models import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookEndpoint


@dataclass(frozen=True)
class Backlog:
    by_status: dict[str, int]  # every DeliveryStatus, zero included
    oldest_pending_age_seconds: float  # 0 when nothing waits
    failed_attempts: int  # HTTP attempts that did not deliver, ever (the attempt log is kept)
    endpoints_failing: int  # active endpoints inside a run of failed attempts
    endpoints_disabled: int


def _age(created: datetime | None, now: datetime) -> float:
    if created is None:
        return 0.0
    if created.tzinfo is None:  # SQLite hands back naive UTC
        created = created.replace(tzinfo=UTC)
    return max(0.0, (now - created).total_seconds())


def backlog(session: Session) -> Backlog:
    by_status = {status.value: 0 for status in DeliveryStatus}
    for status, count in session.execute(
        select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)
    ):
        by_status[status] = count
    oldest = session.scalar(
        select(func.min(WebhookDelivery.created_at)).where(WebhookDelivery.status == DeliveryStatus.PENDING)
    )
    failed_attempts = session.scalar(
        select(func.count()).select_from(WebhookAttempt).where(WebhookAttempt.delivered.is_(False))
    ) or 0
    live = WebhookEndpoint.deleted_at.is_(None)
    failing = session.scalar(
        select(func.count()).select_from(WebhookEndpoint)
        .where(live, WebhookEndpoint.active.is_(True), WebhookEndpoint.failing_since.is_not(None))
    ) or 0
    disabled = session.scalar(
        select(func.count()).select_from(WebhookEndpoint).where(live, WebhookEndpoint.active.is_(False))
    ) or 0
    return Backlog(by_status, _age(oldest, utcnow()), failed_attempts, failing, disabled)
