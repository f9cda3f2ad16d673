"""One unlearning job: load the base version and its data, forget the batch's records with
the policy's method (verified, or replaced by the exact method), register the result,
purge every version that still holds a forgotten record, and complete the requests.

Redone from the start if the worker dies before the result is registered; resumed at
purging if it dies after, so a job never creates a second result version.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.database import session_scope
from app.core.errors import Conflict
from app.core.hashing import json_safe
from app.jobs import engine, lifecycle, qualification, storage
from app.jobs.models import JobRequest, JobStage, UnlearningJob
from app.lineage import service as lineage
from app.registry import artifacts
from app.registry import service as registry
from app.registry.models import VersionState
from app.registry.policy import StoredPolicy
from app.requests import service as requests
from app.requests.models import Guarantee


@dataclass(frozen=True)
class Inputs:
    base_version_id: str
    model_bytes: bytes
    source: tuple[str, str, dict[str, Any]]
    records: storage.DatasetRecords
    base_keys: frozenset[str]
    batch_keys: frozenset[str]
    method: str
    policy: StoredPolicy
    seed: int
    heldout_fraction: float
    request_keys: dict[str, frozenset[str]]
    lineage_metrics: dict[str, Any]  # what every version of the lineage carries forward
    qualification: dict[str, Any] | None
    retrain_accuracy: dict[str, Any] | None = None

    @property
    def forget_keys(self) -> frozenset[str]:
        # Records already forgotten for another model's sake go too: no new version may keep them.
        return self.base_keys & (self.batch_keys | (self.records.ids.keys() - self.records.active))

    def records_by_request(self) -> dict[str, dict[str, int]]:
        """Per request, what this model held of its records (the certificate's counts)."""
        return {rid: engine.record_counts(keys, self.base_keys, self.heldout_fraction, self.seed)
                for rid, keys in sorted(self.request_keys.items())}


def _inputs(session: Session, job: UnlearningJob) -> Inputs:
    model = registry.model_by_id(session, job.model_id)
    base = registry.active_version(session, model.id)
    if base is None or base.artifact_uri is None or base.snapshot_id is None:
        raise Conflict(f"model '{model.name}' has no active version with a stored model to unlearn from")
    dataset = registry.dataset_for_reading(session, model.dataset_id)
    job.report = {**job.report, "dataset_file": dataset.uri}  # its old bytes outlive a swap while this job runs
    request_keys: dict[str, set[str]] = {}
    batch = session.scalars(select(JobRequest.request_id).where(JobRequest.job_id == job.id))
    for request_id, _, key in requests.records_in_dataset(session, batch, dataset.id):
        request_keys.setdefault(request_id, set()).add(key)
    job.base_version_id = base.id
    inputs = Inputs(
        base_version_id=base.id,
        model_bytes=artifacts.get_bytes(base.artifact_uri),
        source=(dataset.uri, dataset.format, dict(dataset.schema)),
        records=storage.dataset_records(session, dataset.id),
        base_keys=frozenset(registry.snapshot_record_keys(session, registry.get_snapshot(session, base.snapshot_id))),
        batch_keys=frozenset().union(*request_keys.values()),
        method=job.method,
        policy=registry.model_policy(model),
        seed=int(base.metrics.get("seed", 0)),
        heldout_fraction=float(base.metrics.get("heldout_fraction", engine.DEFAULT_HELDOUT_FRACTION)),
        request_keys={rid: frozenset(keys) for rid, keys in request_keys.items()},
        lineage_metrics={key: base.metrics[key] for key in ("sisa_sizing",) if key in base.metrics},
        qualification=None,
    )
    if engine.is_approximate(job.method):
        found = qualification.covering(session, base, job.method, len(inputs.forget_keys))
        inputs = dataclasses.replace(inputs, qualification=found, retrain_accuracy=(
            qualification.retrain_accuracy(session, found["id"]) if found else None))
    return inputs


def run(job_id: str, worker: str, lease: lifecycle.Lease) -> None:
    with session_scope() as session:
        inputs = _inputs(session, lifecycle.owned_job(session, job_id, worker))
    forgotten_keys = inputs.records.ids.keys() - inputs.records.active
    forget_keys = inputs.forget_keys
    # Any other version of the model holding one of these goes too (a superseded one, one
    # trained or imported while a request was open): the lineage invariant's follow-up.
    doomed_ids = inputs.records.ids_of(inputs.batch_keys | forgotten_keys)
    if not forget_keys:
        _finish_unchanged(job_id, worker, inputs.records_by_request(), doomed_ids)
        return
    data = engine.load_dataset(*inputs.source)
    retain_keys = inputs.base_keys - forget_keys
    _, heldout = engine.training_split(data.select(inputs.records.active), inputs.heldout_fraction, inputs.seed)
    heldout = heldout.without(inputs.base_keys)
    base_model = engine.load_model(inputs.model_bytes)
    lease.check()
    lifecycle.set_stage(job_id, worker, JobStage.UNLEARNING)
    outcome = engine.unlearn_verified(
        base_model, inputs.method, data.select(retain_keys), data.select(forget_keys), heldout,
        engine.thresholds(inputs.policy.policy.thresholds), inputs.policy.policy.method_configs.options_for,
        seed=inputs.seed, on_stage=lambda stage: lifecycle.set_stage(job_id, worker, stage),
        qualification=inputs.qualification, retrain_accuracy=inputs.retrain_accuracy,
    )
    if inputs.qualification is not None and outcome.method_used == inputs.method:
        lease.check()
        outcome = _sampling_audit(job_id, worker, inputs, outcome, base_model, data.select(retain_keys),
                                  data.select(forget_keys), heldout)
    stored = storage.store_parts(engine.artifact_parts(outcome.model, retain_keys))
    lease.check()
    report = {**outcome.report, "forget_records": len(forget_keys), "retain_records": len(retain_keys),
              "records_by_request": inputs.records_by_request(),
              "ignored_thresholds": inputs.policy.ignored_thresholds}
    with session_scope() as session:
        job = lifecycle.owned_job(session, job_id, worker)
        model = registry.model_by_id(session, job.model_id)
        base = registry.version_by_id(session, inputs.base_version_id)
        lineage.lock_lineage(session, exclusive=True)
        stale = lineage.model_versions_holding(session, model.id, doomed_ids)
        version = storage.register_version(
            session, model=model, stored=stored, records=inputs.records, parent=base, origin="unlearned",
            metrics={"seed": inputs.seed, "heldout_fraction": inputs.heldout_fraction, **inputs.lineage_metrics,
                     **json_safe(outcome.report["verification"]["accuracy"])},
            actor=worker,
        )
        job.result_version_id, job.method_used, job.cost_units = version.id, outcome.method_used, outcome.units
        job.forget_count = len(forget_keys)
        job.report = {**job.report, **report, "purge_version_ids": stale}
        job.stage, job.progress = JobStage.PURGING, lifecycle.STAGE_PROGRESS[JobStage.PURGING]
    purge_and_complete(job_id, worker)


def _sampling_audit(job_id: str, worker: str, inputs: Inputs, outcome: engine.UnlearningOutcome, base_model: Any,
                    retain: Any, forget: Any, heldout: Any) -> engine.UnlearningOutcome:
    """The policy's sampling audit: on every k-th job that keeps an approximate result under
    a study, run the exact method too and compare per record. A degraded comparison revokes
    the study and the job keeps the exact result instead."""
    study_id = inputs.qualification["id"]
    with session_scope() as session:
        study_report = qualification.audit_turn(session, study_id, inputs.policy.policy.sampling_audit_every)
    if study_report is None:
        return outcome
    audited, comparison = engine.sampling_audit(
        outcome, base_model, retain, forget, heldout, engine.thresholds(inputs.policy.policy.thresholds),
        inputs.policy.policy.method_configs.options_for, seed=inputs.seed, study_report=study_report)
    if comparison["degraded"]:
        with session_scope() as session:
            qualification.revoke(session, study_id, job_id=job_id, comparison=comparison, actor=worker)
    return audited


def purge_and_complete(job_id: str, worker: str) -> None:
    """Destroy what still remembers (one version per transaction, each idempotent), then
    complete the job and whichever of its requests have now been forgotten by every model."""
    with session_scope() as session:
        stale = list(lifecycle.owned_job(session, job_id, worker).report.get("purge_version_ids", []))
    for version_id in stale:
        with session_scope() as session:
            lifecycle.owned_job(session, job_id, worker)
            version = registry.version_by_id(session, version_id)
            if version.state == VersionState.ACTIVE:
                registry.set_version_state(session, version, VersionState.SUPERSEDED, worker)
            registry.purge_version(session, version, worker)
    with session_scope() as session:
        job = lifecycle.owned_job(session, job_id, worker)
        lifecycle.succeed_job(session, job, result_version_id=None, report={"purged_versions": len(stale)})
        _sync_requests(session, job, worker)


def _finish_unchanged(job_id: str, worker: str, records_by_request: dict[str, dict[str, int]],
                      doomed_ids: list[int]) -> None:
    """The base version holds none of the batch's records (an earlier job forgot them, or
    they were held out): its own snapshot proves that, so the claim is exact. Older versions
    that still hold one (superseded, or registered while a request was open) are purged all
    the same: the lineage invariant's follow-up."""
    with session_scope() as session:
        job = lifecycle.owned_job(session, job_id, worker)
        job.cost_units, job.forget_count = 0, 0
        stale = lineage.model_versions_holding(session, job.model_id, doomed_ids)
        job.report = {**job.report, "method_used": None, "guarantee": Guarantee.EXACT.value,
                      "records_by_request": records_by_request,
                      "reason": "no record of the batch is in the active version", "purge_version_ids": stale}
        job.stage, job.progress = JobStage.PURGING, lifecycle.STAGE_PROGRESS[JobStage.PURGING]
    purge_and_complete(job_id, worker)


def _sync_requests(session: Session, job: UnlearningJob, actor: str) -> None:
    for request_id in lifecycle.job_request_ids(session, job.id):
        lifecycle.sync_request(session, request_id, actor=actor)
