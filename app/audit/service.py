"""Writing to the hash-chained audit log.

Every room above calls ``record`` inside its own transaction, so the event commits or
rolls back with the change it describes. ``record`` takes no lock: it inserts a pending
event, and unrelated transactions (say, 32 portals submitting at once) commit in
parallel. Right after such a commit, the sealer appends the committed pending events to
the chain in the order it finds them, under one writer lock (a PostgreSQL
transaction-scoped advisory lock; SQLite transactions are already serialised by
``BEGIN IMMEDIATE``), so the chain never forks. A sealer that finds the lock taken leaves
its events to the sealer holding it, or to the periodic ``unlearnd.audit.seal`` task.
Pending events are the only part of the log that is not yet tamper-evident; they wait
there for milliseconds, at most one beat interval.

Each append also extends the stored Merkle tree (``app.audit.nodes``) under the same lock
and in the same transaction, so heads and proofs never read the whole log.

``append`` is for the few callers that need the event's place in the chain at once (a
certificate's anchor): it seals everything pending and appends under the lock.

Rooms above that read the chain (webhooks) register ``on_sealed`` callbacks, told after a
transaction that added sealed events has committed; this room knows nothing of them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, delete, event, exists, or_, select, text
from sqlalchemy.orm import Session

from app.audit import nodes
from app.audit.models import AuditEvent, AuditTreeNode, PendingAuditEvent
from app.core.database import get_sessionmaker, insert_rows, utcnow, write_together
from app.core.hashing import canonical_json, canonical_json_strict, sha256_hex

GENESIS_HASH = "0" * 64
# Arbitrary constant naming the audit-chain lock among PostgreSQL advisory locks.
AUDIT_LOCK_KEY = 0x756E6C65
_SEAL_AFTER_COMMIT = "unlearnd_audit_seal"
_NOTIFY_AFTER_COMMIT = "unlearnd_audit_notify"
log = logging.getLogger("unlearnd.audit")
_sealed_listeners: list[Callable[[], None]] = []


def on_sealed(callback: Callable[[], None]) -> None:
    """Call ``callback`` (in this process) whenever sealed events have just been committed.
    A hint only: a listener must not rely on it, since a process can die before calling it."""
    if callback not in _sealed_listeners:
        _sealed_listeners.append(callback)


def _notify_sealed() -> None:
    for callback in list(_sealed_listeners):
        try:
            callback()
        except Exception:  # the events are committed; listeners have their own sweeps
            log.exception("an on_sealed listener failed")


def event_body(event: Any) -> dict[str, Any]:
    """The fields the hash covers, in the form verifiers recompute (of an ``AuditEvent`` or any
    row with its columns as attributes)."""
    return _body(event.seq, event)


def _body(seq: int, event: Any) -> dict[str, Any]:
    """``event_body`` with the sequence number given apart (the sealer's rows have none yet)."""
    return {
        "seq": seq,
        # Normalised to UTC: a PostgreSQL session in another time zone returns another offset.
        "occurred_at": event.occurred_at.astimezone(UTC).isoformat(),
        "actor": event.actor,
        "action": event.action,
        "entity_type": event.entity_type,
        "entity_id": event.entity_id,
        "payload": event.payload,
    }


def chain_hash(prev_hash: str, body: dict[str, Any]) -> str:
    return sha256_hex(bytes.fromhex(prev_hash) + canonical_json(body))


def _is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def lock_chain(session: Session) -> None:
    """Become the one writer of the chain until this transaction ends. Re-entrant; callers
    that must read-then-write under the same lock (one certificate per request, one row per
    key) take it before their read."""
    if _is_postgresql(session):
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_LOCK_KEY})


def _try_lock_chain(session: Session) -> bool:
    if not _is_postgresql(session):
        return True
    return bool(session.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": AUDIT_LOCK_KEY}))


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: str,
    payload: dict[str, Any] | None = None,
) -> PendingAuditEvent:
    """Write the event in the caller's transaction; it joins the chain right after commit."""
    pending = PendingAuditEvent(
        occurred_at=utcnow(),
        actor=actor,
        action=action,
        entity_type=entity_type,
        entity_id=str(entity_id),
        payload=payload or {},
    )
    session.add(pending)
    _seal_when_committed(session)
    return pending


@dataclass
class Event:
    """One event for ``record_many``."""

    actor: str
    action: str
    entity_type: str
    entity_id: str
    payload: dict[str, Any]


def record_many(session: Session, events: list[Event]) -> None:
    """``record`` for many events in one multi-row statement (a bulk intake's), with no ORM
    object per event."""
    table, rows = pending_rows(session, events)
    insert_rows(session, table, rows)


def pending_rows(session: Session, events: list[Event]) -> tuple[Table, list[dict[str, Any]]]:
    """The pending-event rows for ``events``, for a caller that writes them in a statement of
    its own (``database.insert_linked``, keyed by ``entity_id``) in this transaction; they are
    sealed after its commit like ``record``'s."""
    if events:
        _seal_when_committed(session)
    now = utcnow()
    return PendingAuditEvent.__table__, [
        {"occurred_at": now, "actor": e.actor, "action": e.action, "entity_type": e.entity_type,
         "entity_id": str(e.entity_id), "payload": e.payload}
        for e in events
    ]


def append_events(session: Session, events: Sequence[Event]) -> None:
    """Chain ``events`` in the caller's transaction now, with no ORM object and no pending row:
    ``append`` for a bulk intake's thousand events, which as pending rows were written, read
    back, decoded and written again by the sealer, a sealer that under bulk load got too little
    of the process to keep up. The caller holds the chain lock from here until its transaction
    ends, so it calls this last, just before it commits.

    Hashed from the events as given (as ``append`` does), so their payloads must be of JSON's own
    types: each event's body is encoded before the lock is taken, and only the chain's
    sequential part (its number and the previous hash) is added under it."""
    if not events:
        return
    occurred_at = utcnow()
    stamp = occurred_at.astimezone(UTC).isoformat()
    heads = [_body_head(stamp, e) for e in events]
    # Events committed before these keep their place: the pending ones are sealed first, as
    # ``append`` does, and the sealer (which only tries the lock) is not left behind under load.
    seal_pending(session)
    size, prev_hash = session.execute(select(*_CHAIN_END)).one()
    size, prev_hash = size or 0, prev_hash or GENESIS_HASH
    rows: list[dict[str, Any]] = []
    for seq, (e, head) in enumerate(zip(events, heads, strict=True), start=size + 1):
        hashed = sha256_hex(bytes.fromhex(prev_hash) + head + b',"seq":%d}' % seq)
        rows.append({"seq": seq, "occurred_at": occurred_at, "actor": e.actor, "action": e.action,
                     "entity_type": e.entity_type, "entity_id": str(e.entity_id), "payload": e.payload,
                     "prev_hash": prev_hash, "hash": hashed})
        prev_hash = hashed
    _write_chained(session, size, rows)
    _notify_when_committed(session)


def _body_head(stamp: str, e: Event) -> bytes:
    """``canonical_json(_body(seq, e))`` up to where the sequence number goes: with sorted keys
    ``seq`` comes last (after ``payload``), so the whole body is this, ``,"seq":N`` and ``}``."""
    return canonical_json_strict({"occurred_at": stamp, "actor": e.actor, "action": e.action,
                                  "entity_type": e.entity_type, "entity_id": str(e.entity_id),
                                  "payload": e.payload})[:-1]


def _seal_when_committed(session: Session) -> None:
    # Read by ``_seal_after_commit``, registered once on every session (see outbox's listeners).
    session.info[_SEAL_AFTER_COMMIT] = True


def recent(session: Session, *, action: str, actor: str, since: datetime) -> list[datetime]:
    """When ``actor`` did ``action`` since ``since`` (sealed or still pending), oldest first:
    rate limits count here, so they hold across every API process."""
    times: list[datetime] = []
    for model in (AuditEvent, PendingAuditEvent):
        times += session.scalars(select(model.occurred_at).where(
            model.action == action, model.actor == actor, model.occurred_at >= since))
    return sorted(times)


def recorded(*, action: str, entity_id: Any) -> ColumnElement[bool]:
    """A clause: an ``action`` event about ``entity_id`` (a value or a correlated column) is
    in the log, sealed or still pending."""
    return or_(*(exists().where(model.action == action, model.entity_id == entity_id)
                 for model in (AuditEvent, PendingAuditEvent)))


def append(
    session: Session,
    *,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: str,
    payload: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append to the chain now (holding the writer lock until commit) and return the event."""
    return append_many(session, [
        {"actor": actor, "action": action, "entity_type": entity_type, "entity_id": entity_id, "payload": payload}
    ])[0]


def append_many(session: Session, entries: Sequence[dict[str, Any]]) -> list[AuditEvent]:
    """``append`` for several events at once (keys as ``append`` takes them), in order: one
    lock, one read of the chain's end, one multi-row insert and one extension of the tree."""
    lock_chain(session)
    seal_pending(session)
    _notify_when_committed(session)
    last = _last(session)
    size = last.seq if last else 0
    items: list[AuditEvent] = []
    for entry in entries:
        last = _chained(
            last, utcnow(), entry["actor"], entry["action"], entry["entity_type"], str(entry["entity_id"]),
            entry.get("payload") or {},
        )
        session.add(last)
        items.append(last)
    nodes.extend(session, size, [item.hash for item in items])
    session.flush()
    return items


# Events one sealing pass chains; a pass that finds this many has more behind it.
SEAL_PAGE = 5000


def seal_pending(session: Session, *, limit: int = SEAL_PAGE) -> int:
    """Move committed pending events into the chain; the caller holds (or takes) the lock."""
    lock_chain(session)
    return _seal(session, limit)


def seal_if_free(limit: int = SEAL_PAGE) -> int:
    """Seal in a transaction of its own, unless another sealer holds the lock right now."""
    return _seal_pass(limit) or 0


def _seal_pass(limit: int = SEAL_PAGE, on_read: Callable[[int], None] | None = None) -> int | None:
    """``seal_if_free``; None when another sealer held the lock. ``on_read`` is told how many
    pending events the pass took, before it chains them."""
    with get_sessionmaker()() as session:
        if not _try_lock_chain(session):
            return None
        sealed = _seal(session, limit, on_read)
        session.commit()
    if sealed:
        _notify_sealed()
    return sealed


_PENDING = PendingAuditEvent.__table__
_EVENTS = AuditEvent.__table__
_CHAIN_END = (select(_EVENTS.c.seq).order_by(_EVENTS.c.seq.desc()).limit(1).scalar_subquery(),
              select(_EVENTS.c.hash).order_by(_EVENTS.c.seq.desc()).limit(1).scalar_subquery())


def _seal(session: Session, limit: int, on_read: Callable[[int], None] | None = None) -> int:
    """Chain the oldest pending events. Three statements under the lock, with no ORM object:
    one reads the pending events and the chain's end, one the tree's frontier, and one writes
    the chained events and tree nodes and deletes the pending rows."""
    pending = session.execute(
        select(_PENDING.c.id, _PENDING.c.occurred_at, _PENDING.c.actor, _PENDING.c.action, _PENDING.c.entity_type,
               _PENDING.c.entity_id, _PENDING.c.payload, *_CHAIN_END).order_by(_PENDING.c.id).limit(limit)).all()
    if on_read is not None:
        on_read(len(pending))
    if not pending:
        return 0
    size, prev_hash = pending[0][-2] or 0, pending[0][-1] or GENESIS_HASH
    rows: list[dict[str, Any]] = []
    for seq, item in enumerate(pending, start=size + 1):
        hashed = chain_hash(prev_hash, _body(seq, item))
        rows.append({"seq": seq, "occurred_at": item.occurred_at, "actor": item.actor, "action": item.action,
                     "entity_type": item.entity_type, "entity_id": item.entity_id, "payload": item.payload,
                     "prev_hash": prev_hash, "hash": hashed})
        prev_hash = hashed
    _write_chained(session, size, rows, [p.id for p in pending])
    return len(pending)


def _write_chained(session: Session, size: int, rows: list[dict[str, Any]], sealed: Sequence[Any] = ()) -> None:
    """Write chained events ``size + 1 ..`` with the tree nodes they complete, and delete the
    pending rows ``sealed`` they were; one statement on PostgreSQL in the usual case."""
    hashes = [row["hash"] for row in rows]
    tree = nodes.completed_rows(session, size, hashes)
    if tree is None:  # the stored tree lags the chain: caught up the slow way, then extended
        insert_rows(session, _EVENTS, rows)
        nodes.extend(session, size, hashes)
        if sealed:
            session.execute(delete(PendingAuditEvent).where(PendingAuditEvent.id.in_(list(sealed))))
    else:
        write_together(session, [(_EVENTS, rows), (AuditTreeNode.__table__, tree)],
                       delete=(_PENDING, "id", sealed))


def _last(session: Session) -> AuditEvent | None:
    return session.scalar(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1))


def _chained(
    last: AuditEvent | None, occurred_at: datetime, actor: str, action: str, entity_type: str, entity_id: str,
    payload: dict[str, Any],
) -> AuditEvent:
    """The next event of the chain after ``last``, with its hash; not added to any session."""
    seq, prev_hash = (last.seq + 1, last.hash) if last else (1, GENESIS_HASH)
    item = AuditEvent(
        seq=seq, occurred_at=occurred_at, actor=actor, action=action, entity_type=entity_type,
        entity_id=entity_id, payload=payload, prev_hash=prev_hash,
    )
    item.hash = chain_hash(prev_hash, event_body(item))
    return item


class _Coalescer:
    """One sealer per process at a time. A commit that finds one running leaves it a note to
    make another pass instead of queueing on the lock, so under load one transaction seals
    the events of many requests, while a lone request still sees its event chained at once.

    A pass that seals a full page (``SEAL_PAGE``) leaves events behind it, and the sealer keeps
    going until a pass finds fewer. Meanwhile intake waits (``wait_while_behind``) before it
    writes more: the sealer is one thread among every request's, and under bulk load its share
    of the GIL sealed a few hundred events a second while intake committed thousands, so the
    chain (and the webhooks that follow it) fell behind by tens of thousands of events and
    stayed behind for as long as the load lasted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)
        self._running = False
        self._again = False
        self._behind = False

    def note(self) -> bool:
        """Leave a running sealer a note to make another pass; False when none is running (the
        caller then runs one itself)."""
        with self._lock:
            if self._running:
                self._again = True
            return self._running

    def wait_while_behind(self, timeout: float) -> bool:
        """Block while this process's sealer is working through a backlog (its last pass sealed
        a full page), at most ``timeout`` seconds; True when it had to wait."""
        with self._lock:
            if not (self._running and self._behind):
                return False
            self._settled.wait_for(lambda: not (self._running and self._behind), timeout)
            return True

    def _took(self, count: int) -> None:
        # Known as soon as the pass has read its page: intake starts waiting now, not once the
        # pass (slow under load, for want of the GIL) has finished.
        with self._lock:
            self._behind = count >= SEAL_PAGE

    def run(self) -> None:
        with self._lock:
            if self._running:
                self._again = True
                return
            self._running = True
        try:
            while True:
                sealed = _seal_pass(SEAL_PAGE, self._took)
                with self._lock:
                    # Another process's sealer holds the chain: stop rather than try again at once.
                    # Under load every commit leaves a note, so retrying made each process spin
                    # on the lock (a transaction per try) while the other sealed; what is left
                    # pending goes with the holder's next pass, this process's next commit, or
                    # the periodic sealer.
                    self._behind = sealed is not None and sealed >= SEAL_PAGE
                    if not self._behind:
                        self._settled.notify_all()
                    if sealed is None or not (self._again or self._behind):
                        self._again = False
                        return
                    self._again = False
        except Exception:  # the change is committed; the periodic sealer will chain its event
            log.exception("sealing audit events after commit failed")
        finally:
            with self._lock:
                self._running = self._behind = False
                self._settled.notify_all()


# How long intake waits at most for this process's sealer to work through a backlog (it then
# goes ahead: the events are committed as pending either way, and nothing is refused for it).
SEALER_PATIENCE_SECONDS = 30.0


_coalescer = _Coalescer()


# Set by the HTTP layer for the length of a request (``app.audit.router.SealAfterResponse``):
# a commit inside it only marks that events are waiting, and the sealer runs once the response
# has been sent, so no client waits on the chain lock or on sealing other requests' events.
# Nothing is lost if the process dies between the two: the events are committed as pending and
# the periodic sealer chains them.
deferred_sealing: ContextVar[list[bool] | None] = ContextVar("unlearnd_audit_deferred_sealing", default=None)


def seal_committed() -> None:
    """Seal what this process's commits left pending (one coalesced pass; failures are logged)."""
    _coalescer.run()


def wait_while_sealing_behind() -> bool:
    """Called by intake before it writes: wait while this process's sealer has a backlog to
    work through (see ``_Coalescer``), so that under sustained load the chain keeps up with
    what is committed; True when it waited."""
    return _coalescer.wait_while_behind(SEALER_PATIENCE_SECONDS)


def noted_to_sealer() -> bool:
    """Hand what this process's commits left pending to the sealer already running in it, which
    makes one more pass for them; False when none is running (call ``seal_committed``). Cheap
    enough for an event loop: under load most requests seal nothing themselves."""
    return _coalescer.note()


@event.listens_for(Session, "after_commit")
def _seal_after_commit(session: Session) -> None:
    if not session.info.pop(_SEAL_AFTER_COMMIT, None):
        return
    waiting = deferred_sealing.get()
    if waiting is not None:
        waiting[0] = True
        return
    _coalescer.run()


def _notify_when_committed(session: Session) -> None:
    if not session.info.get(_NOTIFY_AFTER_COMMIT):
        session.info[_NOTIFY_AFTER_COMMIT] = True
        event.listen(session, "after_commit", _notify_after_commit, once=True)
        event.listen(session, "after_rollback", _forget_notify, once=True)


def _notify_after_commit(session: Session) -> None:
    session.info.pop(_NOTIFY_AFTER_COMMIT, None)
    if event.contains(session, "after_rollback", _forget_notify):
        event.remove(session, "after_rollback", _forget_notify)
    _notify_sealed()


def _forget_notify(session: Session) -> None:
    session.info.pop(_NOTIFY_AFTER_COMMIT, None)
    if event.contains(session, "after_commit", _notify_after_commit):
        event.remove(session, "after_commit", _notify_after_commit)


@event.listens_for(Session, "after_rollback")
def _forget_seal(session: Session) -> None:
    session.info.pop(_SEAL_AFTER_COMMIT, None)
