"""End-to-end check of the audit log: the chain link by link, then every signed tree head.

Catches an edited, deleted, inserted or reordered row (the chain), a log rewritten from
some point on and re-chained (the signed heads no longer match), and a truncated tail
(a head or an expected chain head recorded out of band that the log no longer reaches).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.keys import public_keys_by_id
from app.audit.models import AuditEvent, TreeHead
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


def _check_heads(session: Session, hashes: list[str]) -> tuple[int, str | None, int | None]:
    keys = public_keys_by_id(session)
    tree = [event_leaf(h) for h in hashes]
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
        if head.tree_size > len(tree):
            return (
                checked,
                f"signed tree head covers {head.tree_size} events but the log verifies only up to "
                f"{len(tree)}: truncated or broken",
                len(tree) + 1,
            )
        if head.tree_size not in roots:
            roots[head.tree_size] = merkle.root(tree[: head.tree_size]).hex()
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
    heads_checked = 0
    if failure is None:
        heads_checked, failure, failed_seq = _check_heads(session, hashes)
    if failure is None and expected_head is not None and expected_head.lower() not in set(hashes):
        failure = f"expected head {expected_head} is not in the log: it was truncated or rewritten"
    return LogVerification(
        ok=failure is None, events_checked=len(hashes), head_seq=head_seq, head_hash=head_hash,
        tree_heads_checked=heads_checked, failure=failure, failed_seq=failed_seq,
    )
