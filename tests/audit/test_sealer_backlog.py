"""The after-commit sealer works through a backlog, and intake waits while it does."""

from __future__ import annotations

import threading
import time

from sqlalchemy import func, select

from app.audit import service as audit
from app.audit.models import AuditEvent, PendingAuditEvent
from app.audit.verify import verify_log
from app.core.database import insert_rows, session_scope


def _pending_events(count: int) -> None:
    """Commit ``count`` events without sealing them (as a request's commit does before its
    response is sent)."""
    token = audit.deferred_sealing.set([False])
    try:
        for n in range(count):
            with session_scope() as session:
                audit.record(session, actor="test", action="thing.done", entity_type="thing", entity_id=str(n))
    finally:
        audit.deferred_sealing.reset(token)


def _counts() -> tuple[int, int]:
    with session_scope() as session:
        return (session.scalar(select(func.count()).select_from(AuditEvent)),
                session.scalar(select(func.count()).select_from(PendingAuditEvent)))


def _hold_the_sealer_after_its_first_page(monkeypatch) -> tuple[threading.Event, threading.Event]:
    """(set once the sealer has read its first page, set it to let the sealer go on)."""
    took_full_page, release = threading.Event(), threading.Event()
    took = audit._Coalescer._took

    def held_after_first_page(self: audit._Coalescer, count: int) -> None:
        took(self, count)
        if not took_full_page.is_set():
            took_full_page.set()
            assert release.wait(timeout=30)

    monkeypatch.setattr(audit._Coalescer, "_took", held_after_first_page)
    return took_full_page, release


def test_a_backlog_longer_than_a_page_is_chained_in_one_run(backend, env):
    # More than a page, committed in one transaction (as a bulk intake's or a burst's are).
    count = audit.SEAL_PAGE + 7
    token = audit.deferred_sealing.set([False])
    try:
        with session_scope() as session:
            table, rows = audit.pending_rows(session, [
                audit.Event(actor="test", action="thing.done", entity_type="thing", entity_id=str(n), payload={})
                for n in range(count)])
            insert_rows(session, table, rows)
    finally:
        audit.deferred_sealing.reset(token)
    audit.seal_committed()
    assert _counts() == (count, 0)  # not one page, the rest left for the periodic sealer
    with session_scope() as session:
        assert verify_log(session).ok


def test_intake_waits_while_the_sealer_is_behind(env, monkeypatch):
    monkeypatch.setattr(audit, "SEAL_PAGE", 2)
    _pending_events(6)
    took_full_page, release = _hold_the_sealer_after_its_first_page(monkeypatch)
    assert audit.wait_while_sealing_behind() is False  # no sealer running: nothing to wait for
    sealer = threading.Thread(target=audit.seal_committed)
    sealer.start()
    assert took_full_page.wait(timeout=30)

    waited: list[tuple[bool, float]] = []

    def intake() -> None:
        started = time.monotonic()
        waited.append((audit.wait_while_sealing_behind(), time.monotonic() - started))

    waiter = threading.Thread(target=intake)
    waiter.start()
    waiter.join(timeout=0.5)
    assert waiter.is_alive() and not waited  # held while the sealer has a full page in hand
    release.set()
    waiter.join(timeout=30)
    sealer.join(timeout=30)
    assert waited and waited[0][0] is True and waited[0][1] < 30
    assert _counts() == (6, 0)


def test_intake_goes_ahead_after_its_patience_runs_out(env, monkeypatch):
    monkeypatch.setattr(audit, "SEAL_PAGE", 2)
    monkeypatch.setattr(audit, "SEALER_PATIENCE_SECONDS", 0.2)
    _pending_events(4)
    took_full_page, release = _hold_the_sealer_after_its_first_page(monkeypatch)
    sealer = threading.Thread(target=audit.seal_committed)
    sealer.start()
    try:
        assert took_full_page.wait(timeout=30)
        started = time.monotonic()
        assert audit.wait_while_sealing_behind() is True
        assert 0.15 < time.monotonic() - started < 5  # waited, then went ahead: nothing is refused
    finally:
        release.set()
        sealer.join(timeout=30)
    assert _counts() == (4, 0)
