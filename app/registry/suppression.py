"""Forgotten stays forgotten: the suppression list.

When a request completes, the record keys of what it forgot (and, for a request by subject,
the subject's keyed hashes) go on the list. Ingestion checks every row against it: a match
is stored with state ``suppressed`` (never active, so never in a snapshot or a training run,
and rewritten out of a managed file like a forgotten row), counted on the dataset and
audited. Only an admin, giving a reason, can lift an entry (audited); lifting affects later
ingestions, not rows already suppressed. Record keys are matched across datasets (a
re-export is usually registered under a new name); subject hashes are keyed with the pepper.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.core.database import utcnow
from app.core.errors import Conflict, NotFound
from app.registry.models import DataRecord, Suppression, SuppressionKind


@dataclass(frozen=True)
class SuppressionList:
    subject_hashes: frozenset[str]
    record_keys: frozenset[str]

    def matches(self, record_key: str, subject: str | None) -> bool:
        return record_key in self.record_keys or (subject is not None and subject in self.subject_hashes)


def add(session: Session, record_ids: list[int], *, subject_hashes: Iterable[str], request_id: str,
        actor: str) -> int:
    """Put the forgotten records' keys (and the request's subject hashes) on the list; returns
    how many entries were new."""
    keys: set[str] = set()
    for start in range(0, len(record_ids), 1000):
        keys |= set(session.scalars(select(DataRecord.record_key).where(
            DataRecord.id.in_(record_ids[start : start + 1000]))))
    wanted = {(SuppressionKind.RECORD_KEY.value, key) for key in keys}
    wanted |= {(SuppressionKind.SUBJECT_HASH.value, value) for value in subject_hashes}
    existing: dict[tuple[str, str], Suppression] = {}
    values = sorted({value for _, value in wanted})
    for start in range(0, len(values), 1000):
        for entry in session.scalars(select(Suppression).where(Suppression.value.in_(values[start : start + 1000]))):
            existing[(entry.kind, entry.value)] = entry
    added = 0
    for kind, value in sorted(wanted):
        entry = existing.get((kind, value))
        if entry is None:
            session.add(Suppression(kind=kind, value=value, request_id=request_id))
            added += 1
        elif entry.lifted_at is not None:
            # Forgotten again after a lift: suppressed again.
            entry.lifted_at, entry.lifted_by, entry.lift_reason, entry.request_id = None, None, None, request_id
            added += 1
    if added:
        session.flush()
        audit.record(session, actor=actor, action="suppression.added", entity_type="deletion_request",
                     entity_id=request_id, payload={"entries": added, "record_keys": len(keys)})
    return added


def active(session: Session) -> SuppressionList:
    rows = session.execute(select(Suppression.kind, Suppression.value).where(Suppression.lifted_at.is_(None))).tuples()
    subjects: set[str] = set()
    keys: set[str] = set()
    for kind, value in rows:
        (subjects if kind == SuppressionKind.SUBJECT_HASH else keys).add(value)
    return SuppressionList(frozenset(subjects), frozenset(keys))


def listing(session: Session, *, include_lifted: bool = False, limit: int = 500) -> list[Suppression]:
    query = select(Suppression).order_by(Suppression.created_at, Suppression.id).limit(limit)
    if not include_lifted:
        query = query.where(Suppression.lifted_at.is_(None))
    return list(session.scalars(query))


def lift(session: Session, suppression_id: str, *, reason: str, actor: str) -> Suppression:
    entry = session.scalar(select(Suppression).where(Suppression.id == suppression_id).with_for_update())
    if entry is None:
        raise NotFound(f"no suppression {suppression_id}")
    if entry.lifted_at is not None:
        raise Conflict("this suppression was lifted already", field="id")
    entry.lifted_at, entry.lifted_by, entry.lift_reason = utcnow(), actor, reason
    session.flush()
    # The reason is free text: it stays on the row, out of the chain (like request history).
    audit.record(session, actor=actor, action="suppression.lifted", entity_type="suppression", entity_id=entry.id,
                 payload={"kind": entry.kind, "request_id": entry.request_id})
    return entry
