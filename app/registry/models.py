from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.database import Base, new_id, utcnow
from app.core.hashing import CANONICALISER_VERSION

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a real BIGINT.
BigId = BigInteger().with_variant(Integer, "sqlite")


class DatasetStatus(StrEnum):
    PENDING = "pending"
    INGESTING = "ingesting"
    READY = "ready"
    FAILED = "failed"


class RecordState(StrEnum):
    ACTIVE = "active"
    FORGOTTEN = "forgotten"
    # Ingested again after it was forgotten (its subject hash or record key is on the
    # suppression list): kept out of every snapshot and of the rewritten file.
    SUPPRESSED = "suppressed"


class VersionState(StrEnum):
    TRAINING = "training"
    ACTIVE = "active"
    SUPERSEDED = "superseded"
    PURGED = "purged"


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    uri: Mapped[str] = mapped_column(String(2000))
    format: Mapped[str] = mapped_column(String(16))
    # record-key column, subject columns + identifier type, label and feature columns.
    schema: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default=DatasetStatus.PENDING)
    error: Mapped[str | None] = mapped_column(default=None)
    progress: Mapped[float] = mapped_column(default=0.0)
    record_count: Mapped[int] = mapped_column(BigInteger, default=0)
    created_by: Mapped[str | None] = mapped_column(String(36), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    ingested_at: Mapped[datetime | None] = mapped_column(default=None)
    # Artifact holding every record's (row_index, record_key, leaf hash) sorted by record key:
    # built once, it lets each snapshot's Merkle tree be cut out without re-reading the rows.
    leaf_index_uri: Mapped[str | None] = mapped_column(String(2000), default=None)
    # The identifier canonicaliser (app.core.hashing) its rows' subject hashes were made with.
    canonicaliser_version: Mapped[int] = mapped_column(default=CANONICALISER_VERSION, server_default="1")
    # The ingestion lease: which delivery of the task is writing rows, and when it last did.
    # A second delivery while the lease is fresh leaves the dataset alone; the scheduler
    # re-sends a pending or stalled ingestion once this clock is two ticks old.
    ingest_worker: Mapped[str | None] = mapped_column(String(200), default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    # Rows of the file that were forgotten before (suppression list) and so never became active.
    suppressed_count: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class DataRecord(Base):
    """One training example: the caller's key, a keyed hash of its subject, a content hash."""

    __tablename__ = "data_records"
    __table_args__ = (
        UniqueConstraint("dataset_id", "record_key"),
        UniqueConstraint("dataset_id", "row_index"),
        Index("ix_data_records_subject_hash", "subject_hash"),
        Index("ix_data_records_dataset_source", "dataset_id", "source"),
        # The lineage check reads every forgotten record; they are few, the table is large.
        Index("ix_data_records_forgotten", "dataset_id", "row_index",
              postgresql_where=text("state = 'forgotten'"), sqlite_where=text("state = 'forgotten'")),
        # Rows still waiting to leave their dataset file (the scheduler's erasure sweep).
        Index("ix_data_records_unerased", "dataset_id",
              postgresql_where=text("state <> 'active' AND erasure_id IS NULL"),
              sqlite_where=text("state <> 'active' AND erasure_id IS NULL")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    # Position in the dataset file: snapshots store sets of these as compressed bitmaps.
    row_index: Mapped[int] = mapped_column(BigInteger)
    record_key: Mapped[str] = mapped_column(String(256))
    subject_hash: Mapped[str | None] = mapped_column(String(64))
    content_hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=RecordState.ACTIVE)
    forgotten_at: Mapped[datetime | None] = mapped_column(default=None)
    # Provenance: the source the row came from (the dataset's source column, or the one
    # source named for the file) and when it was ingested. Removal requests select by them.
    source: Mapped[str | None] = mapped_column(String(200), default=None)
    ingested_at: Mapped[datetime | None] = mapped_column(default=None)
    # The erasure that rewrote the dataset file without this (forgotten) row, or recorded that
    # its external owner must redact it: app.registry.erasure.
    erasure_id: Mapped[str | None] = mapped_column(String(36), default=None)


class ErasureStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    # The file lies at an external location: its owner was told to redact it.
    EXTERNAL = "external"
    # A failed erasure whose rows a later erasure of the same dataset took out of the file.
    SUPERSEDED = "superseded"


class DatasetErasure(Base):
    """Forgotten rows erased from a dataset file: the old and new file's sha256, how many rows
    went, and when the old bytes were destroyed (``app.registry.erasure``)."""

    __tablename__ = "dataset_erasures"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=ErasureStatus.QUEUED)
    # Completed requests whose certificates wait for (and state) this erasure.
    request_ids: Mapped[list[Any]] = mapped_column(default=list)
    old_uri: Mapped[str] = mapped_column(String(2000))
    old_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    new_uri: Mapped[str | None] = mapped_column(String(2000), default=None)
    new_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    rows_before: Mapped[int | None] = mapped_column(BigInteger, default=None)
    rows_erased: Mapped[int | None] = mapped_column(BigInteger, default=None)
    error: Mapped[str | None] = mapped_column(default=None)
    # Runs so far; a failed run is retried by the scheduler's tick at ``retry_at`` (back-off)
    # until ``UNLEARND_ERASURE_MAX_ATTEMPTS``; a run started before the stale limit is resumed.
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    retry_at: Mapped[datetime | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    destroy_after: Mapped[datetime | None] = mapped_column(default=None)
    old_destroyed_at: Mapped[datetime | None] = mapped_column(default=None)


class SuppressionKind(StrEnum):
    SUBJECT_HASH = "subject_hash"
    RECORD_KEY = "record_key"


class Suppression(Base):
    """Forgotten stays forgotten: a keyed subject hash or a record key that a completed request
    forgot. Ingestion keeps matching rows out (state ``suppressed``) until an admin lifts it."""

    __tablename__ = "suppressions"
    __table_args__ = (UniqueConstraint("kind", "value"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(256))
    request_id: Mapped[str | None] = mapped_column(String(36), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    lifted_at: Mapped[datetime | None] = mapped_column(default=None)
    lifted_by: Mapped[str | None] = mapped_column(String(36), default=None)
    lift_reason: Mapped[str | None] = mapped_column(default=None)


class DatasetSnapshot(Base):
    """The exact set of records a training run saw, immutable once written."""

    __tablename__ = "dataset_snapshots"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    record_count: Mapped[int] = mapped_column(BigInteger)
    # Roaring bitmap of DataRecord.row_index values in the snapshot.
    members: Mapped[bytes] = mapped_column(LargeBinary)
    merkle_root: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str | None] = mapped_column(String(36), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RegisteredModel(Base):
    __tablename__ = "registered_models"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    adapter: Mapped[str] = mapped_column(String(64))
    hyperparameters: Mapped[dict[str, Any]]
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    # default method, verification thresholds, batching window, retention.
    policy: Mapped[dict[str, Any]]
    created_by: Mapped[str | None] = mapped_column(String(36), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "number"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    model_id: Mapped[str] = mapped_column(ForeignKey("registered_models.id"), index=True)
    number: Mapped[int]
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("model_versions.id"), default=None, index=True)
    snapshot_id: Mapped[str | None] = mapped_column(ForeignKey("dataset_snapshots.id"), default=None, index=True)
    artifact_uri: Mapped[str | None] = mapped_column(String(2000), default=None)
    artifact_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    state: Mapped[str] = mapped_column(String(16), default=VersionState.TRAINING, index=True)
    origin: Mapped[str] = mapped_column(String(16), default="trained")  # trained | imported | unlearned
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    purged_at: Mapped[datetime | None] = mapped_column(default=None)


class ModelArtifact(Base):
    """A stored part of a version (whole model, SISA shard, slice checkpoint), with the
    snapshot of exactly the records it saw so lineage can be answered per artifact."""

    __tablename__ = "model_artifacts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # model | shard | checkpoint
    shard: Mapped[int | None] = mapped_column(default=None)
    slice: Mapped[int | None] = mapped_column(default=None)
    snapshot_id: Mapped[str | None] = mapped_column(ForeignKey("dataset_snapshots.id"), default=None, index=True)
    uri: Mapped[str] = mapped_column(String(2000))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    state: Mapped[str] = mapped_column(String(16), default=VersionState.ACTIVE)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    purged_at: Mapped[datetime | None] = mapped_column(default=None)


class TemporaryModelSet(Base):
    """Models trained outside the registry's versions and destroyed when their purpose ends
    (a qualification study's originals, retrains and unlearned models). They never had
    stored bytes, but while they exist they hold every record of their training snapshot,
    so lineage lists them beside the versions, and ``destroyed_at`` says when they went."""

    __tablename__ = "temporary_model_sets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    model_id: Mapped[str] = mapped_column(ForeignKey("registered_models.id"), index=True)
    snapshot_id: Mapped[str] = mapped_column(ForeignKey("dataset_snapshots.id"), index=True)
    purpose: Mapped[str] = mapped_column(String(32))  # e.g. "qualification"
    reference_id: Mapped[str] = mapped_column(String(36), index=True)  # e.g. the study's id
    storage: Mapped[str] = mapped_column(String(200))
    # How many models of each kind; null until known (a study that failed midway never says).
    models: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    destroyed_at: Mapped[datetime | None] = mapped_column(default=None, index=True)
