"""The stored audit tree: the same heads and proofs as the tree recomputed from the events,
kept consistent by concurrent writers, backfilled for an existing log, and checked by verify."""

from __future__ import annotations

import json
import threading
import uuid

import psycopg
import pytest
from sqlalchemy import func, select, text

from app.audit import nodes
from app.audit import service as audit
from app.audit.models import AuditTreeNode
from app.audit.service import GENESIS_HASH, chain_hash
from app.audit.tree import consistency_proof, inclusion_proof, leaves, log_size, sign_tree_head
from app.audit.verify import verify_log
from app.core import merkle, migrate
from app.core.database import get_engine, session_scope
from tests.conftest import PG_ADMIN_DSN, RUN_TAG, _pg_url


def _record(count: int, *, per_transaction: int = 1, actor: str = "test") -> None:
    for start in range(0, count, per_transaction):
        with session_scope() as session:
            for n in range(start, min(count, start + per_transaction)):
                audit.record(session, actor=actor, action="thing.done", entity_type="thing", entity_id=str(n))


def _node_count(size: int) -> int:
    return 2 * size - bin(size).count("1")


def _assert_matches_reference(session, size: int, sample: list[int] | None = None) -> None:
    reference = leaves(session, size)
    assert nodes.root(session, size) == merkle.root(reference)
    for seq in sample if sample is not None else range(1, size + 1):
        proof = inclusion_proof(session, seq, size)
        assert [bytes.fromhex(p) for p in proof.audit_path] == merkle.inclusion_proof(reference, seq - 1)
        assert bytes.fromhex(proof.root_hash) == merkle.root(reference)
    for first in sample if sample is not None else range(1, size + 1):
        proof = consistency_proof(session, first, size)
        assert [bytes.fromhex(p) for p in proof.proof] == merkle.consistency_proof(reference, first)
        assert bytes.fromhex(proof.first_root) == merkle.root(reference[:first])


def test_stored_tree_matches_the_events_at_every_size(backend, env):
    """One event per transaction, batches sealed together, and ``append``."""
    for batch in (1, 1, 1, 5, 1, 2, 8, 3):
        _record(batch, per_transaction=batch)
        with session_scope() as session:
            _assert_matches_reference(session, log_size(session))
    with session_scope() as session:
        for n in range(4):
            audit.append(session, actor="test", action="thing.anchored", entity_type="thing", entity_id=str(n))
    _record(11)
    with session_scope() as session:
        size = log_size(session)
        assert size == 37
        assert session.scalar(select(func.count()).select_from(AuditTreeNode)) == _node_count(size)
        for tree_size in range(1, size + 1):
            assert nodes.root(session, tree_size) == merkle.root(leaves(session, tree_size)), tree_size
        _assert_matches_reference(session, size)
        head = sign_tree_head(session)
        assert bytes.fromhex(head.root_hash) == merkle.root(leaves(session, head.tree_size))
    with session_scope() as session:
        result = verify_log(session)
    assert result.ok, result.failure
    assert result.tree_nodes_checked == _node_count(head.tree_size)


def test_concurrent_writers_leave_one_consistent_tree(env):
    """Two sessions appending at once (record + seal after commit, and append in the caller's
    transaction) serialise on the chain lock: the tree is the tree of the chain."""
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def writer(name: str, anchored: bool) -> None:
        try:
            start.wait(timeout=30)
            for n in range(25):
                with session_scope() as session:
                    audit.record(session, actor=name, action="thing.done", entity_type="thing", entity_id=str(n))
                    if anchored and n % 3 == 0:
                        audit.append(session, actor=name, action="thing.anchored", entity_type="thing", entity_id=str(n))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(f"writer-{i}", i == 1)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    audit.seal_if_free()
    with session_scope() as session:
        head = sign_tree_head(session)
    assert head.tree_size == 50 + 9
    with session_scope() as session:
        # signing registered the key: one more event after the head
        assert session.scalar(select(func.count()).select_from(AuditTreeNode)) == _node_count(log_size(session))
        _assert_matches_reference(session, head.tree_size, sample=[1, 2, 17, 32, 33, 58, 59])
    with session_scope() as session:
        result = verify_log(session)
    assert result.ok, result.failure
    assert result.tree_nodes_checked == _node_count(head.tree_size)


def _tamper(statement: str) -> None:
    """As someone with DDL rights would: past the append-only trigger, in one transaction."""
    with get_engine().begin() as connection:
        connection.execute(text("ALTER TABLE audit_tree_nodes DISABLE TRIGGER audit_tree_nodes_no_update_delete"))
        connection.execute(text(statement))
        connection.execute(text("ALTER TABLE audit_tree_nodes ENABLE TRIGGER audit_tree_nodes_no_update_delete"))


@pytest.mark.parametrize(
    ("statement", "message", "failed_seq"),
    [
        ("UPDATE audit_tree_nodes SET hash = sha256(hash) WHERE level = 0 AND position = 6", "does not match", 7),
        ("UPDATE audit_tree_nodes SET hash = sha256(hash) WHERE level = 2 AND position = 1", "does not match", 5),
        ("UPDATE audit_tree_nodes SET hash = sha256(hash) WHERE level = 4 AND position = 0", "does not match", 1),
        ("DELETE FROM audit_tree_nodes WHERE level = 1 AND position = 3", "missing", 7),
    ],
)
def test_a_tampered_stored_node_is_detected(env, statement, message, failed_seq):
    _record(20, per_transaction=4)
    with session_scope() as session:
        sign_tree_head(session)
    with session_scope() as session:
        assert verify_log(session).ok
    _tamper(statement)
    with session_scope() as session:
        result = verify_log(session)
    assert not result.ok
    assert "stored Merkle tree node" in result.failure and message in result.failure, result.failure
    assert result.failed_seq == failed_seq


@pytest.mark.parametrize(
    "statement",
    ["UPDATE audit_tree_nodes SET hash = sha256(hash)", "DELETE FROM audit_tree_nodes", "TRUNCATE audit_tree_nodes"],
)
def test_stored_nodes_are_append_only(env, statement):
    _record(3)
    with pytest.raises(Exception, match="append-only"), get_engine().begin() as connection:
        connection.execute(text(statement))


def test_a_lagging_tree_is_caught_up_by_the_next_append(env):
    """Idempotent lazy backfill: nodes missing at the end of the tree are rebuilt from the events."""
    _record(13, per_transaction=3)
    _tamper("DELETE FROM audit_tree_nodes WHERE (position + 1) * (1::bigint << level) > 5")  # a tree of 5 leaves
    _record(2)
    with session_scope() as session:
        assert nodes.stored_size(session) == 15
        assert session.scalar(select(func.count()).select_from(AuditTreeNode)) == _node_count(15)
        _assert_matches_reference(session, 15)


@pytest.mark.slow  # every migration, on a database of its own
def test_migration_backfills_the_tree_of_an_existing_log(env, monkeypatch):
    """A log written before migration 0031 gets its whole tree, and then grows it."""
    from tests.conftest import reset_caches

    name = f"{RUN_TAG}_backfill_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = _pg_url(name)
    try:
        migrate.upgrade(url, "0030")  # the revision before the stored tree
        prev_hash, hashes = GENESIS_HASH, []
        with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as connection:
            for seq in range(1, 24):
                body = {"seq": seq, "occurred_at": "2026-01-01T00:00:00+00:00", "actor": "old", "action": "thing.done",
                        "entity_type": "thing", "entity_id": str(seq), "payload": {"n": seq}}
                event_hash = chain_hash(prev_hash, body)
                connection.execute(
                    "INSERT INTO audit_events (seq, occurred_at, actor, action, entity_type, entity_id, payload, "
                    "prev_hash, hash) VALUES (%s, %s, 'old', 'thing.done', 'thing', %s, %s, %s, %s)",
                    (seq, body["occurred_at"], str(seq), json.dumps({"n": seq}), prev_hash, event_hash),
                )
                prev_hash = event_hash
                hashes.append(event_hash)
        migrate.upgrade(url)
        monkeypatch.setenv("UNLEARND_DATABASE_URL", url)
        reset_caches()
        with session_scope() as session:
            assert nodes.stored_size(session) == 23
            assert session.scalar(select(func.count()).select_from(AuditTreeNode)) == _node_count(23)
            assert nodes.root(session, 23) == merkle.root([merkle.leaf_hash(bytes.fromhex(h)) for h in hashes])
            audit.append(session, actor="new", action="thing.done", entity_type="thing", entity_id="24")
        with session_scope() as session:
            _assert_matches_reference(session, 24)
        reset_caches()
    finally:
        reset_caches()
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
