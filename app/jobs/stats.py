"""Aggregates over unlearning jobs for monitoring."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.database import utcnow
from app.jobs.models import JobStatus, UnlearningJob


@dataclass(frozen=True)
class JobGroup:
    kind: str
    method: str
    method_used: str
    guarantee: str
    status: str
    verdict: str
    fell_back: bool


def job_groups(session: Session) -> Counter[JobGroup]:
    """Jobs counted by what was asked, what ran, the guarantee and the verification verdict.
    Older reports carry no guarantee or verdict: they count as ``unrecorded``."""
    rows = session.execute(
        select(UnlearningJob.kind, UnlearningJob.method, UnlearningJob.method_used, UnlearningJob.status,
               UnlearningJob.report)
    )
    counts: Counter[JobGroup] = Counter()
    for kind, method, method_used, status, report in rows:
        report = report or {}
        counts[JobGroup(
            kind=kind, method=method, method_used=method_used or "none",
            guarantee=str(report.get("guarantee") or "unrecorded"), status=status,
            verdict=str(report.get("verdict") or "unrecorded"), fell_back=bool(report.get("fell_back")),
        )] += 1
    return counts


def oldest_queued_age_seconds(session: Session, now: datetime | None = None) -> float:
    """How long the oldest queued job has waited for a worker (0 when none waits)."""
    oldest = session.scalar(select(func.min(UnlearningJob.created_at)).where(UnlearningJob.status == JobStatus.QUEUED))
    if oldest is None:
        return 0.0
    oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=UTC)
    return max(0.0, ((now or utcnow()) - oldest).total_seconds())
