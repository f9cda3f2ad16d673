"""Training-data erasure: forgotten rows leave the dataset file itself, not only the models.

When every request touching a dataset has completed, the jobs room calls ``schedule``. For a
managed file (a local file under the dataset root) that queues an erasure: the task streams
the file, writes a new content-addressed file (``<dataset root>/managed/<sha256>.<format>``)
without any row whose record is no longer active (forgotten or suppressed), rebuilds the
leaf index, points the dataset at the new file and destroys the old bytes (at once, or after
``UNLEARND_ERASED_FILE_RETENTION_HOURS`` through the scheduler's tick; never while a running job
that loaded the old file may still read it). The certificates of the completed requests whose
rows it takes out wait for it; a failed or lost run is retried by the scheduler's tick with
back-off, and after the last attempt the failure is final and stated. A file at an external
location is not Unlearnd's to rewrite: its erasure row says so, and the audit event
``dataset.redaction_required`` (a webhook to its owner) asks for the redaction.

Rows keep their ``row_index`` (snapshots are bitmaps of it) and the engine reads a file by
record key, so nothing else changes when the file shrinks. The leaf index keeps every
record's (key, content hash) leaf, forgotten ones included: purged versions' snapshot roots
and the certificates' proofs are computed from it, and the database keeps those keys and
hashes anyway (they are the suppression list).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import logging
import os
import shutil
import uuid
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.core.config import get_settings
from app.core.database import not_among, session_scope, utcnow
from app.core.errors import InvalidInput
from app.core.outbox import enqueue
from app.core.queue import TaskName
from app.registry import locations
from app.registry.leaves import build_leaf_index
from app.registry.models import DataRecord, Dataset, DatasetErasure, DatasetStatus, ErasureStatus, RecordState
from app.registry.readers import BATCH_ROWS, DatasetFileError
from app.registry.schemas import DatasetColumns, DatasetFormat

log = logging.getLogger("unlearnd.registry.erasure")
REDACTION_REQUIRED = "dataset.redaction_required"
OPEN = (ErasureStatus.QUEUED, ErasureStatus.RUNNING)
NOT_MANAGED_STATEMENT = (
    "the dataset file lies at an external location that Unlearnd does not manage; Unlearnd did not "
    "rewrite it, and asked its owner to redact the forgotten rows (event dataset.redaction_required)"
)


def managed_root() -> Path:
    return locations.dataset_root() / "managed"


def is_managed(dataset: Dataset) -> bool:
    """A local file under the dataset root is Unlearnd's to rewrite; a remote one is not."""
    return not locations.under_prefix(dataset.uri, get_settings().dataset_remote_prefixes)


def _unerased(session: Session, dataset_id: str) -> int:
    return session.scalar(select(func.count()).select_from(DataRecord).where(
        DataRecord.dataset_id == dataset_id, DataRecord.state != RecordState.ACTIVE,
        DataRecord.erasure_id.is_(None))) or 0


def schedule(session: Session, dataset_id: str, request_ids: Iterable[str], *, actor: str) -> DatasetErasure | None:
    """Erase the dataset's no-longer-active rows from its file (managed), or ask the owner to
    (external). ``request_ids``: completed requests whose certificates should state it.
    Joins an erasure still queued for the dataset; None when no row waits for erasure."""
    dataset = session.scalar(select(Dataset).where(Dataset.id == dataset_id).with_for_update())
    waiting = _unerased(session, dataset_id)
    if dataset is None or not waiting:
        return None
    request_ids = sorted(set(request_ids))
    if not is_managed(dataset):
        erasure = DatasetErasure(dataset_id=dataset_id, status=ErasureStatus.EXTERNAL, request_ids=request_ids,
                                 old_uri=dataset.uri, rows_erased=0, finished_at=utcnow())
        session.add(erasure)
        session.flush()
        session.execute(update(DataRecord).where(
            DataRecord.dataset_id == dataset_id, DataRecord.state != RecordState.ACTIVE,
            DataRecord.erasure_id.is_(None)).values(erasure_id=erasure.id))
        audit.record(session, actor=actor, action=REDACTION_REQUIRED, entity_type="dataset", entity_id=dataset_id,
                     payload={"erasure_id": erasure.id, "dataset": dataset.name, "rows": waiting,
                              "owner_client_id": dataset.created_by})
        _certify(session, request_ids)
        return erasure
    queued = session.scalar(select(DatasetErasure).where(
        DatasetErasure.dataset_id == dataset_id, DatasetErasure.status == ErasureStatus.QUEUED))
    if queued is not None:
        queued.request_ids = sorted({*queued.request_ids, *request_ids})
        return queued
    erasure = DatasetErasure(dataset_id=dataset_id, request_ids=request_ids, old_uri=dataset.uri)
    session.add(erasure)
    session.flush()
    enqueue(session, TaskName.ERASE_DATASET_ROWS, erasure_id=erasure.id)
    audit.record(session, actor=actor, action="dataset.erasure_queued", entity_type="dataset", entity_id=dataset_id,
                 payload={"erasure_id": erasure.id, "rows": waiting})
    return erasure


# --- the rewrite ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Rewritten:
    path: Path
    sha256: str
    rows_before: int
    rows_kept: int


class _HashingWriter(io.RawIOBase):
    """A file that hashes what is written to it, so the new file is hashed in one pass."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle, self.digest = handle, hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        view = memoryview(data)
        self.digest.update(view)
        return self.handle.write(view)


def _drop_mask(keys: pa.Array, drop: pa.Array) -> pa.Array:
    return pc.invert(pc.is_in(pc.cast(keys, pa.string()), value_set=drop))


def _parquet(source: IO[bytes], sink: IO[bytes], key: str, drop: pa.Array) -> tuple[int, int]:
    parquet = pq.ParquetFile(source)
    before = kept = 0
    with pq.ParquetWriter(sink, parquet.schema_arrow) as writer:
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS):
            survivors = batch.filter(_drop_mask(batch.column(key), drop))
            before, kept = before + batch.num_rows, kept + survivors.num_rows
            writer.write_batch(survivors)
    return before, kept


def _csv(source: IO[bytes], sink: IO[bytes], key: str, drop: pa.Array) -> tuple[int, int]:
    head = source.read(64 * 1024)
    source.seek(0)
    header = next(csv.reader(io.StringIO(head.decode("utf-8").splitlines()[0])))
    # Every column as text: the rewritten file carries each kept value exactly as it was.
    reader = pacsv.open_csv(source, read_options=pacsv.ReadOptions(block_size=4 << 20),
                            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(header, pa.string()),
                                                                 strings_can_be_null=False))
    before = kept = 0
    with pacsv.CSVWriter(sink, reader.schema, write_options=pacsv.WriteOptions(quoting_style="needed")) as writer:
        for batch in reader:
            survivors = batch.filter(_drop_mask(batch.column(key), drop))
            before, kept = before + batch.num_rows, kept + survivors.num_rows
            writer.write_batch(survivors)
    return before, kept


# Rows per block when an NPZ member is copied: about 8 MiB of row data at a time.
_NPZ_BLOCK_BYTES = 8 << 20
# Zip entries carry a fixed time, so the same content gives the same bytes (content address).
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def _npy_header(handle: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(handle)
    return np.lib.format.read_array_header_2_0(handle)


def _write_npy_header(handle: IO[bytes], shape: tuple[int, ...], dtype: np.dtype) -> None:
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    try:
        np.lib.format.write_array_header_1_0(handle, header)
    except ValueError:  # a header over 64 KiB (very many fields)
        np.lib.format.write_array_header_2_0(handle, header)


def _npz(source: IO[bytes], sink: IO[bytes], key: str, drop: pa.Array) -> tuple[int, int]:
    """Member by member, row block by row block: memory holds the record-key array, the keep
    mask (one byte a row) and one ~8 MiB block, not the file. Every array with one entry per
    record loses the forgotten rows; any other member is copied unchanged. A Fortran-ordered
    array with more than one dimension cannot be cut by rows while streaming: that one member
    is loaded whole (the ingestion reader refuses such arrays for the schema's columns)."""
    with zipfile.ZipFile(source) as archive:
        with archive.open(f"{key}.npy") as handle:
            keys = np.lib.format.read_array(handle, allow_pickle=False)
        mask = np.asarray(_drop_mask(pa.array(keys.astype(str)), drop), dtype=bool)
        rows, kept = len(keys), int(mask.sum())
        del keys
        with zipfile.ZipFile(sink, "w", allowZip64=True) as out:
            for info in archive.infolist():
                entry = zipfile.ZipInfo(info.filename, date_time=_ZIP_EPOCH)
                entry.compress_type, entry.external_attr = info.compress_type, info.external_attr
                shape: tuple[int, ...] = ()
                if info.filename.endswith(".npy"):
                    with archive.open(info) as member:
                        shape, fortran, dtype = _npy_header(member)
                with archive.open(info) as member, out.open(entry, "w", force_zip64=True) as target:
                    if not shape or shape[0] != rows:  # not one entry per record: copied as it is
                        shutil.copyfileobj(member, target, 1 << 20)
                        continue
                    _npy_header(member)
                    if dtype.hasobject:
                        raise ValueError(f"array '{info.filename}' holds Python objects")
                    _write_npy_header(target, (kept, *shape[1:]), dtype)
                    if fortran and len(shape) > 1:
                        whole = np.asfortranarray(np.frombuffer(member.read(), dtype=dtype).reshape(shape, order="F"))
                        target.write(np.ascontiguousarray(whole[mask]).tobytes())
                        continue
                    row_bytes = max(1, int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)
                    block = max(1, _NPZ_BLOCK_BYTES // row_bytes)
                    for start in range(0, rows, block):
                        count = min(block, rows - start)
                        data = member.read(count * row_bytes)
                        if len(data) != count * row_bytes:
                            raise ValueError(f"array '{info.filename}' is truncated")
                        part = np.frombuffer(data, dtype=dtype).reshape((count, *shape[1:]))
                        target.write(part[mask[start : start + count]].tobytes())
    return rows, kept


_WRITERS = {DatasetFormat.PARQUET: _parquet, DatasetFormat.CSV: _csv, DatasetFormat.NPZ: _npz}


def rewrite(source: IO[bytes], fmt: DatasetFormat, columns: DatasetColumns, drop_keys: Iterable[str],
            target_dir: Path) -> Rewritten:
    """Stream ``source`` into a content-addressed file under ``target_dir`` without the rows
    whose record key is in ``drop_keys``."""
    target_dir.mkdir(parents=True, exist_ok=True)
    drop = pa.array(sorted(set(drop_keys)), pa.string())
    scratch = target_dir / f".tmp-{uuid.uuid4().hex}"
    try:
        with open(scratch, "wb") as handle:
            hashing = _HashingWriter(handle)
            with io.BufferedWriter(hashing, buffer_size=1 << 20) as sink:
                before, kept = _WRITERS[fmt](source, sink, columns.record_key, drop)
        sha256 = hashing.digest.hexdigest()
        final = target_dir / f"{sha256}.{fmt.value}"
        os.replace(scratch, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            scratch.unlink()
    return Rewritten(final, sha256, before, kept)


def _sha256_of(location: str) -> str:
    digest = hashlib.sha256()
    with locations.open_dataset(location) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- the task ---------------------------------------------------------------------------------

# Which dataset files running jobs have loaded: given by the caller (the jobs room knows its
# jobs; this room does not), read under the dataset's row lock. See ``_destroy_old``.
FilesInUse = Callable[[Session], set[str]]


def _none_in_use(_: Session) -> set[str]:
    return set()


def run(erasure_id: str, files_in_use: FilesInUse = _none_in_use) -> DatasetErasure | None:
    """The erasure task's body. Idempotent: the new file is content-addressed, and the swap
    happens only while the dataset still names the file this erasure read."""
    with session_scope() as session:
        erasure = session.scalar(select(DatasetErasure).where(DatasetErasure.id == erasure_id).with_for_update())
        if erasure is None or erasure.status not in OPEN:
            return erasure
        dataset = session.get(Dataset, erasure.dataset_id)
        busy = session.scalar(select(DatasetErasure.id).where(
            DatasetErasure.dataset_id == dataset.id, DatasetErasure.status == ErasureStatus.RUNNING,
            DatasetErasure.id != erasure.id))
        if busy is not None:
            raise ErasureBusy(f"erasure {busy} of the dataset is running")
        erasure.status, erasure.old_uri = ErasureStatus.RUNNING, dataset.uri
        erasure.attempts, erasure.started_at, erasure.retry_at = erasure.attempts + 1, utcnow(), None
        source = (dataset.uri, DatasetFormat(dataset.format), DatasetColumns.model_validate(dataset.schema))
        gone = session.execute(select(DataRecord.id, DataRecord.record_key).where(
            DataRecord.dataset_id == dataset.id, DataRecord.state != RecordState.ACTIVE)).tuples().all()
    try:
        old_sha256 = _sha256_of(source[0])
        with locations.open_dataset(source[0]) as handle:
            rewritten = rewrite(handle, source[1], source[2], [key for _, key in gone], managed_root())
    except (OSError, ValueError, DatasetFileError, InvalidInput, pa.ArrowException, zipfile.BadZipFile) as exc:
        return fail(erasure_id, f"{type(exc).__name__}: the dataset file could not be rewritten")
    return _swap(erasure_id, source[0], old_sha256, rewritten, [record_id for record_id, _ in gone], files_in_use)


class ErasureBusy(Exception):
    """Another erasure of the same dataset is rewriting its file; try again shortly."""


def retry_delay(attempts: int) -> timedelta:
    base = get_settings().erasure_retry_base_seconds
    return timedelta(seconds=min(3600.0, base * 2.0 ** max(0, attempts - 1)))


def fail(erasure_id: str, message: str) -> DatasetErasure:
    """A run failed. While runs remain the scheduler's tick runs it again after a back-off;
    the last failure is final: its rows are marked as this erasure's (the certificates that
    waited now state the failure instead of waiting for ever) and admins are told."""
    with session_scope() as session:
        erasure = session.scalar(select(DatasetErasure).where(DatasetErasure.id == erasure_id).with_for_update())
        if erasure.status in OPEN:
            _record_failure(session, erasure, message)
        return erasure


def _record_failure(session: Session, erasure: DatasetErasure, message: str) -> None:
    now = utcnow()
    final = erasure.attempts >= get_settings().erasure_max_attempts
    erasure.status, erasure.error, erasure.finished_at = ErasureStatus.FAILED, message[:2000], now
    erasure.retry_at = None if final else now + retry_delay(erasure.attempts)
    audit.record(session, actor="worker", action="dataset.erasure_failed", entity_type="dataset",
                 entity_id=erasure.dataset_id,
                 payload={"erasure_id": erasure.id, "error": message[:200], "attempt": erasure.attempts,
                          "final": final, "retry_at": None if final else erasure.retry_at.isoformat(),
                          **({"notify": "admins"} if final else {})})
    if final:
        session.execute(update(DataRecord).where(
            DataRecord.dataset_id == erasure.dataset_id, DataRecord.state != RecordState.ACTIVE,
            DataRecord.erasure_id.is_(None)).values(erasure_id=erasure.id))
        _certify(session, erasure.request_ids)


def _certify(session: Session, request_ids: Iterable[str]) -> None:
    """The certificates that waited for this erasure can be issued now (the task is idempotent)."""
    for request_id in sorted(set(request_ids)):
        enqueue(session, TaskName.ISSUE_CERTIFICATE, request_id=request_id)


def _swap(erasure_id: str, old_uri: str, old_sha256: str, rewritten: Rewritten, record_ids: list[int],
          files_in_use: FilesInUse) -> DatasetErasure:
    now = utcnow()
    retention = timedelta(hours=get_settings().erased_file_retention_hours)
    with session_scope() as session:
        erasure = session.scalar(select(DatasetErasure).where(DatasetErasure.id == erasure_id).with_for_update())
        # A job reading the dataset takes this row lock in share mode while it notes the file
        # it loads (``dataset_for_reading``): once it is ours, every such note is visible.
        dataset = session.scalar(select(Dataset).where(Dataset.id == erasure.dataset_id).with_for_update())
        if erasure.status != ErasureStatus.RUNNING or dataset.uri != old_uri:
            return erasure  # another delivery finished it
        new_uri = str(rewritten.path)
        dataset.uri = new_uri
        dataset.leaf_index_uri = build_leaf_index(session, dataset)
        for start in range(0, len(record_ids), 1000):
            session.execute(update(DataRecord).where(
                DataRecord.id.in_(record_ids[start : start + 1000]), DataRecord.erasure_id.is_(None)
            ).values(erasure_id=erasure.id))
        erasure.status, erasure.finished_at, erasure.error = ErasureStatus.DONE, now, None
        erasure.old_sha256, erasure.new_uri, erasure.new_sha256 = old_sha256, new_uri, rewritten.sha256
        erasure.rows_before, erasure.rows_erased = rewritten.rows_before, rewritten.rows_before - rewritten.rows_kept
        erasure.destroy_after = now + retention
        # Failed runs waiting for a retry: this rewrite took their rows out too.
        superseded = list(session.scalars(select(DatasetErasure).where(
            DatasetErasure.dataset_id == dataset.id, DatasetErasure.status == ErasureStatus.FAILED,
            DatasetErasure.retry_at.is_not(None))))
        for earlier in superseded:
            earlier.status, earlier.retry_at = ErasureStatus.SUPERSEDED, None
        session.flush()
        in_use = files_in_use(session)
        destroyed = _destroy_old(session, erasure, now, in_use) if not retention else False
        audit.record(session, actor="worker", action="dataset.rows_erased", entity_type="dataset",
                     entity_id=dataset.id, payload={"erasure_id": erasure.id, "old_sha256": old_sha256,
                                                    "new_sha256": rewritten.sha256,
                                                    "rows_erased": erasure.rows_erased,
                                                    "old_bytes_destroyed": destroyed,
                                                    "old_file_in_use": old_uri in in_use,
                                                    "superseded": [e.id for e in superseded]})
        _certify(session, [*erasure.request_ids, *(r for e in superseded for r in e.request_ids)])
        log.info("dataset rows erased", extra={"dataset_id": dataset.id, "rows": erasure.rows_erased})
        return erasure


def _destroy_old(session: Session, erasure: DatasetErasure, now: datetime, in_use: set[str]) -> bool:
    """Delete the previous file's bytes unless another dataset still points at that file or a
    running job loaded it (then the scheduler's tick destroys it once that job is done: a job
    that opened the old file keeps reading whole, untouched bytes)."""
    if erasure.old_destroyed_at is not None or erasure.old_uri == erasure.new_uri:
        return False
    if erasure.old_uri in in_use:
        return False
    shared = session.scalar(select(Dataset.id).where(Dataset.uri == erasure.old_uri))
    if shared is None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(erasure.old_uri)
    erasure.old_destroyed_at = now
    return shared is None


def destroy_expired(session: Session, now: datetime, in_use: set[str]) -> int:
    """The scheduler's tick: old files whose retention ran out, and that no running job still
    reads, are destroyed."""
    due = list(session.scalars(select(DatasetErasure).where(
        DatasetErasure.status == ErasureStatus.DONE, DatasetErasure.old_destroyed_at.is_(None),
        DatasetErasure.destroy_after <= now).with_for_update(skip_locked=True)))
    destroyed = 0
    for erasure in due:
        if _destroy_old(session, erasure, now, in_use):
            destroyed += 1
            audit.record(session, actor="scheduler", action="dataset.old_file_destroyed", entity_type="dataset",
                         entity_id=erasure.dataset_id, payload={"erasure_id": erasure.id, "sha256": erasure.old_sha256})
    return destroyed


def replaced_since(session: Session, dataset_id: str, since: datetime) -> set[str]:
    return set(session.scalars(select(DatasetErasure.old_uri).where(
        DatasetErasure.dataset_id == dataset_id, DatasetErasure.status == ErasureStatus.DONE,
        DatasetErasure.finished_at >= since)))


def retry_due(session: Session, now: datetime) -> int:
    """The scheduler's tick: a failed run whose back-off ran out, or a run that started longer
    ago than the stale limit (its worker was lost), is queued again; a lost run with no runs
    left fails for good. Audited either way."""
    settings = get_settings()
    stale = now - timedelta(seconds=settings.erasure_stale_seconds)
    due = list(session.scalars(select(DatasetErasure).where(
        ((DatasetErasure.status == ErasureStatus.FAILED) & (DatasetErasure.retry_at <= now))
        | ((DatasetErasure.status == ErasureStatus.RUNNING) & (DatasetErasure.started_at < stale))
    ).order_by(DatasetErasure.created_at).with_for_update(skip_locked=True)))
    for erasure in due:
        lost = erasure.status == ErasureStatus.RUNNING
        if lost and erasure.attempts >= settings.erasure_max_attempts:
            _record_failure(session, erasure, "WorkerLost: the erasure's run was lost on every attempt")
            continue
        erasure.status, erasure.retry_at = ErasureStatus.QUEUED, None
        enqueue(session, TaskName.ERASE_DATASET_ROWS, erasure_id=erasure.id)
        audit.record(session, actor="scheduler", action="dataset.erasure_retrying", entity_type="dataset",
                     entity_id=erasure.dataset_id,
                     payload={"erasure_id": erasure.id, "attempt": erasure.attempts + 1, "lost": lost})
    return len(due)


def waiting_datasets(session: Session) -> list[tuple[str, datetime | None]]:
    """Datasets with rows no longer active still in their file and no erasure under way or due
    for a retry: (dataset id, when the oldest of those rows was forgotten; None: suppressed)."""
    busy = select(DatasetErasure.dataset_id).where(
        DatasetErasure.status.in_(OPEN) | ((DatasetErasure.status == ErasureStatus.FAILED)
                                           & DatasetErasure.retry_at.is_not(None)))
    # A dataset still being ingested is left alone: its ingestion queues the erasure when done.
    ready = select(Dataset.id).where(Dataset.status == DatasetStatus.READY)
    rows = session.execute(select(DataRecord.dataset_id, func.min(DataRecord.forgotten_at)).where(
        DataRecord.state != RecordState.ACTIVE, DataRecord.erasure_id.is_(None), DataRecord.dataset_id.in_(ready),
        not_among(DataRecord.dataset_id, busy)).group_by(DataRecord.dataset_id).order_by(DataRecord.dataset_id))
    return [(dataset_id, oldest) for dataset_id, oldest in rows.tuples()]


def erasures_of_each(
    session: Session, record_ids: dict[str, list[int]]
) -> dict[str, tuple[list[DatasetErasure], list[str]]]:
    """Per set of records (keyed by anything): the erasures that took any of them out of their
    files, and the datasets whose files still hold some that are no longer active (an active
    row has nothing to erase). Two reads for all the sets."""
    every = sorted({record_id for ids in record_ids.values() for record_id in ids})
    placed: dict[int, tuple[str, str | None]] = {}
    for start in range(0, len(every), 1000):
        for record_id, dataset_id, erasure_id, state in session.execute(
                select(DataRecord.id, DataRecord.dataset_id, DataRecord.erasure_id, DataRecord.state).where(
                    DataRecord.id.in_(every[start : start + 1000]))).tuples():
            if erasure_id is not None or state != RecordState.ACTIVE:
                placed[record_id] = (dataset_id, erasure_id)
    wanted = sorted({erasure_id for _, erasure_id in placed.values() if erasure_id is not None})
    erasures = list(session.scalars(select(DatasetErasure).where(DatasetErasure.id.in_(wanted))
                                    .order_by(DatasetErasure.created_at))) if wanted else []
    found: dict[str, tuple[list[DatasetErasure], list[str]]] = {}
    for key, ids in record_ids.items():
        taken = {placed[i][1] for i in ids if i in placed and placed[i][1] is not None}
        waiting = {placed[i][0] for i in ids if i in placed and placed[i][1] is None}
        found[key] = ([e for e in erasures if e.id in taken], sorted(waiting))
    return found
