"""Randomised tampering with a copy of the log: every single-row edit, every deletion, swaps,
a re-chained rewrite, and every truncation (given a head recorded out of band) is caught.

SQLite stands in for "PostgreSQL with its triggers dropped": the rows are rewritten directly
in the file, below the application, as an attacker with the database would.
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.audit.keys import ensure_current_key
from app.audit.models import AuditEvent
from app.audit.service import chain_hash
from app.audit.tree import sign_tree_head
from app.audit.verify import LogVerification, verify_log
from app.core.database import get_engine, make_engine, session_scope

EVENTS = 30
SIGNED_AT = 15
COLUMNS = ("seq", "occurred_at", "actor", "action", "entity_type", "entity_id", "payload", "prev_hash", "hash")


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
def log(backend, env) -> tuple[Path, str]:
    """A log of EVENTS events with a signed tree head at SIGNED_AT; returns the file and the
    chain head an auditor wrote down at the end."""
    rng = random.Random(1)
    with session_scope() as session:
        for _ in range(SIGNED_AT - 1):
            audit.record(
                session, actor=f"client-{rng.randrange(3)}", action=rng.choice(["a.made", "b.moved", "c.gone"]),
                entity_type="thing", entity_id=str(rng.randrange(10**6)), payload={"n": rng.random(), "k": [1, 2]},
            )
    with session_scope() as session:
        ensure_current_key(session)  # the key's registration is event number SIGNED_AT
    with session_scope() as session:
        assert sign_tree_head(session).tree_size == SIGNED_AT
    with session_scope() as session:
        for n in range(EVENTS - SIGNED_AT):
            audit.record(session, actor="worker", action="d.done", entity_type="thing", entity_id=str(n))
    with session_scope() as session:
        head = session.scalar(select(AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1))
    path = Path(env["UNLEARND_DATABASE_URL"].removeprefix("sqlite:///"))
    get_engine().dispose()
    with sqlite3.connect(path) as connection:
        # Fold the write-ahead log into the file, so a plain copy holds every row.
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path, head


def _verify_copy(source: Path, tmp_path: Path, tamper: Callable[[sqlite3.Connection], None], **kwargs) -> LogVerification:
    copy = tmp_path / f"tampered-{random.random()}.sqlite3"
    shutil.copy(source, copy)
    with sqlite3.connect(copy) as connection:
        tamper(connection)
    engine = make_engine(f"sqlite:///{copy}")
    try:
        with Session(engine) as session:
            return verify_log(session, **kwargs)
    finally:
        engine.dispose()
        copy.unlink()


def _edit(seq: int, column: str) -> Callable[[sqlite3.Connection], None]:
    changes = {
        "seq": "seq + 1000",
        "occurred_at": "datetime(occurred_at, '+1 second')",
        "payload": """json_set(payload, '$.n', 0.5)""",
        "prev_hash": "lower(hex(randomblob(32)))",
        "hash": "lower(hex(randomblob(32)))",
    }
    change = changes.get(column, f"{column} || 'x'")
    return lambda c: c.execute(f"UPDATE audit_events SET {column} = {change} WHERE seq = ?", (seq,))


def _swap(first: int, second: int) -> Callable[[sqlite3.Connection], None]:
    def tamper(c: sqlite3.Connection) -> None:
        c.execute("UPDATE audit_events SET seq = -1 WHERE seq = ?", (first,))
        c.execute("UPDATE audit_events SET seq = ? WHERE seq = ?", (first, second))
        c.execute("UPDATE audit_events SET seq = ? WHERE seq = -1", (second,))

    return tamper


def test_untouched_copy_verifies(log, tmp_path):
    path, head = log
    result = _verify_copy(path, tmp_path, lambda c: None, expected_head=head)
    assert result.ok, result.failure
    assert (result.events_checked, result.tree_heads_checked) == (EVENTS, 1)


@pytest.mark.slow  # verifies a copy per edited cell
def test_every_single_row_edit_is_detected(log, tmp_path):
    path, _ = log
    for seq in range(1, EVENTS + 1):
        for column in COLUMNS:
            result = _verify_copy(path, tmp_path, _edit(seq, column))
            assert not result.ok, f"edit of {column} in event {seq} went unnoticed"
            assert result.failed_seq is not None and result.failed_seq <= seq + 1, (column, seq, result)


def test_every_deletion_is_detected_given_the_expected_head(log, tmp_path):
    path, head = log
    for seq in range(1, EVENTS + 1):
        result = _verify_copy(path, tmp_path, lambda c, s=seq: c.execute("DELETE FROM audit_events WHERE seq = ?", (s,)),
                              expected_head=head)
        assert not result.ok, f"deleting event {seq} went unnoticed"


def test_random_reorderings_are_detected(log, tmp_path):
    path, _ = log
    rng = random.Random(2)
    pairs = {tuple(sorted(rng.sample(range(1, EVENTS + 1), 2))) for _ in range(40)} | {(n, n + 1) for n in range(1, EVENTS)}
    for first, second in sorted(pairs):
        result = _verify_copy(path, tmp_path, _swap(first, second))
        assert not result.ok, f"swapping events {first} and {second} went unnoticed"
        assert result.failed_seq == first


def test_every_truncation_is_detected_given_the_expected_head(log, tmp_path):
    path, head = log
    for keep in range(0, EVENTS):
        cut = lambda c, k=keep: c.execute("DELETE FROM audit_events WHERE seq > ?", (k,))  # noqa: E731
        assert not _verify_copy(path, tmp_path, cut, expected_head=head).ok, f"truncation to {keep} went unnoticed"
        # Without the out-of-band head, only the signed head catches a cut below it.
        assert _verify_copy(path, tmp_path, cut).ok is (keep >= SIGNED_AT)


def test_a_rechained_rewrite_is_caught_by_the_signed_head_or_the_expected_head(log, tmp_path):
    """An attacker who edits an event and recomputes every later hash leaves a valid chain."""
    path, head = log

    def rewrite_from(seq: int) -> Callable[[sqlite3.Connection], None]:
        def tamper(c: sqlite3.Connection) -> None:
            c.execute("UPDATE audit_events SET actor = 'mallory' WHERE seq = ?", (seq,))
            prev = c.execute("SELECT hash FROM audit_events WHERE seq = ?", (seq - 1,)).fetchone()
            prev_hash = prev[0] if prev else "0" * 64
            rows = c.execute(f"SELECT {', '.join(COLUMNS[:7])} FROM audit_events WHERE seq >= ? ORDER BY seq", (seq,))
            for row in rows.fetchall():
                body = dict(zip(COLUMNS[:7], row, strict=True))
                body["payload"] = json.loads(body["payload"])
                body["occurred_at"] = body["occurred_at"].replace(" ", "T") + "+00:00"
                new_hash = chain_hash(prev_hash, body)
                c.execute("UPDATE audit_events SET prev_hash = ?, hash = ? WHERE seq = ?", (prev_hash, new_hash, body["seq"]))
                prev_hash = new_hash

        return tamper

    for seq in (1, 7, SIGNED_AT, SIGNED_AT + 1, EVENTS):
        chain_only = _verify_copy(path, tmp_path, rewrite_from(seq))
        if seq <= SIGNED_AT:
            assert not chain_only.ok and "tree head" in chain_only.failure
        else:
            assert chain_only.ok, "the rewrite should produce a self-consistent chain"
        assert not _verify_copy(path, tmp_path, rewrite_from(seq), expected_head=head).ok


def test_forged_tree_heads_are_detected(log, tmp_path):
    path, _ = log
    for change in ("root_hash = lower(hex(randomblob(32)))", "tree_size = tree_size - 1", "signed_at = datetime(signed_at, '+1 second')",
                   "signature = lower(hex(randomblob(64)))"):
        result = _verify_copy(path, tmp_path, lambda c, ch=change: c.execute(f"UPDATE audit_tree_heads SET {ch}"))
        assert not result.ok, change
