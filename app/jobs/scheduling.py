"""The periodic scheduler: batch scheduled deletions per model (deadline-aware, see
``planner``), warn about deadlines at risk, resume jobs whose worker died, and finish
requests that no model ever saw.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.core.config import get_settings
from app.core.database import utcnow
from app.core.errors import Conflict
from app.core.outbox import enqueue
from app.core.queue import TaskName
from app.jobs import engine, lifecycle
from app.jobs.models import JobKind, JobRequest, JobStatus, UnlearningJob
from app.jobs.planner import BatchPolicy, CostModel, Decision, PendingDeletion, decide, retrains_per_request
from app.lineage import service as lineage
from app.registry import service as registry
from app.registry.models import ModelVersion, RegisteredModel
from app.registry.policy import exact_method
from app.requests import service as requests
from app.requests.models import DeletionRequest, RequestStatus

log = logging.getLogger("unlearnd.jobs.scheduler")

LIVE_JOB_STATES = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED)


@dataclass(frozen=True)
class BatchOutcome:
    model: str
    decision: Decision
    job: UnlearningJob | None


def schedule(session: Session, *, now: datetime | None = None, actor: str = "scheduler") -> list[BatchOutcome]:
    """One scheduler tick."""
    now = now or utcnow()
    resume_stale_jobs(session, now)
    registry.resend_stalled_ingestions(session, now, patience=resend_patience())
    registry.retry_erasures(session, now)
    lifecycle.erase_waiting_rows(session, now, actor=actor)
    registry.destroy_expired_files(session, now, lifecycle.dataset_files_in_use(session))
    complete_requests_without_models(session, actor=actor)
    resync_waiting_requests(session, actor=actor)
    requests.flag_deadlines_at_risk(session, now, actor=actor)
    outcomes = []
    for model in models_with_pending(session):
        outcomes.append(plan_model(session, model, now=now, actor=actor))
    return outcomes


def unlearn_now(session: Session, model_name: str, *, actor: str) -> BatchOutcome:
    """Run a batch for the model at once with whatever is pending (admin's "run now")."""
    model = registry.get_model(session, model_name)
    outcome = plan_model(session, model, now=utcnow(), actor=actor, force=True)
    if outcome.job is None:
        raise Conflict(f"nothing to unlearn for model '{model_name}': {outcome.decision.reason}", field="name")
    return outcome


def _held_by_live_job(model_id: str) -> Select[Any]:
    """Ids of the requests a live (or finished) unlearning job of the model already holds."""
    return select(JobRequest.request_id).join(UnlearningJob, UnlearningJob.id == JobRequest.job_id).where(
        UnlearningJob.model_id == model_id,
        UnlearningJob.kind == JobKind.UNLEARN,
        UnlearningJob.status.in_(LIVE_JOB_STATES),
    )


def _pending(session: Session, model_id: str, *, limit: int | None = None) -> list[DeletionRequest]:
    return requests.awaiting_for_model(session, model_id, excluding=_held_by_live_job(model_id), limit=limit)


def models_with_pending(session: Session) -> list[RegisteredModel]:
    return [model for model in registry.list_models(session) if _pending(session, model.id, limit=1)]


def _shards_by_request(session: Session, model: RegisteredModel, request_ids: list[str],
                       base: ModelVersion) -> dict[str, frozenset[int] | None]:
    recipe = engine.sized(dict(model.hyperparameters), base.metrics.get("sisa_sizing"))
    assign = engine.shard_assigner(model.adapter, recipe, int(base.metrics.get("seed", 0)))
    if assign is None:
        return dict.fromkeys(request_ids)
    keys: dict[str, set[int]] = defaultdict(set)
    for request_id, _, key in requests.records_in_dataset(session, request_ids, model.dataset_id):
        keys[request_id].add(assign(key))
    return {request_id: frozenset(keys[request_id]) for request_id in request_ids}


def settle_time() -> timedelta:
    """A tick (at most 5 s) without a new request: a burst in progress is not cut in two."""
    return timedelta(seconds=min(5.0, get_settings().scheduler_interval_seconds))


def learned_cost(session: Session, model_id: str) -> CostModel:
    """Seconds per unit from the model's finished unlearning jobs (the last 20)."""
    rows = session.execute(
        select(UnlearningJob.started_at, UnlearningJob.finished_at, UnlearningJob.cost_units)
        .where(UnlearningJob.model_id == model_id, UnlearningJob.kind == JobKind.UNLEARN,
               UnlearningJob.status == JobStatus.SUCCEEDED, UnlearningJob.cost_units > 0)
        .order_by(UnlearningJob.finished_at.desc()).limit(20)
    ).tuples()
    return CostModel.learn([((end - start).total_seconds(), units) for start, end, units in rows if start and end])


def plan_model(session: Session, model: RegisteredModel, *, now: datetime, actor: str,
               force: bool = False) -> BatchOutcome:
    registry.lock_model(session, model.id)
    base = registry.active_version(session, model.id)
    if base is None:
        return BatchOutcome(model.name, Decision(run=False, reason="no active version yet"), None)
    pending_rows = _pending(session, model.id)
    shards = _shards_by_request(session, model, [r.id for r in pending_rows], base)
    pending = [PendingDeletion(request_id=r.id, received_at=r.received_at, due_at=r.due_at, shards=shards[r.id])
               for r in pending_rows]
    model_policy = registry.model_policy(model).policy
    full_retrain_hours = model_policy.full_retrain_window_hours
    policy = BatchPolicy(
        max_batch_size=model_policy.max_batch_size,
        window=timedelta(hours=model_policy.batching_window_hours),
        risk_margin=timedelta(hours=get_settings().deadline_risk_margin_hours),
        settle=settle_time(),
        full_retrain_window=None if full_retrain_hours is None else timedelta(hours=float(full_retrain_hours)),
    )
    decision = decide(pending, policy, learned_cost(session, model.id), now, force=force,
                      full_units=_full_retrain_units(model, base))
    if not decision.run:
        return BatchOutcome(model.name, decision, None)
    return BatchOutcome(model.name, decision, create_job(session, model, decision, actor=actor))


def _full_retrain_units(model: RegisteredModel, base: ModelVersion) -> int | None:
    """Units a full retrain costs: every shard of a SISA model; one job of an unsharded model
    whose method is an exact retrain; None where a batch is no retrain (newton, approximate)."""
    recipe = engine.sized(dict(model.hyperparameters), base.metrics.get("sisa_sizing"))
    if engine.shard_assigner(model.adapter, recipe, 0) is not None:
        return engine.shard_count(model.adapter, recipe)
    return 1 if registry.model_policy(model).method == "retrain" else None


# Batches the planner's report looks back over.
HISTORY_BATCHES = 20


def retrain_history(session: Session, model_id: str) -> dict[str, float | int]:
    """Retrains per request over the model's last finished batches: a job that retrained the
    whole model (method ``retrain``, a fallback included, or SISA touching every shard)."""
    jobs = session.execute(
        select(UnlearningJob.id, UnlearningJob.method_used, UnlearningJob.report)
        .where(UnlearningJob.model_id == model_id, UnlearningJob.kind == JobKind.UNLEARN,
               UnlearningJob.status == JobStatus.SUCCEEDED)
        .order_by(UnlearningJob.finished_at.desc()).limit(HISTORY_BATCHES)
    ).tuples().all()
    counts = dict(session.execute(
        select(JobRequest.job_id, func.count()).where(JobRequest.job_id.in_([job_id for job_id, _, _ in jobs]))
        .group_by(JobRequest.job_id)
    ).tuples().all())
    return retrains_per_request([
        (counts.get(job_id, 0), method == "retrain" or (method == "sisa" and bool(report.get("plan", {}).get("full_retrain"))))
        for job_id, method, report in jobs
    ])


def _method_for(session: Session, model: RegisteredModel, forget_count: int) -> tuple[str, dict[str, Any] | None]:
    """The policy's method, unless the batch forgets at least the policy's fraction of the
    active version's training data: then the exact method, directly (and the plan says why)."""
    policy = registry.model_policy(model)
    base = registry.active_version(session, model.id)
    trained = registry.get_snapshot(session, base.snapshot_id).record_count if base and base.snapshot_id else 0
    if not trained or forget_count / trained < policy.policy.large_removal_fraction:
        return policy.method, None
    exact = exact_method(model.adapter).value
    return exact, {"fraction": round(forget_count / trained, 6), "threshold": policy.policy.large_removal_fraction,
                   "policy_method": policy.method, "method": exact}


def create_job(session: Session, model: RegisteredModel, decision: Decision, *, actor: str) -> UnlearningJob:
    request_ids = [p.request_id for p in decision.batch]
    forget_count = len({record_id for _, record_id, _ in
                        requests.records_in_dataset(session, request_ids, model.dataset_id)})
    method, large = _method_for(session, model, forget_count)
    job = UnlearningJob(
        kind=JobKind.UNLEARN, model_id=model.id, method=method,
        cost_units=decision.units, forget_count=forget_count or 0, created_by=actor,
        report={"plan": {"reason": decision.reason, "requests": len(request_ids), "units": decision.units,
                         "units_if_alone": decision.units_if_alone, "units_saved": decision.units_saved,
                         "estimated_seconds": round(decision.estimated_seconds, 3),
                         "at_risk": [p.request_id for p in decision.at_risk],
                         "full_retrain": decision.full_retrain,
                         "history": retrain_history(session, model.id),
                         **({"large_removal": large} if large else {})}},
    )
    session.add(job)
    session.flush()
    session.add_all(JobRequest(job_id=job.id, request_id=rid) for rid in request_ids)
    session.flush()
    enqueue(session, TaskName.RUN_JOB, job_id=job.id)
    audit.record(session, actor=actor, action="job.created", entity_type="unlearning_job", entity_id=job.id,
                 payload={"kind": JobKind.UNLEARN, "model_id": model.id, "requests": request_ids,
                          "reason": decision.reason, "units": decision.units,
                          "units_saved": decision.units_saved})
    log.info("unlearning batch created", extra={"job_id": job.id, "model": model.name, "requests": len(request_ids)})
    return job


# A queued job (or pending ingestion) untouched for this many scheduler ticks has probably
# lost its message (a broker restarted without persistence); sending it again is safe, the
# lease makes it run once. A duplicate of a message that was only slow costs a claim.
RESEND_AFTER_TICKS = 2


def resend_patience() -> timedelta:
    return timedelta(seconds=get_settings().scheduler_interval_seconds * RESEND_AFTER_TICKS)


def resume_stale_jobs(session: Session, now: datetime) -> list[str]:
    """Running jobs whose holder stopped beating, and queued jobs nobody picked up for long:
    hand them to the queue again."""
    lease = timedelta(seconds=lifecycle.lease_seconds())
    last_touched = func.coalesce(UnlearningJob.heartbeat_at, UnlearningJob.created_at)
    stale = list(session.scalars(select(UnlearningJob).where(or_(
        (UnlearningJob.status == JobStatus.RUNNING) & (UnlearningJob.heartbeat_at < now - lease),
        (UnlearningJob.status == JobStatus.QUEUED) & (last_touched < now - resend_patience()),
    )).order_by(UnlearningJob.created_at).with_for_update()))
    for job in stale:
        # Releasing the lease (and restarting its clock) keeps the next tick from sending it twice.
        job.worker, job.heartbeat_at = None, now
        enqueue(session, TaskName.RUN_JOB, job_id=job.id)
        audit.record(session, actor="scheduler", action="job.requeued", entity_type="unlearning_job",
                     entity_id=job.id, payload={"status": job.status, "stage": job.stage, "attempts": job.attempts})
    return [job.id for job in stale]


def complete_requests_without_models(session: Session, *, actor: str) -> int:
    """A request whose records no model version saw only needs its records marked forgotten."""
    done = 0
    waiting = requests.list_scheduled_without_models(session, limit=500)
    if waiting:
        lineage.lock_lineage(session, exclusive=False)  # before the row locks
    for scheduled in waiting:
        request = requests.get_for_update(session, scheduled.request_id)
        if request.status == RequestStatus.SCHEDULED:
            done += lifecycle.complete_request(session, request, actor=actor)
    return done


def resync_waiting_requests(session: Session, *, actor: str) -> int:
    """Requests every job of which has finished but which are still open: their completion
    was deferred by the lineage check (a training run under way, a version holding them
    whose follow-up job has since run). Sync them again; returns how many completed."""
    def carried(*statuses: JobStatus) -> Select[Any]:
        return select(JobRequest.request_id).join(UnlearningJob, UnlearningJob.id == JobRequest.job_id).where(
            UnlearningJob.status.in_(statuses))

    waiting = requests.awaiting_among(session, carried(JobStatus.SUCCEEDED),
                                      excluding=carried(JobStatus.QUEUED, JobStatus.RUNNING), limit=500)
    for request_id in waiting:
        lifecycle.sync_request(session, request_id, actor=actor)
    return len(waiting)
