"""Helpers for job tests: the demo digits with tiny model recipes, and polling."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

# Small enough that training and unlearning take a second or two on one CPU thread.
TINY_SISA = {"base": "mlp", "base_params": {"hidden": [16], "epochs": 4}, "shards": 4, "slices": 2}
TINY_MLP = {"hidden": [16], "epochs": 4}


def wait_for(predicate: Callable[[], Any], *, timeout: float = 90.0, interval: float = 0.2, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what or predicate}")


def job_state(job_id: str) -> dict[str, Any]:
    from app.core.database import session_scope
    from app.jobs.models import UnlearningJob

    with session_scope() as session:
        job = session.get(UnlearningJob, job_id)
        return {"status": job.status, "stage": job.stage, "attempts": job.attempts, "error": job.error,
                "result_version_id": job.result_version_id}


def wait_job(job_id: str, *, timeout: float = 120.0, status: str = "succeeded") -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        state = job_state(job_id)
        return state if state["status"] in ("succeeded", "failed", "cancelled") else None

    state = wait_for(finished, timeout=timeout, what=f"job {job_id}")
    assert state["status"] == status, state
    return state


@pytest.fixture(autouse=True)
def _own_broker(env: dict[str, str], redis_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Redis database of this suite's own, so workers of other suites never take its tasks."""
    from tests.conftest import reset_caches

    env["UNLEARND_BROKER_URL"] = f"{redis_server}/12"
    monkeypatch.setenv("UNLEARND_BROKER_URL", env["UNLEARND_BROKER_URL"])
    reset_caches()


def run_inline(job_id: str, *, worker: str = "inline-test") -> dict[str, Any]:
    """Run a job in this process through the same entry point the Celery task calls,
    retrying as the task would (without the back-off wait) until it is finished; a SISA
    training job's shard jobs are run the same way when it steps aside for them."""
    from app.core.database import session_scope
    from app.jobs import service
    from app.jobs.models import UnlearningJob

    while True:
        while service.execute(job_id, worker) is not None:
            pass
        state = job_state(job_id)
        with session_scope() as session:
            waiting_on = (session.get(UnlearningJob, job_id).report.get("fanout") or {}).get("jobs", [])
            queued = [child for child in waiting_on if session.get(UnlearningJob, child).status == "queued"]
        if state["status"] != "queued" or not queued:
            return state
        for child in queued:
            run_inline(child, worker=worker)


@pytest.fixture
def install_demo(env: dict[str, str]) -> Callable[..., list[str]]:
    """Write and ingest the digits and register the given models; returns their training job ids."""
    from app import demo

    def factory(*models: Any) -> list[str]:
        return demo.install(actor="test", models=tuple(models))

    return factory


def submit(api: Any, portal: Any, subject: str, **extra: Any) -> dict[str, Any]:
    body = {"subject": [{"type": "user_id", "value": subject}], "legal_basis": "gdpr_art17", **extra}
    response = api.post("/v1/deletion-requests", json=body, headers=portal.headers)
    assert response.status_code in (200, 202), response.text
    return response.json()
