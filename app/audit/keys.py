"""The signing keys' public halves: registered on first use, retired on rotation, never
deleted, so every signature ever made stays checkable against ``/.well-known/unlearnd-keys``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.models import SigningKey
from app.audit.service import lock_chain, record
from app.core.database import utcnow
from app.core.signing import Signer, current_signer, public_jwk, replace_signing_key


def _register(session: Session, signer: Signer, *, actor: str) -> SigningKey:
    row = SigningKey(key_id=signer.key_id, public_key=signer.public_key, created_at=utcnow())
    session.add(row)
    session.flush()
    record(
        session, actor=actor, action="signing_key.registered", entity_type="signing_key",
        entity_id=signer.key_id, payload={"key_id": signer.key_id},
    )
    return row


def ensure_current_key(session: Session, *, actor: str = "system") -> Signer:
    """The signer to use now, its public key published before anything is signed with it."""
    signer = current_signer()
    if session.get(SigningKey, signer.key_id) is None:
        # Under the chain lock, so two processes seeing a new key register it once.
        lock_chain(session)
        if session.scalar(select(SigningKey).where(SigningKey.key_id == signer.key_id)) is None:
            _register(session, signer, actor=actor)
    return signer


def rotate_signing_key(session: Session, *, actor: str = "system") -> SigningKey:
    """Replace the private key on disk and retire the old public key (kept, still published).

    The file is replaced before commit: if the commit fails, the next signature registers
    the new key anyway, and the old one merely stays unmarked as retired."""
    lock_chain(session)
    old = ensure_current_key(session, actor=actor)
    new = replace_signing_key()
    old_row = session.get(SigningKey, old.key_id)
    if old_row is not None and old_row.retired_at is None:
        old_row.retired_at = utcnow()
    row = SigningKey(key_id=new.key_id, public_key=new.public_key, created_at=utcnow())
    session.add(row)
    session.flush()
    record(
        session, actor=actor, action="signing_key.rotated", entity_type="signing_key", entity_id=new.key_id,
        payload={"key_id": new.key_id, "retired_key_id": old.key_id},
    )
    return row


def published_keys(session: Session) -> list[SigningKey]:
    return list(session.scalars(select(SigningKey).order_by(SigningKey.created_at, SigningKey.key_id)))


def public_keys_by_id(session: Session) -> dict[str, bytes]:
    return {key.key_id: bytes(key.public_key) for key in published_keys(session)}


def key_set(session: Session) -> dict[str, Any]:
    """JWKS (RFC 7517) of every key, current first; ``status`` tells which one signs now."""
    ensure_current_key(session)
    keys = published_keys(session)
    keys.sort(key=lambda k: k.retired_at is not None)
    return {
        "keys": [
            {
                **public_jwk(bytes(k.public_key)),
                "status": "retired" if k.retired_at else "active",
                "created_at": k.created_at.isoformat(),
                "retired_at": k.retired_at.isoformat() if k.retired_at else None,
            }
            for k in keys
        ]
    }
