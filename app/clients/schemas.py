from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.core.auth import Role


class ClientCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    role: Role
    requires_approval: bool = False


class ClientOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    role: Role
    key_id: str
    requires_approval: bool
    created_at: datetime
    revoked_at: datetime | None


class ClientCreated(ClientOut):
    api_key: str = Field(description="Shown once; only its hash is stored.")
