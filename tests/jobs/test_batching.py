"""Deadline-aware batching on the real database: the scheduler tick and "run now"."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from app.demo import DemoModel
from tests.jobs.conftest import TINY_SISA, run_inline, submit

# Slow: each test trains a SISA model and runs one or more unlearning batches.
pytestmark = pytest.mark.slow

HOURLY = {"default_method": "sisa", "batching_window_hours": 1.0}


def _tick(now):
    from app.core.database import session_scope
    from app.jobs import service

    with session_scope() as session:
        return [(o.model, o.decision.reason, o.job.id if o.job else None, o.decision) for o in
                service.schedule(session, now=now)]


def _job_requests(job_id: str) -> set[str]:
    from app.core.database import session_scope
    from app.jobs import service

    with session_scope() as session:
        return set(service.job_requests(session, job_id))


def test_requests_in_a_window_become_one_job(env, api, make_client, install_demo):
    from app.core.database import utcnow

    portal = make_client("portal")
    [training] = install_demo(DemoModel("digits-sisa", "sisa", TINY_SISA, HOURLY))
    assert run_inline(training)["status"] == "succeeded"
    ids = {submit(api, portal, f"demo-subject-{i}")["id"] for i in range(10, 16)}

    [(_, reason, job, _)] = _tick(utcnow())
    assert (reason, job) == ("waiting for more requests", None)
    [(_, reason, job_id, decision)] = _tick(utcnow() + timedelta(minutes=61))
    assert reason == "window expired" and _job_requests(job_id) == ids
    # Six subjects spread over all four shards: one pass over 4 shards instead of 6 x 4.
    assert (decision.units, decision.units_if_alone, decision.units_saved) == (4, 24, 20)
    assert _tick(utcnow() + timedelta(minutes=62)) == []  # nothing left pending

    state = run_inline(job_id)
    assert state["status"] == "succeeded"
    for request_id in ids:
        assert api.get(f"/v1/deletion-requests/{request_id}", headers=portal.headers).json()["status"] == "completed"


def test_a_full_batch_runs_before_its_window_expires(env, api, make_client, install_demo):
    from app.core.database import utcnow

    portal = make_client("portal")
    policy = {**HOURLY, "max_batch_size": 3}
    [training] = install_demo(DemoModel("digits-sisa", "sisa", TINY_SISA, policy))
    run_inline(training)
    ids = [submit(api, portal, f"demo-subject-{i}")["id"] for i in range(30, 34)]

    [(_, reason, job_id, _)] = _tick(utcnow() + timedelta(seconds=10))
    assert reason == "batch full"
    # The three earliest due go first; the fourth waits for its own window.
    assert len(_job_requests(job_id)) == 3 and _job_requests(job_id) < set(ids)


def test_a_request_near_its_deadline_triggers_the_batch_early(env, api, make_client, install_demo):
    from app.audit.models import AuditEvent
    from app.core.database import session_scope, utcnow

    portal = make_client("portal")
    [training] = install_demo(DemoModel("digits-sisa", "sisa", TINY_SISA, HOURLY))
    run_inline(training)
    relaxed = submit(api, portal, "demo-subject-20")["id"]
    # Asked 44 days ago under CCPA (45 days, whatever the calendar month): due in one day,
    # within the 72 h risk margin.
    urgent = submit(api, portal, "demo-subject-21", legal_basis="ccpa_1798_105",
                    requested_at=(utcnow() - timedelta(days=44)).isoformat())["id"]

    [(_, reason, job_id, decision)] = _tick(utcnow())
    assert reason == "deadline at risk" and [p.request_id for p in decision.at_risk] == [urgent]
    assert _job_requests(job_id) == {urgent, relaxed}
    with session_scope() as session:
        warned = list(session.scalars(select(AuditEvent.entity_id).where(AuditEvent.action == "deadline.at_risk")))
    assert warned == [urgent]
    _tick(utcnow())
    with session_scope() as session:  # warned once, not on every tick
        assert len(list(session.scalars(select(AuditEvent.seq).where(AuditEvent.action == "deadline.at_risk")))) == 1


def test_unlearn_now_forces_a_batch_and_refuses_when_nothing_is_pending(env, api, make_client, install_demo):
    admin, portal = make_client("admin"), make_client("portal")
    [training] = install_demo(DemoModel("digits-sisa", "sisa", TINY_SISA, HOURLY))
    run_inline(training)
    empty = api.post("/v1/models/digits-sisa/unlearn-now", headers=admin.headers)
    assert empty.status_code == 409 and "nothing to unlearn" in empty.json()["detail"]
    assert api.post("/v1/models/nope/unlearn-now", headers=admin.headers).status_code == 404
    assert api.post("/v1/models/digits-sisa/unlearn-now", headers=portal.headers).status_code == 403

    request = submit(api, portal, "demo-subject-30")["id"]
    forced = api.post("/v1/models/digits-sisa/unlearn-now", headers=admin.headers)
    assert forced.status_code == 202, forced.text
    body = forced.json()
    assert body["reason"] == "forced" and body["requests"] == 1 and body["job"]["status"] == "queued"
    assert _job_requests(body["job"]["id"]) == {request}


def test_a_request_for_records_already_forgotten_completes_without_a_new_version(env, api, make_client,
                                                                                 install_demo):
    from app.core.database import session_scope
    from app.registry.models import ModelVersion

    admin, portal = make_client("admin"), make_client("portal")
    [training] = install_demo(DemoModel("digits-sisa", "sisa", TINY_SISA, HOURLY))
    run_inline(training)
    first = submit(api, portal, "demo-subject-33")["id"]
    first_job = api.post("/v1/models/digits-sisa/unlearn-now", headers=admin.headers).json()["job"]["id"]
    # Asked again before the first job ran: it resolves to the same (still active) version.
    second = submit(api, portal, "demo-subject-33", external_ref="asked-again")["id"]
    assert _job_requests(first_job) == {first}
    assert run_inline(first_job)["status"] == "succeeded"
    later = api.post("/v1/models/digits-sisa/unlearn-now", headers=admin.headers).json()["job"]["id"]
    assert _job_requests(later) == {second} and run_inline(later)["status"] == "succeeded"
    detail = api.get(f"/v1/jobs/{later}", headers=admin.headers).json()
    assert detail["result_version_id"] is None and detail["method_used"] is None and detail["forget_count"] == 0
    assert api.get(f"/v1/deletion-requests/{second}", headers=portal.headers).json()["status"] == "completed"
    with session_scope() as session:
        assert session.query(ModelVersion).count() == 2


@pytest.mark.slow
def test_sisa_without_a_shard_count_is_sized_to_its_data(env, api, make_client, install_demo):
    from app.core.database import utcnow

    admin, portal = make_client("admin"), make_client("portal")
    recipe = {"base": "mlp", "base_params": {"hidden": [16], "epochs": 4}}
    [training] = install_demo(DemoModel("digits-auto", "sisa", recipe, {**HOURLY, "max_accuracy_loss": 0.01}))
    assert run_inline(training)["status"] == "succeeded"
    [version] = api.get("/v1/models/digits-auto/versions", headers=admin.headers).json()
    sizing = version["metrics"]["sisa_sizing"]
    assert sizing["max_accuracy_loss"] == 0.01 and len(sizing["curve"]) == 5
    assert sizing["curve"][0]["rows"] == version["metrics"]["train_records"]
    # Whatever was chosen meets the limit by the measured curve, or is the monolithic fallback.
    assert sizing["predicted_loss"] <= 0.01
    assert sizing["shards"] > 1 or sizing["reason"].startswith(("no S > 1", "too few rows"))
    shard_jobs = api.get("/v1/jobs?kind=train_shard", headers=admin.headers).json()
    assert len(shard_jobs) == (sizing["shards"] if sizing["shards"] > 1 else 0)

    submit(api, portal, "demo-subject-17")
    [(_, reason, job_id, decision)] = _tick(utcnow() + timedelta(minutes=61))
    assert reason == "window expired"
    plan = api.get(f"/v1/jobs/{job_id}", headers=admin.headers).json()["report"]["plan"]
    # One subject's ~13 records land in every shard of a small layout: planned as a full retrain.
    assert plan["full_retrain"] == (decision.units == sizing["shards"])
    assert plan["history"] == {"batches": 0, "requests": 0, "retrains": 0, "retrains_per_request": 0.0}
    assert run_inline(job_id)["status"] == "succeeded"
    # The next batch's plan reports what the last ones cost.
    submit(api, portal, "demo-subject-18")
    [(_, _, next_job, _)] = _tick(utcnow() + timedelta(minutes=61))
    history = api.get(f"/v1/jobs/{next_job}", headers=admin.headers).json()["report"]["plan"]["history"]
    retrained = int(plan["full_retrain"])
    assert history == {"batches": 1, "requests": 1, "retrains": retrained, "retrains_per_request": retrained}
