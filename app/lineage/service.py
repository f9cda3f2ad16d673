"""Lineage: record -> snapshot -> model version / artifact -> derived versions, and proofs.

These queries sit on the intake's hot path. A record is found by its indexed key or
subject hash; snapshot membership is a test against the snapshot's roaring bitmap,
decoded once per process (snapshots are immutable, so the decoded bitmap never goes
stale); versions and artifacts are then found by their indexed snapshot ids.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from anyio import to_thread
from pyroaring import BitMap, FrozenBitMap
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Select,
    String,
    bindparam,
    cast,
    func,
    literal,
    literal_column,
    null,
    select,
    text,
    union,
    union_all,
)
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.core import merkle
from app.core.config import get_settings
from app.core.database import (
    any_of_json,
    fetch_all,
    fetch_all_async,
    json_list,
    read_once,
    reads_on_the_loop,
    utcnow,
)
from app.core.errors import InvalidInput, NotFound, TooManyRequests
from app.core.hashing import canonical_json, sha256_hex
from app.lineage import proofs
from app.lineage.schemas import (
    AffectedVersion,
    ArtifactRef,
    LineageEdge,
    RecordLineage,
    RecordSelection,
    Resolution,
    ResolvedRecord,
    SnapshotRef,
    SourceLineage,
    SourceVersion,
    SubjectLineage,
    TemporaryModelsRef,
    VersionLineage,
    VersionRef,
)
from app.registry import service as registry
from app.registry import subjects
from app.registry.cache import ImmutableCache
from app.registry.models import (
    DataRecord,
    Dataset,
    DatasetSnapshot,
    DatasetStatus,
    ModelArtifact,
    ModelVersion,
    RecordState,
    RegisteredModel,
    TemporaryModelSet,
    VersionState,
)

_CHUNK = 1000
# Advisory lock that orders "which records are at stake" against "which versions hold them".
LINEAGE_LOCK_KEY = 0x6C696E65
# Superseded versions keep their bytes and may be made active again, so they count as live.
LIVE_STATES = (VersionState.TRAINING, VersionState.ACTIVE, VersionState.SUPERSEDED)


def lock_lineage(session: Session, *, exclusive: bool) -> None:
    """Hold the lineage lock until this transaction ends (PostgreSQL; SQLite writers are
    already serialised by BEGIN IMMEDIATE).

    Intake and request completion take it shared, so they run in parallel with each other;
    registering a version (and the reconciliation sweep) takes it exclusive. Without it a
    request resolving while a version commits could miss the version, and the version's
    check miss the request: each transaction reads before the other's write is visible.
    Take it before locking any request row, so the lock order is always lineage, then rows.
    """
    clause = lock_clause(session, exclusive=exclusive)
    if clause is not None:
        session.execute(select(clause))


def lock_clause(session: Session, *, exclusive: bool) -> ColumnElement[Any] | None:
    """``lock_lineage`` as a SQL expression, for a caller that takes the lock inside a read it
    makes anyway (one round trip less); None where no lock is needed (SQLite). What must be
    read under the lock goes in a later statement: a statement's snapshot predates its lock."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    return _LOCK_CLAUSES[exclusive]


# Built once: a statement made of the same objects each time reuses its compiled form cheaply.
_LOCK_CLAUSES = {exclusive: (func.pg_advisory_xact_lock if exclusive else func.pg_advisory_xact_lock_shared)(
    literal(LINEAGE_LOCK_KEY, BigInteger)) for exclusive in (True, False)}


def _load_bitmaps(session: Session, snapshot_ids: list[str]) -> dict[str, FrozenBitMap]:
    rows = session.execute(
        select(DatasetSnapshot.id, DatasetSnapshot.members).where(DatasetSnapshot.id.in_(snapshot_ids))
    ).tuples()
    return {sid: FrozenBitMap.deserialize(blob) for sid, blob in rows}


class _SnapshotBitmaps:
    """Decoded membership bitmaps; snapshots are immutable, so no entry ever goes stale."""

    def __init__(self) -> None:
        self._cache: ImmutableCache[FrozenBitMap] = ImmutableCache(size=1024)

    def get_many(self, session: Session, snapshot_ids: list[str]) -> dict[str, FrozenBitMap]:
        return self._cache.get_many(snapshot_ids, lambda missing: _load_bitmaps(session, missing))

    def cached(self, snapshot_ids: list[str]) -> dict[str, FrozenBitMap]:
        return self._cache.cached(snapshot_ids)


snapshot_bitmaps = _SnapshotBitmaps()


@dataclass(frozen=True)
class _Row:
    id: int
    dataset_id: str
    dataset: str
    record_key: str
    row_index: int
    state: str


_ROW_COLUMNS = (DataRecord.id, DataRecord.dataset_id, Dataset.name, DataRecord.record_key,
                DataRecord.row_index, DataRecord.state)


def _by_subject(hashes: ColumnElement[bool]):  # noqa: ANN202 - a Select over _ROW_COLUMNS and the hash
    return (select(*_ROW_COLUMNS, DataRecord.subject_hash).join(Dataset, Dataset.id == DataRecord.dataset_id)
            .where(Dataset.status == DatasetStatus.READY, hashes))


# Built once. On PostgreSQL the hashes are one JSON text (``any_of_json``): an expanded IN of a
# thousand 64-character hashes is a statement psycopg would re-parse on every call.
_BY_SUBJECT = {
    "postgresql": _by_subject(any_of_json(DataRecord.subject_hash, bindparam("hashes", type_=String))),
    None: _by_subject(DataRecord.subject_hash.in_(bindparam("hashes", expanding=True))),
}


def _ready_records():  # noqa: ANN202 - a Select over _ROW_COLUMNS
    return select(*_ROW_COLUMNS).join(Dataset, Dataset.id == DataRecord.dataset_id).where(
        Dataset.status == DatasetStatus.READY
    )


def _containing(session: Session, rows: list[_Row]) -> tuple[dict[str, set[int]], dict[str, SnapshotRef]]:
    """(snapshot id -> ids of the given records it contains, refs of those snapshots).
    Membership is a bitmap intersection per snapshot, so a whole source costs no more
    Python work per snapshot than the records it actually holds."""
    by_dataset: dict[str, dict[int, int]] = defaultdict(dict)
    for row in rows:
        by_dataset[row.dataset_id][row.row_index] = row.id
    if not by_dataset:
        return {}, {}
    wanted = {dataset_id: BitMap(positions) for dataset_id, positions in by_dataset.items()}
    snapshots = session.execute(
        select(DatasetSnapshot.id, DatasetSnapshot.dataset_id, DatasetSnapshot.record_count,
               DatasetSnapshot.merkle_root)
        .where(DatasetSnapshot.dataset_id.in_(list(by_dataset)))
        .order_by(DatasetSnapshot.created_at, DatasetSnapshot.id)
    ).tuples().all()
    bitmaps = snapshot_bitmaps.get_many(session, [sid for sid, *_ in snapshots])
    contains: dict[str, set[int]] = {}
    refs: dict[str, SnapshotRef] = {}
    for sid, dataset_id, count, root in snapshots:
        ids = by_dataset[dataset_id]
        hit = {ids[position] for position in bitmaps[sid] & wanted[dataset_id]}
        if hit:
            contains[sid] = hit
            refs[sid] = SnapshotRef(id=sid, record_count=count, merkle_root=root)
    return contains, refs


@dataclass(frozen=True)
class _Trained:
    versions: list[tuple[VersionRef, str, set[str]]]  # ref, model id, snapshot ids that put it there
    artifacts: list[ArtifactRef]


def _typed_nulls(*columns: Any) -> list[Any]:
    # A UNION's branches must agree on every column's type, so a branch pads with typed NULLs.
    return [cast(null(), column.type) for column in columns]


_VERSION_COLUMNS = (ModelVersion.id, RegisteredModel.name, ModelVersion.number, ModelVersion.state,
                    ModelVersion.snapshot_id, RegisteredModel.id)
_ARTIFACT_COLUMNS = (ModelArtifact.id, ModelArtifact.kind, ModelArtifact.shard, ModelArtifact.slice,
                     ModelArtifact.snapshot_id, ModelArtifact.sha256, ModelArtifact.state)


def _trained_selects(version_where: list[Any], artifact_where: list[Any], lead: tuple[Any, ...] = ()):  # noqa: ANN202
    """The two branches of the versions-trained-on-snapshots UNION ALL (by the version's own
    snapshot, by an artifact's), each after the ``lead`` columns."""
    by_version = (
        select(*lead, *_VERSION_COLUMNS, *_typed_nulls(*_ARTIFACT_COLUMNS))
        .join(RegisteredModel, RegisteredModel.id == ModelVersion.model_id)
        .where(*version_where)
    )
    by_artifact = (
        select(*lead, *_VERSION_COLUMNS, *_ARTIFACT_COLUMNS)
        .join(ModelVersion, ModelVersion.id == ModelArtifact.version_id)
        .join(RegisteredModel, RegisteredModel.id == ModelVersion.model_id)
        .where(*artifact_where)
    )
    return by_version, by_artifact


def _trained(found: Iterable[tuple[Any, ...]], holding: set[str] | None = None) -> _Trained:
    """Rows of ``_trained_selects``' union; with ``holding``, only those through one of its snapshots."""
    via: dict[str, set[str]] = defaultdict(set)
    refs: dict[str, tuple[VersionRef, str]] = {}
    artifact_refs: list[ArtifactRef] = []
    for vid, model, number, vstate, vsid, model_id, aid, kind, shard, slice_, asid, sha, astate in found:
        if holding is not None and (vsid if aid is None else asid) not in holding:
            continue
        if vid not in refs:
            refs[vid] = (VersionRef(id=vid, model=model, number=number, state=vstate, snapshot_id=vsid), model_id)
        if aid is None:
            via[vid].add(vsid)
            continue
        artifact_refs.append(ArtifactRef(id=aid, model=model, version=number, kind=kind, shard=shard, slice=slice_,
                                         snapshot_id=asid, sha256=sha, state=astate))
        via[vid].add(asid)
    versions = [(ref, model_id, via[vid]) for vid, (ref, model_id) in refs.items()]
    versions.sort(key=lambda v: (v[0].model, v[0].number))
    artifact_refs.sort(key=lambda a: (a.model, a.version, a.kind, a.shard or 0, a.slice or 0))
    return _Trained(versions, artifact_refs)


def _trained_on(session: Session, snapshot_ids: list[str], scope_models: list[str] | None = None) -> _Trained:
    """Versions trained on any of the snapshots, directly or through one of their artifacts.
    One round trip: the two indexed lookups are joined with UNION ALL."""
    if not snapshot_ids:
        return _Trained([], [])
    scope = [RegisteredModel.name.in_(scope_models)] if scope_models is not None else []
    statement = union_all(*_trained_selects([ModelVersion.snapshot_id.in_(snapshot_ids), *scope],
                                            [ModelArtifact.snapshot_id.in_(snapshot_ids), *scope]))
    return _trained(session.execute(statement).tuples())


def _temporary_on(session: Session, snapshot_ids: list[str]) -> list[TemporaryModelsRef]:
    """Temporary model sets (a qualification study's models) trained on any of the snapshots."""
    if not snapshot_ids:
        return []
    found = session.execute(
        select(TemporaryModelSet, RegisteredModel.name).join(RegisteredModel, RegisteredModel.id == TemporaryModelSet.model_id)
        .where(TemporaryModelSet.snapshot_id.in_(snapshot_ids))
        .order_by(TemporaryModelSet.created_at, TemporaryModelSet.id)
    ).tuples()
    return [TemporaryModelsRef(id=t.id, model=name, purpose=t.purpose, reference_id=t.reference_id,
                               snapshot_id=t.snapshot_id, storage=t.storage, models=t.models, created_at=t.created_at,
                               destroyed_at=t.destroyed_at) for t, name in found]


def _lineage_of(row: _Row, snapshots: list[SnapshotRef], trained: _Trained,
                temporary: list[TemporaryModelsRef]) -> RecordLineage:
    versions = [ref for ref, _, _ in trained.versions]
    live = any(v.state != VersionState.PURGED for v in versions) or any(
        a.state != VersionState.PURGED for a in trained.artifacts
    ) or any(t.destroyed_at is None for t in temporary)
    return RecordLineage(record_id=row.id, dataset=row.dataset, record_key=row.record_key, state=row.state,
                         snapshots=snapshots, model_versions=versions, artifacts=trained.artifacts,
                         temporary_models=temporary, still_contained=live)


def _lineages(session: Session, rows: list[_Row]) -> list[RecordLineage]:
    contains, refs = _containing(session, rows)
    trained = _trained_on(session, list(contains))
    temporary = _temporary_on(session, list(contains))
    result = []
    for row in rows:
        mine = {sid for sid in refs if row.id in contains[sid]}
        versions = [(ref, model_id, via & mine) for ref, model_id, via in trained.versions if via & mine]
        parts = [a for a in trained.artifacts if a.snapshot_id in mine]
        result.append(_lineage_of(row, [refs[sid] for sid in refs if sid in mine], _Trained(versions, parts),
                                  [t for t in temporary if t.snapshot_id in mine]))
    return result


_SNAPSHOT_COLUMNS = (DatasetSnapshot.id.label("snapshot_id"), DatasetSnapshot.record_count, DatasetSnapshot.merkle_root,
                     select(TemporaryModelSet.id).where(TemporaryModelSet.snapshot_id == DatasetSnapshot.id)
                     .exists().correlate(DatasetSnapshot), DatasetSnapshot.created_at.label("snapshot_created_at"))


def _record_query():  # noqa: ANN202 - a CompoundSelect
    """The record query as one statement, so one round trip: rows of part 0 are the record
    joined with each snapshot of its dataset (and whether temporary models were trained on
    each), in order; rows of part 1 are ``_trained_selects``' over every snapshot of that
    dataset. By the dataset's name, not a list of snapshot ids: one fixed statement text,
    built and compiled once; rows through snapshots not holding the record are dropped in Python."""
    dataset, key = bindparam("dataset"), bindparam("key")
    snapshot_padding = _typed_nulls(*_ROW_COLUMNS, DatasetSnapshot.id, DatasetSnapshot.record_count,
                                    DatasetSnapshot.merkle_root, TemporaryModelSet.id.isnot(None),
                                    DatasetSnapshot.created_at)
    record = (
        select(literal_column("0").label("part"), *_ROW_COLUMNS, *_SNAPSHOT_COLUMNS,
               *_typed_nulls(*_VERSION_COLUMNS, *_ARTIFACT_COLUMNS))
        .join(Dataset, Dataset.id == DataRecord.dataset_id)
        .outerjoin(DatasetSnapshot, DatasetSnapshot.dataset_id == DataRecord.dataset_id)
        .where(Dataset.status == DatasetStatus.READY, Dataset.name == dataset, DataRecord.record_key == key)
    )
    snapshots = (select(DatasetSnapshot.id).join(Dataset, Dataset.id == DatasetSnapshot.dataset_id)
                 .where(Dataset.status == DatasetStatus.READY, Dataset.name == dataset))
    trained = _trained_selects([ModelVersion.snapshot_id.in_(snapshots)], [ModelArtifact.snapshot_id.in_(snapshots)],
                               lead=(literal_column("1"), *snapshot_padding))
    return union_all(record, *trained).order_by(
        literal_column("part"), literal_column("snapshot_created_at"), literal_column("snapshot_id"))


_RECORD_QUERY = _record_query()
_RECORD = slice(1, 1 + len(_ROW_COLUMNS))
_SNAPSHOT = slice(_RECORD.stop, _RECORD.stop + len(_SNAPSHOT_COLUMNS) - 1)  # created_at only orders
_TRAINED = slice(_RECORD.stop + len(_SNAPSHOT_COLUMNS), None)


# PostgreSQL: the record, and a fingerprint of every row its dataset's part of the answer is read
# from (the dataset, its snapshots and their temporary model sets, the versions and artifacts
# trained on them, every registered model): the dataset row's version (xmin and ctid change with
# every update) and the count, sum and maximum of its entries in ``lineage_changes``
# (app/lineage/models.py), which triggers on the other tables write in the writer's own
# transaction. Any committed write to those rows adds an entry, so two reads with the same
# fingerprint read the same rows (``compact_changes`` keeps that true: see there). What
# ``_RECORD_QUERY`` returned for a fingerprint is kept (``_LINEAGE_PARTS``), and later queries of
# the dataset's records cost one short round trip, an index-only read of the log where hashing
# the ~150 lineage rows of a dataset at 50 snapshots took 0.87 ms.
_RECORD_AND_FINGERPRINT = text("""
SELECT r.id, r.dataset_id, d.name, r.record_key, r.row_index, r.state,
  d.xmin::text || d.ctid::text || ':' || (
   SELECT count(*)::text || ':' || coalesce(sum(c.seq), 0)::text || ':' || coalesce(max(c.seq), 0)::text
   FROM lineage_changes c WHERE c.dataset_id = d.id)
FROM data_records r JOIN datasets d ON d.id = r.dataset_id
WHERE d.status = 'ready' AND d.name = :dataset AND r.record_key = :key
""")
# A dataset's entries past which ``compact_changes`` folds them into one.
MOST_CHANGES_KEPT = 64
_COMPACT_CHANGES = text("""
WITH crowded AS (SELECT dataset_id FROM lineage_changes GROUP BY dataset_id HAVING count(*) > :most),
     fresh AS (INSERT INTO lineage_changes (dataset_id) SELECT dataset_id FROM crowded RETURNING dataset_id, seq)
DELETE FROM lineage_changes c USING fresh f WHERE c.dataset_id = f.dataset_id AND c.seq < f.seq
""")


def compact_changes(session: Session, *, most: int = MOST_CHANGES_KEPT) -> int:
    """Fold each dataset's ``lineage_changes`` entries, past ``most`` of them, into one new entry,
    so the fingerprint's read stays a few index entries however long a dataset has been trained
    on. Returns how many entries went. The new entry's ``seq`` is above every entry before it, and
    a fingerprint carries the maximum: no state after the fold has a fingerprint of one before it.
    Entries of writers still open are not visible here, so they are not deleted and still count
    once committed. PostgreSQL only (SQLite has no entries)."""
    if session.get_bind().dialect.name != "postgresql":
        return 0
    return session.execute(_COMPACT_CHANGES, {"most": most}).rowcount


# (dataset name, fingerprint) -> its snapshots' rows and trained rows, as ``_RECORD_QUERY`` read them.
_Parts = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]
_LINEAGE_PARTS: ImmutableCache[_Parts] = ImmutableCache(size=64)


def record_lineage(session: Session, dataset_name: str, record_key: str) -> RecordLineage:
    """The same answer as ``_lineages`` for one record, in one round trip once the dataset's
    bitmaps and its part of the answer are cached (through the cursor: ``fetch_all``; on
    PostgreSQL the short ``_RECORD_AND_FINGERPRINT``, ``_RECORD_QUERY`` when the fingerprint is
    new, elsewhere ``_RECORD_QUERY``). A second statement reads temporary model sets, only where
    a snapshot holding the record has any."""
    params = {"dataset": dataset_name, "key": record_key}
    fingerprint = None
    if session.get_bind().dialect.name == "postgresql":
        row, fingerprint = _fingerprinted(fetch_all(session, _RECORD_AND_FINGERPRINT, params), dataset_name,
                                          record_key)
        parts = _LINEAGE_PARTS.get(fingerprint, lambda: _record_rows(
            fetch_all(session, _RECORD_QUERY, params), dataset_name, record_key)[1])
    else:
        row, parts = _record_rows(fetch_all(session, _RECORD_QUERY, params), dataset_name, record_key)
    snapshots, trained = parts
    holding = _holding(row, snapshots, snapshot_bitmaps.get_many(session, [sid for sid, *_ in snapshots]))
    if fingerprint is not None and not any(temporary for *_, temporary in holding):
        return _answer_by_fingerprint(fingerprint, row, holding, trained)
    temporary = _temporary_on(session, [sid for sid, _, _, temporary in holding if temporary])
    return _record_answer(row, holding, trained, temporary)


# (dataset name, fingerprint, the snapshots holding a record) -> the answer but for the record's
# own fields: records held by the same snapshots share it (validating 150 refs was ~0.8 ms).
_ANSWERS: ImmutableCache[RecordLineage] = ImmutableCache(size=1024)


def _answer_by_fingerprint(fingerprint: tuple[str, str], row: _Row, holding: list[tuple[Any, ...]],
                           trained: list[tuple[Any, ...]]) -> RecordLineage:
    """``_record_answer`` for a record none of whose holding snapshots has temporary models,
    from ``_ANSWERS``; the cached answer is copied, never changed."""
    template = _ANSWERS.get((*fingerprint, tuple(sid for sid, *_ in holding)),
                            lambda: _record_answer(row, holding, trained, []))
    return template.model_copy(update={"record_id": row.id, "dataset": row.dataset, "record_key": row.record_key,
                                       "state": row.state})


def _fingerprinted(found: list[tuple[Any, ...]], dataset_name: str, record_key: str) -> tuple[_Row, tuple[str, str]]:
    """The record and its ``_LINEAGE_PARTS`` key in ``_RECORD_AND_FINGERPRINT``'s row."""
    if not found:
        raise NotFound(f"no record '{record_key}' in a ready dataset named '{dataset_name}'")
    return _Row(*found[0][:-1]), (dataset_name, found[0][-1])


def _record_rows(found: list[tuple[Any, ...]], dataset_name: str, record_key: str) -> tuple[_Row, _Parts]:
    """The record, its dataset's snapshots (id, count, root, has temporary models) and the rows of
    versions and artifacts trained on them, in ``_RECORD_QUERY``'s rows."""
    if not found or found[0][0] != 0:
        raise NotFound(f"no record '{record_key}' in a ready dataset named '{dataset_name}'")
    return _Row(*found[0][_RECORD]), ([r[_SNAPSHOT] for r in found if r[0] == 0 and r[_SNAPSHOT.start] is not None],
                                      [r[_TRAINED] for r in found if r[0] != 0])


def _holding(row: _Row, snapshots: list[tuple[Any, ...]], bitmaps: dict[str, FrozenBitMap]) -> list[tuple[Any, ...]]:
    return [snapshot for snapshot in snapshots if row.row_index in bitmaps[snapshot[0]]]


_SNAPSHOT_FIELDS = ("id", "record_count", "merkle_root")
_VERSION_FIELDS = ("id", "model", "number", "state", "snapshot_id")
_ARTIFACT_FIELDS = ("id", "model", "version", "kind", "shard", "slice", "snapshot_id", "sha256", "state")


def _record_answer(row: _Row, holding: list[tuple[Any, ...]], trained: Iterable[tuple[Any, ...]],
                   temporary: list[TemporaryModelsRef]) -> RecordLineage:
    """``_lineage_of`` over ``_trained``'s rows through the ``holding`` snapshots, in plain tuples
    validated once as a whole: a model built per version and artifact (150 at 50 snapshots) was a
    third of the record query's Python time."""
    held = {sid for sid, *_ in holding}
    versions: dict[str, tuple[Any, ...]] = {}
    artifacts: list[tuple[Any, ...]] = []
    for vid, model, number, vstate, vsid, _, aid, kind, shard, slice_, asid, sha, astate in trained:
        if (vsid if aid is None else asid) not in held:
            continue
        versions.setdefault(vid, (vid, model, number, vstate, vsid))
        if aid is not None:
            artifacts.append((aid, model, number, kind, shard, slice_, asid, sha, astate))
    ordered = sorted(versions.values(), key=lambda v: (v[1], v[2]))
    artifacts.sort(key=lambda a: (a[1], a[2], a[3], a[4] or 0, a[5] or 0))
    live = (any(v[3] != VersionState.PURGED for v in ordered) or any(a[8] != VersionState.PURGED for a in artifacts)
            or any(t.destroyed_at is None for t in temporary))
    return RecordLineage.model_validate({
        "record_id": row.id, "dataset": row.dataset, "record_key": row.record_key, "state": row.state,
        "snapshots": [dict(zip(_SNAPSHOT_FIELDS, snapshot, strict=False)) for snapshot in holding],
        "model_versions": [dict(zip(_VERSION_FIELDS, v, strict=True)) for v in ordered],
        "artifacts": [dict(zip(_ARTIFACT_FIELDS, a, strict=True)) for a in artifacts],
        "temporary_models": temporary, "still_contained": live,
    })


def read_record_lineage(dataset_name: str, record_key: str, session: Session | None = None) -> RecordLineage:
    """``record_lineage`` on a connection of its own from the read engine: no pre-ping and no
    ``BEGIN``, so one round trip where a request's session takes three (``read_once``; on SQLite
    in ``session``)."""
    return read_once(lambda read: record_lineage(read, dataset_name, record_key), session)


async def read_record_lineage_async(dataset_name: str, record_key: str, session: Session | None = None) -> RecordLineage:
    """``read_record_lineage`` without a worker thread where it can: on PostgreSQL the statement
    runs on the event loop (``fetch_all_async``) and so does building the answer. What needs the
    database once more goes to a thread: bitmaps not yet cached in this process (once per
    snapshot), temporary model sets (only where a holding snapshot has any). SQLite: the sync
    query in a thread (in ``session``)."""
    if not reads_on_the_loop():
        return await to_thread.run_sync(read_record_lineage, dataset_name, record_key, session)
    params = {"dataset": dataset_name, "key": record_key}
    row, fingerprint = _fingerprinted(await fetch_all_async(_RECORD_AND_FINGERPRINT, params), dataset_name,
                                      record_key)
    parts = _LINEAGE_PARTS.cached([fingerprint]).get(fingerprint)
    if parts is None:
        parts = _record_rows(await fetch_all_async(_RECORD_QUERY, params), dataset_name, record_key)[1]
        _LINEAGE_PARTS.get(fingerprint, lambda: parts)
    snapshots, trained = parts
    ids = [sid for sid, *_ in snapshots]
    bitmaps = snapshot_bitmaps.cached(ids)
    if len(bitmaps) < len(ids):
        bitmaps = await to_thread.run_sync(read_once, lambda read: snapshot_bitmaps.get_many(read, ids))
    holding = _holding(row, snapshots, bitmaps)
    wanted = [sid for sid, _, _, has_temporary in holding if has_temporary]
    if not wanted:
        return _answer_by_fingerprint(fingerprint, row, holding, trained)
    temporary = await to_thread.run_sync(read_once, lambda read: _temporary_on(read, wanted))
    return _record_answer(row, holding, trained, temporary)


def subject_lineage(session: Session, subject_hash: str, *, also: list[str] | None = None) -> SubjectLineage:
    """Records of the subject; ``also``: its hashes under older canonicalisers."""
    hashes = sorted({subject_hash, *(also or [])})
    rows = [_Row(*r) for r in session.execute(
        _ready_records().where(DataRecord.subject_hash.in_(hashes)).order_by(Dataset.name, DataRecord.record_key)
    )]
    records = _lineages(session, rows)
    return SubjectLineage(subject_hash=subject_hash, records=records,
                          still_contained=any(r.still_contained for r in records))


SUBJECT_LOOKUP = "lineage.subject_lookup"
_LOOKUP_WINDOW = timedelta(minutes=1)


def lookup_subject(session: Session, identifier_type: str, identifier: str, *, actor: str) -> SubjectLineage:
    """An admin's raw-identifier lookup. Turning identifiers into hashes is an oracle against
    the pepper, so each lookup is audited (a hash of what was asked, never the identifier)
    and counted against a per-key limit that holds across API processes."""
    now = utcnow()
    earlier = audit.recent(session, action=SUBJECT_LOOKUP, actor=actor, since=now - _LOOKUP_WINDOW)
    limit = get_settings().subject_lookups_per_minute
    if len(earlier) >= limit:
        wait = (earlier[-limit] + _LOOKUP_WINDOW - now).total_seconds()
        raise TooManyRequests(f"at most {limit} subject lookups a minute per key", retry_after=math.ceil(wait))
    hashed = subjects.hashes_for(identifier_type, identifier, subjects.schemes_in_use(session), field="identifier")
    audit.record(session, actor=actor, action=SUBJECT_LOOKUP, entity_type="subject_lookup",
                 entity_id=sha256_hex(canonical_json([identifier_type, hashed.current])),
                 payload={"identifier_type": identifier_type, "canonicaliser_versions": hashed.versions})
    return subject_lineage(session, hashed.current, also=hashed.lookup)


def _selected(selection: RecordSelection):  # noqa: ANN202 - a Select over _ROW_COLUMNS
    query = _ready_records().where(Dataset.name == selection.dataset)
    if selection.source is not None:
        query = query.where(DataRecord.source == selection.source)
    if selection.ingested_before is not None:
        query = query.where(DataRecord.ingested_at < selection.ingested_before)
    return query


def source_lineage(session: Session, dataset_name: str, source: str) -> SourceLineage:
    """Which model versions (and how many of the source's records each) were trained on
    records of ``source`` in the dataset: the question a bad feed or an ended licence asks."""
    dataset = registry.get_dataset(session, dataset_name)
    rows = [_Row(*r) for r in session.execute(_selected(RecordSelection(dataset=dataset.name, source=source)))]
    contains, _ = _containing(session, rows)
    trained = _trained_on(session, list(contains))
    versions = []
    for ref, _, via in trained.versions:
        held = set().union(*(contains[sid] for sid in via))
        versions.append(SourceVersion(**ref.model_dump(), record_count=len(held)))
    temporary = _temporary_on(session, list(contains))
    live = any(v.state != VersionState.PURGED for v in versions) or any(
        a.state != VersionState.PURGED for a in trained.artifacts) or any(t.destroyed_at is None for t in temporary)
    return SourceLineage(dataset=dataset.name, source=source, record_count=len(rows),
                         forgotten_count=sum(1 for r in rows if r.state != "active"),
                         model_versions=versions, temporary_models=temporary, still_contained=live)


@dataclass(frozen=True)
class ResolveQuery:
    """What one deletion request names: subject hashes, explicit (dataset, key) refs, the
    models it is scoped to, or a selector over a dataset's provenance."""

    subject_hashes: list[str]
    record_refs: list[tuple[str, str]]
    scope_models: list[str] | None = None
    selection: RecordSelection | None = None


def resolve(
    session: Session,
    *,
    subject_hashes: list[str],
    record_refs: list[tuple[str, str]],
    scope_models: list[str] | None = None,
    selection: RecordSelection | None = None,
) -> Resolution:
    """Records a deletion request names (by subject, by key, or by a selector over a dataset's
    provenance) and the live versions trained on them."""
    return resolve_many(session, [ResolveQuery(subject_hashes, record_refs, scope_models, selection)])[0]


def resolve_many(session: Session, queries: list[ResolveQuery]) -> list[Resolution]:
    """``resolve`` for many requests at once (a bulk intake): one statement finds every
    subject's records, one per dataset every named key, and the snapshots and versions of all
    of them are read once; each request then gets exactly what it alone would have."""
    rows: dict[int, _Row] = {}
    by_hash: dict[str, list[int]] = defaultdict(list)
    hashes = sorted({h for q in queries for h in q.subject_hashes})
    for start in range(0, len(hashes), _CHUNK):
        # Core, on the session's connection: a built-once statement, no ORM execution layer.
        chunk = hashes[start : start + _CHUNK]
        if session.get_bind().dialect.name == "postgresql":
            statement, chunk = _BY_SUBJECT["postgresql"], json_list(chunk)
        else:
            statement = _BY_SUBJECT[None]
        for r in session.connection().execute(statement, {"hashes": chunk}):
            rows[r[0]] = _Row(*r[:6])
            by_hash[r[6]].append(r[0])
    wanted: dict[str, set[str]] = defaultdict(set)
    for q in queries:
        for dataset_name, key in q.record_refs:
            wanted[dataset_name].add(key)
    known: dict[str, str] = {}
    by_ref: dict[tuple[str, str], int] = {}
    if wanted:
        known = dict(session.execute(select(Dataset.name, Dataset.id).where(Dataset.name.in_(list(wanted)))).tuples().all())
        for dataset_name in sorted(set(wanted) & set(known)):
            keys = sorted(wanted[dataset_name])
            for start in range(0, len(keys), _CHUNK):
                for r in session.execute(_ready_records().where(
                    Dataset.name == dataset_name, DataRecord.record_key.in_(keys[start : start + _CHUNK])
                )):
                    rows[r[0]] = _Row(*r)
                    by_ref[(dataset_name, r[3])] = r[0]
    selected: dict[int, dict[int, _Row]] = {}
    unknown_selected: dict[int, str] = {}
    for index, q in enumerate(queries):
        if q.selection is None:
            continue
        if session.scalar(select(Dataset.id).where(Dataset.name == q.selection.dataset)) is None:
            unknown_selected[index] = q.selection.dataset
        selected[index] = {r[0]: _Row(*r) for r in session.execute(_selected(q.selection))}
        rows.update(selected[index])
    contains, _ = _containing(session, list(rows.values()))
    trained = _trained_on(session, list(contains))
    resolutions = []
    for index, q in enumerate(queries):
        resolution = Resolution()
        mine: dict[int, _Row] = dict(selected.get(index, {}))
        for h in q.subject_hashes:
            mine.update((rid, rows[rid]) for rid in by_hash.get(h, ()))
        for dataset_name, key in q.record_refs:
            rid = by_ref.get((dataset_name, key))
            if rid is not None:
                mine[rid] = rows[rid]
        named = {dataset_name for dataset_name, _ in q.record_refs}
        resolution.unknown_datasets = sorted(
            {*(named - set(known)), *([unknown_selected[index]] if index in unknown_selected else [])})
        resolution.unknown_records = [
            (dataset_name, key)
            for dataset_name in sorted(named & set(known))
            for key in sorted({k for d, k in q.record_refs if d == dataset_name})
            if (dataset_name, key) not in by_ref
        ]
        ordered = sorted(mine.values(), key=lambda r: (r.dataset, r.record_key))
        resolution.records = [ResolvedRecord(id=r.id, dataset_id=r.dataset_id, dataset=r.dataset,
                                             record_key=r.record_key, state=r.state) for r in ordered]
        ids = set(mine)
        for ref, model_id, via in trained.versions if ids else ():
            if ref.state == VersionState.PURGED or (q.scope_models is not None and ref.model not in q.scope_models):
                continue
            record_ids = set().union(*(contains[sid] for sid in via)) & ids
            if record_ids:
                resolution.model_versions.append(AffectedVersion(
                    id=ref.id, model_id=model_id, model=ref.model, number=ref.number, state=ref.state,
                    record_ids=tuple(sorted(record_ids)),
                ))
        resolutions.append(resolution)
    return resolutions


def live_versions_holding(session: Session, record_ids: list[int]) -> list[VersionRef]:
    """Live versions (training, active, superseded) whose snapshot, or a non-purged part's, holds
    any of the records: what must be empty before a request's records count as forgotten."""
    rows: list[_Row] = []
    ids = sorted(set(record_ids))
    for start in range(0, len(ids), _CHUNK):
        rows += [_Row(*r) for r in session.execute(_ready_records().where(DataRecord.id.in_(ids[start : start + _CHUNK])))]
    contains, _ = _containing(session, rows)
    trained = _trained_on(session, list(contains))
    live_parts = {(a.model, a.version) for a in trained.artifacts if a.state != VersionState.PURGED}
    return [ref for ref, _, via in trained.versions if ref.state in LIVE_STATES and (
        ref.snapshot_id in via or (ref.model, ref.number) in live_parts)]


@dataclass
class Holding:
    """At-stake records one live version's parts hold."""

    version_id: str
    model_id: str
    model: str
    number: int
    state: str
    forgotten: set[int] = field(default_factory=set)
    requests: dict[str, set[int]] = field(default_factory=dict)  # open request -> its records held


def _null_str() -> Any:
    return cast(null(), String)


def _null_int() -> Any:
    return cast(null(), Integer)


def live_holdings(session: Session, at_stake: Select[Any], version_ids: list[str] | None = None) -> list[Holding]:
    """Every live version (of ``version_ids``, or all) whose parts' snapshots hold a forgotten
    record or one of ``at_stake``'s (request id, record id) rows, by model and number.

    One statement, so that every part is read from the same snapshot of the database: the
    live parts' and versions' snapshots (``model_versions.state`` index) UNION the forgotten
    records (partial index) UNION the at-stake records. Membership is then tested against the
    cached snapshot bitmaps."""
    scope = [ModelVersion.id.in_(version_ids)] if version_ids is not None else []
    version_columns = (ModelVersion.id, RegisteredModel.id, RegisteredModel.name, ModelVersion.number,
                       ModelVersion.state)
    no_record = (_null_int(), _null_int(), _null_str())
    by_part = (
        select(*version_columns, ModelArtifact.snapshot_id, DatasetSnapshot.dataset_id, *no_record)
        .join(ModelVersion, ModelVersion.id == ModelArtifact.version_id)
        .join(RegisteredModel, RegisteredModel.id == ModelVersion.model_id)
        .join(DatasetSnapshot, DatasetSnapshot.id == ModelArtifact.snapshot_id)
        .where(ModelVersion.state.in_(LIVE_STATES), ModelArtifact.state != VersionState.PURGED, *scope)
    )
    by_version = (
        select(*version_columns, ModelVersion.snapshot_id, DatasetSnapshot.dataset_id, *no_record)
        .join(RegisteredModel, RegisteredModel.id == ModelVersion.model_id)
        .join(DatasetSnapshot, DatasetSnapshot.id == ModelVersion.snapshot_id)
        .where(ModelVersion.state.in_(LIVE_STATES), *scope)
    )
    no_version = (_null_str(), _null_str(), _null_str(), _null_int(), _null_str(), _null_str())
    forgotten = select(*no_version, DataRecord.dataset_id, DataRecord.id, DataRecord.row_index, _null_str()).where(
        DataRecord.state == RecordState.FORGOTTEN)
    stake = at_stake.subquery()
    requested = (
        select(*no_version, DataRecord.dataset_id, DataRecord.id, DataRecord.row_index, stake.c[0])
        .select_from(stake).join(DataRecord, DataRecord.id == stake.c[1])
    )
    versions: dict[str, Holding] = {}
    snapshots: dict[str, set[tuple[str, str]]] = defaultdict(set)  # version -> (snapshot, dataset)
    rows: dict[str, dict[int, tuple[int, set[str]]]] = defaultdict(dict)  # dataset -> row -> (record, requests)
    for vid, model_id, model, number, state, sid, dataset_id, record_id, row_index, request_id in session.execute(
        union_all(by_part, by_version, forgotten, requested)
    ).tuples():
        if vid is not None:
            versions.setdefault(vid, Holding(vid, model_id, model, number, state))
            snapshots[vid].add((sid, dataset_id))
            continue
        _, owners = rows[dataset_id].setdefault(row_index, (record_id, set()))
        if request_id is not None:
            owners.add(request_id)
    at_stake_rows = {dataset_id: BitMap(by_row) for dataset_id, by_row in rows.items()}
    bitmaps = snapshot_bitmaps.get_many(session, sorted(
        {sid for pairs in snapshots.values() for sid, dataset_id in pairs if dataset_id in at_stake_rows}))
    found = []
    for vid, holding in versions.items():
        for sid, dataset_id in snapshots[vid]:
            if dataset_id not in at_stake_rows:
                continue
            for row_index in bitmaps[sid] & at_stake_rows[dataset_id]:
                record_id, owners = rows[dataset_id][row_index]
                if not owners:
                    holding.forgotten.add(record_id)
                for request_id in owners:
                    holding.requests.setdefault(request_id, set()).add(record_id)
        if holding.forgotten or holding.requests:
            found.append(holding)
    return sorted(found, key=lambda h: (h.model, h.number))


def model_versions_holding(session: Session, model_id: str, record_ids: list[int]) -> list[str]:
    """The model's non-purged versions whose snapshot, or any part's (purged parts too: the
    stricter reading, since what is purged next must include whatever may have held them),
    holds one of the records, by version number: what an unlearning job purges."""
    rows = BitMap(session.scalars(select(DataRecord.row_index).where(DataRecord.id.in_(record_ids))))
    live = (ModelVersion.model_id == model_id, ModelVersion.state != VersionState.PURGED)
    snapshots = union(
        select(ModelVersion.id, ModelVersion.snapshot_id).where(*live, ModelVersion.snapshot_id.is_not(None)),
        select(ModelVersion.id, ModelArtifact.snapshot_id).join(ModelArtifact, ModelArtifact.version_id == ModelVersion.id)
        .where(*live, ModelArtifact.snapshot_id.is_not(None)),
    ).subquery()
    candidates = session.execute(select(snapshots.c[0], snapshots.c[1])).tuples().all()
    bitmaps = snapshot_bitmaps.get_many(session, sorted({sid for _, sid in candidates}))
    holding = {vid for vid, sid in candidates if bitmaps[sid].intersection_cardinality(rows)}
    numbers = dict(session.execute(select(ModelVersion.id, ModelVersion.number).where(ModelVersion.id.in_(holding))).tuples().all())
    return sorted(holding, key=numbers.__getitem__)


def _version_ref(version: ModelVersion, model_name: str) -> VersionRef:
    return VersionRef(id=version.id, model=model_name, number=version.number, state=version.state,
                      snapshot_id=version.snapshot_id)


def _removed(session: Session, parent: ModelVersion, child: ModelVersion, limit: int) -> LineageEdge:
    edge = LineageEdge(parent=parent.number, child=child.number, removed_count=None, removed_record_keys=[],
                       truncated=False)
    if parent.snapshot_id is None or child.snapshot_id is None:
        return edge
    snaps = {s.id: s for s in session.scalars(
        select(DatasetSnapshot).where(DatasetSnapshot.id.in_([parent.snapshot_id, child.snapshot_id]))
    )}
    before, after = snaps[parent.snapshot_id], snaps[child.snapshot_id]
    if before.dataset_id != after.dataset_id:
        return edge
    bitmaps = snapshot_bitmaps.get_many(session, [before.id, after.id])
    gone = BitMap(bitmaps[before.id]) - bitmaps[after.id]
    edge.removed_count = len(gone)
    first = [int(i) for i in gone[:limit]] if len(gone) else []
    edge.removed_record_keys = sorted(session.scalars(
        select(DataRecord.record_key).where(DataRecord.dataset_id == before.dataset_id, DataRecord.row_index.in_(first))
    ))
    edge.truncated = len(gone) > limit
    return edge


def version_lineage(session: Session, model_name: str, number: int, *, removed_limit: int = 1000) -> VersionLineage:
    """Ancestors, descendants and the records removed on each parent -> child step."""
    model = registry.get_model(session, model_name)
    version = registry.get_version(session, model, number)
    ancestors: list[ModelVersion] = []
    edges: list[LineageEdge] = []
    cursor = version
    while cursor.parent_id is not None:
        parent = session.get(ModelVersion, cursor.parent_id)
        ancestors.append(parent)
        edges.append(_removed(session, parent, cursor, removed_limit))
        cursor = parent
    descendants: list[ModelVersion] = []
    frontier = [version]
    while frontier:
        by_id = {v.id: v for v in frontier}
        children = list(session.scalars(
            select(ModelVersion).where(ModelVersion.parent_id.in_(list(by_id))).order_by(ModelVersion.number)
        ))
        for child in children:
            edges.append(_removed(session, by_id[child.parent_id], child, removed_limit))
        descendants += children
        frontier = children
    edges.sort(key=lambda e: (e.parent, e.child))
    return VersionLineage(
        version=_version_ref(version, model.name),
        ancestors=[_version_ref(v, model.name) for v in ancestors],
        descendants=[_version_ref(v, model.name) for v in descendants],
        edges=edges,
    )


def _content_hashes(session: Session, dataset_id: str, row_indexes: list[int]) -> dict[int, str]:
    return dict(session.execute(
        select(DataRecord.row_index, DataRecord.content_hash).where(
            DataRecord.dataset_id == dataset_id, DataRecord.row_index.in_(row_indexes)
        )
    ).tuples().all())


def membership_proofs(session: Session, snapshot_id: str, record_keys: Iterable[str]) -> list[dict[str, Any]]:
    """For each key, an inclusion proof if it is in the snapshot, else a non-inclusion proof.
    The tree is built once for all keys."""
    keys_wanted = sorted(set(record_keys))
    if not all(keys_wanted):
        raise InvalidInput("record key is empty", field="record_key")
    snapshot = registry.get_snapshot(session, snapshot_id)
    leaves = registry.snapshot_leaves(session, snapshot)
    import numpy as np  # only proofs need it; the API's other paths stay without it

    keys = np.asarray(leaves.record_key.to_numpy(zero_copy_only=False), dtype=object)
    positions = {key: int(np.searchsorted(keys, key)) if len(keys) else 0 for key in keys_wanted}
    tree = merkle.levels(leaves.hashes()) if len(leaves) else [[]]
    neighbours = sorted({i for p in positions.values() for i in (p - 1, p) if 0 <= i < len(leaves)})
    content = _content_hashes(session, snapshot.dataset_id, [int(leaves.row_index[i]) for i in neighbours])
    document: dict[str, Any] = {
        "snapshot_id": snapshot.id, "dataset_id": snapshot.dataset_id, "merkle_root": snapshot.merkle_root,
        "tree_size": len(leaves),
    }

    def leaf_at(i: int) -> dict[str, Any]:
        return proofs.leaf_proof(str(keys[i]), content[int(leaves.row_index[i])], i, merkle.path_from_levels(tree, i))

    found = []
    for key in keys_wanted:
        position = positions[key]
        if position < len(leaves) and keys[position] == key:
            found.append({**document, "record_key": key, "kind": proofs.INCLUSION, "leaf": leaf_at(position)})
        else:
            found.append({
                **document, "record_key": key, "kind": proofs.NON_INCLUSION,
                "left": leaf_at(position - 1) if position > 0 else None,
                "right": leaf_at(position) if position < len(leaves) else None,
            })
    return found


def membership_proof(session: Session, snapshot_id: str, record_key: str) -> dict[str, Any]:
    """An inclusion proof if the key is in the snapshot, else a non-inclusion proof."""
    if not record_key:
        raise InvalidInput("record key is empty", field="record_key")
    return membership_proofs(session, snapshot_id, [record_key])[0]
