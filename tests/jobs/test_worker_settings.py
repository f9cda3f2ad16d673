"""Settings the README documents for worker processes, checked in a real worker process:
UNLEARND_TORCH_THREADS and UNLEARND_ARTIFACT_STORE_URL (artifacts a worker writes are read
by another process from the shared store, and nothing lands in the local data dir). A
file:// URL stands for a mount every host shares; it found that the store never created
its folders there."""

from __future__ import annotations

from app.demo import DemoModel
from tests.jobs.conftest import TINY_MLP, wait_job


def test_torch_threads_setting_reaches_the_worker_process(env, start_worker):
    from app.core.queue import TaskName, get_celery

    env["UNLEARND_TORCH_THREADS"] = "3"
    start_worker()
    # Sent by name through this test's app: a task object imported earlier in this process
    # stays bound to the app (and broker) of the test that first imported it.
    result = get_celery().send_task(TaskName.PING, args=["threads"])
    # The pool child sets the threads as it starts (after the worker answers pings): on a
    # loaded machine its first task can wait well past a minute.
    assert result.get(timeout=240)["torch_threads"] == 3


def test_artifacts_a_worker_stores_at_the_store_url_are_read_by_another_process(env, install_demo, start_worker,
                                                                                 monkeypatch, tmp_path):
    from app.core.database import session_scope
    from app.registry import artifacts
    from app.registry import service as registry
    from tests.conftest import reset_caches

    shared = tmp_path / "shared-store"
    env["UNLEARND_ARTIFACT_STORE_URL"] = f"file://{shared}"
    monkeypatch.setenv("UNLEARND_ARTIFACT_STORE_URL", env["UNLEARND_ARTIFACT_STORE_URL"])
    reset_caches()
    [training] = install_demo(DemoModel("digits-mlp", "mlp", TINY_MLP, {"default_method": "retrain"}))
    worker = start_worker()
    wait_job(training)
    with session_scope() as session:
        [version] = registry.list_versions(session, registry.get_model(session, "digits-mlp"))
        uri, digest = version.artifact_uri, version.artifact_sha256
    stored = [path for path in shared.rglob("*") if path.is_file()]
    assert digest in {path.name for path in stored}, stored
    assert artifacts.sha256_of(uri) == digest  # read here, written by the worker process
    local = artifacts.store_root()
    assert not local.exists() or not any(path.is_file() for path in local.rglob("*"))
    assert worker.process.poll() is None
