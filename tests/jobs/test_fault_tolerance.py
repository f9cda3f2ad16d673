"""A worker killed mid-job: the next worker resumes it, and it completes exactly once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.demo import DemoModel
from tests.jobs.conftest import job_state, submit, wait_for, wait_job

# Slow enough (a few seconds of unlearning) to be caught in the act.
SLOW_MLP = {"hidden": [64], "epochs": 60}


@pytest.mark.timeout(900)
def test_sigkilled_worker_during_unlearning_is_resumed_once(env, api, make_client, install_demo, start_worker,
                                                           monkeypatch, tmp_path):
    from app.audit.models import AuditEvent
    from app.core.database import session_scope
    from app.registry.models import ModelVersion
    from app.requests.models import RequestTransition
    from tests.conftest import reset_caches

    # A short broker visibility timeout shortens the job lease (half of it: 10 s) and the beat
    # tick. Not shorter: the survivor's heartbeat (every lease/4) must stay fresh on a loaded
    # machine, or a redelivered message would take the job over a second time (attempt 3).
    for key, value in {"UNLEARND_TASK_VISIBILITY_TIMEOUT_SECONDS": "20", "UNLEARND_SCHEDULER_INTERVAL_SECONDS": "1"}.items():
        env[key] = value
        monkeypatch.setenv(key, value)
    reset_caches()
    admin, portal = make_client("admin"), make_client("portal")
    [training] = install_demo(DemoModel("digits-mlp", "mlp", SLOW_MLP, {"default_method": "retrain"}))
    first = start_worker()
    wait_job(training)

    request = submit(api, portal, "demo-subject-3")
    job_id = api.post("/v1/models/digits-mlp/unlearn-now", headers=admin.headers).json()["job"]["id"]
    wait_for(lambda: job_state(job_id)["stage"] == "unlearning", timeout=240, interval=0.05, what="unlearning stage")
    first.kill()
    assert job_state(job_id)["status"] == "running"

    start_worker("--beat", "--schedule", str(tmp_path / "beat-schedule"))
    # Generous: a takeover, then a whole retraining, on a machine other test runs load too.
    state = wait_job(job_id, timeout=400)
    assert state["attempts"] == 2

    with session_scope() as session:
        versions = session.execute(select(ModelVersion.number, ModelVersion.state).order_by(ModelVersion.number)).all()
        assert [tuple(v) for v in versions] == [(1, "purged"), (2, "active")]
        completions = session.scalar(select(func.count()).select_from(RequestTransition).where(
            RequestTransition.request_id == request["id"], RequestTransition.to_status == "completed"))
        assert completions == 1

    def sealed_actions() -> list[str] | None:
        # Events enter the chain when a sealer runs after their commit (the worker's, or this one).
        from app.audit.service import seal_if_free

        seal_if_free()
        with session_scope() as session:
            found = list(session.scalars(select(AuditEvent.action).where(AuditEvent.entity_id == job_id)))
        return found if "job.succeeded" in found else None

    actions = wait_for(sealed_actions, timeout=60, what="the job's audit events in the chain")
    assert actions.count("job.succeeded") == 1 and "job.resumed" in actions
    assert api.get(f"/v1/deletion-requests/{request['id']}", headers=portal.headers).json()["status"] == "completed"


@pytest.mark.slow  # a failing job run, then resumed
def test_a_job_that_fails_while_purging_resumes_at_purging(env, api, make_client, install_demo):
    """The result version is registered once; a retry after a failed purge only purges."""
    import shutil

    from app.core.database import session_scope
    from app.demo import DemoModel
    from app.registry import artifacts
    from app.registry.models import ModelArtifact, ModelVersion
    from tests.jobs.conftest import TINY_SISA, run_inline

    admin, portal = make_client("admin"), make_client("portal")
    [training] = install_demo(DemoModel("digits-sisa", "sisa", TINY_SISA, {"default_method": "sisa"}))
    run_inline(training)
    with session_scope() as session:
        shard_uri = session.scalar(select(ModelArtifact.uri).where(ModelArtifact.kind == "shard",
                                                                   ModelArtifact.shard == 0))
    # Shard 0 holds some of subject 7's records, so its old bytes must be deleted; a
    # directory in the file's place makes that deletion fail (even for root).
    blocked = artifacts.store_root() / shard_uri.removeprefix(artifacts.SCHEME)[:2] / shard_uri.rsplit("/", 1)[1]
    blocked.unlink()
    blocked.mkdir()
    submit(api, portal, "demo-subject-7")
    job_id = api.post("/v1/models/digits-sisa/unlearn-now", headers=admin.headers).json()["job"]["id"]

    from app.jobs import service

    assert service.execute(job_id, "worker-a") is not None  # failed at purging; will retry
    first = job_state(job_id)
    assert first["status"] == "queued" and first["result_version_id"] and "IsADirectoryError" in first["error"]
    shutil.rmtree(blocked)
    state = run_inline(job_id, worker="worker-b")
    assert state["status"] == "succeeded" and state["result_version_id"] == first["result_version_id"]
    with session_scope() as session:
        versions = session.execute(select(ModelVersion.number, ModelVersion.state).order_by(ModelVersion.number)).all()
    assert [tuple(v) for v in versions] == [(1, "purged"), (2, "active")]
    assert not artifacts.exists(shard_uri)


def test_a_queued_job_whose_message_the_broker_lost_is_sent_again(env, api, make_client, install_demo,
                                                                  start_worker, redis_broker):
    import redis

    from app.core.database import session_scope, utcnow
    from app.demo import DemoModel
    from app.jobs import service
    from tests.jobs.conftest import TINY_MLP, run_inline

    admin, portal = make_client("admin"), make_client("portal")
    [training] = install_demo(DemoModel("digits-mlp", "mlp", TINY_MLP, {"default_method": "retrain"}))
    run_inline(training)
    request = submit(api, portal, "demo-subject-8")
    job_id = api.post("/v1/models/digits-mlp/unlearn-now", headers=admin.headers).json()["job"]["id"]
    redis.Redis.from_url(redis_broker).flushdb()  # a broker restart without persistence

    from app.core.outbox import OutboxMessage

    def sends() -> int:
        with session_scope() as session:
            return sum(m.kwargs == {"job_id": job_id} for m in session.scalars(select(OutboxMessage)))

    with session_scope() as session:
        service.schedule(session, now=utcnow())
    assert sends() == 1  # too early to give up on the first message
    with session_scope() as session:
        service.schedule(session, now=utcnow() + timedelta(hours=1))
    assert sends() == 2
    start_worker()
    wait_job(job_id)
    assert api.get(f"/v1/deletion-requests/{request['id']}", headers=portal.headers).json()["status"] == "completed"
    assert service.execute("no-such-job", "worker-x") is None
