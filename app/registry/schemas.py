from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.core.fields import FiniteFloat, NonNegativeInt32, NonNegativeInt64, PositiveInt32
from app.core.hashing import IdentifierType
from app.registry.models import VersionState
from app.registry.policy import UnlearningPolicy

# A record's source name (registry column width).
MAX_SOURCE_LENGTH = 200
SLUG = r"^[a-z][a-z0-9_.+-]*$"
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class DatasetFormat(StrEnum):
    PARQUET = "parquet"
    CSV = "csv"
    NPZ = "npz"


class ArtifactKind(StrEnum):
    MODEL = "model"
    SHARD = "shard"
    CHECKPOINT = "checkpoint"


class VersionOrigin(StrEnum):
    TRAINED = "trained"
    IMPORTED = "imported"
    UNLEARNED = "unlearned"


class DatasetColumns(BaseModel):
    """Which columns (or NPZ arrays) hold what. Features are numeric; NPZ may name an image array."""

    model_config = ConfigDict(extra="forbid")

    record_key: str = Field(min_length=1)
    subject_column: str | None = Field(default=None, min_length=1)
    identifier_type: IdentifierType = IdentifierType.USER_ID
    # user_id only: match ids case-insensitively (case-folded before hashing). Off by default:
    # most systems' ids are case-sensitive, and folding would merge two people.
    fold_case: bool = False
    label: str | None = Field(default=None, min_length=1)
    features: list[str] = Field(default_factory=list)
    image: str | None = Field(default=None, min_length=1)
    # Provenance: the column naming each row's source (a vendor feed, an export), or one
    # source for the whole file. Each record stores it; removal requests can select by it.
    source_column: str | None = Field(default=None, min_length=1)
    source: str | None = Field(default=None, min_length=1, max_length=MAX_SOURCE_LENGTH)

    @model_validator(mode="after")
    def _has_content(self) -> DatasetColumns:
        if not self.features and not self.image:
            raise ValueError("name at least one feature column or an image array")
        if self.source_column and self.source:
            raise ValueError("give a source column or one source for the whole file, not both")
        named = [self.record_key, self.subject_column, self.label, *self.features, self.image, self.source_column]
        present = [n for n in named if n]
        if len(present) != len(set(present)):
            raise ValueError("a column may play only one role")
        if self.fold_case and self.identifier_type is not IdentifierType.USER_ID:
            raise ValueError("fold_case applies to user_id subjects only (e-mails are always folded)")
        return self

    def columns(self) -> list[str]:
        named = [self.record_key, self.subject_column, self.label, *self.features, self.image, self.source_column]
        return [n for n in named if n]


class DatasetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(min_length=1, max_length=200, pattern=NAME)
    uri: str = Field(min_length=1, max_length=2000)
    format: DatasetFormat
    columns: DatasetColumns = Field(alias="schema")


class DatasetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True, populate_by_name=True, serialize_by_alias=True)

    id: str
    name: str
    uri: str
    format: str
    columns: dict[str, Any] = Field(validation_alias="schema", serialization_alias="schema")
    status: str
    progress: float
    error: str | None
    record_count: int
    suppressed_count: int = Field(default=0, description="rows forgotten before (suppression list), kept out")
    created_at: datetime
    ingested_at: datetime | None


class SuppressionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str = Field(description="subject_hash (keyed) or record_key")
    value: str
    request_id: str | None
    created_at: datetime
    lifted_at: datetime | None
    lifted_by: str | None
    lift_reason: str | None


class LiftSuppression(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000)


class SnapshotCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    exclude_record_keys: list[str] = Field(default_factory=list, max_length=10_000)


class SnapshotOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    dataset_id: str
    record_count: int
    merkle_root: str
    created_at: datetime


class ModelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=NAME)
    adapter: str = Field(min_length=1, max_length=64, pattern=SLUG)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    dataset: str = Field(min_length=1, max_length=200)
    policy: UnlearningPolicy = Field(default_factory=UnlearningPolicy)


class ModelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    adapter: str
    hyperparameters: dict[str, Any]
    dataset_id: str
    policy: dict[str, Any]
    created_at: datetime


class ArtifactIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: ArtifactKind = ArtifactKind.MODEL
    uri: str = Field(min_length=1, max_length=2000)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: NonNegativeInt64 = 0
    shard: NonNegativeInt32 | None = None
    slice: NonNegativeInt32 | None = None
    snapshot_id: str | None = None


class ArtifactUploaded(BaseModel):
    uri: str
    sha256: str
    size_bytes: int


class VersionImport(BaseModel):
    """An externally trained version, declared with the snapshot it was trained on."""

    model_config = ConfigDict(extra="forbid")

    snapshot_id: str
    parent: PositiveInt32 | None = None
    artifacts: list[ArtifactIn] = Field(min_length=1, max_length=1000)
    state: VersionState = VersionState.ACTIVE
    metrics: dict[str, FiniteFloat] = Field(default_factory=dict, max_length=1000)


class ArtifactOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    shard: int | None
    slice: int | None
    snapshot_id: str | None
    uri: str
    sha256: str
    size_bytes: int
    state: str


class VersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    model_id: str
    number: int
    parent_id: str | None
    snapshot_id: str | None
    artifact_uri: str | None
    artifact_sha256: str | None
    state: str
    origin: str
    metrics: dict[str, Any]
    created_at: datetime
    purged_at: datetime | None


@dataclass(frozen=True)
class ArtifactSpec:
    """One part of a new version. ``uri``/``sha256`` come from ``artifacts.put_bytes`` or an
    external store; ``snapshot_id`` is the exact slice of data this part saw (defaults to the
    version's snapshot)."""

    uri: str
    sha256: str
    kind: ArtifactKind | str = ArtifactKind.MODEL
    size_bytes: int = 0
    shard: int | None = None
    slice: int | None = None
    snapshot_id: str | None = None
