"""The lineage invariant, checked and restored.

No part (whole model, SISA shard, slice checkpoint) of a live version (training, active,
or superseded and so re-activatable) has a training snapshot holding

* a forgotten record, unless an unlearning job of its model that will take that version
  as its base (or purge it) is already queued or running; or
* a record of an open deletion request, unless the request is attached to that version
  (it cannot complete while the version holds the record) and either an unlearning job of
  the model carries it or the batch planner is still to take it.

A holding that meets neither condition is a *violation*. ``reconcile`` turns violations
into covered holdings: it attaches the requests, and puts whatever nothing would otherwise
unlearn on a follow-up job of the model. Registration runs it on the new version in the
same transaction that activates it (under the exclusive lineage lock); the sweep runs it
over every live version and audits each violation it found, since one is a bug.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.core.errors import Conflict
from app.core.outbox import enqueue
from app.core.queue import TaskName
from app.jobs import lifecycle
from app.jobs.models import JobKind, JobRequest, JobStatus, UnlearningJob
from app.lineage import service as lineage
from app.registry import service as registry
from app.registry.models import ModelVersion
from app.requests import service as requests
from app.requests.models import RequestStatus

log = logging.getLogger("unlearnd.jobs.invariant")

# Requests a job may carry; the others (received, pending approval, failed) wait on a person.
CARRIABLE = requests.AWAITING_UNLEARNING


@dataclass(frozen=True)
class Violation:
    version_id: str
    model_id: str
    model: str
    number: int
    state: str
    forgotten_records: int
    unattached_requests: tuple[str, ...]  # open requests the version is not attached to
    uncarried_requests: tuple[str, ...]  # attached, but no job or planner would unlearn them here
    job_requests: tuple[str, ...]  # what a follow-up job must carry

    def describe(self) -> str:
        return (f"{self.model} v{self.number} ({self.state}): {self.forgotten_records} forgotten record(s) "
                f"without a follow-up job, {len(self.unattached_requests)} open request(s) not attached, "
                f"{len(self.uncarried_requests)} attached but not carried by any job")


def holdings(session: Session, version_ids: list[str] | None = None) -> list[lineage.Holding]:
    """Every live version (of ``version_ids``, or all) holding a forgotten record or a record of
    a request not yet terminal: the lineage room's one-statement read, given the requests
    room's at-stake records."""
    return lineage.live_holdings(session, requests.records_at_stake(), version_ids)


def _covers(job: UnlearningJob, version_id: str) -> bool:
    """A job that will forget the version's at-stake records: queued (it takes the active
    version when it starts and purges every version holding them), running on this base,
    or purging this version."""
    if job.result_version_id is not None:  # stored its result; now purging what still remembers
        return job.status in (JobStatus.QUEUED, JobStatus.RUNNING) and version_id in job.report.get(
            "purge_version_ids", [])
    return job.status == JobStatus.QUEUED or (job.status == JobStatus.RUNNING and job.base_version_id == version_id)


def violations(session: Session, found: list[lineage.Holding]) -> list[Violation]:
    """Which holdings nothing covers (see the module's docstring)."""
    if not found:
        return []
    request_ids = sorted({rid for h in found for rid in h.requests})
    status = requests.statuses(session, request_ids)
    attached = requests.attached_versions(session, [h.version_id for h in found])
    jobs = list(session.scalars(select(UnlearningJob).where(
        UnlearningJob.kind == JobKind.UNLEARN, UnlearningJob.model_id.in_({h.model_id for h in found}),
        UnlearningJob.status.in_((JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED)))))
    carried: dict[str, set[str]] = defaultdict(set)  # job -> requests
    if jobs:
        for job_id, request_id in session.execute(select(JobRequest.job_id, JobRequest.request_id).where(
                JobRequest.job_id.in_([j.id for j in jobs]))).tuples():
            carried[job_id].add(request_id)
    result = []
    for holding in found:
        own_jobs = [j for j in jobs if j.model_id == holding.model_id]
        covering = [j for j in own_jobs if _covers(j, holding.version_id)]
        unattached, uncarried, to_carry = [], [], []
        for request_id in sorted(holding.requests):
            if (request_id, holding.version_id) not in attached:
                unattached.append(request_id)
            if status.get(request_id) not in CARRIABLE:
                continue  # waits on a person (approval, retry); attached, it cannot complete
            if any(request_id in carried[j.id] for j in covering):
                continue
            taken = any(request_id in carried[j.id] for j in own_jobs)
            if status[request_id] == RequestStatus.SCHEDULED and not taken and (request_id, holding.version_id) in attached:
                continue  # the batch planner takes it, deadline first
            to_carry.append(request_id)
            if (request_id, holding.version_id) in attached:
                uncarried.append(request_id)
        forgotten = 0 if covering else len(holding.forgotten)
        if unattached or to_carry or forgotten:
            result.append(Violation(holding.version_id, holding.model_id, holding.model, holding.number,
                                    holding.state, forgotten, tuple(unattached), tuple(uncarried), tuple(to_carry)))
    return result


def check(session: Session) -> tuple[list[lineage.Holding], list[Violation]]:
    """Read-only: every live version holding an at-stake record, and those nothing covers."""
    found = holdings(session)
    return found, violations(session, found)


def reconcile(session: Session, found: list[lineage.Holding], *, actor: str) -> list[Violation]:
    """Cover every violation among ``found``: attach the requests to the version and put what
    nothing would unlearn on a follow-up job of the model. The caller holds the exclusive
    lineage lock. Returns the violations it found."""
    found_violations = violations(session, found)
    by_version = {h.version_id: h for h in found}
    for violation in found_violations:
        holding = by_version[violation.version_id]
        for request_id in violation.unattached_requests:
            requests.attach_version(session, request_id, version_id=holding.version_id, model_id=holding.model_id,
                                    model=holding.model, number=holding.number,
                                    record_count=len(holding.requests[request_id]))
        if violation.job_requests or violation.forgotten_records:
            follow_up(session, violation, actor=actor)
    return found_violations


def follow_up(session: Session, violation: Violation, *, actor: str) -> UnlearningJob:
    """The model's queued unlearning job (it takes the active version when it starts), or a
    new one, now also carrying the violation's requests."""
    job = session.scalar(select(UnlearningJob).where(
        UnlearningJob.model_id == violation.model_id, UnlearningJob.kind == JobKind.UNLEARN,
        UnlearningJob.status == JobStatus.QUEUED, UnlearningJob.result_version_id.is_(None),
    ).order_by(UnlearningJob.created_at).limit(1).with_for_update())
    reason = {"version_id": violation.version_id, "forgotten_records": violation.forgotten_records,
              "requests": list(violation.job_requests)}
    if job is None:
        model = registry.model_by_id(session, violation.model_id)
        job = UnlearningJob(kind=JobKind.UNLEARN, model_id=model.id,
                            method=registry.model_policy(model).method, created_by=actor,
                            report={"plan": {"reason": "lineage: a live version holds records at stake"}})
        session.add(job)
        session.flush()
        enqueue(session, TaskName.RUN_JOB, job_id=job.id)
        audit.record(session, actor=actor, action="job.created", entity_type="unlearning_job", entity_id=job.id,
                     payload={"kind": JobKind.UNLEARN, "model_id": model.id, "requests": list(violation.job_requests),
                              "reason": "lineage.follow_up", "version_id": violation.version_id})
    job.report = {**job.report, "follow_up": [*job.report.get("follow_up", []), reason]}
    present = set(lifecycle.job_request_ids(session, job.id))
    session.add_all(JobRequest(job_id=job.id, request_id=rid) for rid in violation.job_requests if rid not in present)
    session.flush()
    log.info("follow-up unlearning scheduled", extra={"job_id": job.id, "model": violation.model})
    return job


def on_registration(session: Session, version: ModelVersion, *, actor: str) -> list[Violation]:
    """Check a version in the transaction that registers it (exclusive lineage lock held).
    An imported version holding a forgotten record is refused: nothing of ours trained it,
    so there is nothing to wait for; anything else is reconciled before the commit that
    makes it visible."""
    found = holdings(session, [version.id])
    if version.origin == "imported" and any(h.forgotten for h in found):
        count = sum(len(h.forgotten) for h in found)
        raise Conflict(f"the snapshot holds {count} forgotten record(s); a version that remembers a forgotten "
                       "record cannot be imported", field="snapshot_id")
    return reconcile(session, found, actor=actor)


def sweep(session: Session, *, actor: str = "lineage-sweep") -> list[Violation]:
    """The beat's reconciliation: look without the lock (cheap, usually clean); on a
    violation take the exclusive lock, look again, cover it and tell admins."""
    if not violations(session, holdings(session)):
        return []
    lineage.lock_lineage(session, exclusive=True)
    found = reconcile(session, holdings(session), actor=actor)
    for violation in found:
        log.error("lineage invariant violated", extra={"version_id": violation.version_id, "model": violation.model})
        audit.record(session, actor=actor, action="lineage.violation", entity_type="model_version",
                     entity_id=violation.version_id, payload={
                         "model_id": violation.model_id, "number": violation.number, "state": violation.state,
                         "forgotten_records": violation.forgotten_records,
                         "unattached_requests": list(violation.unattached_requests),
                         "uncarried_requests": list(violation.uncarried_requests), "notify": "admins"})
    return found
