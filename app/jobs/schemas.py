from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.jobs.engine import DEFAULT_HELDOUT_FRACTION


class TrainBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    heldout_fraction: float = Field(default=DEFAULT_HELDOUT_FRACTION, ge=0.0, lt=0.5)


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    model_id: str
    base_version_id: str | None
    result_version_id: str | None
    method: str
    method_used: str | None
    status: str
    stage: str | None
    progress: float
    forget_count: int
    cost_units: int
    attempts: int
    max_attempts: int
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None


class JobDetail(JobOut):
    report: dict[str, Any]
    request_ids: list[str]


class BatchOut(BaseModel):
    model: str
    reason: str
    requests: int
    units: int
    units_if_alone: int
    units_saved: int
    estimated_seconds: float
    job: JobOut


class QualificationBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str = Field(min_length=1, max_length=32, description="An approximate method, e.g. neggrad_plus.")
    band_min: int = Field(ge=1, description="Smallest forget set (records) the qualification covers.")
    band_max: int = Field(ge=1, description="Largest forget set covered; the study samples forget sets of this size.")
    runs: int = Field(default=8, ge=2, le=64, description="Models per population (unlearned, retrains, ceiling).")
    forget_sets: int = Field(default=2, ge=1, le=8, description=(
        "Independent forget sets sampled in the band (sizes spread up to band_max); the method qualifies only "
        "if it qualifies on every one."))


class QualificationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    model_id: str
    version_id: str
    method: str
    band_min: int
    band_max: int
    status: str
    settings: dict[str, Any]
    report: dict[str, Any]
    report_sha256: str | None
    signature: str | None
    key_id: str | None
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    approximate_jobs: int = 0
    revoked_at: datetime | None = None
    revocation: dict[str, Any] | None = None
    temporary_models: dict[str, Any] | None = Field(default=None, description=(
        "What the study trained (counts), on which training snapshot, where the models were kept and when they "
        "were destroyed."))
