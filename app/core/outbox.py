"""Transactional outbox: work for Celery is written in the same transaction as the state
change that calls for it, and handed to the broker only after that transaction commits.

A crash between commit and hand-off leaves the row pending; the periodic relay sends it.
The outbox row id doubles as the Celery task id, and every task is idempotent, so a
message sent twice does its work once.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import String, event, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from app.core.database import Base, get_sessionmaker, new_id, utcnow

log = logging.getLogger("unlearnd.outbox")
_PENDING_KEY = "unlearnd_outbox_pending"


class OutboxMessage(Base):
    __tablename__ = "outbox_messages"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    task_name: Mapped[str] = mapped_column(String(200))
    kwargs: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    dispatched_at: Mapped[datetime | None] = mapped_column(default=None, index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(default=None)


def enqueue(session: Session, task_name: str, **kwargs: Any) -> OutboxMessage:
    message = OutboxMessage(id=new_id(), task_name=task_name, kwargs=kwargs)
    session.add(message)
    pending: list[str] = session.info.setdefault(_PENDING_KEY, [])
    if not pending:
        event.listen(session, "after_commit", _after_commit, once=True)
        event.listen(session, "after_rollback", _after_rollback, once=True)
    pending.append(message.id)
    return message


# A commit with more messages than this (a bulk intake's certificate orders) hands them to the
# broker from a background thread, so the response does not wait for a thousand sends.
RELAY_IN_BACKGROUND_OVER = 20
_background: list[ThreadPoolExecutor] = []
_background_lock = threading.Lock()


def _after_commit(session: Session) -> None:
    ids = session.info.pop(_PENDING_KEY, [])
    if event.contains(session, "after_rollback", _after_rollback):
        event.remove(session, "after_rollback", _after_rollback)
    if len(ids) > RELAY_IN_BACKGROUND_OVER:
        _background_relayer().submit(_relay_logged, ids)
    elif ids:
        relay(ids)


def _background_relayer() -> ThreadPoolExecutor:
    with _background_lock:
        if not _background:
            _background.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox-relay"))
        return _background[0]


def _relay_logged(ids: list[str]) -> None:
    try:
        relay(ids, limit=len(ids))
    except Exception:  # committed and still pending: the periodic relay sends them
        log.exception("outbox relay after commit failed", extra={"messages": len(ids)})


def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)
    if event.contains(session, "after_commit", _after_commit):
        event.remove(session, "after_commit", _after_commit)


def relay(ids: list[str] | None = None, limit: int = 500) -> int:
    """Send pending messages (these ids, or the oldest ``limit``); return how many were sent."""
    from app.core.queue import get_celery

    celery = get_celery()
    sent = 0
    with get_sessionmaker()() as session:
        query = select(OutboxMessage).where(OutboxMessage.dispatched_at.is_(None))
        query = query.where(OutboxMessage.id.in_(ids)) if ids else query.order_by(OutboxMessage.created_at).limit(limit)
        if session.get_bind().dialect.name == "postgresql":
            # Two relays (API and beat) never send the same row concurrently.
            query = query.with_for_update(skip_locked=True)
        for message in session.scalars(query):
            message.attempts += 1
            try:
                # ignore_result: no task's result is read, and registering for one makes Celery
                # wait on the result backend for ~20 s when Redis is down, inside a request.
                celery.send_task(message.task_name, kwargs=message.kwargs, task_id=message.id, ignore_result=True)
            except Exception as exc:  # broker down: leave pending for the periodic relay
                message.last_error = f"{type(exc).__name__}: {exc}"[:500]
                log.warning("outbox relay failed", extra={"message_id": message.id, "error": message.last_error})
                break
            message.dispatched_at = utcnow()
            sent += 1
        session.commit()
    return sent


def backlog(session: Session, now: datetime | None = None) -> tuple[int, float]:
    """Messages committed but not yet handed to the broker, and the oldest one's age in seconds."""
    count, oldest = session.execute(
        select(func.count(), func.min(OutboxMessage.created_at)).where(OutboxMessage.dispatched_at.is_(None))
    ).one()
    if oldest is None:
        return 0, 0.0
    oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=UTC)
    return count, max(0.0, ((now or utcnow()) - oldest).total_seconds())
