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
