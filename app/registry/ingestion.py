"""Dataset ingestion: stream the file, hash each row, bulk-insert, all or nothing.

Rows are committed batch by batch (memory stays bounded and progress is visible), but
the dataset only becomes ``ready`` at the end and lineage only reads ready datasets.
A failure deletes whatever was written and stores the reason on the dataset; a retry
of a crashed run starts by doing the same, so the task is idempotent.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy import delete, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.core.config import get_settings
from app.core.database import session_scope, utcnow
from app.core.errors import InvalidInput, NotFound
from app.core.hashing import CANONICALISER_VERSION, canonical_json, sha256_hex, subject_hash
from app.registry import erasure, locations, suppression
from app.registry.models import DataRecord, Dataset, DatasetStatus, RecordState
from app.registry.readers import DatasetFileError, RowBatch, read_batches
from app.registry.schemas import MAX_SOURCE_LENGTH, DatasetColumns, DatasetFormat
from app.registry.suppression import SuppressionList

log = logging.getLogger("unlearnd.registry.ingestion")
_COLUMNS = ("dataset_id", "row_index", "record_key", "subject_hash", "content_hash", "state", "source",
            "ingested_at")
# Row positions are stored in 32-bit roaring bitmaps.
MAX_ROWS = 2**32 - 1


def _source_of(batch: RowBatch, offset: int, first_row: int, columns: DatasetColumns) -> str | None:
    """The row's provenance: its source column's value, or the file's one source."""
    if batch.sources is None:
        return columns.source
    value = batch.sources[offset]
    if value is None or value == "":
        return None
    if len(value) > MAX_SOURCE_LENGTH:
        raise DatasetFileError(f"row {first_row + offset}: source column '{columns.source_column}': "
                               f"longer than {MAX_SOURCE_LENGTH} characters")
    return value


def _hash_rows(dataset_id: str, batch: RowBatch, first_row: int, columns: DatasetColumns,
               pepper: bytes, ingested_at: datetime, suppressed: SuppressionList) -> list[tuple[Any, ...]]:
    """Rows hashed with the current canonicaliser (``_start`` records it on the dataset)."""
    rows: list[tuple[Any, ...]] = []
    seen: set[str] = set()
    hashed: dict[str, str] = {}
    for offset, key in enumerate(batch.keys):
        if key in seen:
            raise DatasetFileError(f"duplicate record key '{key}'")
        seen.add(key)
        subject = None
        raw = batch.subjects[offset] if batch.subjects is not None else None
        if raw is not None and raw != "":
            subject = hashed.get(raw)
            if subject is None:
                try:
                    subject = subject_hash(columns.identifier_type, raw, pepper, fold_case=columns.fold_case)
                except InvalidInput as exc:
                    # The raw value never enters the message: it is personal data.
                    raise DatasetFileError(
                        f"row {first_row + offset}: subject column '{columns.subject_column}': {exc.detail}"
                    ) from None
                hashed[raw] = subject
        content: dict[str, Any] = {"key": key, "subject": subject}
        if batch.labels is not None:
            content["label"] = batch.labels[offset]
        if batch.features is not None:
            content["features"] = batch.features[offset]
        if batch.images is not None:
            content["image"] = batch.images[offset]
        # Forgotten stays forgotten: a row whose key or subject a completed request forgot never becomes active.
        state = RecordState.SUPPRESSED if suppressed.matches(key, subject) else RecordState.ACTIVE
        rows.append((dataset_id, first_row + offset, key, subject, sha256_hex(canonical_json(content)),
                     state.value, _source_of(batch, offset, first_row, columns), ingested_at))
    return rows


def _bulk_insert(session: Session, rows: list[tuple[Any, ...]]) -> None:
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        cursor = connection.connection.dbapi_connection.cursor()
        with cursor.copy(f"COPY data_records ({', '.join(_COLUMNS)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    session.execute(insert(DataRecord), [dict(zip(_COLUMNS, row, strict=True)) for row in rows])


def _duplicate_message(dataset_id: str, batch_keys: list[str]) -> str:
    """Name a key of the failed batch that an earlier batch already wrote."""
    with session_scope() as session:
        for start in range(0, len(batch_keys), 1000):
            clash = session.scalar(
                select(DataRecord.record_key)
                .where(DataRecord.dataset_id == dataset_id, DataRecord.record_key.in_(batch_keys[start : start + 1000]))
                .order_by(DataRecord.row_index).limit(1)
            )
            if clash is not None:
                return f"duplicate record key '{clash}'"
    return "duplicate record key"


class IngestionLeaseLost(Exception):
    """Another delivery owns the dataset now: stop without writing."""


def lease_seconds() -> float:
    """A heartbeat older than this means the delivery writing the rows is dead. Every batch
    beats, so this only has to outlast one 50k-row batch on a loaded machine."""
    return max(30.0, min(300.0, get_settings().task_visibility_timeout_seconds / 2))


def _owned(session: Session, dataset_id: str, worker: str) -> Dataset:
    """The dataset, row-locked, if this delivery still holds its lease."""
    dataset = session.scalar(select(Dataset).where(Dataset.id == dataset_id).with_for_update())
    if dataset is None or dataset.status != DatasetStatus.INGESTING or dataset.ingest_worker != worker:
        raise IngestionLeaseLost(f"dataset {dataset_id} is no longer ingested by {worker}")
    dataset.heartbeat_at = utcnow()
    return dataset


def _fail(dataset_id: str, worker: str, message: str) -> None:
    with session_scope() as session:
        dataset = _owned(session, dataset_id, worker)
        session.execute(delete(DataRecord).where(DataRecord.dataset_id == dataset_id))
        dataset.status, dataset.error, dataset.record_count = DatasetStatus.FAILED, message[:2000], 0
        dataset.ingest_worker = None
        audit.record(session, actor="worker", action="dataset.ingestion_failed", entity_type="dataset",
                     entity_id=dataset_id, payload={"error": message[:500]})


def _refresh_statistics() -> None:
    """After a bulk load the planner's row estimates are stale until autovacuum catches up,
    and a stale estimate can turn the hot-path index lookups into sequential scans."""
    with session_scope() as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("ANALYZE data_records"))


def _start(dataset_id: str, worker: str) -> Dataset | None:
    """Take the ingestion lease, or return None when there is nothing for this delivery to do:
    the dataset is ready, or another live delivery is writing it."""
    now = utcnow()
    with session_scope() as session:
        dataset = session.scalar(select(Dataset).where(Dataset.id == dataset_id).with_for_update())
        if dataset is None:
            raise NotFound(f"no dataset {dataset_id}")
        if dataset.status == DatasetStatus.READY:
            return None
        fresh = dataset.heartbeat_at is not None and now - dataset.heartbeat_at < timedelta(seconds=lease_seconds())
        if dataset.status == DatasetStatus.INGESTING and dataset.ingest_worker not in (None, worker) and fresh:
            log.info("ingestion already running elsewhere", extra={"dataset_id": dataset_id})
            return None
        # Rows left by a dead delivery are removed so this one starts clean.
        session.execute(delete(DataRecord).where(DataRecord.dataset_id == dataset_id))
        dataset.status, dataset.error, dataset.progress, dataset.record_count = (
            DatasetStatus.INGESTING, None, 0.0, 0)
        dataset.canonicaliser_version = CANONICALISER_VERSION
        dataset.ingest_worker, dataset.heartbeat_at = worker, now
        return dataset


def ingest(dataset_id: str, worker: str | None = None) -> Dataset:
    """Ingest under a lease held by ``worker`` (one id per delivery of the task)."""
    worker = worker or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    dataset = _start(dataset_id, worker)
    if dataset is None:
        with session_scope() as session:
            return session.get(Dataset, dataset_id)
    try:
        _write(dataset, worker)
    except IngestionLeaseLost:
        log.warning("ingestion lease lost; another delivery owns the dataset", extra={"dataset_id": dataset_id})
    with session_scope() as session:
        return session.get(Dataset, dataset_id)


def _write(dataset: Dataset, worker: str) -> None:
    dataset_id = dataset.id
    columns = DatasetColumns.model_validate(dataset.schema)
    pepper = get_settings().pepper_bytes()
    written = 0
    batch_keys: list[str] = []
    # Every row of one ingestion carries the same time: "ingested before T" selects whole runs.
    ingested_at = utcnow()
    with session_scope() as session:
        suppressed = suppression.active(session)
    suppressed_rows = 0
    try:
        with locations.open_dataset(dataset.uri) as handle:
            size = handle.size if hasattr(handle, "size") else 0
            for batch in read_batches(handle, DatasetFormat(dataset.format), columns, size or 0):
                if written + len(batch) > MAX_ROWS:
                    raise DatasetFileError(f"more than {MAX_ROWS} rows")
                rows = _hash_rows(dataset_id, batch, written, columns, pepper, ingested_at, suppressed)
                suppressed_rows += sum(1 for row in rows if row[5] == RecordState.SUPPRESSED)
                batch_keys = batch.keys
                with session_scope() as session:
                    # Locks the dataset row first: a batch of a delivery that lost its lease never lands.
                    owned = _owned(session, dataset_id, worker)
                    _bulk_insert(session, rows)
                    owned.progress = round(batch.progress, 4)
                written += len(rows)
    except DatasetFileError as exc:
        _fail(dataset_id, worker, str(exc))
    except (IntegrityError, psycopg.errors.UniqueViolation):
        _fail(dataset_id, worker, _duplicate_message(dataset_id, batch_keys))
    except InvalidInput as exc:
        _fail(dataset_id, worker, f"dataset location refused: {exc.detail}")
    except (OSError, ValueError) as exc:
        # The class only: an OS or network error's text can carry hosts, ports and paths.
        _fail(dataset_id, worker, f"unreadable file: {type(exc).__name__}")
    else:
        with session_scope() as session:
            ready = _owned(session, dataset_id, worker)
            ready.status, ready.progress, ready.record_count, ready.ingested_at = (
                DatasetStatus.READY, 1.0, written, utcnow())
            ready.ingest_worker, ready.suppressed_count = None, suppressed_rows
            audit.record(session, actor="worker", action="dataset.ingested", entity_type="dataset",
                         entity_id=dataset_id, payload={"record_count": written, "suppressed": suppressed_rows})
            if suppressed_rows:
                audit.record(session, actor="worker", action="dataset.rows_suppressed", entity_type="dataset",
                             entity_id=dataset_id, payload={"rows": suppressed_rows})
                # ...and out of the file too, like a forgotten row.
                erasure.schedule(session, dataset_id, [], actor="worker")
        _refresh_statistics()
    log.info("dataset ingestion finished", extra={"dataset_id": dataset_id, "rows": written})
