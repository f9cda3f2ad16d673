"""Many processes append at once (API-like and worker-like writers, some signing tree heads):
the chain never forks, every signed head matches, and the served proofs check out."""

from __future__ import annotations

import multiprocessing
import random

import pytest
from sqlalchemy import func, select

from app.audit.models import AuditEvent, TreeHead
from app.audit.tree import consistency_proof, inclusion_proof, sign_tree_head
from app.audit.verify import verify_log
from app.core import merkle
from app.core.database import session_scope

WRITERS = 4
EVENTS_PER_WRITER = 500


def _write(writer: int, count: int, start) -> None:  # noqa: ANN001 - a multiprocessing barrier
    """Runs in a fresh process: settings come from the test's environment variables."""
    from app.audit import service as audit
    from app.audit.tree import sign_tree_head as sign

    start.wait(120)  # all writers begin together, whatever their import time
    actor = "api" if writer % 2 else "worker"
    for n in range(count):
        with session_scope() as session:
            audit.record(
                session, actor=f"{actor}-{writer}", action="thing.changed", entity_type="thing",
                entity_id=f"{writer}-{n}", payload={"n": n, "writer": writer},
            )
        if writer == 0 and n % 100 == 99:
            with session_scope() as session:
                sign(session)


@pytest.mark.slow  # concurrent writer processes (spawned)
@pytest.mark.timeout(240)
def test_concurrent_writers_keep_one_verifiable_chain(env, backend):
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(WRITERS)
    processes = [context.Process(target=_write, args=(w, EVENTS_PER_WRITER, start)) for w in range(WRITERS)]
    try:
        for process in processes:
            process.start()
        for process in processes:
            process.join(200)
        assert [process.exitcode for process in processes] == [0] * WRITERS
    finally:
        # A writer that failed breaks the barrier for the rest; none may outlive the test.
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(30)
    total = WRITERS * EVENTS_PER_WRITER
    # A writer whose sealer found the lock taken left its events pending for the periodic
    # sealer (by design); signing a head seals whatever is still pending first.
    with session_scope() as session:
        final = sign_tree_head(session)
    with session_scope() as session:
        written = select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "thing.changed")
        assert session.scalar(written) == total
        # Plus the one registration of the signing key, whichever writer signed first.
        assert session.scalar(select(func.count()).select_from(AuditEvent)) == total + 1
    # Verification reads the committed log in a snapshot of its own.
    with session_scope() as session:
        result = verify_log(session)
        assert result.ok, result.failure
        assert (result.events_checked, result.head_seq) == (total + 1, total + 1)
        assert result.tree_heads_checked == session.scalar(select(func.count()).select_from(TreeHead)) >= 6
        actors = list(session.scalars(select(AuditEvent.actor).order_by(AuditEvent.seq)))
        switches = sum(1 for a, b in zip(actors, actors[1:], strict=False) if a != b)
        assert switches > WRITERS, "the writers never overlapped, so nothing concurrent was tested"

        rng = random.Random(7)
        root = bytes.fromhex(final.root_hash)
        for seq in rng.sample(range(1, total + 2), 25):
            proof = inclusion_proof(session, seq, final.tree_size)
            merkle.verify_inclusion(
                merkle.leaf_hash(bytes.fromhex(proof.event_hash)), proof.leaf_index, proof.tree_size,
                [bytes.fromhex(p) for p in proof.audit_path], root,
            )
        heads = list(session.scalars(select(TreeHead).order_by(TreeHead.tree_size)))
        for earlier in heads[:-1]:
            proof = consistency_proof(session, earlier.tree_size, final.tree_size)
            merkle.verify_consistency(
                earlier.tree_size, final.tree_size, bytes.fromhex(earlier.root_hash), root,
                [bytes.fromhex(p) for p in proof.proof],
            )


def test_verify_reads_one_snapshot_while_the_log_grows(env, monkeypatch):
    """A head signed between reading the events and reading the heads used to look like a
    truncated log (issue 21). Here one lands exactly there, committed by another session."""
    from app.audit import service as audit
    from app.audit import verify as verify_module
    from app.core.database import session_scope

    for n in range(5):
        with session_scope() as session:
            audit.append(session, actor="test", action="test.event", entity_type="t", entity_id=str(n), payload={})
    with session_scope() as session:
        sign_tree_head(session)
    walk = verify_module._walk_chain
    grown = []

    def walk_then_grow(session):
        result = walk(session)
        with session_scope() as other:
            audit.append(other, actor="test", action="test.event", entity_type="t", entity_id="late", payload={})
        with session_scope() as other:
            grown.append(sign_tree_head(other).tree_size)
        return result

    monkeypatch.setattr(verify_module, "_walk_chain", walk_then_grow)
    with session_scope() as session:
        result = verify_log(session)
    assert grown and grown[0] > 5
    assert result.ok, result.failure
    assert result.tree_heads_checked == 1 and result.events_checked < grown[0]
    monkeypatch.undo()
    with session_scope() as session:
        assert verify_log(session).ok and verify_log(session).tree_heads_checked == 2
