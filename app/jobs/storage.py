"""Turning a trained or unlearned model into a registered version: artifact bytes in the
store, and for every part (whole model, SISA shard, slice checkpoint) a snapshot of exactly
the records that part saw, so lineage answers per part."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from app.jobs import invariant
from app.jobs.engine import ArtifactPart
from app.lineage import service as lineage
from app.registry import artifacts
from app.registry import service as registry
from app.registry.models import ModelVersion, RecordState, RegisteredModel
from app.registry.schemas import ArtifactSpec
from app.requests import service as requests


@dataclass(frozen=True)
class StoredPart:
    part: ArtifactPart
    uri: str
    sha256: str


@dataclass(frozen=True)
class DatasetRecords:
    """Every record of a dataset by key: its id and whether it is still active."""

    ids: dict[str, int]
    active: frozenset[str]

    def ids_of(self, keys: Iterable[str]) -> list[int]:
        return [self.ids[key] for key in keys if key in self.ids]


def dataset_records(session: Session, dataset_id: str) -> DatasetRecords:
    rows = registry.record_states(session, dataset_id)
    return DatasetRecords(ids={key: rid for key, rid, _ in rows},
                          active=frozenset(key for key, _, state in rows if state == RecordState.ACTIVE))


def store_parts(parts: list[ArtifactPart]) -> list[StoredPart]:
    """Bytes first, outside any transaction: content addressing makes a redo write nothing new."""
    return [StoredPart(part, *artifacts.put_bytes(part.data)) for part in parts]


def snapshot_of(session: Session, dataset_id: str, records: DatasetRecords, keys: Iterable[str], actor: str) -> str:
    """A snapshot of exactly these records, whatever their state now; returns its id."""
    wanted = set(keys)
    exclude = [rid for key, rid in records.ids.items() if key not in wanted]
    return registry.create_snapshot(session, dataset_id, exclude_record_ids=exclude, actor=actor,
                                    include_forgotten=True).id


def register_version(
    session: Session,
    *,
    model: RegisteredModel,
    stored: list[StoredPart],
    records: DatasetRecords,
    parent: ModelVersion | None,
    origin: str,
    metrics: dict[str, Any],
    actor: str,
    snapshot_id: str | None = None,
) -> ModelVersion:
    """One active version from the stored parts (``snapshot_id``: the whole model's snapshot
    when it was taken earlier). A part byte-identical to one of the parent's (an untouched
    SISA shard) saw the same records, so it keeps the parent's snapshot.

    Checked against the lineage invariant in the same transaction, under the exclusive
    lineage lock: records deleted while it trained are attached and a follow-up job is
    queued before the commit that makes the version visible."""
    lineage.lock_lineage(session, exclusive=True)
    inherited: dict[str, str] = {}
    if parent is not None:
        inherited = {part.sha256: part.snapshot_id for part in registry.version_artifacts(session, parent)
                     if part.snapshot_id is not None}
    whole = next(s for s in stored if s.part.kind == "model")
    version_snapshot = snapshot_id or snapshot_of(session, model.dataset_id, records, whole.part.keys, actor)
    specs = []
    for item in stored:
        if item.part.kind == "model":
            part_snapshot = version_snapshot
        else:
            part_snapshot = inherited.get(item.sha256) or snapshot_of(
                session, model.dataset_id, records, item.part.keys, actor)
        specs.append(ArtifactSpec(uri=item.uri, sha256=item.sha256, kind=item.part.kind,
                                  size_bytes=len(item.part.data), shard=item.part.shard, slice=item.part.slice,
                                  snapshot_id=part_snapshot))
    snapshot = registry.get_snapshot(session, version_snapshot)
    version = registry.add_version(session, model=model, snapshot=snapshot, parent=parent, artifacts=specs,
                                   state="active", origin=origin, metrics=metrics, actor=actor)
    invariant.on_registration(session, version, actor=actor)
    return version


def trainable(session: Session, dataset_id: str, records: DatasetRecords) -> frozenset[str]:
    """Keys new training may use: active records no open deletion request names."""
    at_stake = requests.record_ids_at_stake(session, dataset_id)
    return frozenset(key for key in records.active if records.ids[key] not in at_stake)
