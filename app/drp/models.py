from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.database import Base, utcnow


class DrpAgent(Base):
    """An authorized agent from the DRP service directory, entered by an admin. Its requests
    are submitted as its own portal client (so a portal's isolation, idempotency and deadlines
    apply unchanged); the pairwise token an agent obtains is that client's API key."""

    __tablename__ = "drp_agents"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the directory's agent id
    name: Mapped[str] = mapped_column(String(200))
    verify_key: Mapped[bytes] = mapped_column(LargeBinary(32))  # raw Ed25519 public key
    client_id: Mapped[str] = mapped_column(ForeignKey("api_clients.id"), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    token_issued_at: Mapped[datetime | None] = mapped_column(default=None)


class DrpCallback(Base):
    """A request's §2.03 ``status_callback``: the webhooks room's endpoint it is POSTed to (the
    URL lives there, SSRF-checked like any endpoint's) and the last DRP status queued for it."""

    __tablename__ = "drp_callbacks"

    request_id: Mapped[str] = mapped_column(ForeignKey("deletion_requests.id"), primary_key=True)
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id"))
    last_status: Mapped[str | None] = mapped_column(String(16), default=None, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
