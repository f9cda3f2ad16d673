"""Wire shapes of deletion requests.

The submission maps onto a Data Rights Protocol / OpenDSR request without loss:
``legal_basis`` is the DRP ``regime`` (or OpenDSR ``regulation``), ``subject`` carries the
identity claims (DRP ``identity`` / OpenDSR ``subject_identities``), ``identity_verification``
the portal's identity assurance, ``external_ref`` the portal's request id and
``requested_at`` the DRP ``submitted_at``. Identifier values are accepted here and hashed
by the service before anything else sees them; no response ever echoes them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.core.fields import BoundedDatetime
from app.core.hashing import IdentifierType
from app.requests.models import LegalBasis, RequestStatus

ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


class SubjectIdentifier(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: IdentifierType
    value: str = Field(min_length=1, max_length=512)


class RecordRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: ShortText
    record_key: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class IdentityVerification(BaseModel):
    """How the portal says it verified the requester; stored as attested, not re-checked."""

    model_config = ConfigDict(extra="forbid")

    method: ShortText
    verified_at: BoundedDatetime | None = None


class RequestScope(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # None: every model trained on the subject's records.
    models: list[ShortText] | None = Field(default=None, min_length=1, max_length=100)


class RecordSelector(BaseModel):
    """A removal by provenance: every record of a dataset, of one of its sources, or
    ingested before a time. Admin and ml keys only; portals name subjects."""

    model_config = ConfigDict(extra="forbid")

    dataset: ShortText
    source: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    ingested_before: BoundedDatetime | None = None


class DeletionRequestCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: list[SubjectIdentifier] = Field(default_factory=list, max_length=20)
    selector: RecordSelector | None = None
    # Required with a selector: why the data goes (kept on the request, out of the audit chain).
    reason: Reason | None = None
    records: list[RecordRef] = Field(default_factory=list, max_length=1000)
    legal_basis: LegalBasis
    jurisdiction: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)] | None = None
    external_ref: ShortText | None = None
    requested_at: BoundedDatetime | None = None
    identity_verification: IdentityVerification | None = None
    scope: RequestScope | None = None
    source_system: ShortText | None = None


class DeletionRequestBatchItem(DeletionRequestCreate):
    """One request of a batch: it carries its own idempotency key (the single endpoint's
    ``Idempotency-Key`` header) and/or an ``external_ref``; at least one is required."""

    idempotency_key: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None


class DeletionRequestBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Items are judged one by one: an item that does not match DeletionRequestBatchItem stays a
    # plain object here and is refused on its own by the service, never the whole batch.
    requests: list[Annotated[DeletionRequestBatchItem | Any, Field(union_mode="left_to_right")]] = Field(
        min_length=1, max_length=1000, description="1 to 1,000 requests, each shaped as DeletionRequestBatchItem.",
    )


class BatchItemResult(BaseModel):
    index: int = Field(description="Position of the item in the submitted list.")
    outcome: Literal["created", "replayed", "refused"]
    id: str | None = Field(default=None, description="The deletion request's id (created or replayed).")
    status: RequestStatus | None = Field(default=None, description="The request's status after intake.")
    problem: dict[str, Any] | None = Field(
        default=None, description="Why the item was refused (RFC 9457 problem details); nothing of it was written.")


class DeletionRequestBatchResult(BaseModel):
    created: int
    replayed: int
    refused: int
    results: list[BatchItemResult]


class TransitionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    from_status: RequestStatus | None
    to_status: RequestStatus
    actor: str
    reason: str | None
    at: datetime


class DeletionRequestOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    client_id: str
    status: RequestStatus
    outcome: str | None
    guarantee: str | None = Field(
        default=None,
        description="What a completed request's claim rests on: exact (lineage-proven retrain or SISA), "
        "certified ((eps, delta) removal) or approximate (a qualified method that passed its checks).",
    )
    external_ref: str | None
    legal_basis: LegalBasis
    jurisdiction: str | None
    subject_hashes: list[str]
    record_refs: list[dict[str, str]]
    selector: dict[str, Any] | None = None
    reason: str | None = None
    scope: dict[str, Any]
    requested_at: datetime
    received_at: datetime
    due_at: datetime
    extended_at: datetime | None
    extension_reason: str | None
    completed_at: datetime | None
    request_hash: str
    provenance: dict[str, Any]
    affected: dict[str, Any]


class DeletionRequestDetail(DeletionRequestOut):
    history: list[TransitionOut]

    @classmethod
    def of(cls, request: Any, steps: list[Any]) -> DeletionRequestDetail:
        return cls(
            **DeletionRequestOut.model_validate(request).model_dump(),
            history=[TransitionOut.model_validate(step) for step in steps],
        )


class DeletionRequestPage(BaseModel):
    items: list[DeletionRequestOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last.")


class ReasonBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason


class OptionalReasonBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason | None = None


class ExtensionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason
    # Omitted: the furthest the law allows.
    due_at: BoundedDatetime | None = None
