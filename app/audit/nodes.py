"""The stored audit Merkle tree: written as events join the chain, read for heads and proofs.

Only the chain's writer (holding the chain lock, see ``app.audit.service.lock_chain``)
extends the tree, in the transaction that appends the events, so the nodes and the chain
commit or roll back together and concurrent writers cannot interleave; the lock order is
simply chain lock, then events, then nodes. Readers need no lock: a node never changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, func, select, tuple_
from sqlalchemy.orm import Session

from app.audit.models import AuditEvent, AuditTreeNode
from app.audit.proofs import event_leaf
from app.core import merkle
from app.core.database import insert_rows
from app.core.errors import Conflict

_CATCH_UP_BATCH = 10_000


def stored_size(session: Session) -> int:
    """Number of leaves the stored tree holds."""
    last = session.scalar(select(func.max(AuditTreeNode.position)).where(AuditTreeNode.level == 0))
    return 0 if last is None else last + 1


def _fetch(session: Session, keys: Sequence[merkle.NodeKey]) -> dict[merkle.NodeKey, bytes]:
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    rows = session.execute(
        select(AuditTreeNode.level, AuditTreeNode.position, AuditTreeNode.hash).where(
            tuple_(AuditTreeNode.level, AuditTreeNode.position).in_(wanted)
        )
    )
    return {(level, position): bytes(value) for level, position, value in rows}


def range_hashes(session: Session, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
    """Hashes of the leaf ranges (RFC 6962 subtrees), from O(log n) nodes in one read."""
    return range_hashes_with(session, ranges)[0]


def range_hashes_with(
    session: Session, ranges: Sequence[tuple[int, int]], *scalars: ColumnElement[Any],
    check: Callable[[tuple[Any, ...]], None] | None = None,
) -> tuple[list[bytes], tuple[Any, ...]]:
    """``range_hashes``, and the values of ``scalars`` (scalar subqueries such as the log's
    size) read in the same statement: a proof is then one round trip to the database.
    ``check`` sees those values before any node is found missing (it refuses bad input)."""
    plans = [merkle.range_nodes(start, end) for start, end in ranges]
    wanted = sorted({key for plan in plans for key in plan})
    found: dict[merkle.NodeKey, bytes] = {}
    values: tuple[Any, ...] | None = None
    if wanted:
        rows = session.execute(
            select(AuditTreeNode.level, AuditTreeNode.position, AuditTreeNode.hash, *scalars).where(
                tuple_(AuditTreeNode.level, AuditTreeNode.position).in_(wanted)
            )
        ).all()
        found = {(row[0], row[1]): bytes(row[2]) for row in rows}
        values = tuple(rows[0][3:]) if rows else None
    if values is None:  # no node at all: read the scalars alone
        values = tuple(session.execute(select(*scalars)).one()) if scalars else ()
    if check is not None:
        check(values)
    missing = [key for plan in plans for key in plan if key not in found]
    if missing:
        level, position = missing[0]
        raise Conflict(
            f"the stored audit tree lacks node (level {level}, position {position}); run `unlearnd audit verify`"
        )
    return [merkle.fold_nodes([found[key] for key in plan]) for plan in plans], values


def root(session: Session, tree_size: int) -> bytes:
    return merkle.EMPTY_ROOT if tree_size == 0 else range_hashes(session, [(0, tree_size)])[0]


def extend(session: Session, size: int, event_hashes: Sequence[str]) -> None:
    """Add the leaves of events ``size + 1 ..`` (their chain hashes) to the stored tree.

    The caller holds the chain lock. One read in the usual case: the frontier of the tree of
    ``size`` (whose last node exists only once leaf ``size`` is stored) and the next leaf
    (which must not exist yet). A tree that lags the chain (a log written before the tree
    was stored) is caught up from the events first, so this is idempotent."""
    frontier_keys = merkle.range_nodes(0, size) if size else []
    found = _fetch(session, [*frontier_keys, (0, size)])
    if (0, size) in found:
        raise Conflict(f"the stored audit tree has more leaves than the chain's {size}; run `unlearnd audit verify`")
    if len(found) == len(frontier_keys):
        _write(session, size, {level: found[(level, position)] for level, position in frontier_keys}, event_hashes)
        return
    stored = stored_size(session)
    while stored < size:
        upto = min(size, stored + _CATCH_UP_BATCH)
        earlier = list(
            session.scalars(
                select(AuditEvent.hash).where(AuditEvent.seq > stored, AuditEvent.seq <= upto).order_by(AuditEvent.seq)
            )
        )
        if len(earlier) != upto - stored:
            raise Conflict(f"the audit log has a gap after seq {stored}; run `unlearnd audit verify`")
        _write(session, stored, _frontier(session, stored), earlier)
        stored = upto
    _write(session, size, _frontier(session, size), event_hashes)


def completed_rows(session: Session, size: int, event_hashes: Sequence[str]) -> list[dict[str, Any]] | None:
    """``extend``'s usual case as rows for the caller to write in a statement of its own (the
    sealer writes events and nodes together): the nodes that appending these events to the
    tree of ``size`` completes, from one read. None when the stored tree lags the chain
    (``extend`` catches it up)."""
    frontier_keys = merkle.range_nodes(0, size) if size else []
    found = _fetch(session, [*frontier_keys, (0, size)])
    if (0, size) in found:
        raise Conflict(f"the stored audit tree has more leaves than the chain's {size}; run `unlearnd audit verify`")
    if len(found) != len(frontier_keys):
        return None
    frontier = {level: found[(level, position)] for level, position in frontier_keys}
    return [{"level": level, "position": position, "hash": value}
            for level, position, value in merkle.append_nodes(size, frontier, [event_leaf(h) for h in event_hashes])]


def _frontier(session: Session, size: int) -> dict[int, bytes]:
    keys = merkle.range_nodes(0, size) if size else []
    found = _fetch(session, keys)
    if len(found) != len(keys):
        raise Conflict("the stored audit tree lacks a frontier node; run `unlearnd audit verify`")
    return {level: found[(level, position)] for level, position in keys}


def _write(session: Session, size: int, frontier: dict[int, bytes], event_hashes: Sequence[str]) -> None:
    if not event_hashes:
        return
    completed = merkle.append_nodes(size, frontier, [event_leaf(h) for h in event_hashes])
    insert_rows(session, AuditTreeNode.__table__,
                [{"level": level, "position": position, "hash": value} for level, position, value in completed])
