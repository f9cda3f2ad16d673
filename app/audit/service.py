"""Writing to the hash-chained audit log.

Every room above calls ``record`` inside its own transaction, so the event commits or
rolls back with the change it describes. Writers are serialised (a PostgreSQL
transaction-scoped advisory lock; SQLite transactions are already serialised by
``BEGIN IMMEDIATE``) so the chain never forks. Call it last before commit: the lock
is held until then.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.audit.models import AuditEvent
from app.core.database import utcnow
from app.core.hashing import canonical_json, sha256_hex

GENESIS_HASH = "0" * 64
# Arbitrary constant naming the audit-chain lock among PostgreSQL advisory locks.
AUDIT_LOCK_KEY = 0x756E6C65


def event_body(event: AuditEvent) -> dict[str, Any]:
    """The fields the hash covers, in the form verifiers recompute."""
    return {
        "seq": event.seq,
        "occurred_at": event.occurred_at.isoformat(),
        "actor": event.actor,
        "action": event.action,
        "entity_type": event.entity_type,
        "entity_id": event.entity_id,
        "payload": event.payload,
    }


def chain_hash(prev_hash: str, body: dict[str, Any]) -> str:
    return sha256_hex(bytes.fromhex(prev_hash) + canonical_json(body))


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: str,
    payload: dict[str, Any] | None = None,
) -> AuditEvent:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_LOCK_KEY})
    last = session.execute(select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)).first()
    seq, prev_hash = (last.seq + 1, last.hash) if last else (1, GENESIS_HASH)
    event = AuditEvent(
        seq=seq,
        occurred_at=utcnow(),
        actor=actor,
        action=action,
        entity_type=entity_type,
        entity_id=str(entity_id),
        payload=payload or {},
        prev_hash=prev_hash,
    )
    event.hash = chain_hash(prev_hash, event_body(event))
    session.add(event)
    session.flush()
    return event
