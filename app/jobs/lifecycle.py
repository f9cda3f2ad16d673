"""Job lifecycle: who holds a job (a heartbeat lease), which stage it is in, how it fails,
and what each step means for the deletion requests it carries.

A job is written only by the worker holding its lease. Every write below locks the job
row and checks the holder first, so a worker that lost its lease (it stalled, another
took over) can never store a second result.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.core.config import get_settings
from app.core.database import session_scope, utcnow
from app.core.errors import NotFound
from app.core.outbox import enqueue
from app.core.queue import TaskName
from app.jobs.models import (
    JobKind,
    JobRequest,
    JobStage,
    JobStatus,
    MethodQualification,
    QualificationStatus,
    UnlearningJob,
)
from app.lineage import service as lineage
from app.registry import service as registry
from app.requests import service as requests
from app.requests.models import Guarantee, RequestStatus, weakest

log = logging.getLogger("unlearnd.jobs")

FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
MAX_BACKOFF_SECONDS = 300.0
# How far each stage has brought a job, for the progress bar.
STAGE_PROGRESS = {
    JobStage.LOADING: 0.05, JobStage.TRAINING: 0.2, JobStage.UNLEARNING: 0.2,
    JobStage.VERIFYING: 0.7, JobStage.PURGING: 0.9, JobStage.DONE: 1.0,
}


class LeaseLost(Exception):
    """Another worker holds the job now, or it was cancelled: stop without writing."""


def lease_seconds() -> float:
    """A heartbeat older than this means the holder is dead. Tied to the broker's redelivery
    timeout so a redelivered message normally finds the lease already expired."""
    return max(2.0, min(60.0, get_settings().task_visibility_timeout_seconds / 2))


def backoff_seconds(attempt: int) -> float:
    return min(MAX_BACKOFF_SECONDS, 2.0**attempt)


class ClaimResult(Enum):
    RUN = "run"
    BUSY = "busy"
    FINISHED = "finished"


@dataclass(frozen=True)
class Claim:
    result: ClaimResult
    kind: str = JobKind.UNLEARN
    resume_purge: bool = False
    failed_now: bool = False  # FINISHED by this claim: its worker was lost on every attempt


def lock_job(session: Session, job_id: str) -> UnlearningJob:
    job = session.scalar(select(UnlearningJob).where(UnlearningJob.id == job_id).with_for_update())
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


def owned_job(session: Session, job_id: str, worker: str) -> UnlearningJob:
    job = lock_job(session, job_id)
    if job.status != JobStatus.RUNNING or job.worker != worker:
        raise LeaseLost(f"job {job_id} is {job.status}, held by {job.worker}")
    return job


def claim(job_id: str, worker: str, now: datetime | None = None) -> Claim:
    """Take the job's lease, unless it is finished or a live worker holds it."""
    now = now or utcnow()
    with session_scope() as session:
        job = lock_job(session, job_id)
        if job.status in FINISHED:
            return Claim(ClaimResult.FINISHED)
        fresh = job.heartbeat_at is not None and now - job.heartbeat_at < timedelta(seconds=lease_seconds())
        if job.status == JobStatus.RUNNING and job.worker not in (None, worker) and fresh:
            return Claim(ClaimResult.BUSY)
        taking_over = job.status == JobStatus.RUNNING
        job.attempts += 1
        if job.attempts > job.max_attempts:
            fail_job(session, job, "WorkerLost: the job's worker was lost on every attempt")
            return Claim(ClaimResult.FINISHED, failed_now=True)
        job.status, job.worker, job.heartbeat_at, job.error = JobStatus.RUNNING, worker, now, None
        job.started_at = job.started_at or now
        resume_purge = job.result_version_id is not None and job.kind == JobKind.UNLEARN
        if not resume_purge:
            job.stage, job.progress = JobStage.LOADING, STAGE_PROGRESS[JobStage.LOADING]
        audit.record(session, actor=worker, action="job.resumed" if taking_over else "job.started",
                     entity_type="unlearning_job", entity_id=job.id,
                     payload={"attempt": job.attempts, "stage": job.stage})
        return Claim(ClaimResult.RUN, kind=job.kind, resume_purge=resume_purge)


class Lease:
    """Keeps the job's heartbeat fresh from a background thread while the engine computes."""

    def __init__(self, job_id: str, worker: str) -> None:
        self.job_id, self.worker = job_id, worker
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{job_id[:8]}", daemon=True)

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _beat(self) -> None:
        interval = lease_seconds() / 4
        while not self._stop.wait(interval):
            try:
                with session_scope() as session:
                    job = session.get(UnlearningJob, self.job_id)
                    if job is None or job.status != JobStatus.RUNNING or job.worker != self.worker:
                        self.lost = True
                        return
                    job.heartbeat_at = utcnow()
            except Exception:  # a missed beat is retried; the lease tolerates three
                log.warning("heartbeat failed", extra={"job_id": self.job_id}, exc_info=True)

    def check(self) -> None:
        if self.lost:
            raise LeaseLost(f"job {self.job_id} lease lost")


def set_stage(job_id: str, worker: str, stage: JobStage | str, *, actor: str = "worker") -> None:
    """Record the stage (and its requests' status) under the lease; a cancelled job stops here."""
    stage = JobStage(stage)
    with session_scope() as session:
        job = owned_job(session, job_id, worker)
        job.stage, job.progress, job.heartbeat_at = stage, STAGE_PROGRESS[stage], utcnow()
        if job.kind == JobKind.UNLEARN:
            for request_id in job_request_ids(session, job.id):
                sync_request(session, request_id, actor=actor)


def job_request_ids(session: Session, job_id: str) -> list[str]:
    return list(session.scalars(select(JobRequest.request_id).where(JobRequest.job_id == job_id)
                                .order_by(JobRequest.request_id)))


# --- what a job's progress means for its requests ----------------------------------------------

_LEVEL = {RequestStatus.SCHEDULED: 0, RequestStatus.UNLEARNING: 1, RequestStatus.VERIFYING: 2}
_STAGE_LEVEL = {JobStage.UNLEARNING: 1, JobStage.VERIFYING: 2, JobStage.PURGING: 2, JobStage.DONE: 3}
_FORWARD = [RequestStatus.SCHEDULED, RequestStatus.UNLEARNING, RequestStatus.VERIFYING]


def _model_levels(session: Session, request_id: str) -> dict[str, int]:
    """For each model the request touches, how far its latest live job has come (0-3)."""
    levels = dict.fromkeys(requests.models_of(session, request_id), 0)
    jobs = session.execute(
        select(UnlearningJob.model_id, UnlearningJob.status, UnlearningJob.stage)
        .join(JobRequest, JobRequest.job_id == UnlearningJob.id)
        .where(JobRequest.request_id == request_id, UnlearningJob.status != JobStatus.CANCELLED)
        .order_by(UnlearningJob.created_at)
    ).tuples()
    for model_id, status, stage in jobs:
        if status == JobStatus.SUCCEEDED:
            levels[model_id] = 3
        elif status == JobStatus.RUNNING and levels.get(model_id, 0) < 3:
            levels[model_id] = _STAGE_LEVEL.get(JobStage(stage), 0) if stage else 0
    return levels


def sync_request(session: Session, request_id: str, *, actor: str) -> None:
    """Unlearning once any of its models is being unlearned, verifying once every model is
    verifying, completed once every model has forgotten it (and no live version holds it)."""
    lineage.lock_lineage(session, exclusive=False)  # before the row lock: see lock_lineage
    request = requests.get_for_update(session, request_id)
    if request.status not in _LEVEL:
        return
    levels = list(_model_levels(session, request_id).values()) or [3]
    target = min(levels) if min(levels) >= 2 else min(1, max(levels))
    current = _LEVEL[RequestStatus(request.status)]
    if target == 3:
        if current == 1:
            requests.transition(session, request, RequestStatus.VERIFYING, actor=actor)
        complete_request(session, request, actor=actor)
    elif target > current:
        for status in _FORWARD[current + 1 : target + 1]:
            requests.transition(session, request, status, actor=actor)
    elif current == 2 and target == 1:
        requests.transition(session, request, RequestStatus.UNLEARNING, actor=actor,
                            reason="verification failed; falling back to an exact method")


def request_guarantee(session: Session, request_id: str) -> str:
    """The weakest guarantee among the succeeded jobs that forgot the request; with no job
    (no model trained on its records) lineage alone shows that, which is exact."""
    reports = session.scalars(
        select(UnlearningJob.report).join(JobRequest, JobRequest.job_id == UnlearningJob.id)
        .where(JobRequest.request_id == request_id, UnlearningJob.status == JobStatus.SUCCEEDED)
    )
    return weakest([r.get("guarantee") or Guarantee.APPROXIMATE for r in reports]) or Guarantee.EXACT.value


def completion_check(session: Session, record_ids: list[int]) -> dict[str, Any]:
    """What must hold before a request's records count as forgotten: no live version
    (training, active, superseded) has a part whose snapshot holds one, and no training run
    that may have read them before the request arrived is still under way (its version is
    checked when it registers, and attaches the request)."""
    holders = lineage.live_versions_holding(session, record_ids) if record_ids else []
    datasets = registry.datasets_of_records(session, record_ids)
    training = list(session.scalars(
        select(UnlearningJob.id).where(
            UnlearningJob.model_id.in_(registry.models_on_datasets(datasets)), UnlearningJob.kind == JobKind.TRAIN,
            (UnlearningJob.status == JobStatus.RUNNING)
            | ((UnlearningJob.status == JobStatus.QUEUED) & UnlearningJob.stage.is_not(None)),
        ).order_by(UnlearningJob.id))) if datasets else []
    return {
        "checked_at": utcnow().isoformat(),
        "method": LINEAGE_CHECK_METHOD,
        "records": len(record_ids),
        "live_versions_holding": [{"id": v.id, "model": v.model, "number": v.number, "state": v.state}
                                  for v in holders],
        "training_jobs_in_flight": training,
        "passed": not holders and not training,
    }


LINEAGE_CHECK_METHOD = (
    "every non-purged part (whole model, SISA shard, slice checkpoint) of every version in state training, "
    "active or superseded was tested for the request's records against its training snapshot's membership "
    "bitmap, and no training job on their datasets was under way"
)


def complete_request(session: Session, request: Any, *, actor: str) -> bool:
    """Complete the request if the lineage check passes: its records become forgotten (no
    future snapshot takes them) and the check is kept for the certificate. Otherwise it
    stays open, and returns False: the version holding it has a follow-up job, whose end
    syncs the request again (and so does the scheduler's tick)."""
    record_ids = requests.record_ids_of(session, request.id)
    check = completion_check(session, record_ids)
    if not check["passed"]:
        log.info("request completion deferred by the lineage check", extra={
            "deletion_request": request.id, "holders": len(check["live_versions_holding"]),
            "training": len(check["training_jobs_in_flight"])})
        return False
    if record_ids:
        registry.mark_records_forgotten(session, record_ids, actor)
        # A request by subject suppresses the subject; one by key or selector, the keys only.
        registry.suppress_forgotten(session, record_ids, subject_hashes=request.subject_hashes,
                                    request_id=request.id, actor=actor)
    requests.note_completion_check(request, check)
    requests.transition(session, request, RequestStatus.COMPLETED, actor=actor,
                        guarantee=request_guarantee(session, request.id))
    _erase_training_rows(session, record_ids, request.id, actor=actor)
    return True


def _erase_training_rows(session: Session, record_ids: list[int], request_id: str, *, actor: str) -> None:
    """Once no open request touches a dataset any more, its forgotten rows leave the dataset
    file too (or its external owner is asked to redact them): registry ``schedule_erasure``.
    The erasure certifies every completed request whose rows it takes out, not only this one:
    a batch's requests complete one by one and only the last finds the dataset free."""
    for dataset_id in sorted(registry.datasets_of_records(session, record_ids)):
        if not requests.dataset_has_open_requests(session, dataset_id):
            waiting = requests.completed_with_unerased_records(session, dataset_id)
            registry.schedule_erasure(session, dataset_id, [request_id, *waiting], actor=actor)


def erase_waiting_rows(session: Session, now: datetime, *, actor: str) -> int:
    """The scheduler's tick: a dataset whose file still holds forgotten rows, with no erasure
    under way, is rewritten once no open request touches it (a request that was rejected,
    cancelled or failed completes nothing) or once its oldest waiting row has waited
    ``UNLEARND_ERASURE_MAX_WAIT_HOURS``, so no certificate waits for ever."""
    limit = now - timedelta(hours=get_settings().erasure_max_wait_hours)
    scheduled = 0
    for dataset_id, oldest in registry.datasets_awaiting_erasure(session):
        overdue = oldest is None or oldest <= limit
        if overdue or not requests.dataset_has_open_requests(session, dataset_id):
            registry.schedule_erasure(session, dataset_id, requests.completed_with_unerased_records(session, dataset_id),
                                      actor=actor)
            scheduled += 1
    return scheduled


def dataset_files_in_use(session: Session) -> set[str]:
    """The dataset files that running jobs loaded (noted under the dataset's share lock when
    the job read its inputs): an erasure keeps their old bytes until those jobs are done."""
    reports = session.scalars(select(UnlearningJob.report).where(UnlearningJob.status == JobStatus.RUNNING))
    files = {report["dataset_file"] for report in reports if report and report.get("dataset_file")}
    # A qualification study notes nothing: every file its dataset had since the study began
    # may be the one it loaded.
    studies = session.execute(
        select(MethodQualification.model_id, MethodQualification.created_at)
        .where(MethodQualification.status == QualificationStatus.RUNNING)).tuples().all()
    models = registry.models_by_id(session, [model_id for model_id, _ in studies])
    for model_id, since in studies:
        files |= registry.files_replaced_since(session, models[model_id].dataset_id, since)
    return files


def release(session: Session, job: UnlearningJob) -> None:
    """Give the lease back without finishing: the job waits for others (its SISA shards).
    Waiting is not an attempt, so the claim that led here is not counted."""
    job.status, job.worker, job.heartbeat_at = JobStatus.QUEUED, None, utcnow()
    job.attempts = max(0, job.attempts - 1)


def wake_parent(session: Session, child: UnlearningJob) -> None:
    """Once every shard job of a training job has finished, queue the parent to assemble them.
    Two last shards finishing together may both send it; the parent's lease makes that harmless."""
    parent = lock_job(session, child.report["parent"])
    siblings = session.scalars(select(UnlearningJob.status).where(
        UnlearningJob.id.in_(parent.report.get("fanout", {}).get("jobs", []))))
    if parent.status == JobStatus.QUEUED and all(status in FINISHED for status in siblings):
        enqueue(session, TaskName.RUN_JOB, job_id=parent.id)


def succeed_job(session: Session, job: UnlearningJob, *, result_version_id: str | None,
                report: dict[str, Any]) -> None:
    job.status, job.stage, job.progress, job.finished_at = JobStatus.SUCCEEDED, JobStage.DONE, 1.0, utcnow()
    job.result_version_id = result_version_id or job.result_version_id
    job.report, job.worker = {**job.report, **report}, None
    audit.record(session, actor="worker", action="job.succeeded", entity_type="unlearning_job", entity_id=job.id,
                 payload={"kind": job.kind, "model_id": job.model_id, "result_version_id": job.result_version_id,
                          "method_used": job.method_used, "attempts": job.attempts})


# --- failure ------------------------------------------------------------------------------------


def fail_job(session: Session, job: UnlearningJob, error: str) -> None:
    """Final failure: the job and its unfinished requests fail, admins hear of it (audit event)."""
    now = utcnow()
    job.status, job.error, job.finished_at, job.worker = JobStatus.FAILED, error[:4000], now, None
    if job.kind == JobKind.TRAIN_SHARD:
        wake_parent(session, job)  # so the parent fails now rather than when the sweeper looks
    if job.kind == JobKind.UNLEARN:
        for request_id in job_request_ids(session, job.id):
            request = requests.get_for_update(session, request_id)
            if request.status in _LEVEL:
                requests.transition(session, request, RequestStatus.FAILED, actor="worker",
                                    reason=f"unlearning job {job.id} failed")
    # Error text can quote record keys; the chain gets only its class and the attempt count.
    audit.record(session, actor="worker", action="job.failed", entity_type="unlearning_job", entity_id=job.id,
                 payload={"kind": job.kind, "model_id": job.model_id, "attempts": job.attempts,
                          "error_type": error.split(":", 1)[0][:100], "notify": "admins"})


def record_failure(job_id: str, worker: str, exc: BaseException) -> float | None:
    """After an error: back off and retry while attempts remain (returns the delay), else fail."""
    error = f"{type(exc).__name__}: {exc}"
    with session_scope() as session:
        job = lock_job(session, job_id)
        if job.status != JobStatus.RUNNING or job.worker != worker:
            return None
        if job.attempts >= job.max_attempts:
            fail_job(session, job, error)
            return None
        job.status, job.error, job.worker, job.heartbeat_at = JobStatus.QUEUED, error[:4000], None, utcnow()
        delay = backoff_seconds(job.attempts)
        audit.record(session, actor="worker", action="job.retrying", entity_type="unlearning_job",
                     entity_id=job.id, payload={"attempt": job.attempts, "delay_seconds": delay,
                                                "error_type": type(exc).__name__})
        return delay
