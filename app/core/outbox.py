"""Transactional outbox: work for Celery is written in the same transaction as the state
change that calls for it, and handed to the broker only after that transaction commits.

A crash between commit and hand-off leaves the row pending; the periodic relay sends it.
The outbox row id doubles as the Celery task id, and every task is idempotent, so a
message sent twice does its work once.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import String, event, func, insert, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from app.core.database import Base, get_sessionmaker, new_id, one_of, utcnow

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


def enqueue(session: Session, task_name: str, *, background: bool = False, **kwargs: Any) -> OutboxMessage:
    """Write a message for the broker in the caller's transaction; it is handed over right after
    commit. ``background``: by this process's relay thread, which gathers what many commits
    queued into one transaction (and merges mergeable tasks into one send), so a request path
    never waits on the broker; a message still waits in the table until it is sent."""
    message = OutboxMessage(id=new_id(), task_name=task_name, kwargs=kwargs)
    session.add(message)
    _relay_when_committed(session, message.id, background)
    return message


_INSERT = insert(OutboxMessage.__table__)  # built once: a statement's cache key is computed on every build


def enqueue_now(session: Session, task_name: str, *, background: bool = False, **kwargs: Any) -> str:
    """``enqueue`` as one Core INSERT executed at once, with no ORM object to flush at commit
    (intake's hot path); relayed after commit the same way. Returns the message id."""
    message_id = new_id()
    session.connection().execute(_INSERT, {
        "id": message_id, "task_name": task_name, "kwargs": kwargs, "created_at": utcnow(), "dispatched_at": None,
        "attempts": 0, "last_error": None})
    _relay_when_committed(session, message_id, background)
    return message_id


def _relay_when_committed(session: Session, message_id: str, background: bool) -> None:
    # Read by the listeners below, registered once on every session: adding and removing a
    # listener on each session (an intake's) cost more than the check on each commit.
    session.info.setdefault(_PENDING_KEY, []).append((message_id, background))


# A commit with more messages than this hands them to the broker from the background thread
# too, so the response does not wait for many sends.
RELAY_IN_BACKGROUND_OVER = 20
RELAY_GATHER_SECONDS = 0.2
_background: list[ThreadPoolExecutor] = []
_background_lock = threading.Lock()
_queued: list[str] = []
_drain_scheduled = [False]


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    pending = session.info.pop(_PENDING_KEY, None)
    if not pending:
        return
    now = [message_id for message_id, background in pending if not background]
    later = [message_id for message_id, background in pending if background]
    if len(now) > RELAY_IN_BACKGROUND_OVER:
        later, now = later + now, []
    if now:
        relay(now)
    if later:
        _relay_in_background(later)


def _relay_in_background(ids: list[str]) -> None:
    """Queue ids for the relay thread; while it is busy, later commits' ids gather and go in its
    next pass, one transaction for all of them."""
    with _background_lock:
        _queued.extend(ids)
        if _drain_scheduled[0]:
            return
        _drain_scheduled[0] = True
        if not _background:
            _background.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox-relay"))
        relayer = _background[0]
    relayer.submit(_drain)


def _drain() -> None:
    # Let more commits queue their ids first: one pass (a read, a send, an UPDATE and a commit)
    # then carries many requests' messages, where under load it carried a few; the wait costs
    # no CPU, and a certificate order waits this much longer for the broker.
    time.sleep(RELAY_GATHER_SECONDS)
    with _background_lock:
        ids = list(_queued)
        _queued.clear()
        _drain_scheduled[0] = False
    if ids:
        _relay_logged(ids)


def _relay_logged(ids: list[str]) -> None:
    try:
        relay(ids, limit=len(ids))
    except Exception:  # committed and still pending: the periodic relay sends them
        log.exception("outbox relay after commit failed", extra={"messages": len(ids)})


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)


def relay(ids: list[str] | None = None, limit: int = 500) -> int:
    """Send pending messages (these ids, or the oldest ``limit``); return how many were sent.
    Core statements, no ORM object per message: one read, then one UPDATE for those sent and
    one for a group the broker refused (the relay thread runs this for every intake commit)."""
    from app.core.queue import MERGED_KWARG, get_celery

    celery = get_celery()
    table = OutboxMessage.__table__
    sent: list[str] = []
    failed: list[str] = []
    error = ""
    with get_sessionmaker()() as session:
        query = select(table.c.id, table.c.task_name, table.c.kwargs).where(table.c.dispatched_at.is_(None))
        query = query.where(one_of(session, table.c.id, ids)) if ids \
            else query.order_by(table.c.created_at).limit(limit)
        if session.get_bind().dialect.name == "postgresql":
            # Two relays (API and beat) never send the same row concurrently.
            query = query.with_for_update(skip_locked=True)
        for group in _merged(list(session.execute(query)), MERGED_KWARG):
            head = group[0]
            kwargs = head.kwargs if len(group) == 1 else {
                MERGED_KWARG[head.task_name]: [item for m in group for item in m.kwargs[MERGED_KWARG[head.task_name]]]}
            try:
                # ignore_result: no task's result is read, and registering for one makes Celery
                # wait on the result backend for ~20 s when Redis is down, inside a request.
                # A merged send carries the first message's id as its task id; the task is
                # idempotent per item, so a re-send after a crash does each item once.
                celery.send_task(head.task_name, kwargs=kwargs, task_id=head.id, ignore_result=True)
            except Exception as exc:  # broker down: leave pending for the periodic relay
                failed, error = [m.id for m in group], f"{type(exc).__name__}: {exc}"[:500]
                log.warning("outbox relay failed", extra={"message_id": head.id, "error": error})
                break
            sent += [m.id for m in group]
        if sent:
            session.execute(update(table).where(one_of(session, table.c.id, sent))
                            .values(attempts=table.c.attempts + 1, dispatched_at=utcnow()))
        if failed:
            session.execute(update(table).where(one_of(session, table.c.id, failed))
                            .values(attempts=table.c.attempts + 1, last_error=error))
        session.commit()
    return len(sent)


def _merged(messages: list[Any], merged_kwarg: dict[str, str]) -> list[list[Any]]:
    """Messages in send order, grouped: those of a task that takes a list (``MERGED_KWARG``)
    and carry only that list go together in one send; every other message alone."""
    groups: list[list[Any]] = []
    by_task: dict[str, list[Any]] = {}
    for message in messages:
        key = merged_kwarg.get(message.task_name)
        if key is None or set(message.kwargs) != {key}:
            groups.append([message])
        elif message.task_name in by_task:
            by_task[message.task_name].append(message)
        else:
            by_task[message.task_name] = group = [message]
            groups.append(group)
    return groups


def backlog(session: Session, now: datetime | None = None) -> tuple[int, float]:
    """Messages committed but not yet handed to the broker, and the oldest one's age in seconds."""
    count, oldest = session.execute(
        select(func.count(), func.min(OutboxMessage.created_at)).where(OutboxMessage.dispatched_at.is_(None))
    ).one()
    if oldest is None:
        return 0, 0.0
    oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=UTC)
    return count, max(0.0, ((now or utcnow()) - oldest).total_seconds())
