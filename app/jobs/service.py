"""Unlearning and training jobs: the room's public face for routers, the CLI and tasks.

``execute`` is what the Celery task calls: it takes the job's lease, runs it, and says
whether (and when) the task should try again.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.core.database import utcnow
from app.core.errors import IllegalTransition, InvalidInput, NotFound
from app.core.outbox import enqueue
from app.core.queue import TaskName
from app.jobs import invariant, lifecycle, lineage_events, training, unlearning
from app.jobs.lifecycle import LeaseLost
from app.jobs.models import JobKind, JobRequest, JobStage, JobStatus, UnlearningJob
from app.jobs.scheduling import BatchOutcome, schedule, unlearn_now
from app.jobs.training import TrainingConfig, start_training
from app.lineage import service as lineage
from app.registry import service as registry
from app.registry.models import ModelVersion
from app.registry.schemas import ArtifactSpec, VersionImport, VersionOrigin
from app.requests import service as requests
from app.requests.models import RequestStatus

log = logging.getLogger("unlearnd.jobs")

__all__ = [
    "BatchOutcome", "JobFilters", "TrainingConfig", "cancel_job", "execute", "get_job", "import_version",
    "job_requests",
    "list_jobs", "methods_used_for_request", "retry_job", "schedule", "start_training", "unlearn_now",
]
MAX_PAGE = 200


def execute(job_id: str, worker: str) -> float | None:
    """Run the job if this worker may; return seconds to wait before trying again, or None."""
    try:
        claim = lifecycle.claim(job_id, worker)
    except NotFound:
        log.warning("message for an unknown job dropped", extra={"job_id": job_id})
        return None
    if claim.result is lifecycle.ClaimResult.BUSY:
        return lifecycle.lease_seconds()
    if claim.result is lifecycle.ClaimResult.FINISHED:
        if claim.failed_now:
            lineage_events.run_finished(job_id)
        return None
    lineage_events.run_started(job_id)
    try:
        return _attempt(job_id, worker, claim)
    finally:
        lineage_events.run_finished(job_id)  # the attempt's outcome is committed by now


def _attempt(job_id: str, worker: str, claim: lifecycle.Claim) -> float | None:
    try:
        with lifecycle.Lease(job_id, worker) as lease:
            if claim.resume_purge:
                unlearning.purge_and_complete(job_id, worker)
            elif claim.kind == JobKind.TRAIN:
                training.run(job_id, worker, lease)
            elif claim.kind == JobKind.TRAIN_SHARD:
                training.run_shard(job_id, worker, lease)
            else:
                unlearning.run(job_id, worker, lease)
    except LeaseLost:
        log.warning("job lease lost; leaving the job to its new holder", extra={"job_id": job_id})
        return None
    except Exception as exc:
        log.exception("job attempt failed", extra={"job_id": job_id})
        return lifecycle.record_failure(job_id, worker, exc)
    return None


@dataclass(frozen=True)
class JobFilters:
    status: JobStatus | None = None
    kind: JobKind | None = None
    model: str | None = None
    request_id: str | None = None


def import_version(session: Session, model_name: str, body: VersionImport, *, actor: str) -> ModelVersion:
    """Register an externally trained version, checked like any other: refused if its
    snapshot holds a forgotten record, else attached to the open requests it holds records
    of, with a follow-up job, in the transaction that makes it visible."""
    lineage.lock_lineage(session, exclusive=True)
    model = registry.get_model(session, model_name)
    parent = registry.get_version(session, model, body.parent) if body.parent else None
    version = registry.add_version(
        session, model=model, snapshot=registry.get_snapshot(session, body.snapshot_id), parent=parent,
        artifacts=[ArtifactSpec(**a.model_dump()) for a in body.artifacts], state=body.state,
        origin=VersionOrigin.IMPORTED, metrics=body.metrics, actor=actor,
    )
    invariant.on_registration(session, version, actor=actor)
    return version


def list_jobs(session: Session, filters: JobFilters = JobFilters(), *, limit: int = 50) -> list[UnlearningJob]:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", field="limit")
    query = select(UnlearningJob)
    if filters.status is not None:
        query = query.where(UnlearningJob.status == filters.status.value)
    if filters.kind is not None:
        query = query.where(UnlearningJob.kind == filters.kind.value)
    if filters.model is not None:
        query = query.where(UnlearningJob.model_id == registry.get_model(session, filters.model).id)
    if filters.request_id is not None:
        query = query.join(JobRequest, JobRequest.job_id == UnlearningJob.id).where(
            JobRequest.request_id == filters.request_id)
    return list(session.scalars(query.order_by(UnlearningJob.created_at.desc(), UnlearningJob.id).limit(limit)))


def model_names(session: Session, model_ids: set[str]) -> dict[str, str]:
    """Model id -> name, for listings."""
    return {model.id: model.name for model in registry.list_models(session) if model.id in model_ids}


def get_job(session: Session, job_id: str) -> UnlearningJob:
    job = session.get(UnlearningJob, job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


def job_requests(session: Session, job_id: str) -> list[str]:
    return lifecycle.job_request_ids(session, job_id)


def methods_used_for_request(session: Session, request_id: str) -> list[str]:
    """The method each succeeded job that unlearned this request ended up using."""
    query = (
        select(UnlearningJob.method_used)
        .join(JobRequest, JobRequest.job_id == UnlearningJob.id)
        .where(JobRequest.request_id == request_id, UnlearningJob.status == JobStatus.SUCCEEDED)
    )
    return [method for method in session.scalars(query) if method]


def succeeded_jobs_of_each(session: Session, request_ids: Sequence[str]) -> dict[str, list[UnlearningJob]]:
    """Each request's succeeded unlearning jobs (every request named, with none if it has none)."""
    jobs: dict[str, list[UnlearningJob]] = {request_id: [] for request_id in request_ids}
    linked: dict[str, list[str]] = defaultdict(list)
    for request_id, job_id in session.execute(select(JobRequest.request_id, JobRequest.job_id)
                                              .where(JobRequest.request_id.in_(list(request_ids)))).tuples():
        linked[job_id].append(request_id)
    # By key, apart from the links: a join would let a stale row estimate start from the status.
    for job in session.scalars(select(UnlearningJob).where(UnlearningJob.id.in_(sorted(linked)),
                                                           UnlearningJob.status == JobStatus.SUCCEEDED)):
        for request_id in linked[job.id]:
            jobs[request_id].append(job)
    return jobs


def requests_unlearned_with(request_id: str) -> Select[Any]:
    """Ids of the requests that a succeeded job unlearned together with this one (itself
    included), as a select for another room's read to filter."""
    return select(JobRequest.request_id).where(JobRequest.job_id.in_(
        select(JobRequest.job_id).join(UnlearningJob, UnlearningJob.id == JobRequest.job_id)
        .where(JobRequest.request_id == request_id, UnlearningJob.status == JobStatus.SUCCEEDED)))


def retry_job(session: Session, job_id: str, *, actor: str) -> UnlearningJob:
    """Run a failed job again with fresh attempts; its failed requests are scheduled again."""
    job = lifecycle.lock_job(session, job_id)
    if job.status != JobStatus.FAILED:
        raise IllegalTransition(f"only a failed job can be retried; this one is {job.status}", field="status",
                                current_status=job.status)
    job.status, job.attempts, job.error, job.stage, job.progress = JobStatus.QUEUED, 0, None, None, 0.0
    job.finished_at = None
    for request_id in lifecycle.job_request_ids(session, job.id):
        request = requests.get_for_update(session, request_id)
        if request.status == RequestStatus.FAILED:
            requests.transition(session, request, RequestStatus.SCHEDULED, actor=actor, reason=f"job {job.id} retried")
    enqueue(session, TaskName.RUN_JOB, job_id=job.id)
    audit.record(session, actor=actor, action="job.retried", entity_type="unlearning_job", entity_id=job.id,
                 payload={"kind": job.kind})
    return job


def cancel_job(session: Session, job_id: str, *, actor: str) -> UnlearningJob:
    """Withdraw a job before it starts unlearning; its requests wait for the next batch."""
    job = lifecycle.lock_job(session, job_id)
    cancellable = job.status == JobStatus.QUEUED or (
        job.status == JobStatus.RUNNING and job.stage in (None, JobStage.LOADING))
    if not cancellable:
        raise IllegalTransition(
            f"a job can be cancelled only before unlearning starts; this one is {job.status}"
            + (f" at {job.stage}" if job.stage else ""),
            field="status", current_status=job.status,
        )
    job.status, job.worker, job.finished_at = JobStatus.CANCELLED, None, utcnow()
    audit.record(session, actor=actor, action="job.cancelled", entity_type="unlearning_job", entity_id=job.id,
                 payload={"kind": job.kind, "stage": job.stage})
    return job
