"""Job tasks: run one job (training or unlearning) and the periodic batch scheduler.

Both are thin and idempotent: the job row's lease decides who runs it, so a redelivered
or duplicated message does its work once.
"""

from __future__ import annotations

import os

from app.core.database import session_scope
from app.core.queue import TaskName, get_celery
from app.jobs import invariant, qualification, service
from app.lineage import service as lineage

celery = get_celery()


@celery.task(name=TaskName.RUN_JOB, bind=True, max_retries=None, acks_late=True, ignore_result=True)
def run_job(self, job_id: str) -> None:  # noqa: ANN001 - Celery's bound task
    worker = f"{self.request.hostname or 'worker'}:{os.getpid()}"[-64:]
    try:
        retry_in = service.execute(job_id, worker)
    except Exception as exc:  # the job row itself was unreachable (database down): try later
        raise self.retry(exc=exc, countdown=min(300, 5 * 2 ** min(self.request.retries, 6))) from exc
    if retry_in is not None:
        raise self.retry(countdown=retry_in)


@celery.task(name=TaskName.SCHEDULE_BATCHES, ignore_result=True)
def schedule_batches() -> int:
    """One scheduler tick; returns how many jobs it created."""
    with session_scope() as session:
        return sum(1 for outcome in service.schedule(session) if outcome.job is not None)


@celery.task(name=TaskName.LINEAGE_SWEEP, ignore_result=True)
def lineage_sweep() -> int:
    """Check the lineage invariant over every live version; cover and report what it finds.
    Returns how many violations it found (each is also an admin audit event). Then fold the
    lineage change log (its own transaction: a failure there leaves the sweep's work done)."""
    with session_scope() as session:
        found = len(invariant.sweep(session))
    with session_scope() as session:
        lineage.compact_changes(session)
    return found


@celery.task(name=TaskName.QUALIFY_METHOD, acks_late=True, ignore_result=True)
def qualify_method(qualification_id: str) -> None:
    """One method qualification study (minutes: it trains populations of models)."""
    qualification.run(qualification_id)
