"""Lost and duplicated messages (issue 21): the ingestion lease makes a second delivery harmless,
and the scheduler re-sends pending ingestions and queued jobs within two ticks."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from tests.registry import factory


def _register(name: str, n: int = 30) -> str:
    from app.core.database import session_scope
    from app.registry import service

    path = factory.write(factory.rows(n), "csv", name)
    with session_scope() as session:
        return service.register_dataset(
            session, name=name, uri=path.name, fmt="csv", schema=factory.SCHEMA, actor="test"
        ).id


def _state(dataset_id: str):
    from app.core.database import session_scope
    from app.registry.models import DataRecord, Dataset

    with session_scope() as session:
        dataset = session.get(Dataset, dataset_id)
        rows = session.scalar(select(func.count()).select_from(DataRecord).where(DataRecord.dataset_id == dataset_id))
        return dataset.status, dataset.record_count, rows


def test_a_second_delivery_while_the_first_holds_the_lease_changes_nothing(env, backend):
    from app.registry import ingestion

    dataset_id = _register("twice")
    first = ingestion._start(dataset_id, "delivery-a")
    assert first is not None
    ingestion.ingest(dataset_id, "delivery-b")  # arrives while A is writing
    assert _state(dataset_id) == ("ingesting", 0, 0)
    ingestion._write(first, "delivery-a")
    assert _state(dataset_id) == ("ready", 30, 30)
    ingestion.ingest(dataset_id, "delivery-c")  # and once it is ready
    assert _state(dataset_id) == ("ready", 30, 30)


def test_a_delivery_that_lost_its_lease_cannot_fail_or_empty_the_dataset(env, backend):
    """The incident: two deliveries, and the loser deleted the winner's rows and marked it failed."""
    from app.core.database import session_scope
    from app.registry import ingestion
    from app.registry.models import Dataset

    dataset_id = _register("stolen")
    stalled = ingestion._start(dataset_id, "delivery-a")
    with session_scope() as session:  # A stops beating: its lease goes stale
        session.get(Dataset, dataset_id).heartbeat_at -= timedelta(seconds=ingestion.lease_seconds() + 1)
    ingestion.ingest(dataset_id, "delivery-b")  # B takes over and finishes
    assert _state(dataset_id) == ("ready", 30, 30)
    with pytest.raises(ingestion.IngestionLeaseLost):  # A wakes up and carries on: stopped at its first write
        ingestion._write(stalled, "delivery-a")
    assert _state(dataset_id) == ("ready", 30, 30)


def test_a_lost_ingestion_message_is_sent_again_within_two_ticks(env):
    from app.core.config import get_settings
    from app.core.database import session_scope
    from app.core.outbox import OutboxMessage
    from app.core.queue import TaskName
    from app.jobs import scheduling
    from app.registry.models import Dataset

    dataset_id = _register("lost")
    tick = timedelta(seconds=get_settings().scheduler_interval_seconds)

    def sent() -> int:
        with session_scope() as session:
            return session.scalar(select(func.count()).select_from(OutboxMessage).where(
                OutboxMessage.task_name == TaskName.INGEST_DATASET))

    assert sent() == 1
    with session_scope() as session:
        created = session.get(Dataset, dataset_id).created_at
    with session_scope() as session:
        scheduling.schedule(session, now=created + tick)
    assert sent() == 1  # one tick: it may only be slow
    with session_scope() as session:
        scheduling.schedule(session, now=created + 2 * tick + timedelta(seconds=1))
    assert sent() == 2
    with session_scope() as session:
        scheduling.schedule(session, now=created + 3 * tick)
    assert sent() == 2  # the clock restarted at the re-send


@pytest.fixture
def queued_job(env):
    from app.core.database import session_scope
    from app.jobs.models import UnlearningJob
    from app.registry.models import RegisteredModel

    dataset_id = _register("jobs")
    with session_scope() as session:
        model = RegisteredModel(name="m", adapter="logreg", hyperparameters={}, dataset_id=dataset_id, policy={})
        session.add(model)
        session.flush()
        job = UnlearningJob(model_id=model.id, method="retrain")
        session.add(job)
        session.flush()
        return job.id, job.created_at


def test_a_queued_job_whose_message_was_lost_is_sent_again_within_two_ticks(queued_job):
    from app.core.config import get_settings
    from app.core.database import session_scope
    from app.core.outbox import OutboxMessage
    from app.core.queue import TaskName
    from app.jobs import scheduling

    job_id, created = queued_job
    tick = timedelta(seconds=get_settings().scheduler_interval_seconds)

    def sent() -> int:
        with session_scope() as session:
            return session.scalar(select(func.count()).select_from(OutboxMessage).where(
                OutboxMessage.task_name == TaskName.RUN_JOB))

    with session_scope() as session:
        assert scheduling.resume_stale_jobs(session, created + tick) == []
    with session_scope() as session:
        assert scheduling.resume_stale_jobs(session, created + 2 * tick + timedelta(seconds=1)) == [job_id]
    assert sent() == 1
