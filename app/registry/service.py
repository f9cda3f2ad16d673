"""Datasets, records, snapshots, models and versions: the rules of the registry."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError
from pyroaring import BitMap
from sqlalchemy import Select, func, or_, select, update
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.core.config import get_settings
from app.core.database import utcnow
from app.core.errors import Conflict, IllegalTransition, InvalidInput, NotFound
from app.core.outbox import enqueue
from app.core.queue import TaskName
from app.registry import artifacts, locations, suppression
from app.registry.leaves import SnapshotLeaves, leaf_index
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
from app.registry.policy import Method, StoredPolicy, UnlearningPolicy, known_adapters, method_fits_adapter
from app.registry.schemas import (
    ArtifactKind,
    ArtifactSpec,
    DatasetColumns,
    DatasetFormat,
    VersionOrigin,
)

if TYPE_CHECKING:
    from app.registry.erasure import FilesInUse

T = TypeVar("T")

# A version may move forward only; purged is final.
_VERSION_MOVES = {
    VersionState.TRAINING: {VersionState.ACTIVE, VersionState.SUPERSEDED, VersionState.PURGED},
    VersionState.ACTIVE: {VersionState.SUPERSEDED, VersionState.PURGED},
    VersionState.SUPERSEDED: {VersionState.ACTIVE, VersionState.PURGED},
    VersionState.PURGED: set(),
}


def data_root() -> Path:
    """Local dataset files must live under this folder (symlinks are resolved first)."""
    return locations.dataset_root()


def _validation_field(exc: ValidationError, prefix: str) -> tuple[str, str]:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{prefix}.{where}" if where else prefix, first["msg"]


def register_dataset(
    session: Session, *, name: str, uri: str, fmt: str, schema: dict[str, Any], actor: str
) -> Dataset:
    try:
        fmt = DatasetFormat(fmt)
    except ValueError:
        raise InvalidInput(f"format must be one of {', '.join(DatasetFormat)}", field="format") from None
    try:
        columns = DatasetColumns.model_validate(schema)
    except ValidationError as exc:
        field, message = _validation_field(exc, "schema")
        raise InvalidInput(f"{field}: {message}", field=field) from None
    if fmt is not DatasetFormat.NPZ and columns.image:
        raise InvalidInput("an image array is only supported in NPZ datasets", field="schema.image")
    location = locations.resolve_dataset(uri)
    if session.scalar(select(Dataset.id).where(Dataset.name == name)):
        raise Conflict(f"a dataset named '{name}' exists", field="name")
    dataset = Dataset(name=name, uri=location, format=fmt.value, schema=columns.model_dump(mode="json"),
                      created_by=actor)
    session.add(dataset)
    session.flush()
    enqueue(session, TaskName.INGEST_DATASET, dataset_id=dataset.id)
    audit.record(session, actor=actor, action="dataset.registered", entity_type="dataset", entity_id=dataset.id,
                 payload={"name": name, "format": fmt.value})
    return dataset


def _ingestion() -> Any:
    """``app.registry.ingestion``, imported on first use: it (and ``erasure``) load pyarrow and
    numpy, which the API's request paths and the CLI's list commands never need."""
    from app.registry import ingestion

    return ingestion


def _erasure() -> Any:
    from app.registry import erasure

    return erasure


def resend_stalled_ingestions(session: Session, now: datetime, *, patience: timedelta) -> list[str]:
    """Send the ingestion task again for datasets still pending ``patience`` after their last
    message (lost in a broker restart), and for ingestions whose delivery stopped beating.
    The ingestion lease makes a duplicate harmless."""
    sent_or_beat = func.coalesce(Dataset.heartbeat_at, Dataset.created_at)
    stalled = list(session.scalars(select(Dataset).where(or_(
        (Dataset.status == DatasetStatus.PENDING) & (sent_or_beat < now - patience),
        (Dataset.status == DatasetStatus.INGESTING)
        & (sent_or_beat < now - timedelta(seconds=_ingestion().lease_seconds())),
    )).order_by(Dataset.created_at).with_for_update()))
    for dataset in stalled:
        # Release a dead delivery's lease and restart the clock, so the next tick waits again.
        dataset.ingest_worker, dataset.heartbeat_at = None, now
        enqueue(session, TaskName.INGEST_DATASET, dataset_id=dataset.id)
        audit.record(session, actor="scheduler", action="dataset.ingestion_resent", entity_type="dataset",
                     entity_id=dataset.id, payload={"status": dataset.status})
    return [dataset.id for dataset in stalled]


def ingest_dataset(dataset_id: str) -> Dataset:
    """The ingestion task's work; see ``app.registry.ingestion``."""
    return _ingestion().ingest(dataset_id)


def suppress_forgotten(session: Session, record_ids: list[int], *, subject_hashes: Iterable[str], request_id: str,
                       actor: str) -> int:
    """Forgotten stays forgotten: the records' keys (and a subject request's hashes) go on the
    suppression list that ingestion checks (``app.registry.suppression``)."""
    return suppression.add(session, record_ids, subject_hashes=subject_hashes, request_id=request_id, actor=actor)


def list_suppressions(session: Session, *, include_lifted: bool = False) -> list[Any]:
    return suppression.listing(session, include_lifted=include_lifted)


def lift_suppression(session: Session, suppression_id: str, *, reason: str, actor: str) -> Any:
    return suppression.lift(session, suppression_id, reason=reason, actor=actor)


def schedule_erasure(session: Session, dataset_id: str, request_ids: Iterable[str], *, actor: str) -> None:
    """Erase the dataset's forgotten rows from its file (or ask its external owner to):
    ``app.registry.erasure``. The jobs room calls it once no open request touches the dataset."""
    _erasure().schedule(session, dataset_id, request_ids, actor=actor)


def erase_dataset_rows(erasure_id: str, files_in_use: FilesInUse) -> None:
    """The erasure task's work; see ``app.registry.erasure``. ``files_in_use``: the dataset
    files running jobs loaded (the jobs room's answer); their old bytes are kept until then."""
    _erasure().run(erasure_id, files_in_use)


def erasures_of_each(session: Session, record_ids: dict[str, list[int]]) -> dict[str, tuple[list[Any], list[str]]]:
    """Per record set (keyed by, say, request id): (erasures that took any of them out of their
    files, datasets whose files still hold some), in two reads for all the sets."""
    return _erasure().erasures_of_each(session, record_ids)


def destroy_expired_files(session: Session, now: datetime, in_use: set[str]) -> int:
    return _erasure().destroy_expired(session, now, in_use)


def retry_erasures(session: Session, now: datetime) -> int:
    """The scheduler's tick: failed erasures whose back-off ran out and lost runs go again."""
    return _erasure().retry_due(session, now)


def datasets_awaiting_erasure(session: Session) -> list[tuple[str, datetime | None]]:
    """(dataset id, when its oldest waiting row was forgotten) for each dataset whose file
    still holds rows no longer active and has no erasure under way or due for a retry."""
    return _erasure().waiting_datasets(session)


def files_replaced_since(session: Session, dataset_id: str, since: datetime) -> set[str]:
    """The dataset's files that erasures replaced at or after ``since`` (a reader that began
    then may have loaded any of them)."""
    return _erasure().replaced_since(session, dataset_id, since)


def dataset_for_reading(session: Session, dataset_id: str) -> Dataset:
    """The dataset, its row locked in share mode until the caller's transaction ends: a job
    notes the file it loads in that transaction, and an erasure swapping the file waits for
    it (so the erasure sees the note and keeps the old bytes while that job runs)."""
    dataset = session.scalar(select(Dataset).where(Dataset.id == dataset_id).with_for_update(read=True))
    if dataset is None:
        raise NotFound(f"no dataset {dataset_id}")
    return dataset


def get_dataset(session: Session, name: str) -> Dataset:
    dataset = session.scalar(select(Dataset).where(Dataset.name == name))
    if dataset is None:
        raise NotFound(f"no dataset named '{name}'")
    return dataset


def list_datasets(session: Session) -> list[Dataset]:
    return list(session.scalars(select(Dataset).order_by(Dataset.created_at)))


def _ready(dataset: Dataset) -> None:
    if dataset.status != DatasetStatus.READY:
        raise Conflict(f"dataset '{dataset.name}' is {dataset.status}, not ready")


def record_ids_for_keys(session: Session, dataset: Dataset, record_keys: Iterable[str]) -> dict[str, int]:
    keys = list(dict.fromkeys(record_keys))
    found: dict[str, int] = {}
    for start in range(0, len(keys), 1000):
        chunk = keys[start : start + 1000]
        found.update(
            session.execute(
                select(DataRecord.record_key, DataRecord.id).where(
                    DataRecord.dataset_id == dataset.id, DataRecord.record_key.in_(chunk)
                )
            ).tuples().all()
        )
    return found


def create_snapshot(
    session: Session, dataset_id: str, *, exclude_record_ids: Iterable[int] | None = None, actor: str = "system",
    include_forgotten: bool = False,
) -> DatasetSnapshot:
    """Freeze the dataset's active records (less ``exclude_record_ids``) as a snapshot.

    ``include_forgotten``: start from every record instead, for recording what a training
    run already saw; a record forgotten while it ran must show in its snapshot, or lineage
    would deny a model holds what it does."""
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise NotFound(f"no dataset {dataset_id}")
    _ready(dataset)
    which = [] if include_forgotten else [DataRecord.state == RecordState.ACTIVE]
    members = BitMap(session.scalars(select(DataRecord.row_index).where(DataRecord.dataset_id == dataset.id, *which)))
    excluded = list(exclude_record_ids or [])
    for start in range(0, len(excluded), 1000):
        rows = session.scalars(
            select(DataRecord.row_index).where(
                DataRecord.dataset_id == dataset.id, DataRecord.id.in_(excluded[start : start + 1000])
            )
        )
        members.difference_update(BitMap(rows))
    leaves = leaf_index(session, dataset).select(members)
    members.run_optimize()
    snapshot = DatasetSnapshot(
        dataset_id=dataset.id,
        record_count=len(members),
        members=members.serialize(),
        merkle_root=leaves.root().hex(),
        created_by=actor,
    )
    session.add(snapshot)
    session.flush()
    audit.record(session, actor=actor, action="snapshot.created", entity_type="dataset_snapshot",
                 entity_id=snapshot.id, payload={"dataset_id": dataset.id, "record_count": snapshot.record_count,
                                                 "merkle_root": snapshot.merkle_root, "excluded": len(excluded)})
    return snapshot


def _by_id(session: Session, entity: type[T], entity_id: str, what: str) -> T:
    found = session.get(entity, entity_id)
    if found is None:
        raise NotFound(f"no {what} {entity_id}")
    return found


def get_snapshot(session: Session, snapshot_id: str) -> DatasetSnapshot:
    return _by_id(session, DatasetSnapshot, snapshot_id, "snapshot")


def snapshot_leaves(session: Session, snapshot: DatasetSnapshot) -> SnapshotLeaves:
    dataset = session.get(Dataset, snapshot.dataset_id)
    return leaf_index(session, dataset).select(BitMap.deserialize(snapshot.members))


def snapshot_record_keys(session: Session, snapshot: DatasetSnapshot) -> list[str]:
    """The snapshot's record keys, in leaf (code-point) order."""
    return snapshot_leaves(session, snapshot).record_key.to_pylist()


def register_model(
    session: Session,
    *,
    name: str,
    adapter: str,
    hyperparameters: dict[str, Any],
    dataset_name: str,
    policy: dict[str, Any] | None,
    actor: str,
) -> RegisteredModel:
    try:
        checked_policy = UnlearningPolicy.model_validate(policy or {})
    except ValidationError as exc:
        field, message = _validation_field(exc, "policy")
        raise InvalidInput(f"{field}: {message}", field=field) from None
    _check_adapter(adapter, checked_policy.default_method)
    dataset = session.scalar(select(Dataset).where(Dataset.name == dataset_name))
    if dataset is None:
        raise InvalidInput(f"no dataset named '{dataset_name}'", field="dataset")
    if session.scalar(select(RegisteredModel.id).where(RegisteredModel.name == name)):
        raise Conflict(f"a model named '{name}' exists", field="name")
    model = RegisteredModel(name=name, adapter=adapter, hyperparameters=hyperparameters, dataset_id=dataset.id,
                            policy=checked_policy.stored(), created_by=actor)
    session.add(model)
    session.flush()
    audit.record(session, actor=actor, action="model.registered", entity_type="registered_model",
                 entity_id=model.id, payload={"name": name, "adapter": adapter, "dataset_id": dataset.id})
    return model


def _check_adapter(adapter: str, method: Method) -> None:
    """An adapter the engine has, and a default method that applies to it: refused here, not
    discovered at the first job (which would quietly fall back to the exact method)."""
    known = known_adapters()
    if adapter not in known:
        raise InvalidInput(f"unknown adapter '{adapter}'; available: {', '.join(sorted(known))}", field="adapter")
    if not method_fits_adapter(method, adapter):
        raise InvalidInput(f"method '{method}' does not apply to adapter '{adapter}'",
                           field="policy.default_method")


def model_policy(model: RegisteredModel) -> StoredPolicy:
    """The model's policy, typed, as the jobs room reads it."""
    return StoredPolicy.read(model.policy)


def get_model(session: Session, name: str) -> RegisteredModel:
    model = session.scalar(select(RegisteredModel).where(RegisteredModel.name == name))
    if model is None:
        raise NotFound(f"no model named '{name}'")
    return model


def list_models(session: Session) -> list[RegisteredModel]:
    return list(session.scalars(select(RegisteredModel).order_by(RegisteredModel.created_at)))


def get_version(session: Session, model: RegisteredModel, number: int) -> ModelVersion:
    version = session.scalar(
        select(ModelVersion).where(ModelVersion.model_id == model.id, ModelVersion.number == number)
    )
    if version is None:
        raise NotFound(f"model '{model.name}' has no version {number}")
    return version


def list_versions(session: Session, model: RegisteredModel) -> list[ModelVersion]:
    return list(session.scalars(
        select(ModelVersion).where(ModelVersion.model_id == model.id).order_by(ModelVersion.number)
    ))


def active_version(session: Session, model_id: str) -> ModelVersion | None:
    """The model's active version; None before its first training run registers one."""
    return session.scalar(select(ModelVersion).where(
        ModelVersion.model_id == model_id, ModelVersion.state == VersionState.ACTIVE))


def lock_model(session: Session, model_id: str) -> None:
    """Hold the model's row until the transaction ends (PostgreSQL; SQLite has one writer at a
    time anyway): one planner per model, so a beat tick and an admin's "run now" do not both
    take the same requests."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(RegisteredModel.id).where(RegisteredModel.id == model_id).with_for_update())


def models_on_datasets(dataset_ids: Iterable[str]) -> Select[Any]:
    """The ids of the models trained on any of these datasets, as a subquery for the caller's
    statement."""
    return select(RegisteredModel.id).where(RegisteredModel.dataset_id.in_(sorted(set(dataset_ids))))


def datasets_of_records(session: Session, record_ids: Sequence[int]) -> set[str]:
    """The datasets the records belong to."""
    found: set[str] = set()
    for start in range(0, len(record_ids), _ID_CHUNK):
        found |= set(session.scalars(select(DataRecord.dataset_id).where(
            DataRecord.id.in_(record_ids[start : start + _ID_CHUNK]))).all())
    return found


# Ids per statement when a list of record ids may be long: SQLite caps a statement's parameters.
_ID_CHUNK = 1000


def record_states(session: Session, dataset_id: str) -> list[tuple[str, int, str]]:
    """Every record of the dataset as (record_key, id, state)."""
    return list(session.execute(
        select(DataRecord.record_key, DataRecord.id, DataRecord.state).where(DataRecord.dataset_id == dataset_id)
    ).tuples())


def version_artifacts(session: Session, version: ModelVersion) -> list[ModelArtifact]:
    return list(session.scalars(
        select(ModelArtifact).where(ModelArtifact.version_id == version.id).order_by(
            ModelArtifact.kind, ModelArtifact.shard, ModelArtifact.slice, ModelArtifact.id
        )
    ))


def model_by_id(session: Session, model_id: str) -> RegisteredModel:
    return _by_id(session, RegisteredModel, model_id, "registered model")


def version_by_id(session: Session, version_id: str) -> ModelVersion:
    return _by_id(session, ModelVersion, version_id, "model version")


def dataset_by_id(session: Session, dataset_id: str) -> Dataset:
    return _by_id(session, Dataset, dataset_id, "dataset")


def versions_by_id(session: Session, version_ids: Iterable[str]) -> dict[str, ModelVersion]:
    """The versions with these ids (those that exist), by id."""
    return {v.id: v for v in session.scalars(select(ModelVersion).where(ModelVersion.id.in_(sorted(set(version_ids)))))}


def models_by_id(session: Session, model_ids: Iterable[str]) -> dict[str, RegisteredModel]:
    """The registered models with these ids (those that exist), by id."""
    return {m.id: m for m in session.scalars(
        select(RegisteredModel).where(RegisteredModel.id.in_(sorted(set(model_ids)))))}


def purged_artifacts_of(session: Session, version_ids: Iterable[str]) -> dict[str, list[ModelArtifact]]:
    """Each version's artifacts that were purged (by the version's purge or on their own)."""
    purged: dict[str, list[ModelArtifact]] = defaultdict(list)
    for artifact in session.scalars(select(ModelArtifact).where(
        ModelArtifact.version_id.in_(sorted(set(version_ids))),
        or_(ModelArtifact.state == VersionState.PURGED, ModelArtifact.purged_at.is_not(None)),
    )):
        purged[artifact.version_id].append(artifact)
    return purged


def snapshot_summaries(session: Session) -> list[tuple[str, str, int, str]]:
    """Every dataset snapshot as (id, dataset id, record count, Merkle root), oldest first,
    without its member bitmap."""
    return list(session.execute(
        select(DatasetSnapshot.id, DatasetSnapshot.dataset_id, DatasetSnapshot.record_count,
               DatasetSnapshot.merkle_root).order_by(DatasetSnapshot.created_at, DatasetSnapshot.id)
    ).tuples())


def _check_artifact(session: Session, spec: ArtifactSpec, model: RegisteredModel, position: int) -> ArtifactKind:
    field = f"artifacts.{position}"
    try:
        kind = ArtifactKind(spec.kind)
    except ValueError:
        raise InvalidInput(f"artifact kind must be one of {', '.join(ArtifactKind)}", field=f"{field}.kind") from None
    if not artifacts.is_stored_uri(spec.uri):
        locations.check_remote_artifact(spec.uri, field=f"{field}.uri")
    else:
        artifacts.check_stored_uri(spec.uri, field=f"{field}.uri")
        if not artifacts.exists(spec.uri):
            raise InvalidInput("artifact is not in the store", field=f"{field}.uri")
        if artifacts.sha256_of(spec.uri) != spec.sha256:
            raise InvalidInput("sha256 does not match the stored bytes", field=f"{field}.sha256")
    if spec.snapshot_id is not None:
        snapshot = session.get(DatasetSnapshot, spec.snapshot_id)
        if snapshot is None or snapshot.dataset_id != model.dataset_id:
            raise InvalidInput("artifact snapshot is not a snapshot of the model's dataset",
                               field=f"{field}.snapshot_id")
    return kind


def add_version(
    session: Session,
    *,
    model: RegisteredModel,
    snapshot: DatasetSnapshot | None,
    parent: ModelVersion | None = None,
    artifacts: list[ArtifactSpec],
    state: VersionState | str = VersionState.ACTIVE,
    origin: VersionOrigin | str = VersionOrigin.TRAINED,
    metrics: dict[str, Any] | None = None,
    actor: str,
) -> ModelVersion:
    """A new version numbered after the model's last one. Making it active supersedes the
    model's other active versions: one version serves at a time."""
    state, origin = VersionState(state), VersionOrigin(origin)
    if snapshot is not None and snapshot.dataset_id != model.dataset_id:
        raise InvalidInput("snapshot is not a snapshot of the model's dataset", field="snapshot_id")
    if parent is not None and parent.model_id != model.id:
        raise InvalidInput("parent version belongs to another model", field="parent")
    if state is VersionState.PURGED:
        raise InvalidInput("a new version cannot start purged", field="state")
    kinds = [_check_artifact(session, spec, model, i) for i, spec in enumerate(artifacts)]
    if session.get_bind().dialect.name == "postgresql":
        # Serialise numbering per model; the unique constraint is the backstop.
        session.execute(select(RegisteredModel.id).where(RegisteredModel.id == model.id).with_for_update())
    number = (session.scalar(select(func.max(ModelVersion.number)).where(ModelVersion.model_id == model.id)) or 0) + 1
    whole = next((spec for spec, kind in zip(artifacts, kinds, strict=True) if kind is ArtifactKind.MODEL), None)
    if state is VersionState.ACTIVE:
        session.execute(
            update(ModelVersion)
            .where(ModelVersion.model_id == model.id, ModelVersion.state == VersionState.ACTIVE)
            .values(state=VersionState.SUPERSEDED)
        )
    version = ModelVersion(
        model_id=model.id, number=number, parent_id=parent.id if parent else None,
        snapshot_id=snapshot.id if snapshot else None,
        artifact_uri=whole.uri if whole else None, artifact_sha256=whole.sha256 if whole else None,
        state=state, origin=origin, metrics=dict(metrics or {}),
    )
    session.add(version)
    session.flush()
    for spec, kind in zip(artifacts, kinds, strict=True):
        session.add(ModelArtifact(
            version_id=version.id, kind=kind, shard=spec.shard, slice=spec.slice,
            snapshot_id=spec.snapshot_id or version.snapshot_id, uri=spec.uri, sha256=spec.sha256,
            size_bytes=spec.size_bytes,
        ))
    session.flush()
    audit.record(session, actor=actor, action="model_version.added", entity_type="model_version",
                 entity_id=version.id, payload={"model": model.name, "number": number, "state": state.value,
                                                "origin": origin.value, "snapshot_id": version.snapshot_id,
                                                "parent_id": version.parent_id,
                                                "artifacts": [s.sha256 for s in artifacts]})
    return version


async def upload_artifact(session: Session, chunks: AsyncIterator[bytes], *, actor: str) -> artifacts.Received:
    """Bytes into the store (the service computes the sha256); the upload is audited."""
    received = await artifacts.receive(chunks, get_settings().max_artifact_bytes)
    audit.record(session, actor=actor, action="artifact.uploaded", entity_type="artifact", entity_id=received.sha256,
                 payload={"uri": received.uri, "size_bytes": received.size_bytes})
    return received


def set_version_state(session: Session, version: ModelVersion, state: VersionState | str, actor: str) -> ModelVersion:
    state = VersionState(state)
    if state is VersionState.PURGED:
        return purge_version(session, version, actor)
    current = VersionState(version.state)
    if state is current:
        return version
    if state not in _VERSION_MOVES[current]:
        raise IllegalTransition(f"version {version.number} cannot go from {current} to {state}", field="state")
    if state is VersionState.ACTIVE:
        session.execute(
            update(ModelVersion)
            .where(ModelVersion.model_id == version.model_id, ModelVersion.state == VersionState.ACTIVE)
            .values(state=VersionState.SUPERSEDED)
        )
    version.state = state
    session.flush()
    audit.record(session, actor=actor, action="model_version.state_changed", entity_type="model_version",
                 entity_id=version.id, payload={"from": current.value, "to": state.value})
    return version


def mark_records_forgotten(session: Session, record_ids: Iterable[int], actor: str) -> int:
    """Mark records forgotten (future snapshots leave them out); return how many changed."""
    ids = sorted(set(record_ids))
    now, changed = utcnow(), 0
    for start in range(0, len(ids), 1000):
        result = session.execute(
            update(DataRecord)
            .where(DataRecord.id.in_(ids[start : start + 1000]), DataRecord.state == RecordState.ACTIVE)
            .values(state=RecordState.FORGOTTEN, forgotten_at=now)
        )
        changed += result.rowcount
    audit.record(session, actor=actor, action="records.forgotten", entity_type="data_records",
                 entity_id=f"{len(ids)} records", payload={"record_ids": ids, "changed": changed})
    return changed


def purge_version(session: Session, version: ModelVersion, actor: str) -> ModelVersion:
    """Destroy the version's artifact bytes; keep their sha256 so the purge can be proven."""
    if version.state == VersionState.PURGED:
        return version
    now = utcnow()
    parts = version_artifacts(session, version)
    uris = {part.uri for part in parts} | ({version.artifact_uri} if version.artifact_uri else set())
    # Content addressing shares bytes between versions (e.g. untouched SISA shards), so only
    # bytes no other live artifact names are deleted.
    shared = set(session.scalars(
        select(ModelArtifact.uri).where(
            ModelArtifact.uri.in_(uris), ModelArtifact.version_id != version.id,
            ModelArtifact.state != VersionState.PURGED,
        )
    ))
    for part in parts:
        part.state, part.purged_at = VersionState.PURGED, now
    version.state, version.purged_at = VersionState.PURGED, now
    session.flush()
    # Bytes go before the commit: if the commit then fails the purge is simply re-run,
    # whereas the other order could leave bytes behind a record claiming they are gone.
    deleted = [uri for uri in sorted(uris - shared) if artifacts.delete(uri)]
    # Bytes under a remote prefix are the importer's to delete: the store never deletes outside itself.
    outside = [uri for uri in uris - shared if not artifacts.is_stored_uri(uri)]
    audit.record(session, actor=actor, action="model_version.purged", entity_type="model_version",
                 entity_id=version.id, payload={"sha256": sorted({p.sha256 for p in parts}),
                                                "deleted": len(deleted), "kept_shared": len(uris & shared),
                                                "outside_store": len(outside)})
    return version


def open_temporary_models(session: Session, *, model_id: str, snapshot_id: str, purpose: str, reference_id: str,
                          storage: str) -> TemporaryModelSet:
    """Record that models trained on ``snapshot_id`` are about to exist outside the registry's
    versions (a qualification study's): lineage lists them, as still holding the snapshot's
    records, until ``close_temporary_models`` says they were destroyed."""
    found = TemporaryModelSet(model_id=model_id, snapshot_id=snapshot_id, purpose=purpose,
                              reference_id=reference_id, storage=storage)
    session.add(found)
    session.flush()
    return found


def close_temporary_models(session: Session, purpose: str, reference_id: str, *, models: dict[str, Any] | None,
                           destroyed_at: datetime) -> None:
    """The temporary models of ``(purpose, reference_id)`` are gone (counted, when known)."""
    for found in session.scalars(select(TemporaryModelSet).where(
            TemporaryModelSet.purpose == purpose, TemporaryModelSet.reference_id == reference_id,
            TemporaryModelSet.destroyed_at.is_(None))):
        found.models, found.destroyed_at = models, destroyed_at
