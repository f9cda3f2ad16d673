"""Fault drills during an unlearning job, with real processes (issue 21).

Each drill trains a small model on part of the demo digits, starts a real Celery worker,
queues an unlearning job and, while a client keeps submitting deletion requests and
reading the job, breaks something: the broker (a redis-server of the test's own) stops and
restarts; PostgreSQL terminates every connection of the API and the worker; the worker is
SIGKILLed in each stage of the job. Each then asserts: every request submitted is stored
exactly once (none lost), the job succeeds exactly once (one result version, no
duplicate), the API never answered 5xx other than 503 with Retry-After, and the audit
chain verifies.

A kill "in stage X" is made exact: once the job row says X, the test locks that row
(``SELECT ... FOR UPDATE``). Every stage change locks the job row first, so while the
test holds it the worker cannot leave stage X; it is killed there, and the lock released.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

from app.demo import DemoModel
from tests.jobs.conftest import job_state, run_inline, wait_for, wait_job

# Big enough that the unlearning and verifying stages last a moment, small enough for seconds.
DRILL_MLP = {"hidden": [16], "epochs": 8}
DEMO_ROWS = 600
UNLEARN_STAGES = ["loading", "unlearning", "verifying", "purging", "done"]
TRAIN_STAGES = ["loading", "training", "done"]


@dataclass
class IntakeLoad:
    """A client in a thread: submits a deletion request (retrying 503s with its Idempotency-Key, as
    documented) and reads the job, over and over, recording every status it is answered."""

    api: Any
    headers: dict[str, str]
    reader: dict[str, str]
    job_id: str
    statuses: list[tuple[str, int, str | None]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _call(self, what: str, send: Callable[[], Any]) -> int:
        response = send()
        self.statuses.append((what, response.status_code, response.headers.get("retry-after")))
        return response.status_code

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            key = f"drill-{n}"
            body = {"legal_basis": "gdpr_art17", "subject": [{"type": "email", "value": f"drill{n}@example.org"}]}
            self.keys.append(key)
            for _ in range(30):
                code = self._call("submit", lambda key=key, body=body: self.api.post(
                    "/v1/deletion-requests", json=body, headers={**self.headers, "Idempotency-Key": key}))
                if code != 503:
                    break
                time.sleep(0.5)
            else:
                self.unanswered.append(key)
            self._call("job", lambda: self.api.get(f"/v1/jobs/{self.job_id}", headers=self.reader))
            n += 1
            self._stop.wait(0.3)

    def __enter__(self) -> IntakeLoad:
        self._thread = threading.Thread(target=self._run, name="intake-load", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)


@dataclass
class Drill:
    env: dict[str, str]
    api: Any
    admin: Any
    portal: Any
    start_worker: Callable[..., Any]
    beat_schedule: str
    dsn: str
    request_id: str = ""
    job_id: str = ""

    def worker(self) -> Any:
        """A worker with the beat: its scheduler re-sends a job whose holder stopped beating."""
        return self.start_worker("--beat", "--schedule", self.beat_schedule)

    def queue_job(self) -> None:
        response = self.api.post("/v1/deletion-requests", headers=self.portal.headers, json={
            "subject": [{"type": "user_id", "value": "demo-subject-3"}], "legal_basis": "gdpr_art17"})
        assert response.status_code == 202, response.text
        self.request_id = response.json()["id"]
        response = self.api.post("/v1/models/digits-mlp/unlearn-now", headers=self.admin.headers)
        assert response.status_code == 202, response.text
        self.job_id = response.json()["job"]["id"]

    def load(self) -> IntakeLoad:
        return IntakeLoad(self.api, self.portal.headers, self.admin.headers, self.job_id)

    def wait_stage(self, stage: str, timeout: float = 180) -> None:
        wait_for(lambda: _reached(job_state(self.job_id)["stage"], stage), timeout=timeout, interval=0.02,
                 what=f"stage {stage}")

    def kill_in_stage(self, worker: Any, stage: str, stages: list[str] = UNLEARN_STAGES) -> None:
        """Freeze the job in ``stage`` by locking its row, SIGKILL the worker there, let go."""
        deadline = time.monotonic() + 180
        with psycopg.connect(self.dsn) as conn:
            while True:
                assert time.monotonic() < deadline, f"the job never reached {stage}"
                row = conn.execute("SELECT stage, status FROM unlearning_jobs WHERE id = %s FOR UPDATE",
                                   (self.job_id,)).fetchone()
                if row == (stage, "running"):
                    break
                conn.rollback()
                assert not _reached(row[0], stages[stages.index(stage) + 1], stages), \
                    f"the job passed {stage} between two looks ({row})"
                time.sleep(0.01)
            worker.kill()
            conn.rollback()
        assert job_state(self.job_id)["stage"] == stage

    def check(self, load: IntakeLoad) -> dict[str, Any]:
        """What every drill must leave behind; returns the job's final state."""
        from sqlalchemy import func, select

        from app.core.database import session_scope
        from app.jobs.models import UnlearningJob
        from app.registry.models import ModelVersion
        from app.requests.models import RequestTransition

        state = wait_job(self.job_id, timeout=240)
        self.check_intake(load)
        assert self.api.get(f"/v1/deletion-requests/{self.request_id}",
                            headers=self.portal.headers).json()["status"] == "completed"
        with session_scope() as session:
            versions = session.execute(select(ModelVersion.number, ModelVersion.state)
                                       .order_by(ModelVersion.number)).tuples().all()
            assert versions == [(1, "purged"), (2, "active")], versions
            unlearn_jobs = session.scalars(select(UnlearningJob.result_version_id).where(
                UnlearningJob.kind == "unlearn")).all()
            assert len(unlearn_jobs) == 1 and unlearn_jobs[0] is not None
            completions = session.scalar(select(func.count()).select_from(RequestTransition).where(
                RequestTransition.request_id == self.request_id, RequestTransition.to_status == "completed"))
            assert completions == 1
        answered = sorted({code for _, code, _ in load.statuses})
        print(f"drill: attempts={state['attempts']} submissions={len(load.keys)} statuses={answered}")
        return state

    def check_intake(self, load: IntakeLoad) -> None:
        """No 5xx but 503 with Retry-After, every submission stored exactly once, the chain verifies."""
        from sqlalchemy import func, select

        from app.audit.service import seal_if_free
        from app.audit.verify import verify_log
        from app.core.database import session_scope
        from app.requests.models import DeletionRequest

        errors = [s for s in load.statuses if s[1] >= 500 and not (s[1] == 503 and s[2])]
        assert not errors, errors
        assert not load.unanswered, load.unanswered
        assert load.keys, "the client never got to submit"
        with session_scope() as session:
            stored = dict(session.execute(select(DeletionRequest.idempotency_key, func.count()).where(
                DeletionRequest.idempotency_key.is_not(None)).group_by(DeletionRequest.idempotency_key)).tuples().all())
            # Every submission the client made is stored, once (the last may be in flight when stopped).
            assert set(load.keys[:-1]) <= set(stored) and set(stored) <= set(load.keys), (load.keys, stored)
            assert set(stored.values()) == {1}
        seal_if_free()
        with session_scope() as session:
            verification = verify_log(session)
            assert verification.ok, verification


def _reached(current: str | None, stage: str, stages: list[str] = UNLEARN_STAGES) -> bool:
    return current is not None and stages.index(current) >= stages.index(stage)


@pytest.fixture
def untrained_drill(env, make_client, start_worker, monkeypatch, tmp_path) -> Iterator[Drill]:
    """The model registered, its training job queued (``job_id``), nothing trained yet."""
    from fastapi.testclient import TestClient

    from app import demo
    from app.main import create_app
    from tests.conftest import reset_caches

    # A lost worker's lease expires after 5 s (half the broker's redelivery timeout) and the
    # beat ticks every second, so recovery takes seconds, not the production minutes.
    for key, value in {"UNLEARND_TASK_VISIBILITY_TIMEOUT_SECONDS": "10",
                       "UNLEARND_SCHEDULER_INTERVAL_SECONDS": "1"}.items():
        env[key] = value
        monkeypatch.setenv(key, value)
    reset_caches()
    [training] = demo.install(actor="test", limit=DEMO_ROWS, models=(
        DemoModel("digits-mlp", "mlp", DRILL_MLP, {"default_method": "retrain"}),))
    with TestClient(create_app(), raise_server_exceptions=False) as api:
        yield Drill(env=env, api=api, admin=make_client("admin"), portal=make_client("portal"),
                    start_worker=start_worker, beat_schedule=str(tmp_path / "beat-schedule"),
                    dsn=env["UNLEARND_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://"),
                    job_id=training)


@pytest.fixture
def drill(untrained_drill: Drill) -> Drill:
    """Version 1 trained (in this process); ``queue_job`` then queues the unlearning job."""
    run_inline(untrained_drill.job_id)
    return untrained_drill


@pytest.mark.timeout(600)
@pytest.mark.parametrize("stage", ["loading", "unlearning", "verifying", "purging"])
def test_worker_sigkilled_in_each_stage_the_job_resumes_and_completes_once(drill, stage):
    worker = drill.worker()
    drill.queue_job()
    with drill.load() as load:
        drill.kill_in_stage(worker, stage)
        drill.worker()
        wait_job(drill.job_id, timeout=240)
    state = drill.check(load)
    assert state["attempts"] == 2, state


@pytest.mark.timeout(600)
def test_worker_sigkilled_while_training_the_model_is_trained_once(untrained_drill):
    from sqlalchemy import select

    from app.core.database import session_scope
    from app.registry.models import ModelVersion

    drill = untrained_drill
    worker = drill.worker()  # takes the queued training job from the broker
    with drill.load() as load:
        drill.kill_in_stage(worker, "training", TRAIN_STAGES)
        drill.worker()
        state = wait_job(drill.job_id, timeout=240)
    assert state["attempts"] == 2, state
    drill.check_intake(load)
    with session_scope() as session:
        versions = session.execute(select(ModelVersion.number, ModelVersion.state)).tuples().all()
    assert versions == [(1, "active")], versions


@pytest.mark.timeout(600)
def test_redis_stopped_and_restarted_during_a_job(own_redis, drill):
    """The broker goes away while the worker computes and comes back empty (no persistence): the
    worker finishes the job it holds, intake keeps answering, what was sent meanwhile waits in
    the outbox, and the job's lost message is not needed: it completes once."""
    _, stop, restart = own_redis
    drill.worker()
    drill.queue_job()
    with drill.load() as load:
        drill.wait_stage("unlearning")
        stop()
        time.sleep(3)  # intake goes on against the dead broker
        restart()
        wait_job(drill.job_id, timeout=240)
    state = drill.check(load)
    assert state["attempts"] == 1, state
    # What intake and the job sent while the broker was down reaches the new one (the beat relays).
    wait_for(lambda: _undispatched() == 0, timeout=120, what="the outbox to drain into the restarted broker")


def _undispatched() -> int:
    from sqlalchemy import func, select

    from app.core.database import session_scope
    from app.core.outbox import OutboxMessage

    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(OutboxMessage).where(
            OutboxMessage.dispatched_at.is_(None)))


@pytest.mark.timeout(600)
def test_database_connections_terminated_during_a_job(drill):
    """PostgreSQL terminates every connection to the database (the API's, the worker's, its
    heartbeat's) twice while the job computes; pools reconnect, the job completes once."""
    drill.worker()
    drill.queue_job()
    with drill.load() as load, psycopg.connect(drill.dsn, autocommit=True) as admin:
        for stage in ("unlearning", "verifying"):
            drill.wait_stage(stage)
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()[0]
            assert killed > 0
        wait_job(drill.job_id, timeout=240)
    state = drill.check(load)
    assert state["attempts"] <= 2, state
