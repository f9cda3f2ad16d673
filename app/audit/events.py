"""Reading the log: keyset pages for the API and a JSON-lines export that streams it all."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.models import AuditEvent
from app.audit.service import event_body
from app.core.database import session_scope
from app.core.errors import InvalidInput
from app.core.fields import INT64_MAX
from app.core.hashing import canonical_json

MAX_PAGE = 1000
_EXPORT_PAGE = MAX_PAGE


def published_event(event: AuditEvent) -> dict[str, Any]:
    """An event as verifiers see it: the hashed body plus the two chain hashes."""
    return {**event_body(event), "prev_hash": event.prev_hash, "hash": event.hash}


def parse_cursor(cursor: str | None) -> int:
    """Cursors are the last ``seq`` a reader has seen; the next page starts after it."""
    if cursor is None or cursor == "":
        return 0
    # isdigit alone admits "²" and "٣", which int() then refuses.
    if not (cursor.isascii() and cursor.isdigit()) or int(cursor) > INT64_MAX:
        raise InvalidInput("cursor must be the next_cursor of a previous page", field="cursor")
    return int(cursor)


def events_page(session: Session, *, after: int, limit: int) -> list[AuditEvent]:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", field="limit")
    query = select(AuditEvent).where(AuditEvent.seq > after).order_by(AuditEvent.seq).limit(limit)
    return list(session.scalars(query))


@dataclass(frozen=True)
class EventFilters:
    """What the dashboard's event browser narrows the log to; None: any."""

    action: str | None = None
    entity_type: str | None = None
    entity_id: str | None = None
    actor: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def browse(session: Session, filters: EventFilters, *, before: int | None = None, limit: int = 50) -> list[AuditEvent]:
    """The newest events matching ``filters`` with ``seq`` below ``before``, newest first."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", field="limit")
    query = select(AuditEvent)
    for column, value in ((AuditEvent.action, filters.action), (AuditEvent.entity_type, filters.entity_type),
                          (AuditEvent.entity_id, filters.entity_id), (AuditEvent.actor, filters.actor)):
        if value:
            query = query.where(column == value)
    if filters.since is not None:
        query = query.where(AuditEvent.occurred_at >= filters.since)
    if filters.until is not None:
        query = query.where(AuditEvent.occurred_at < filters.until)
    if before is not None:
        query = query.where(AuditEvent.seq < before)
    return list(session.scalars(query.order_by(AuditEvent.seq.desc()).limit(limit)))


def known_values(session: Session) -> tuple[list[str], list[str]]:
    """The actions and entity types the log holds so far, for the browser's choices."""
    actions = session.scalars(select(AuditEvent.action).distinct().order_by(AuditEvent.action))
    kinds = session.scalars(select(AuditEvent.entity_type).distinct().order_by(AuditEvent.entity_type))
    return list(actions), list(kinds)


def export_lines(*, after: int) -> Iterator[bytes]:
    """Every event after ``after``, one canonical JSON object per line. Each page is read in a
    short transaction of its own, so a long download holds no connection or snapshot open."""
    while True:
        with session_scope() as session:
            page = events_page(session, after=after, limit=_EXPORT_PAGE)
            lines = [canonical_json(published_event(e)) + b"\n" for e in page]
        if not page:
            return
        yield b"".join(lines)
        after = page[-1].seq
