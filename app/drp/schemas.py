from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints


class AgentCreate(BaseModel):
    """An entry of the DRP service directory's agent list (§3.05.1), as the admin enters it."""

    model_config = ConfigDict(extra="ignore")

    id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-.]{1,64}$")]
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    verify_key: str = Field(min_length=1, max_length=100, description="Ed25519 public key, base64 (or hex).")
    requires_approval: bool = False


class AgentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    client_id: str
    created_at: datetime
    token_issued_at: datetime | None


class PairwiseToken(BaseModel):
    """§2.05.1."""

    model_config = ConfigDict(populate_by_name=True)

    agent_id: str = Field(serialization_alias="agent-id")
    token: str


class ExerciseStatus(BaseModel):
    """§3.03 Exercise Status."""

    model_config = ConfigDict(extra="allow")

    request_id: str
    status: str = Field(description="open, in_progress, fulfilled, revoked or denied (§3.02); never expired, see the README")
    reason: str | None = None
    received_at: str | None = None
    expected_by: str | None = None
    agent_request_id: str | None = None
    processing_details: str | None = None
    results_url: str | None = None
