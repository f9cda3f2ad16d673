"""Sign-in sessions, CSRF, and the figures the pages show.

Actions go through the rooms' own services (the same calls the API makes), so the dashboard
can never do what the API would refuse.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.orm import Session

from app.core.auth import ApiClient, Role, authenticate
from app.core.database import utcnow
from app.core.errors import Forbidden, Unauthenticated
from app.dashboard.models import DashboardSession
from app.requests import service as requests_service
from app.requests import stats as request_stats
from app.requests.models import DeletionRequest

DASHBOARD_ROLES = frozenset({Role.ADMIN, Role.AUDITOR})
# Days left before the legal deadline: green from 10, amber below 10, red below 5 (as Fides).
AMBER_DAYS, RED_DAYS = 10, 5


@dataclass(frozen=True)
class SignedIn:
    client: ApiClient
    csrf_token: str

    @property
    def is_admin(self) -> bool:
        return self.client.role_enum is Role.ADMIN


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def sign_in(session: Session, api_key: str) -> tuple[str, SignedIn]:
    """Exchange an admin or auditor API key for a session token (the cookie's value)."""
    client = authenticate(session, api_key.strip())
    if client.role_enum not in DASHBOARD_ROLES:
        raise Forbidden(f"the dashboard is for admins and auditors; role '{client.role}' may not sign in")
    token = secrets.token_urlsafe(32)
    row = DashboardSession(token_hash=_token_hash(token), client_id=client.id, csrf_token=secrets.token_urlsafe(32))
    session.add(row)
    return token, SignedIn(client=client, csrf_token=row.csrf_token)


def resolve(session: Session, token: str | None, idle: timedelta) -> SignedIn:
    """The signed-in client behind a cookie; an idle, unknown or revoked one signs nobody in."""
    if not token:
        raise Unauthenticated("not signed in")
    row = session.get(DashboardSession, _token_hash(token))
    now = utcnow()
    if row is None:
        raise Unauthenticated("not signed in")
    seen = row.last_seen_at if row.last_seen_at.tzinfo else row.last_seen_at.replace(tzinfo=UTC)
    client = session.get(ApiClient, row.client_id)
    if now - seen > idle or client is None or client.revoked_at is not None:
        session.delete(row)
        raise Unauthenticated("the session has ended; sign in again")
    row.last_seen_at = now
    return SignedIn(client=client, csrf_token=row.csrf_token)


def sign_out(session: Session, token: str | None) -> None:
    if token:
        session.execute(delete(DashboardSession).where(DashboardSession.token_hash == _token_hash(token)))


def check_csrf(signed_in: SignedIn, submitted: str | None) -> None:
    if not submitted or not hmac.compare_digest(signed_in.csrf_token, submitted):
        raise Forbidden("the form's CSRF token is missing or wrong; reload the page and try again")


def require_admin(signed_in: SignedIn) -> None:
    if not signed_in.is_admin:
        raise Forbidden("auditors have read-only access")


def days_left(request: DeletionRequest, now: datetime | None = None) -> float:
    due = request.due_at if request.due_at.tzinfo else request.due_at.replace(tzinfo=UTC)
    return (due - (now or utcnow())).total_seconds() / 86400


def urgency(days: float) -> str:
    """The colour class of a countdown."""
    if days < RED_DAYS:
        return "red"
    return "amber" if days < AMBER_DAYS else "green"


@dataclass(frozen=True)
class Overview:
    counts: dict[str, int]
    due_soon: list[DeletionRequest]
    overdue: list[DeletionRequest]


def overview(session: Session, viewer: ApiClient, *, window_days: int = 7) -> Overview:
    counts: dict[str, int] = {}
    for status, _, count in request_stats.counts_by_status_and_basis(session):
        counts[status] = counts.get(status, 0) + count
    now = utcnow()
    page = requests_service.list_requests(
        session, viewer=viewer,
        filters=requests_service.RequestFilters(due_before=now + timedelta(days=window_days)), limit=200,
    )
    open_ = [r for r in page.items if r.status not in request_stats.TERMINAL]
    return Overview(
        counts=counts,
        due_soon=sorted((r for r in open_ if days_left(r, now) >= 0), key=lambda r: r.due_at),
        overdue=sorted((r for r in open_ if days_left(r, now) < 0), key=lambda r: r.due_at),
    )
