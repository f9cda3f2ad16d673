"""End-to-end check of the audit log: the chain link by link, then every signed tree head.

Catches an edited, deleted, inserted or reordered row (the chain), a log rewritten from
some point on and re-chained (the signed heads no longer match), and a truncated tail
(a head or an expected chain head recorded out of band that the log no longer reaches).
The stored Merkle tree that heads and proofs are served from is checked against a tree
recomputed from the events, over the part of the log that signed heads cover (beyond the
last head the events alone are the record; the next head signed commits to them).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.audit.keys import public_keys_by_id
from app.audit.models import AuditEvent, AuditTreeNode, TreeHead
from app.audit.proofs import event_leaf, verify_tree_head
from app.audit.service import GENESIS_HASH, chain_hash, event_body
from app.audit.tree import published_head
from app.core import merkle
from app.core.signing import SignatureInvalid

_BATCH = 2000


@dataclass(frozen=True)
class LogVerification:
    ok: bool
    events_checked: int
    head_seq: int
    head_hash: str
    tree_heads_checked: int
    failure: str | None = None
    failed_seq: int | None = None
    tree_nodes_checked: int = 0


def _walk_chain(session: Session) -> tuple[list[str], str | None, int | None]:
    """Event hashes in order up to the first broken link, and that link's description."""
    hashes: list[str] = []
    prev_hash = GENESIS_HASH
    for event in session.scalars(select(AuditEvent).order_by(AuditEvent.seq).execution_options(yield_per=_BATCH)):
        expected_seq = len(hashes) + 1
        if event.seq != expected_seq:
            return hashes, f"event {expected_seq} is missing (next stored event is {event.seq})", expected_seq
        if event.prev_hash != prev_hash:
            return hashes, f"event {event.seq} does not link to event {event.seq - 1} (prev_hash differs)", event.seq
        if chain_hash(event.prev_hash, event_body(event)) != event.hash:
            return hashes, f"event {event.seq} was altered: its content does not match its hash", event.seq
        hashes.append(event.hash)
        prev_hash = event.hash
    return hashes, None, None


def _check_stored_tree(session: Session, built: list[list[bytes]], covered: int) -> tuple[int, str | None, int | None]:
    """Every stored node over events 1..``covered`` equals the one recomputed from the events."""
    checked = 0
    for level, recomputed in enumerate(built):
        count = covered >> level
        if count == 0:
            break
        query = (
            select(AuditTreeNode.position, AuditTreeNode.hash)
            .where(AuditTreeNode.level == level, AuditTreeNode.position < count)
            .order_by(AuditTreeNode.position)
            .execution_options(yield_per=_BATCH)
        )
        expected_position = 0
        for position, value in session.execute(query):
            if position != expected_position:
                break
            if bytes(value) != recomputed[position]:
                return checked, (
                    f"stored Merkle tree node (level {level}, position {position}) does not match the events "
                    "it covers: the stored tree was altered"
                ), (position << level) + 1
            checked += 1
            expected_position += 1
        if expected_position != count:
            return checked, (
                f"stored Merkle tree node (level {level}, position {expected_position}) is missing"
            ), (expected_position << level) + 1
    return checked, None, None


def _root_from_levels(built: list[list[bytes]], tree_size: int) -> bytes:
    if tree_size == 0:
        return merkle.EMPTY_ROOT
    return merkle.fold_nodes([built[level][position] for level, position in merkle.range_nodes(0, tree_size)])


def _check_heads(session: Session, built: list[list[bytes]]) -> tuple[int, str | None, int | None]:
    keys = public_keys_by_id(session)
    size = len(built[0])
    roots: dict[int, str] = {}
    checked = 0
    for head in session.scalars(select(TreeHead).order_by(TreeHead.tree_size, TreeHead.id)):
        public_key = keys.get(head.key_id)
        if public_key is None:
            return checked, f"tree head at size {head.tree_size} names unknown key {head.key_id}", None
        try:
            verify_tree_head(published_head(head), public_key)
        except SignatureInvalid:
            return checked, f"tree head at size {head.tree_size} has a bad signature", None
        if head.tree_size > size:
            return (
                checked,
                f"signed tree head covers {head.tree_size} events but the log verifies only up to "
                f"{size}: truncated or broken",
                size + 1,
            )
        if head.tree_size not in roots:
            roots[head.tree_size] = _root_from_levels(built, head.tree_size).hex()
        if roots[head.tree_size] != head.root_hash:
            return checked, f"the log no longer matches the tree head signed at size {head.tree_size}", None
        checked += 1
    return checked, None, None


def verify_log(session: Session, *, expected_head: str | None = None) -> LogVerification:
    """``expected_head``: a chain hash recorded out of band (e.g. ``head_hash`` of a published
    tree head); the log must still contain it, which is how a cut-off tail is caught.

    Events and tree heads are read in one transaction of their own, REPEATABLE READ on
    PostgreSQL (on SQLite the caller's transaction holds the write lock, so nothing grows
    meanwhile): read in separate transactions, a head signed
    between the two reads covers events the walk never saw and reads as a truncated log."""
    engine = session.get_bind()
    if engine.dialect.name != "postgresql":
        return _verify(session, expected_head)
    with engine.connect() as connection:
        snapshot_connection = connection.execution_options(isolation_level="REPEATABLE READ")
        with snapshot_connection.begin(), Session(bind=snapshot_connection) as snapshot:
            return _verify(snapshot, expected_head)


def _verify(session: Session, expected_head: str | None) -> LogVerification:
    hashes, failure, failed_seq = _walk_chain(session)
    head_seq, head_hash = len(hashes), hashes[-1] if hashes else GENESIS_HASH
    heads_checked = nodes_checked = 0
    if failure is None:
        # Recomputed from the events alone: the reference for the heads and the stored tree.
        built = merkle.levels([event_leaf(h) for h in hashes])
        heads_checked, failure, failed_seq = _check_heads(session, built)
    if failure is None:
        signed = session.scalar(select(func.max(TreeHead.tree_size))) or 0
        nodes_checked, failure, failed_seq = _check_stored_tree(session, built, min(signed, len(hashes)))
    if failure is None and expected_head is not None and expected_head.lower() not in set(hashes):
        failure = f"expected head {expected_head} is not in the log: it was truncated or rewritten"
    return LogVerification(
        ok=failure is None, events_checked=len(hashes), head_seq=head_seq, head_hash=head_hash,
        tree_heads_checked=heads_checked, failure=failure, failed_seq=failed_seq, tree_nodes_checked=nodes_checked,
    )
