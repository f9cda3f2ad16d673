from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.database import Base, new_id, utcnow


class JobKind(StrEnum):
    TRAIN = "train"
    TRAIN_SHARD = "train_shard"  # one SISA shard of a train job, fanned out to any worker
    UNLEARN = "unlearn"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobStage(StrEnum):
    LOADING = "loading"
    TRAINING = "training"  # train jobs only: loading -> training -> done
    UNLEARNING = "unlearning"
    VERIFYING = "verifying"
    PURGING = "purging"
    DONE = "done"


class UnlearningJob(Base):
    __tablename__ = "unlearning_jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(16), default="unlearn")  # see JobKind
    model_id: Mapped[str] = mapped_column(ForeignKey("registered_models.id"), index=True)
    base_version_id: Mapped[str | None] = mapped_column(ForeignKey("model_versions.id"), default=None)
    result_version_id: Mapped[str | None] = mapped_column(ForeignKey("model_versions.id"), default=None)
    method: Mapped[str] = mapped_column(String(32))
    method_used: Mapped[str | None] = mapped_column(String(32), default=None)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED, index=True)
    stage: Mapped[str | None] = mapped_column(String(16), default=None)
    progress: Mapped[float] = mapped_column(default=0.0)
    forget_count: Mapped[int] = mapped_column(default=0)
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=3)
    error: Mapped[str | None] = mapped_column(default=None)
    report: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Work units the batch cost (SISA: distinct shards touched; otherwise 1): with the
    # duration, what the scheduler learns a model's cost from.
    cost_units: Mapped[int] = mapped_column(default=1)
    created_by: Mapped[str] = mapped_column(String(64), default="system")
    # The worker holding the lease; only it may write the job's result.
    worker: Mapped[str | None] = mapped_column(String(255), default=None)
    # Lease: a running job whose heartbeat is stale belongs to a dead worker and is resumed.
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class JobRequest(Base):
    __tablename__ = "unlearning_job_requests"

    job_id: Mapped[str] = mapped_column(ForeignKey("unlearning_jobs.id", ondelete="CASCADE"), primary_key=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("deletion_requests.id"), primary_key=True, index=True)


class QualificationStatus(StrEnum):
    RUNNING = "running"
    QUALIFIED = "qualified"
    NOT_QUALIFIED = "not_qualified"
    FAILED = "failed"
    REVOKED = "revoked"  # a sampling audit found a job's approximate result off its exact retrain


class MethodQualification(Base):
    """A study of one approximate method on one model version and forget-size band: many
    unlearned models against many exact retrains, per-example. An approximate method may
    run on a job only inside a band whose study says ``qualified``; the signed report is
    what a certificate cites."""

    __tablename__ = "method_qualifications"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    model_id: Mapped[str] = mapped_column(ForeignKey("registered_models.id"), index=True)
    version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"), index=True)
    method: Mapped[str] = mapped_column(String(32))
    band_min: Mapped[int]  # forget-set sizes covered, inclusive
    band_max: Mapped[int]
    status: Mapped[str] = mapped_column(String(16), default=QualificationStatus.RUNNING)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    report: Mapped[dict[str, Any]] = mapped_column(default=dict)
    report_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    signature: Mapped[str | None] = mapped_column(String(128), default=None)
    key_id: Mapped[str | None] = mapped_column(String(64), default=None)
    error: Mapped[str | None] = mapped_column(default=None)
    created_by: Mapped[str] = mapped_column(String(64), default="system")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    # Jobs that kept an approximate result under this study; every k-th is audited (policy).
    approximate_jobs: Mapped[int] = mapped_column(default=0, server_default="0")
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    revocation: Mapped[dict[str, Any] | None] = mapped_column(default=None)  # the audit that revoked it
    # What the study trained, on which snapshot, where it was kept and when it was destroyed.
    temporary_models: Mapped[dict[str, Any] | None] = mapped_column(default=None)
