from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.database import Base, new_id, utcnow


class RequestStatus(StrEnum):
    RECEIVED = "received"
    PENDING_APPROVAL = "pending_approval"
    SCHEDULED = "scheduled"
    UNLEARNING = "unlearning"
    VERIFYING = "verifying"
    COMPLETED = "completed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    FAILED = "failed"


class LegalBasis(StrEnum):
    GDPR_ART17 = "gdpr_art17"
    CCPA_1798_105 = "ccpa_1798_105"
    CPRA = "cpra"
    LGPD_ART18 = "lgpd_art18"
    PIPEDA = "pipeda"
    CONTRACT = "contract"
    INTERNAL_POLICY = "internal_policy"
    # Bases of removals by selector (a whole dataset or source), not of a person's request.
    COPYRIGHT = "copyright"
    DATA_QUALITY = "data_quality"


class RequestOutcome(StrEnum):
    NO_DATA_FOUND = "no_data_found"
    FORGOTTEN = "forgotten"
    # Every record the request names was forgotten before it arrived (by an earlier request).
    ALREADY_FORGOTTEN = "already_forgotten"


class Guarantee(StrEnum):
    """What a completed request's claim rests on, strongest first (the engine's vocabulary)."""

    EXACT = "exact"
    CERTIFIED = "certified"
    APPROXIMATE = "approximate"


def weakest(guarantees: list[str | None]) -> str | None:
    order = list(Guarantee)
    known = [Guarantee(g) for g in guarantees if g]
    return max(known, key=order.index).value if known else None


UNCERTIFIED = "status = 'completed' AND certified_at IS NULL"


class DeletionRequest(Base):
    __tablename__ = "deletion_requests"
    __table_args__ = (
        UniqueConstraint("client_id", "idempotency_key"),
        UniqueConstraint("client_id", "external_ref"),
        Index("ix_deletion_requests_status_due_at", "status", "due_at"),
        # Keyset pagination walks (received_at, id) newest first, per portal or overall.
        Index("ix_deletion_requests_client_id_received_at", "client_id", "received_at", "id"),
        # The completed requests still waiting for their certificate, in completion order: the
        # sweep (``uncertified``) and the orders' take-along (``uncertified_completed_after``)
        # read only these, however many were ever certified. It replaces 0040's index over
        # every completed request.
        Index("ix_deletion_requests_uncertified", "completed_at", "id",
              postgresql_where=text(UNCERTIFIED), sqlite_where=text(UNCERTIFIED)),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    client_id: Mapped[str] = mapped_column(ForeignKey("api_clients.id"), index=True)
    external_ref: Mapped[str | None] = mapped_column(String(255), default=None)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), default=None)
    # sha256 of the canonical request as received, identifiers already hashed.
    request_hash: Mapped[str] = mapped_column(String(64))
    subject_hashes: Mapped[list[Any]] = mapped_column(default=list)
    record_refs: Mapped[list[Any]] = mapped_column(default=list)
    legal_basis: Mapped[str] = mapped_column(String(32))
    jurisdiction: Mapped[str | None] = mapped_column(String(64), default=None)
    scope: Mapped[dict[str, Any]] = mapped_column(default=dict)
    requested_at: Mapped[datetime]
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    due_at: Mapped[datetime] = mapped_column(index=True)
    extended_at: Mapped[datetime | None] = mapped_column(default=None)
    extension_reason: Mapped[str | None] = mapped_column(default=None)
    status: Mapped[str] = mapped_column(String(20), default=RequestStatus.RECEIVED)
    outcome: Mapped[str | None] = mapped_column(String(32), default=None)
    # exact | certified | approximate: the weakest claim among the jobs that completed it.
    guarantee: Mapped[str | None] = mapped_column(String(16), default=None)
    # source system, IP, user agent, identity verification attestation.
    provenance: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # A removal by selector instead of a subject: {"dataset", "source"?, "ingested_before"?}.
    selector: Mapped[dict[str, Any] | None] = mapped_column(JSON(), default=None)
    # Why a selector removal was asked for (required with a selector; free text, kept out of the chain).
    reason: Mapped[str | None] = mapped_column(Text(), default=None)
    # resolved lineage: records and model versions affected, filled at resolution.
    affected: Mapped[dict[str, Any]] = mapped_column(default=dict)
    completed_at: Mapped[datetime | None] = mapped_column(default=None)
    # When its certificate was issued (stamped by issuance, in the certificate's transaction).
    certified_at: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class RequestTransition(Base):
    """Status history: one row per transition, with who and why."""

    __tablename__ = "deletion_request_history"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("deletion_requests.id", ondelete="CASCADE"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(20))
    to_status: Mapped[str] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(default=None)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class RequestRecord(Base):
    """A training record a request resolved to (subject match or explicit key)."""

    __tablename__ = "deletion_request_records"

    request_id: Mapped[str] = mapped_column(ForeignKey("deletion_requests.id", ondelete="CASCADE"), primary_key=True)
    record_id: Mapped[int] = mapped_column(ForeignKey("data_records.id"), primary_key=True, index=True)


class RequestModelVersion(Base):
    """A model version a request resolved to: what the jobs room must unlearn, per model."""

    __tablename__ = "deletion_request_model_versions"

    request_id: Mapped[str] = mapped_column(ForeignKey("deletion_requests.id", ondelete="CASCADE"), primary_key=True)
    version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"), primary_key=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("registered_models.id"), index=True)
