from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class TreeHeadOut(BaseModel):
    tree_size: int
    root_hash: str
    signed_at: str = Field(description="ISO 8601 UTC, exactly as signed.")
    key_id: str
    signature: str = Field(description="Ed25519 over the canonical tree-head statement, hex.")
    head_hash: str = Field(description="Chain hash of the last event covered; record it out of band.")


class AuditEventOut(BaseModel):
    seq: int
    occurred_at: datetime
    actor: str
    action: str
    entity_type: str
    entity_id: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str


class AuditEventPage(BaseModel):
    items: list[AuditEventOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at the end.")


class InclusionProofOut(BaseModel):
    seq: int
    leaf_index: int
    tree_size: int
    event_hash: str
    audit_path: list[str]
    root_hash: str


class ConsistencyProofOut(BaseModel):
    first_size: int
    second_size: int
    first_root: str
    second_root: str
    proof: list[str]


class LogVerificationOut(BaseModel):
    ok: bool
    events_checked: int
    head_seq: int
    head_hash: str
    tree_heads_checked: int
    failure: str | None
    failed_seq: int | None
