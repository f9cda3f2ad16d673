from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.core.auth import ApiClient, Role, client_cache, issue_key
from app.core.database import utcnow
from app.core.errors import Conflict, InvalidInput, NotFound


@dataclass(frozen=True)
class IssuedClient:
    client: ApiClient
    api_key: str  # plaintext, shown once and never stored


def create_client(
    session: Session, *, name: str, role: Role | str, requires_approval: bool = False, actor: str = "system"
) -> IssuedClient:
    try:
        role = Role(role)
    except ValueError:
        raise InvalidInput(f"unknown role '{role}'", field="role") from None
    if not name.strip():
        raise InvalidInput("client name is empty", field="name")
    key_id, api_key, key_hash = issue_key()
    client = ApiClient(
        name=name.strip(), role=role.value, key_id=key_id, key_hash=key_hash, requires_approval=requires_approval
    )
    session.add(client)
    session.flush()
    audit.record(
        session, actor=actor, action="client.created", entity_type="api_client", entity_id=client.id,
        payload={"role": role.value, "key_id": key_id, "requires_approval": requires_approval},
    )
    return IssuedClient(client=client, api_key=api_key)


def rotate_key(session: Session, client_id: str, *, actor: str = "system") -> IssuedClient:
    """Give a client a new API key; the old one stops working at once (in this process; after
    the auth cache's seconds in others). The client, its role and its requests stay."""
    client = session.get(ApiClient, client_id)
    if client is None or client.revoked_at is not None:
        raise NotFound(f"no active API client {client_id}")
    old_key_id = client.key_id
    client.key_id, api_key, client.key_hash = issue_key()
    session.flush()
    client_cache.forget(old_key_id)
    audit.record(
        session, actor=actor, action="client.key_rotated", entity_type="api_client", entity_id=client.id,
        payload={"key_id": client.key_id, "retired_key_id": old_key_id},
    )
    return IssuedClient(client=client, api_key=api_key)


def list_clients(session: Session) -> list[ApiClient]:
    return list(session.scalars(select(ApiClient).order_by(ApiClient.created_at)))


def revoke_client(session: Session, client_id: str, *, actor: str = "system") -> ApiClient:
    client = session.get(ApiClient, client_id)
    if client is None:
        raise NotFound(f"no API client {client_id}")
    if client.revoked_at is None and client.role == Role.ADMIN:
        _keep_an_admin(session, client, actor)
    if client.revoked_at is None:
        client.revoked_at = utcnow()
        client_cache.forget(client.key_id)
        audit.record(session, actor=actor, action="client.revoked", entity_type="api_client", entity_id=client.id)
    return client


def _keep_an_admin(session: Session, client: ApiClient, actor: str) -> None:
    """Refuse to revoke the last active admin key (whoever asks, the key itself included):
    nobody could then create or revoke keys. The active admins' rows are locked, so two
    admins revoking each other at once cannot both succeed (SQLite serialises writers)."""
    admins = session.scalars(
        select(ApiClient.id).where(ApiClient.role == Role.ADMIN.value, ApiClient.revoked_at.is_(None))
        .order_by(ApiClient.id).with_for_update()
    ).all()
    if [a for a in admins if a != client.id]:
        return
    who = "your own key, the last" if client.id == actor else "the last"
    raise Conflict(f"refusing to revoke {who} active admin key; create another admin key first",
                   field="client_id")
