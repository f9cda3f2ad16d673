from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.core.auth import ApiClient, Role, client_cache, issue_key
from app.core.database import utcnow
from app.core.errors import InvalidInput, NotFound


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


def list_clients(session: Session) -> list[ApiClient]:
    return list(session.scalars(select(ApiClient).order_by(ApiClient.created_at)))


def revoke_client(session: Session, client_id: str, *, actor: str = "system") -> ApiClient:
    client = session.get(ApiClient, client_id)
    if client is None:
        raise NotFound(f"no API client {client_id}")
    if client.revoked_at is None:
        client.revoked_at = utcnow()
        client_cache.forget(client.key_id)
        audit.record(session, actor=actor, action="client.revoked", entity_type="api_client", entity_id=client.id)
    return client
