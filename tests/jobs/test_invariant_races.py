"""A deletion request arriving while a real worker process trains, fans SISA shards out, or
stores an unlearning result: the worker is frozen (SIGSTOP) at that point until the request
is in, so the request is resolved before the version it races with is registered."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import time
from collections.abc import Iterator

from sqlalchemy import select

from app.demo import DemoModel
from tests.jobs.conftest import TINY_SISA, job_state, submit, wait_for, wait_job

# Long enough a fit that the test sees the stage before the fit ends, even on a fast machine.
SLOW_MLP = {"hidden": [16], "epochs": 20}
MLP = DemoModel("digits-mlp", "mlp", SLOW_MLP, {"default_method": "retrain"})
SISA = DemoModel("digits-sisa", "sisa", TINY_SISA, {"default_method": "sisa"})


def _sqlite_write_lock_free() -> bool:
    """On SQLite, whether a writer could start now (a stopped worker may hold the lock)."""
    from app.core.config import get_settings

    url = get_settings().database_url
    if not url.startswith("sqlite"):
        return True
    connection = sqlite3.connect(url.split("///", 1)[1], timeout=0.2, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        connection.close()


@contextlib.contextmanager
def frozen(worker) -> Iterator[None]:
    """The worker's whole process group stopped: it computes and writes nothing until thawed.
    On SQLite it is stopped between write transactions, else the test's own writes would wait
    on a lock nobody can release."""
    for _ in range(200):
        os.killpg(worker.process.pid, signal.SIGSTOP)
        if _sqlite_write_lock_free():
            break
        os.killpg(worker.process.pid, signal.SIGCONT)
        time.sleep(0.01)
    else:
        raise AssertionError("the worker held SQLite's write lock every time it was stopped")
    try:
        yield
    finally:
        os.killpg(worker.process.pid, signal.SIGCONT)


def _report(job_id: str) -> dict:
    from app.core.database import session_scope
    from app.jobs.models import UnlearningJob

    with session_scope() as session:
        return dict(session.get(UnlearningJob, job_id).report)


def _versions(model_name: str) -> list[tuple[int, str, str]]:
    from app.core.database import session_scope
    from app.registry import service as registry

    with session_scope() as session:
        model = registry.get_model(session, model_name)
        return [(v.number, v.state, v.id) for v in registry.list_versions(session, model)]


def _request_jobs(api, admin, request_id: str) -> list[dict]:
    return api.get(f"/v1/jobs?request_id={request_id}", headers=admin.headers).json()


def _settled(api, admin, portal, request_id: str) -> dict:
    """Wait until every job carrying the request finished and the request completed."""
    def done() -> dict | None:
        jobs = _request_jobs(api, admin, request_id)
        if any(j["status"] in ("queued", "running") for j in jobs):
            return None
        body = api.get(f"/v1/deletion-requests/{request_id}", headers=portal.headers).json()
        return body if body["status"] in ("completed", "failed") else None

    return wait_for(done, timeout=300, what=f"request {request_id} to settle")


def _assert_forgotten_everywhere(api, portal, request_id: str, version_id: str) -> dict:
    """Completed; no live version holds a record of it; its certificate names the version
    that raced with it and the job that unlearned that version."""
    from click.testing import CliRunner

    from app.cli import main
    from app.core.database import session_scope
    from app.lineage import service as lineage
    from app.requests.models import RequestRecord

    with session_scope() as session:
        record_ids = list(session.scalars(select(RequestRecord.record_id).where(RequestRecord.request_id == request_id)))
        assert record_ids and lineage.live_versions_holding(session, record_ids) == []
    from tests.conftest import issue_certificate_now

    issue_certificate_now(request_id)  # as the outbox tasks do (idempotent), so the GET finds it
    certificate = api.get(f"/v1/deletion-requests/{request_id}/certificate", headers=portal.headers)
    assert certificate.status_code == 200, certificate.text
    document = certificate.json()["certificate"]
    affected = {v["version"]["id"] for m in document["models"] for v in m["affected_versions"]}
    bases = {job["base_version"]["id"] for m in document["models"] for job in m["unlearning"] if job["base_version"]}
    assert version_id in affected and version_id in bases, document["models"]
    assert document["lineage_check"]["passed"] and document["lineage_check"]["live_versions_holding"] == 0
    check = CliRunner().invoke(main, ["lineage", "check"])
    assert check.exit_code == 0, check.output
    return document


def test_a_request_submitted_while_a_model_trains_is_unlearned_from_the_version_it_produced(
        backend, env, api, make_client, install_demo, start_worker):
    admin, portal = make_client("admin"), make_client("portal")
    [training] = install_demo(MLP)
    worker = start_worker()
    wait_for(lambda: job_state(training)["stage"] == "training", interval=0.05, what="the fit to start")
    with frozen(worker):
        assert job_state(training)["result_version_id"] is None, "the fit ended before the worker was frozen"
        request = submit(api, portal, "demo-subject-7")
        assert request["status"] == "scheduled" and request["affected"]["model_versions"] == []
    wait_job(training)
    [(_, _, v1)] = _versions("digits-mlp")
    body = _settled(api, admin, portal, request["id"])
    assert body["status"] == "completed", body
    [follow_up] = _request_jobs(api, admin, request["id"])
    assert follow_up["status"] == "succeeded" and _report(follow_up["id"])["follow_up"][0]["version_id"] == v1
    assert dict((vid, state) for _, state, vid in _versions("digits-mlp"))[v1] == "purged"
    _assert_forgotten_everywhere(api, portal, request["id"], v1)


def test_a_request_submitted_while_sisa_shards_train(backend, env, api, make_client, install_demo, start_worker):
    admin, portal = make_client("admin"), make_client("portal")
    [training] = install_demo(SISA)
    worker = start_worker()
    # Fanned out: the training snapshot is pinned, the shard jobs are queued or training.
    wait_for(lambda: "fanout" in _report(training), interval=0.05, what="the shard fan-out")
    with frozen(worker):
        assert job_state(training)["result_version_id"] is None
        request = submit(api, portal, "demo-subject-7")
        assert request["affected"]["model_versions"] == []
    wait_job(training)
    [(_, _, v1)] = _versions("digits-sisa")
    body = _settled(api, admin, portal, request["id"])
    assert body["status"] == "completed", body
    document = _assert_forgotten_everywhere(api, portal, request["id"], v1)
    [model] = document["models"]
    assert [job["method_used"] for job in model["unlearning"]] == ["sisa"]


def test_a_request_submitted_while_an_unlearning_job_stores_its_result(
        backend, env, api, make_client, install_demo, start_worker):
    admin, portal = make_client("admin"), make_client("portal")
    [training] = install_demo(MLP)
    worker = start_worker()
    wait_job(training)
    [(_, _, v1)] = _versions("digits-mlp")
    first = submit(api, portal, "demo-subject-1")
    batch = api.post("/v1/models/digits-mlp/unlearn-now", headers=admin.headers)
    assert batch.status_code == 202, batch.text
    job_id = batch.json()["job"]["id"]
    # Its inputs are read (base version, forget set); what it stores is decided.
    wait_for(lambda: job_state(job_id)["stage"] in ("unlearning", "verifying"), interval=0.05,
             what="the unlearning job to start computing")
    with frozen(worker):
        assert job_state(job_id)["result_version_id"] is None, "the job stored its result before the freeze"
        second = submit(api, portal, "demo-subject-2")
        assert [v["id"] for v in second["affected"]["model_versions"]] == [v1]
    wait_job(job_id)
    v2 = job_state(job_id)["result_version_id"]
    for request in (first, second):
        body = _settled(api, admin, portal, request["id"])
        assert body["status"] == "completed", body
    # The result stored while the second request was open held its records: it was attached,
    # unlearned by a follow-up job, and purged.
    assert dict((vid, state) for _, state, vid in _versions("digits-mlp"))[v2] == "purged"
    _assert_forgotten_everywhere(api, portal, second["id"], v2)
