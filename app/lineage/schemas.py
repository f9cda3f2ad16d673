from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.core.hashing import IdentifierType


class SubjectQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    identifier_type: IdentifierType
    # Hashed on arrival and dropped; never stored or logged.
    identifier: str = Field(min_length=1, max_length=512)


class SnapshotRef(BaseModel):
    id: str
    record_count: int
    merkle_root: str


class VersionRef(BaseModel):
    id: str
    model: str
    number: int
    state: str
    snapshot_id: str | None


class ArtifactRef(BaseModel):
    id: str
    model: str
    version: int
    kind: str
    shard: int | None
    slice: int | None
    snapshot_id: str | None
    sha256: str
    state: str


class TemporaryModelsRef(BaseModel):
    """Models trained on a snapshot outside the registry's versions (a qualification study's
    originals, retrains and unlearned models), never stored, destroyed when their purpose ended."""

    id: str
    model: str
    purpose: str
    reference_id: str = Field(description="what they were for, e.g. the qualification study's id")
    snapshot_id: str
    storage: str
    models: dict[str, int] | None = Field(description="how many of each kind; null if the study failed before counting")
    created_at: datetime
    destroyed_at: datetime | None = Field(description="null while they exist (they then hold the snapshot's records)")


class RecordLineage(BaseModel):
    record_id: int
    dataset: str
    record_key: str
    state: str
    snapshots: list[SnapshotRef]
    model_versions: list[VersionRef]
    artifacts: list[ArtifactRef]
    temporary_models: list[TemporaryModelsRef] = Field(default_factory=list)
    # True while any non-purged version or artifact, or any not yet destroyed temporary
    # model, was trained on the record.
    still_contained: bool


class SubjectLineage(BaseModel):
    subject_hash: str
    records: list[RecordLineage]
    still_contained: bool


class SourceVersion(VersionRef):
    # How many of the source's records this version (or one of its parts) was trained on.
    record_count: int


class SourceLineage(BaseModel):
    dataset: str
    source: str
    record_count: int = Field(description="records of the dataset from this source")
    forgotten_count: int
    model_versions: list[SourceVersion] = Field(description="every version trained on one of them, purged included")
    temporary_models: list[TemporaryModelsRef] = Field(default_factory=list)
    # True while any non-purged version or artifact, or any not yet destroyed temporary model,
    # was trained on one of the source's records.
    still_contained: bool


class LineageEdge(BaseModel):
    parent: int
    child: int
    removed_count: int | None = Field(description="null when the two snapshots are of different datasets")
    removed_record_keys: list[str]
    truncated: bool


class VersionLineage(BaseModel):
    version: VersionRef
    ancestors: list[VersionRef] = Field(description="nearest first")
    descendants: list[VersionRef]
    edges: list[LineageEdge]


@dataclass(frozen=True)
class ResolvedRecord:
    id: int
    dataset_id: str
    dataset: str
    record_key: str
    state: str


@dataclass(frozen=True)
class AffectedVersion:
    id: str
    model_id: str
    model: str
    number: int
    state: str
    # The resolved records this version (or one of its artifacts) was trained on.
    record_ids: tuple[int, ...]


@dataclass(frozen=True)
class RecordSelection:
    """A removal request's selector: every record of a dataset, or those of one source,
    or those ingested before a time (both narrow it when given together)."""

    dataset: str
    source: str | None = None
    ingested_before: datetime | None = None


@dataclass
class Resolution:
    records: list[ResolvedRecord] = field(default_factory=list)
    model_versions: list[AffectedVersion] = field(default_factory=list)
    unknown_datasets: list[str] = field(default_factory=list)
    # (dataset, record key) pairs naming a registered dataset but no record in it.
    unknown_records: list[tuple[str, str]] = field(default_factory=list)
