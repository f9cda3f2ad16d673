"""``append_events``: a bulk intake's events chained in its own transaction, hashed from the
events as given, so what is stored must verify exactly as the sealer's events do."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from app.audit import service as audit
from app.audit.models import AuditEvent, PendingAuditEvent
from app.audit.verify import verify_log
from app.core.database import session_scope
from app.core.hashing import canonical_json

# Payloads whose canonical form is easy to get wrong: keys that sort around "seq" (inside the
# payload they must not move the event's own "seq"), non-ASCII text and keys, escapes, nesting,
# an integer past 64 bits, floats, empty containers, null.
AWKWARD_PAYLOADS = [
    {},
    {"seq": 0, "sequence": "s", "z": None, "a": [], "A": {}},
    {"名前": "Ünïcødé ✓", "emoji": "🔥", "quote": "\"'\\", "control": "\n\t\u0001\u2028"},
    {"big": 2**70, "negative": -1, "float": 0.1, "tiny": 1e-300, "whole": 2.0},
    {"nested": {"b": [1, {"d": "x", "c": [None, True, False]}], "a": {"z": 1, "y": 2}}},
    {"hashes": ["ab" * 32, "cd" * 32], "transitions": [[None, "received"], ["received", "completed"]]},
]


def _events(payloads: list[dict]) -> list[audit.Event]:
    return [audit.Event(actor="portal-1", action="request.received", entity_type="deletion_request",
                        entity_id=f"r-{n}", payload=payload) for n, payload in enumerate(payloads)]


def test_the_spliced_body_is_the_canonical_body():
    """Each body is encoded before the chain lock and only ``,"seq":N}`` is added under it: that
    must be byte for byte what ``canonical_json`` makes of the whole body, as verifiers do."""
    stamp = datetime(2026, 12, 3, 22, 0, 0, 123456, tzinfo=UTC)
    for seq in (1, 9, 10, 12345678901):
        for event in _events(AWKWARD_PAYLOADS):
            row = type("Row", (), {"occurred_at": stamp, **vars(event)})
            spliced = audit._body_head(stamp.isoformat(), event) + b',"seq":%d}' % seq
            assert spliced == canonical_json(audit._body(seq, row))


def test_appended_events_verify_on_both_databases(env, backend):
    with session_scope() as session:
        audit.append_events(session, _events(AWKWARD_PAYLOADS))
    with session_scope() as session:
        audit.append_events(session, _events(AWKWARD_PAYLOADS[::-1]))
    with session_scope() as session:
        result = verify_log(session)
        stored = session.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
    assert result.ok, result.failure
    assert result.events_checked == len(stored)
    assert [e.payload for e in stored if e.action == "request.received"] == AWKWARD_PAYLOADS + AWKWARD_PAYLOADS[::-1]


def test_events_pending_from_before_keep_their_place(env, backend):
    token = audit.deferred_sealing.set([False])  # committed, not sealed (a response not yet sent)
    try:
        with session_scope() as session:
            audit.record(session, actor="test", action="thing.done", entity_type="thing", entity_id="earlier")
    finally:
        audit.deferred_sealing.reset(token)
    with session_scope() as session:
        audit.append_events(session, _events([{"n": 1}, {"n": 2}]))
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(PendingAuditEvent)) == 0
        order = session.scalars(select(AuditEvent.entity_id).order_by(AuditEvent.seq)).all()
        assert verify_log(session).ok
    assert order[-3:] == ["earlier", "r-0", "r-1"]


def test_a_payload_json_cannot_hold_as_it_is_is_refused_before_anything_is_written(env):
    """A datetime would be hashed as one text and stored as another (a false tamper alarm later)."""
    with session_scope() as session:
        before = session.scalar(select(func.count()).select_from(AuditEvent))
    for payload in ({"at": datetime.now(UTC)}, {"ratio": float("nan")}):
        with pytest.raises((TypeError, ValueError)), session_scope() as session:
            audit.append_events(session, _events([{"fine": 1}, payload]))
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(AuditEvent)) == before
        assert verify_log(session).ok


def test_sealed_listeners_are_told_after_the_commit(env, monkeypatch):
    told: list[int] = []
    monkeypatch.setattr(audit, "_sealed_listeners", [lambda: told.append(1)])
    with session_scope() as session:
        audit.append_events(session, _events([{"n": 1}]))
        assert told == []
    assert told == [1]
