"""The Merkle tree over the audit chain: signed tree heads and the proofs served from them.

The tree of size n has the first n events as leaves (in ``seq`` order). Writers append
under one lock and commit in order, so every size up to the last committed ``seq`` is a
complete prefix, and a head signed at size n stays valid for as long as the log is intact.
Heads and proofs are folded from the stored tree (``app.audit.nodes``): O(log n) reads each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.audit import checkpoint, nodes
from app.audit.keys import ensure_current_key, published_keys
from app.audit.models import AuditEvent, TreeHead
from app.audit.proofs import event_leaf, tree_head_statement
from app.audit.service import GENESIS_HASH, seal_pending
from app.core import merkle
from app.core.database import utcnow
from app.core.errors import Conflict, InvalidInput, NotFound


@dataclass(frozen=True)
class InclusionProof:
    seq: int
    leaf_index: int
    tree_size: int
    event_hash: str
    audit_path: list[str]
    root_hash: str


@dataclass(frozen=True)
class ConsistencyProof:
    first_size: int
    second_size: int
    first_root: str
    second_root: str
    proof: list[str]


def log_size(session: Session) -> int:
    return session.scalar(select(func.coalesce(func.max(AuditEvent.seq), 0))) or 0


def leaves(session: Session, tree_size: int) -> list[bytes]:
    """Every leaf of the tree of ``tree_size``, read from the events: the reference the
    stored tree (``app.audit.nodes``) is checked against; heads and proofs do not use it."""
    hashes = list(session.scalars(select(AuditEvent.hash).where(AuditEvent.seq <= tree_size).order_by(AuditEvent.seq)))
    if len(hashes) != tree_size:
        raise Conflict(f"the audit log has {len(hashes)} events up to seq {tree_size}; run `unlearnd audit verify`")
    return [event_leaf(h) for h in hashes]


def published_head(head: TreeHead) -> dict[str, Any]:
    """The tree head as published and as its signature covers it."""
    return {
        "tree_size": head.tree_size,
        "root_hash": head.root_hash,
        "signed_at": head.signed_at.astimezone(UTC).isoformat(),
        "key_id": head.key_id,
        "signature": head.signature,
    }


def head_hash(session: Session, tree_size: int) -> str:
    """Chain hash of the last event in a tree of ``tree_size``: what to keep out of band."""
    if tree_size == 0:
        return GENESIS_HASH
    return session.scalar(select(AuditEvent.hash).where(AuditEvent.seq == tree_size)) or GENESIS_HASH


def sign_tree_head(session: Session) -> TreeHead:
    """Sign the tree as it stands in this transaction, after chaining every committed pending
    event (the writer lock is then held to commit, so the signed size is a complete prefix)."""
    seal_pending(session)
    signer = ensure_current_key(session)
    size = log_size(session)
    head = TreeHead(
        tree_size=size, root_hash=nodes.root(session, size).hex(), signed_at=utcnow(), key_id=signer.key_id,
    )
    statement = tree_head_statement(
        tree_size=head.tree_size, root_hash=head.root_hash,
        signed_at=head.signed_at.astimezone(UTC).isoformat(), key_id=head.key_id,
    )
    head.signature = signer.sign(statement)
    session.add(head)
    session.flush()
    return head


def sign_tree_head_if_grown(session: Session) -> TreeHead | None:
    """The periodic publication: a new head only when events were added since the last one."""
    latest = latest_tree_head(session)
    if latest is not None and latest.tree_size >= log_size(session):
        return None
    return sign_tree_head(session)


def latest_tree_head(session: Session) -> TreeHead | None:
    return session.scalar(select(TreeHead).order_by(TreeHead.tree_size.desc(), TreeHead.id.desc()).limit(1))


def require_latest_tree_head(session: Session) -> TreeHead:
    head = latest_tree_head(session)
    if head is None:
        raise NotFound("no tree head has been signed yet; POST /v1/audit/tree-heads signs one")
    return head


def _tree_size_for(session: Session, tree_size: int | None, *, covering: int) -> int:
    size = log_size(session)
    if tree_size is None:
        tree_size = require_latest_tree_head(session).tree_size
        if covering > tree_size:
            raise Conflict(
                f"event {covering} is newer than the latest signed tree head ({tree_size}); "
                "POST /v1/audit/tree-heads signs a new one", field="tree_size",
            )
    if not 1 <= tree_size <= size:
        raise InvalidInput(f"tree_size must be between 1 and the log size {size}", field="tree_size")
    return tree_size


def _event_hash(seq: int) -> Any:
    return select(AuditEvent.hash).where(AuditEvent.seq == seq).scalar_subquery()


def _log_size() -> Any:
    return select(func.coalesce(func.max(AuditEvent.seq), 0)).scalar_subquery()


def _explicit_size(tree_size: int, size: int) -> None:
    if not 1 <= tree_size <= size:
        raise InvalidInput(f"tree_size must be between 1 and the log size {size}", field="tree_size")


def inclusion_proof(session: Session, seq: int, tree_size: int | None = None) -> InclusionProof:
    """Audit path of event ``seq`` in the tree of ``tree_size`` events (default: latest signed head).
    One statement reads the event's hash, the log's size and every node of the path and root."""
    head_size = None
    if tree_size is None:
        if session.scalar(select(AuditEvent.seq).where(AuditEvent.seq == seq)) is None:
            raise NotFound(f"no audit event {seq}")
        head_size = tree_size = _tree_size_for(session, None, covering=seq)
    ranges = [*merkle.inclusion_ranges(seq - 1, tree_size), (0, tree_size)] if 1 <= seq <= tree_size else []

    def check(values: tuple[Any, ...]) -> None:
        event_hash, size = values
        if event_hash is None:
            raise NotFound(f"no audit event {seq}")
        if head_size is None:
            _explicit_size(tree_size, size)
        if seq > tree_size:
            raise InvalidInput(f"event {seq} is not in a tree of {tree_size} events", field="tree_size")

    hashes, (event_hash, _) = nodes.range_hashes_with(session, ranges, _event_hash(seq), _log_size(), check=check)
    *path, root_hash = hashes
    return InclusionProof(
        seq=seq, leaf_index=seq - 1, tree_size=tree_size, event_hash=event_hash,
        audit_path=[node.hex() for node in path], root_hash=root_hash.hex(),
    )


def inclusion_proofs(session: Session, seqs: Sequence[int], tree_size: int) -> list[InclusionProof]:
    """``inclusion_proof`` of several events in one tree of ``tree_size``: every path and the
    root folded from one read of the stored nodes (a certificate batch anchors this way)."""
    events = {e.seq: e for e in session.scalars(select(AuditEvent).where(AuditEvent.seq.in_(list(seqs))))}
    size = log_size(session)
    if not 1 <= tree_size <= size:
        raise InvalidInput(f"tree_size must be between 1 and the log size {size}", field="tree_size")
    plans = []
    for seq in seqs:
        if seq not in events:
            raise NotFound(f"no audit event {seq}")
        if seq > tree_size:
            raise InvalidInput(f"event {seq} is not in a tree of {tree_size} events", field="tree_size")
        plans.append(merkle.inclusion_ranges(seq - 1, tree_size))
    root_hash, *paths = nodes.range_hashes(session, [(0, tree_size), *(r for plan in plans for r in plan)])
    proofs, at = [], 0
    for seq, plan in zip(seqs, plans, strict=True):
        proofs.append(InclusionProof(
            seq=seq, leaf_index=seq - 1, tree_size=tree_size, event_hash=events[seq].hash,
            audit_path=[node.hex() for node in paths[at : at + len(plan)]], root_hash=root_hash.hex(),
        ))
        at += len(plan)
    return proofs


def consistency_proof(session: Session, first_size: int, second_size: int | None = None) -> ConsistencyProof:
    """Proof that the tree of ``first_size`` events is a prefix of the tree of ``second_size``.
    With both sizes given, one statement reads the log's size and every node needed."""
    explicit = second_size is not None
    if second_size is None:
        second_size = _tree_size_for(session, None, covering=first_size)
    valid = 1 <= first_size <= second_size
    ranges = [(0, first_size), (0, second_size), *merkle.consistency_ranges(first_size, second_size)] if valid else []

    def check(values: tuple[Any, ...]) -> None:
        if explicit:
            _explicit_size(second_size, values[0])
        if not valid:
            raise InvalidInput(f"first must be between 1 and second ({second_size})", field="first")

    (first_root, second_root, *proof), _ = nodes.range_hashes_with(session, ranges, _log_size(), check=check)
    return ConsistencyProof(
        first_size=first_size, second_size=second_size, first_root=first_root.hex(), second_root=second_root.hex(),
        proof=[node.hex() for node in proof],
    )


def latest_checkpoint(session: Session) -> str:
    """The latest signed tree head as a C2SP ``tlog-checkpoint`` signed note, signed by the
    current key (Ed25519 is deterministic: the same head and key give the same note)."""
    head = require_latest_tree_head(session)
    return checkpoint.signed_checkpoint(
        ensure_current_key(session), checkpoint.origin(), head.tree_size, bytes.fromhex(head.root_hash)
    )


def checkpoint_verifier_keys(session: Session) -> list[str]:
    """Every published key as a note verifier key for the checkpoint origin, current first."""
    ensure_current_key(session)
    keys = sorted(published_keys(session), key=lambda k: k.retired_at is not None)
    return [checkpoint.verifier_key(checkpoint.origin(), bytes(k.public_key)) for k in keys]
