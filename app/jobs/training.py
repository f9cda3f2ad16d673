"""Training through the service: a fresh snapshot of the dataset's active records, the
model's recipe fitted on it by the engine, the result registered as the active version."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from app.audit import service as audit
from app.core.database import session_scope
from app.core.errors import Conflict, InvalidInput
from app.core.hashing import json_safe
from app.core.outbox import enqueue
from app.core.queue import TaskName
from app.jobs import engine, lifecycle, storage
from app.jobs.models import JobKind, JobStage, JobStatus, UnlearningJob
from app.registry import artifacts
from app.registry import service as registry
from app.registry.models import DatasetStatus


@dataclass(frozen=True)
class TrainingConfig:
    seed: int = 0
    heldout_fraction: float = engine.DEFAULT_HELDOUT_FRACTION

    def check(self) -> TrainingConfig:
        if not 0.0 <= self.heldout_fraction < 0.5:
            raise InvalidInput("heldout_fraction must be in [0, 0.5)", field="heldout_fraction")
        if self.seed < 0:
            raise InvalidInput("seed must be >= 0", field="seed")
        return self


def start_training(
    session: Session, model_name: str, *, actor: str, config: TrainingConfig = TrainingConfig()
) -> UnlearningJob:
    """Queue a training job for the named model; the worker does the rest."""
    config.check()
    model = registry.get_model(session, model_name)
    try:
        engine.check_recipe(model.adapter, dict(model.hyperparameters))
    except engine.EngineInputError as exc:
        raise InvalidInput(str(exc), field="hyperparameters") from None
    dataset = registry.dataset_by_id(session, model.dataset_id)
    if dataset.status != DatasetStatus.READY:
        raise Conflict(f"dataset '{dataset.name}' is {dataset.status}, not ready", field="dataset")
    job = UnlearningJob(kind=JobKind.TRAIN, model_id=model.id, method="train", created_by=actor,
                        report={"config": {"seed": config.seed, "heldout_fraction": config.heldout_fraction}})
    session.add(job)
    session.flush()
    enqueue(session, TaskName.RUN_JOB, job_id=job.id)
    audit.record(session, actor=actor, action="job.created", entity_type="unlearning_job", entity_id=job.id,
                 payload={"kind": JobKind.TRAIN, "model_id": model.id})
    return job


@dataclass(frozen=True)
class _Setup:
    model_id: str
    dataset_id: str
    recipe: tuple[str, dict[str, Any]]
    source: tuple[str, str, dict[str, Any]]
    records: storage.DatasetRecords
    trainable: frozenset[str]  # active records no open request names, as the job started
    config: TrainingConfig
    fanout: dict[str, Any] | None
    sizing: dict[str, Any] | None
    max_accuracy_loss: float


def _setup(session: Session, job: UnlearningJob) -> _Setup:
    model = registry.model_by_id(session, job.model_id)
    dataset = registry.dataset_for_reading(session, model.dataset_id)
    policy = registry.model_policy(model).policy
    hyperparameters = engine.recipe_under_policy(model.adapter, dict(model.hyperparameters),
                                                 epsilon=policy.epsilon, delta=policy.delta)
    sizing = job.report.get("sizing")
    records = storage.dataset_records(session, dataset.id)
    return _Setup(model.id, dataset.id, (model.adapter, engine.sized(hyperparameters, sizing)),
                  (dataset.uri, dataset.format, dict(dataset.schema)), records,
                  storage.trainable(session, dataset.id, records), TrainingConfig(**job.report.get("config", {})), job.report.get("fanout"), sizing,
                  policy.max_accuracy_loss)


def _note_file(job: UnlearningJob, setup: _Setup) -> None:
    """The running job notes the dataset file it loads (in the transaction holding the
    dataset's share lock): an erasure swapping that file keeps its old bytes until the job ends."""
    job.report = {**job.report, "dataset_file": setup.source[0]}


def _size(job_id: str, worker: str, setup: _Setup, train: Any, heldout: Any) -> _Setup:
    """Pick SISA's shards and slices from the base recipe's learning curve, once per job:
    the choice is stored on the job before any shard is queued, so shards and the merge agree."""
    lifecycle.set_stage(job_id, worker, JobStage.TRAINING)
    calibration, _ = engine.verification_halves(heldout, setup.config.seed)
    sizing = engine.sisa_sizing(setup.recipe[1], train, calibration, setup.config.seed, setup.max_accuracy_loss)
    with session_scope() as session:
        job = lifecycle.owned_job(session, job_id, worker)
        job.report = {**job.report, "sizing": sizing}
    return dataclasses.replace(setup, recipe=(setup.recipe[0], engine.sized(setup.recipe[1], sizing)), sizing=sizing)


def run(job_id: str, worker: str, lease: lifecycle.Lease) -> None:
    """Fit the model: whole, or for SISA one shard job per shard (any worker may take each),
    then assemble the shards once all are trained."""
    with session_scope() as session:
        job = lifecycle.owned_job(session, job_id, worker)
        setup = _setup(session, job)
        _note_file(job, setup)
    if setup.fanout is not None:
        _assemble(job_id, worker, setup)
        return
    data = engine.load_dataset(*setup.source).select(setup.trainable)
    train, heldout = engine.training_split(data, setup.config.heldout_fraction, setup.config.seed)
    lease.check()
    if setup.sizing is None and engine.needs_sizing(*setup.recipe):
        setup = _size(job_id, worker, setup, train, heldout)
        lease.check()
    if engine.shard_count(*setup.recipe) > 1:
        _fan_out(job_id, worker, setup, train)
        return
    lifecycle.set_stage(job_id, worker, JobStage.TRAINING)
    fitted = engine.fit(*setup.recipe, train, setup.config.seed)
    _register(job_id, worker, setup, fitted, train, heldout, snapshot_id=None)


def _fan_out(job_id: str, worker: str, setup: _Setup, train: Any) -> None:
    """Pin the training records in a snapshot, queue one job per shard, and step aside."""
    shards = engine.shard_count(*setup.recipe)
    with session_scope() as session:
        job = lifecycle.owned_job(session, job_id, worker)
        snapshot_id = storage.snapshot_of(session, setup.dataset_id, setup.records, train.keys, worker)
        common = {"parent": job.id, "snapshot_id": snapshot_id, "seed": setup.config.seed,
                  "num_classes": engine.num_classes_of(setup.recipe[1], train)}
        children = [UnlearningJob(kind=JobKind.TRAIN_SHARD, model_id=job.model_id, method="train",
                                  created_by=job.created_by, report={**common, "shard": shard})
                    for shard in range(shards)]
        session.add_all(children)
        session.flush()
        for child in children:
            enqueue(session, TaskName.RUN_JOB, job_id=child.id)
        job.report = {**job.report, "fanout": {**common, "jobs": [child.id for child in children]}}
        job.stage = JobStage.TRAINING
        lifecycle.release(session, job)
        audit.record(session, actor=worker, action="job.fanned_out", entity_type="unlearning_job", entity_id=job.id,
                     payload={"shard_jobs": len(children), "snapshot_id": snapshot_id})


def run_shard(job_id: str, worker: str, lease: lifecycle.Lease) -> None:
    """Train one shard on the parent's pinned records; the last shard to finish wakes the parent."""
    with session_scope() as session:
        job = lifecycle.owned_job(session, job_id, worker)
        plan = dict(job.report)
        parent = session.get(UnlearningJob, plan["parent"])
        setup = _setup(session, parent)
        _note_file(job, setup)
        keys = registry.snapshot_record_keys(session, registry.get_snapshot(session, plan["snapshot_id"]))
    data = engine.load_dataset(*setup.source).select(keys)
    lifecycle.set_stage(job_id, worker, JobStage.TRAINING)
    raw = engine.fit_shard(setup.recipe[1], data, plan["seed"], plan["shard"], plan["num_classes"])
    uri, _ = artifacts.put_bytes(raw)
    lease.check()
    with session_scope() as session:
        job = lifecycle.owned_job(session, job_id, worker)
        lifecycle.succeed_job(session, job, result_version_id=None, report={"state_uri": uri})
        lifecycle.wake_parent(session, job)


def _assemble(job_id: str, worker: str, setup: _Setup) -> None:
    fanout = setup.fanout
    with session_scope() as session:
        job = lifecycle.owned_job(session, job_id, worker)
        children = [session.get(UnlearningJob, child_id) for child_id in fanout["jobs"]]
        failed = [child.id for child in children if child.status in (JobStatus.FAILED, JobStatus.CANCELLED)]
        if failed:
            _discard([child.report.get("state_uri") for child in children])
            lifecycle.fail_job(session, job, f"ShardJobFailed: shard job(s) {', '.join(failed)} did not finish")
            return
        if any(child.status != JobStatus.SUCCEEDED for child in children):
            lifecycle.release(session, job)  # woken early (a redelivery, the sweeper): keep waiting
            return
        states = {child.report["shard"]: child.report["state_uri"] for child in children}
        keys = registry.snapshot_record_keys(session, registry.get_snapshot(session, fanout["snapshot_id"]))
    lifecycle.set_stage(job_id, worker, JobStage.TRAINING)
    data = engine.load_dataset(*setup.source)
    train = data.select(keys)
    _, heldout = engine.training_split(data.select(setup.records.active), setup.config.heldout_fraction,
                                       setup.config.seed)
    fitted = engine.merge_shards(setup.recipe[1], fanout["seed"], train.feature_shape, fanout["num_classes"],
                                 {shard: artifacts.get_bytes(uri) for shard, uri in states.items()})
    _register(job_id, worker, setup, fitted, train, heldout.without(keys), snapshot_id=fanout["snapshot_id"],
              scratch=list(states.values()))


def _discard(uris: list[str | None]) -> None:
    """Shard states are scratch: no artifact row names them, so no purge would ever find
    them, and they remember their shard's records. They go before the job commits."""
    for uri in uris:
        if uri is not None:
            artifacts.delete(uri)


def _register(job_id: str, worker: str, setup: _Setup, fitted: Any, train: Any, heldout: Any,
              *, snapshot_id: str | None, scratch: list[str] | None = None) -> None:
    metrics: dict[str, Any] = json_safe({
        "seed": setup.config.seed, "heldout_fraction": setup.config.heldout_fraction, "train_records": len(train),
        "train_accuracy": fitted.accuracy(train), "heldout_accuracy": fitted.accuracy(heldout),
        **({"sisa_sizing": setup.sizing} if setup.sizing else {}),
    })
    stored = storage.store_parts(engine.artifact_parts(fitted, train.keys))
    with session_scope() as session:
        job = lifecycle.owned_job(session, job_id, worker)
        model = registry.model_by_id(session, job.model_id)
        version = storage.register_version(
            session, model=model, stored=stored, records=setup.records, parent=None, origin="trained",
            metrics=metrics, actor=worker, snapshot_id=snapshot_id,
        )
        lifecycle.succeed_job(session, job, result_version_id=version.id, report={"metrics": metrics})
        _discard(scratch or [])
