"""Jobs over HTTP: listing, detail, retry after final failure, cancel before unlearning,
training requests, and the problem details bad input gets."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from sqlalchemy import select

from app.demo import DemoModel
from tests.jobs.conftest import TINY_MLP, job_state, run_inline, submit

RETRAIN = {"default_method": "retrain"}


@dataclass(frozen=True)
class QueuedJob:
    admin: object
    portal: object
    training: str
    request: str
    job_id: str


@pytest.fixture
def queued_job(api, make_client, install_demo) -> QueuedJob:
    """A trained MLP, one scheduled request for it, and the forced batch job (queued, not run)."""
    admin, portal = make_client("admin"), make_client("portal")
    [training] = install_demo(DemoModel("digits-mlp", "mlp", TINY_MLP, RETRAIN))
    run_inline(training)
    request = submit(api, portal, "demo-subject-50")["id"]
    job_id = api.post("/v1/models/digits-mlp/unlearn-now", headers=admin.headers).json()["job"]["id"]
    return QueuedJob(admin, portal, training, request, job_id)


@pytest.mark.slow  # every attempt of a job, then a retry
def test_a_job_failing_every_attempt_fails_its_requests_and_can_be_retried(api, queued_job):
    from app import demo
    from app.audit.models import AuditEvent
    from app.core.database import session_scope
    from app.registry import service as registry

    admin, portal = queued_job.admin, queued_job.portal
    request, job_id = queued_job.request, queued_job.job_id
    data_file = registry.data_root() / "demo" / "digits.parquet"
    data_file.unlink()  # the training data vanished: every attempt fails while loading

    state = run_inline(job_id)
    assert state["status"] == "failed" and state["attempts"] == 3 and "no such file" in state["error"]
    assert api.get(f"/v1/deletion-requests/{request}", headers=portal.headers).json()["status"] == "failed"
    with session_scope() as session:
        events = [(e.action, e.payload) for e in session.scalars(
            select(AuditEvent).where(AuditEvent.entity_id == job_id).order_by(AuditEvent.seq))]
    assert [a for a, _ in events].count("job.retrying") == 2
    failed = dict(events)["job.failed"]
    assert failed["notify"] == "admins" and "no such file" not in str(failed)  # error text stays out of the chain

    assert api.post(f"/v1/jobs/{job_id}/cancel", headers=admin.headers).status_code == 409
    demo.write_digits(data_file)
    retried = api.post(f"/v1/jobs/{job_id}/retry", headers=admin.headers)
    assert retried.status_code == 202 and retried.json()["status"] == "queued"
    assert api.get(f"/v1/deletion-requests/{request}", headers=portal.headers).json()["status"] == "scheduled"
    assert run_inline(job_id)["status"] == "succeeded"
    assert api.get(f"/v1/deletion-requests/{request}", headers=portal.headers).json()["status"] == "completed"
    again = api.post(f"/v1/jobs/{job_id}/retry", headers=admin.headers)
    assert again.status_code == 409 and again.json()["field"] == "status"


@pytest.mark.slow  # a training run, a cancelled job and a second unlearning job
def test_a_queued_job_can_be_cancelled_and_its_requests_batched_again(api, make_client, queued_job):
    admin, portal = queued_job.admin, queued_job.portal
    request, job_id = queued_job.request, queued_job.job_id
    ml = make_client("ml")

    assert api.post(f"/v1/jobs/{job_id}/cancel", headers=ml.headers).status_code == 403
    cancelled = api.post(f"/v1/jobs/{job_id}/cancel", headers=admin.headers)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert run_inline(job_id)["status"] == "cancelled"  # a late delivery does nothing
    assert api.get(f"/v1/deletion-requests/{request}", headers=portal.headers).json()["status"] == "scheduled"
    second = api.post("/v1/models/digits-mlp/unlearn-now", headers=admin.headers).json()["job"]["id"]
    assert second != job_id and run_inline(second)["status"] == "succeeded"
    assert api.post(f"/v1/jobs/{second}/cancel", headers=admin.headers).status_code == 409


def test_listing_and_reading_jobs(api, make_client, queued_job):
    admin, portal, training = queued_job.admin, queued_job.portal, queued_job.training
    request, job_id = queued_job.request, queued_job.job_id
    auditor = make_client("auditor")

    listed = api.get("/v1/jobs", headers=auditor.headers).json()
    assert [j["id"] for j in listed] == [job_id, training]
    assert [j["id"] for j in api.get("/v1/jobs?kind=train", headers=auditor.headers).json()] == [training]
    assert [j["id"] for j in api.get(f"/v1/jobs?request_id={request}", headers=admin.headers).json()] == [job_id]
    assert [j["id"] for j in api.get("/v1/jobs?status=queued&model=digits-mlp", headers=admin.headers).json()] == [job_id]
    detail = api.get(f"/v1/jobs/{job_id}", headers=auditor.headers).json()
    assert detail["request_ids"] == [request] and detail["report"]["plan"]["reason"] == "forced"
    assert api.get("/v1/jobs", headers=portal.headers).status_code == 403
    assert api.get("/v1/jobs/not-a-job", headers=admin.headers).status_code == 404
    bad = api.get("/v1/jobs?status=exploded", headers=admin.headers)
    assert bad.status_code == 422 and bad.json()["field"] == "status"
    assert api.get("/v1/jobs?model=nope", headers=admin.headers).status_code == 404


def test_training_requests_are_checked(env, api, make_client, install_demo):
    ml, portal = make_client("ml"), make_client("portal")
    [training] = install_demo(DemoModel("digits-mlp", "mlp", TINY_MLP, RETRAIN))
    assert api.post("/v1/models/nope/train", headers=ml.headers).status_code == 404
    assert api.post("/v1/models/digits-mlp/train", headers=portal.headers).status_code == 403
    bad = api.post("/v1/models/digits-mlp/train", json={"heldout_fraction": 0.9}, headers=ml.headers)
    assert bad.status_code == 422 and bad.json()["field"] == "heldout_fraction"
    extra = api.post("/v1/models/digits-mlp/train", json={"epochs": 3}, headers=ml.headers)
    assert extra.status_code == 422 and extra.json()["field"] == "epochs"
    from app.core.database import session_scope
    from app.registry import service as registry

    with session_scope() as session:
        registry.register_model(session, name="broken", adapter="mlp", hyperparameters={"depth": 3},
                                dataset_name="digits", policy=None, actor="test")
    broken = api.post("/v1/models/broken/train", headers=ml.headers)
    assert broken.status_code == 422 and broken.json()["field"] == "hyperparameters"
    assert "depth" in broken.json()["detail"]
    queued = api.post("/v1/models/digits-mlp/train", json={"seed": 7}, headers=ml.headers)
    assert queued.status_code == 202 and queued.json()["kind"] == "train"
    assert run_inline(training)["status"] == "succeeded" and run_inline(queued.json()["id"])["status"] == "succeeded"
    versions = api.get("/v1/models/digits-mlp/versions", headers=ml.headers)
    assert versions.status_code == 200, versions.text
    assert [(v["number"], v["state"]) for v in versions.json()] == [(1, "superseded"), (2, "active")]
    assert versions.json()[1]["id"] == job_state(queued.json()["id"])["result_version_id"]
