"""Training-data erasure beyond the happy path: CSV and NPZ rewrites, retention, a job still
reading the old file, overlapping erasures, certificates that wait for their erasure, and
failed or lost erasures retried by the scheduler's tick. PostgreSQL, the real task bodies
(run in this process where no worker is needed)."""

from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select

from tests.conftest import issue_certificate_now, reset_caches, run_queued_erasures
from tests.jobs.conftest import submit, wait_for

SUBJECT_3 = {f"digit-{i:04d}" for i in range(3, 1797, 100)}
SUBJECT_5 = {f"digit-{i:04d}" for i in range(5, 1797, 100)}
SUBJECT_7 = {f"digit-{i:04d}" for i in range(7, 1797, 100)}


# --- the rewrites themselves ------------------------------------------------------------------


def _columns(**extra):
    from app.registry.schemas import DatasetColumns

    return DatasetColumns.model_validate({"record_key": "key", "label": "label", **(extra or {"features": ["note"]})})


def test_csv_rewrite_keeps_every_kept_value_exactly(tmp_path):
    from app.registry.erasure import rewrite
    from app.registry.schemas import DatasetFormat

    text = 'key,label,note\nk1,1,"a, quoted"\nk2,0,plain\nk3,1,007\nk4,0,"line\nbreak"\n'
    out = rewrite(io.BytesIO(text.encode()), DatasetFormat.CSV, _columns(), ["k2", "k4"], tmp_path)
    written = out.path.read_bytes()
    assert (out.rows_before, out.rows_kept) == (4, 2)
    assert out.path.name == f"{hashlib.sha256(written).hexdigest()}.csv" == f"{out.sha256}.csv"
    # Leading zeros and quoting survive: values are copied as text, never re-typed.
    import csv

    assert list(csv.reader(io.StringIO(written.decode()))) == [
        ["key", "label", "note"], ["k1", "1", "a, quoted"], ["k3", "1", "007"]]
    again = rewrite(io.BytesIO(text.encode()), DatasetFormat.CSV, _columns(), ["k4", "k2"], tmp_path)
    assert again.sha256 == out.sha256  # the same content, the same address


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_rewrite_streams_every_per_record_array(tmp_path, compressed):
    from app.registry import erasure
    from app.registry.schemas import DatasetFormat

    rows = 5000
    keys = np.array([f"k{i:05d}" for i in range(rows)])
    images = np.arange(rows * 4 * 3, dtype=np.uint8).reshape(rows, 4, 3)
    fortran = np.asfortranarray(np.arange(rows * 2, dtype=np.int32).reshape(rows, 2))
    save = np.savez_compressed if compressed else np.savez
    buffer = io.BytesIO()
    save(buffer, key=keys, label=np.arange(rows) % 10, image=images, fortran=fortran,
         classes=np.arange(10), scalar=np.float64(3.5))
    drop = {f"k{i:05d}" for i in range(0, rows, 7)}
    # Blocks of a few rows: the streaming path crosses many block boundaries.
    original_block = erasure._NPZ_BLOCK_BYTES
    erasure._NPZ_BLOCK_BYTES = 64
    try:
        out = erasure.rewrite(io.BytesIO(buffer.getvalue()), DatasetFormat.NPZ, _columns(image="image"), drop, tmp_path)
        again = erasure.rewrite(io.BytesIO(buffer.getvalue()), DatasetFormat.NPZ, _columns(image="image"), drop, tmp_path)
    finally:
        erasure._NPZ_BLOCK_BYTES = original_block
    keep = np.array([k not in drop for k in keys])
    assert (out.rows_before, out.rows_kept) == (rows, int(keep.sum()))
    assert again.sha256 == out.sha256 == hashlib.sha256(out.path.read_bytes()).hexdigest()
    with np.load(out.path, allow_pickle=False) as result:
        assert list(result["key"]) == list(keys[keep]) and not set(result["key"]) & drop
        np.testing.assert_array_equal(result["label"], (np.arange(rows) % 10)[keep])
        np.testing.assert_array_equal(result["image"], images[keep])
        np.testing.assert_array_equal(result["fortran"], fortran[keep])
        np.testing.assert_array_equal(result["classes"], np.arange(10))  # not one entry per record: as it was
        assert float(result["scalar"]) == 3.5
    with zipfile.ZipFile(out.path) as archive:
        kinds = {info.compress_type for info in archive.infolist()}
    assert kinds == {zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED}


@pytest.mark.parametrize("fmt", ["csv", "npz"])
def test_a_completed_request_erases_its_rows_from_a_csv_or_npz_dataset(env, api, make_client, fmt):
    """Through the pipeline: a CSV or NPZ dataset is ingested, a subject's request completes,
    the erasure rewrites the file; read back, it holds every other row exactly as it was."""
    import csv

    import pyarrow.csv as pacsv

    from app.core.database import session_scope
    from app.registry import service as registry
    from tests.registry.factory import SCHEMA, rows

    admin, portal = make_client("admin"), make_client("portal")
    data = rows(50, subjects=5)  # Person0 holds rows 0, 5, 10, ...
    path = registry.data_root() / f"people.{fmt}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        pacsv.write_csv(pa.table(data), path)
    else:
        np.savez(path, **{name: np.array(values) for name, values in data.items()})
    with session_scope() as session:
        dataset_id = registry.register_dataset(session, name="people", uri=path.name, fmt=fmt, schema=SCHEMA,
                                               actor="test").id
    assert registry.ingest_dataset(dataset_id).status == "ready"
    body = {"subject": [{"type": "email", "value": "person0@example.org"}], "legal_basis": "gdpr_art17"}
    request = api.post("/v1/deletion-requests", json=body, headers=portal.headers).json()
    _tick()
    assert api.get(f"/v1/deletion-requests/{request['id']}", headers=portal.headers).json()["status"] == "completed"
    run_queued_erasures()
    issue_certificate_now(request["id"])
    [erased] = _certificate(api, admin, request["id"])["training_data"]
    assert (erased["status"], erased["rows_erased"], erased["old_bytes_destroyed"]) == ("erased", 10, True)
    rewritten = Path(api.get("/v1/datasets/people", headers=admin.headers).json()["uri"])
    assert rewritten.name == f"{erased['new_file_sha256']}.{fmt}" and not path.exists()
    kept = [i for i in range(50) if i % 5]
    if fmt == "csv":
        with rewritten.open(newline="") as handle:
            table = list(csv.DictReader(handle))
        assert [r["id"] for r in table] == [data["id"][i] for i in kept]
        assert [float(r["f1"]) for r in table] == [data["f1"][i] for i in kept]
        assert not any(r["email"] == "Person0@Example.org" for r in table)
    else:
        with np.load(rewritten, allow_pickle=False) as archive:
            for name, values in data.items():
                assert archive[name].tolist() == [values[i] for i in kept], name


# --- helpers on the demo dataset --------------------------------------------------------------


def _dataset_uri(api, caller) -> Path:
    return Path(api.get("/v1/datasets/digits", headers=caller.headers).json()["uri"])


def _erasures():
    from app.core.database import session_scope
    from app.registry.models import DatasetErasure

    with session_scope() as session:
        return [(e.id, e.status, sorted(e.request_ids), e.rows_erased, e.attempts)
                for e in session.scalars(select(DatasetErasure).order_by(DatasetErasure.created_at))]


def _tick(now=None):
    from app.core.database import session_scope, utcnow
    from app.jobs import scheduling

    with session_scope() as session:
        scheduling.schedule(session, now=now or utcnow())


def _actions(action: str) -> list[dict]:
    from app.audit.models import AuditEvent
    from app.core.database import session_scope

    with session_scope() as session:
        return list(session.scalars(select(AuditEvent.payload).where(AuditEvent.action == action)
                                    .order_by(AuditEvent.seq)))


def _certificate(api, admin, request_id) -> dict:
    found = api.get(f"/v1/deletion-requests/{request_id}/certificate", headers=admin.headers)
    assert found.status_code == 200, found.text
    return found.json()["certificate"]


def _waits(request_id) -> bool:
    from app.certificates.service import waits_for_erasure
    from app.core.database import session_scope

    with session_scope() as session:
        return waits_for_erasure(session, request_id)


def _completed(api, portal, subject) -> dict:
    request = submit(api, portal, subject)
    _tick()  # no model trained on the digits yet: the tick completes it
    request = api.get(f"/v1/deletion-requests/{request['id']}", headers=portal.headers).json()
    assert request["status"] == "completed", request
    return request


def _file_keys(path: Path) -> set[str]:
    return set(pq.read_table(path, columns=["record_key"]).column("record_key").to_pylist())


# --- retention and a job still reading the old file ---------------------------------------------


def test_retention_keeps_the_old_bytes_until_the_tick_after_destroy_after(env, api, make_client, install_demo,
                                                                         monkeypatch):
    from app.core.database import session_scope
    from app.registry import service as registry
    from app.registry.models import DatasetErasure

    monkeypatch.setenv("UNLEARND_ERASED_FILE_RETENTION_HOURS", "1")
    reset_caches()
    admin, portal = make_client("admin"), make_client("portal")
    install_demo()
    original = registry.data_root() / "demo" / "digits.parquet"
    request = _completed(api, portal, "demo-subject-3")
    run_queued_erasures()
    rewritten = _dataset_uri(api, admin)
    assert rewritten != original and original.exists() and not _file_keys(rewritten) & SUBJECT_3
    issue_certificate_now(request["id"])
    [erased] = _certificate(api, admin, request["id"])["training_data"]
    assert erased["status"] == "erased" and erased["old_bytes_destroyed"] is False
    with session_scope() as session:
        destroy_after = session.scalar(select(DatasetErasure.destroy_after))
    assert erased["old_bytes_destroy_after"] == destroy_after.isoformat()
    _tick(destroy_after - timedelta(seconds=5))
    assert original.exists() and _actions("dataset.old_file_destroyed") == []
    _tick(destroy_after + timedelta(seconds=1))
    assert not original.exists()
    [destroyed] = _actions("dataset.old_file_destroyed")
    assert destroyed["sha256"] == erased["old_file_sha256"]


def test_a_job_that_loaded_the_old_file_keeps_it_until_it_ends(env, api, make_client, install_demo):
    from app.core.database import session_scope
    from app.jobs import lifecycle, training
    from app.registry import erasure
    from app.registry import service as registry
    from tests.jobs.conftest import TINY_MLP

    admin, portal, ml = make_client("admin"), make_client("portal"), make_client("ml")
    install_demo()
    original = registry.data_root() / "demo" / "digits.parquet"
    request = _completed(api, portal, "demo-subject-3")
    [(erasure_id, status, *_)] = _erasures()
    assert status == "queued"
    # A training job starts before the erasure runs and loads its inputs (the code path of
    # training.run up to the engine): it notes the file it read.
    assert api.post("/v1/models", headers=ml.headers, json={
        "name": "reader", "adapter": "mlp", "hyperparameters": TINY_MLP, "dataset": "digits"}).status_code == 201
    job_id = api.post("/v1/models/reader/train", json={}, headers=ml.headers).json()["id"]
    assert lifecycle.claim(job_id, "reader-worker").result.value == "run"
    with session_scope() as session:
        job = lifecycle.owned_job(session, job_id, "reader-worker")
        setup = training._setup(session, job)
        training._note_file(job, setup)
    assert Path(setup.source[0]) == original

    erasure.run(erasure_id, lifecycle.dataset_files_in_use)
    assert _dataset_uri(api, admin) != original
    # The job still reads the whole, untouched old file.
    assert original.exists() and len(_file_keys(original)) == 1797 and _file_keys(original) >= SUBJECT_3
    [swapped] = _actions("dataset.rows_erased")
    assert swapped["old_file_in_use"] is True and swapped["old_bytes_destroyed"] is False
    issue_certificate_now(request["id"])
    [erased] = _certificate(api, admin, request["id"])["training_data"]
    assert erased["old_bytes_destroyed"] is False
    assert "or once no running job still reads them" in _certificate(api, admin, request["id"])["claim"]
    _tick()
    assert original.exists(), "a running job still reads it"
    with session_scope() as session:
        lifecycle.fail_job(session, lifecycle.lock_job(session, job_id), "TestStop: the reader ended")
    _tick()
    assert not original.exists()
    assert [p["erasure_id"] for p in _actions("dataset.old_file_destroyed")] == [erasure_id]


def test_a_running_qualification_study_keeps_every_file_replaced_since_it_began(env, api, make_client,
                                                                                install_demo):
    from app.core.database import session_scope
    from app.jobs import lifecycle
    from app.jobs.models import MethodQualification
    from app.registry import erasure
    from app.registry import service as registry
    from tests.jobs.conftest import TINY_MLP, run_inline

    portal, ml = make_client("portal"), make_client("ml")
    install_demo()
    original = registry.data_root() / "demo" / "digits.parquet"
    _completed(api, portal, "demo-subject-3")
    [(erasure_id, *_)] = _erasures()
    assert api.post("/v1/models", headers=ml.headers, json={
        "name": "studied", "adapter": "mlp", "hyperparameters": TINY_MLP, "dataset": "digits"}).status_code == 201
    trained = api.post("/v1/models/studied/train", json={}, headers=ml.headers).json()["id"]
    assert run_inline(trained)["status"] == "succeeded"  # a finished job holds no file
    with session_scope() as session:
        model = registry.get_model(session, "studied")
        study = MethodQualification(model_id=model.id, version_id=registry.active_version(session, model.id).id,
                                    method="finetune", band_min=1, band_max=10, settings={"runs": 2})
        session.add(study)
        session.flush()
        study_id = study.id
    erasure.run(erasure_id, lifecycle.dataset_files_in_use)
    assert original.exists() and _actions("dataset.rows_erased")[0]["old_file_in_use"] is True
    _tick()
    assert original.exists(), "the study may still read it"
    with session_scope() as session:
        session.get(MethodQualification, study_id).status = "failed"
    _tick()
    assert not original.exists()


# --- overlapping erasures and certificates that wait -------------------------------------------


def test_certificates_wait_for_the_erasure_that_a_later_completion_or_the_tick_starts(env, api, make_client,
                                                                                     install_demo):
    from app.certificates.service import issue_certificate
    from app.core.database import session_scope, utcnow
    from app.core.errors import Conflict

    admin, portal = make_client("admin"), make_client("portal")
    held = make_client("portal", requires_approval=True)
    install_demo()
    waiting = submit(api, held, "demo-subject-5")
    assert waiting["status"] == "pending_approval"  # awaiting approval: the dataset has an open request
    first = _completed(api, portal, "demo-subject-3")
    assert _erasures() == [] and _waits(first["id"])
    # No path issues a certificate that would say "pending": the CLI's path refuses too.
    with session_scope() as session, pytest.raises(Conflict):
        issue_certificate(session, first["id"])
    from click.testing import CliRunner

    from app.cli import main

    refused = CliRunner().invoke(main, ["certificate", "issue", first["id"]])
    assert refused.exit_code == 1 and "still being erased from their dataset file" in refused.output, refused.output
    assert api.get(f"/v1/deletion-requests/{first['id']}/certificate", headers=admin.headers).status_code == 202

    # The open request keeps the file waiting no longer than the max wait: the tick then erases.
    _tick(utcnow() + timedelta(hours=1))
    assert _erasures() == []
    _tick(utcnow() + timedelta(hours=25))
    [(_, status, request_ids, _, _)] = _erasures()
    assert status == "queued" and request_ids == [first["id"]]
    run_queued_erasures()
    assert not _waits(first["id"])
    issue_certificate_now(first["id"])
    [erased] = _certificate(api, admin, first["id"])["training_data"]
    assert erased["status"] == "erased" and erased["rows_erased"] == len(SUBJECT_3)

    approved = api.post(f"/v1/deletion-requests/{waiting['id']}/approve", headers=admin.headers)
    assert approved.status_code == 200, approved.text
    _tick()
    assert api.get(f"/v1/deletion-requests/{waiting['id']}", headers=admin.headers).json()["status"] == "completed"
    assert _waits(waiting["id"])
    run_queued_erasures()
    issue_certificate_now(waiting["id"])
    [second] = _certificate(api, admin, waiting["id"])["training_data"]
    assert second["status"] == "erased" and second["rows_erased"] == len(SUBJECT_5)
    assert second["old_file_sha256"] == erased["new_file_sha256"]
    assert not _file_keys(_dataset_uri(api, admin)) & (SUBJECT_3 | SUBJECT_5)


def test_rows_left_waiting_with_no_open_request_are_erased_by_the_next_tick(env, api, make_client, install_demo):
    """A completion that found the dataset busy schedules nothing; if the request that kept it
    busy then ends without completing (rejected here; two completions racing leave the same
    state), the next tick erases the rows and releases the waiting certificate."""
    admin, portal = make_client("admin"), make_client("portal")
    held = make_client("portal", requires_approval=True)
    install_demo()
    blocker = submit(api, held, "demo-subject-5")
    first = _completed(api, portal, "demo-subject-3")
    assert _erasures() == [] and _waits(first["id"])
    rejected = api.post(f"/v1/deletion-requests/{blocker['id']}/reject", headers=admin.headers,
                        json={"reason": "not a verified subject"})
    assert rejected.status_code == 200, rejected.text
    assert _erasures() == []
    _tick()
    [(_, status, request_ids, _, _)] = _erasures()
    assert status == "queued" and request_ids == [first["id"]]
    run_queued_erasures()
    issue_certificate_now(first["id"])
    assert _certificate(api, admin, first["id"])["training_data"][0]["rows_erased"] == len(SUBJECT_3)
    assert _file_keys(_dataset_uri(api, admin)) >= SUBJECT_5  # the rejected request's rows stay


def test_a_batch_completing_together_certifies_every_request_after_one_rewrite(env, api, make_client, install_demo):
    admin = make_client("admin")
    held = make_client("portal", requires_approval=True)
    install_demo()
    ids = [submit(api, held, subject)["id"] for subject in ("demo-subject-3", "demo-subject-5", "demo-subject-7")]
    for request_id in ids:
        assert api.post(f"/v1/deletion-requests/{request_id}/approve", headers=admin.headers).status_code == 200
    _tick()
    # Each completion but the last found the dataset still busy; the one erasure releases all.
    [(_, status, request_ids, _, _)] = _erasures()
    assert status == "queued" and request_ids == sorted(ids)
    assert all(_waits(request_id) for request_id in ids)
    run_queued_erasures()
    for request_id in ids:
        issue_certificate_now(request_id)
        [erased] = _certificate(api, admin, request_id)["training_data"]
        assert erased["rows_erased"] == 3 * len(SUBJECT_3)
    assert not _file_keys(_dataset_uri(api, admin)) & (SUBJECT_3 | SUBJECT_5 | SUBJECT_7)


class _Gate:
    """Holds ``rewrite`` calls until released, so a test can act while an erasure runs."""

    def __init__(self, monkeypatch, holds: int) -> None:
        from app.registry import erasure

        self.entered = threading.Semaphore(0)
        self.release = threading.Event()
        self.holds = holds
        real = erasure.rewrite

        def held(*args, **kwargs):
            if self.holds > 0:
                self.holds -= 1
                self.entered.release()
                assert self.release.wait(120), "gate never released"
            return real(*args, **kwargs)

        monkeypatch.setattr(erasure, "rewrite", held)

    def wait_entered(self, count: int = 1) -> None:
        for _ in range(count):
            assert self.entered.acquire(timeout=120), "the erasure never reached its rewrite"


def test_an_erasure_queued_while_one_runs_waits_then_erases_the_rest(env, api, make_client, install_demo,
                                                                   monkeypatch):
    from app.registry import erasure
    from app.registry import service as registry

    admin, portal = make_client("admin"), make_client("portal")
    install_demo()
    original = registry.data_root() / "demo" / "digits.parquet"
    first = _completed(api, portal, "demo-subject-3")
    [(running_id, *_)] = _erasures()
    gate = _Gate(monkeypatch, holds=1)
    runner = threading.Thread(target=erasure.run, args=(running_id,))
    runner.start()
    gate.wait_entered()
    second = _completed(api, portal, "demo-subject-7")
    queued_id = [e[0] for e in _erasures() if e[0] != running_id][0]
    assert [e[1] for e in _erasures()] == ["running", "queued"]
    with pytest.raises(erasure.ErasureBusy):
        erasure.run(queued_id)  # the task retries it shortly
    gate.release.set()
    runner.join(120)
    erasure.run(queued_id)
    assert [(e[1], e[2], e[3]) for e in _erasures()] == [
        ("done", [first["id"]], len(SUBJECT_3)), ("done", sorted([first["id"], second["id"]]), len(SUBJECT_7))]
    final = _dataset_uri(api, admin)
    assert not _file_keys(final) & (SUBJECT_3 | SUBJECT_7) and len(_file_keys(final)) == 1797 - 36
    assert not original.exists() and [p for p in final.parent.iterdir() if p.suffix == ".parquet"] == [final]
    for request in (first, second):
        issue_certificate_now(request["id"])
    assert _certificate(api, admin, second["id"])["training_data"][0]["old_file_sha256"] == \
        _certificate(api, admin, first["id"])["training_data"][0]["new_file_sha256"]


def test_two_deliveries_of_one_erasure_racing_swap_once(env, api, make_client, install_demo, monkeypatch):
    from app.registry import erasure

    admin, portal = make_client("admin"), make_client("portal")
    install_demo()
    _completed(api, portal, "demo-subject-3")
    [(erasure_id, *_)] = _erasures()
    gate = _Gate(monkeypatch, holds=2)
    runners = [threading.Thread(target=erasure.run, args=(erasure_id,)) for _ in range(2)]
    for runner in runners:
        runner.start()
    gate.wait_entered(2)  # both read the same file and rewrite it at once
    gate.release.set()
    for runner in runners:
        runner.join(120)
    [(_, status, _, rows, attempts)] = _erasures()
    assert (status, rows, attempts) == ("done", len(SUBJECT_3), 2)
    assert len(_actions("dataset.rows_erased")) == 1
    assert not _file_keys(_dataset_uri(api, admin)) & SUBJECT_3


# --- failed and lost erasures -----------------------------------------------------------------


def test_a_failed_erasure_is_retried_by_the_tick_with_backoff_then_fails_for_good(webhook_env, api, make_client,
                                                                                 install_demo, monkeypatch,
                                                                                 make_receiver):
    from app.core.database import session_scope
    from app.registry import erasure
    from app.registry import service as registry
    from app.registry.models import DatasetErasure

    monkeypatch.setenv("UNLEARND_ERASURE_MAX_ATTEMPTS", "2")
    reset_caches()
    from tests.webhooks.test_dispatch import deliver_now, register

    admin, portal = make_client("admin"), make_client("portal")
    admins_rx = make_receiver()
    register(api, admin, admins_rx, events=["dataset.erasure_failed"])
    install_demo()
    original = registry.data_root() / "demo" / "digits.parquet"
    hidden = original.with_suffix(".hidden")
    first = _completed(api, portal, "demo-subject-3")
    [(erasure_id, *_)] = _erasures()
    original.rename(hidden)
    erasure.run(erasure_id)
    with session_scope() as session:
        failed = session.get(DatasetErasure, erasure_id)
        retry_at, status, attempts = failed.retry_at, failed.status, failed.attempts
        finished = failed.finished_at
    assert (status, attempts) == ("failed", 1) and retry_at - finished == timedelta(seconds=30)
    [event] = _actions("dataset.erasure_failed")
    assert event["final"] is False and event["attempt"] == 1
    assert _waits(first["id"])
    _tick(retry_at - timedelta(seconds=1))
    assert _erasures()[0][1] == "failed"  # backing off
    hidden.rename(original)
    _tick(retry_at + timedelta(seconds=1))
    assert _erasures()[0][1] == "queued"
    [retrying] = _actions("dataset.erasure_retrying")
    assert retrying == {"erasure_id": erasure_id, "attempt": 2, "lost": False}
    run_queued_erasures()
    issue_certificate_now(first["id"])
    assert _certificate(api, admin, first["id"])["training_data"][0]["status"] == "erased"

    # Failing on every attempt: the certificate states it, admins are told, no more retries.
    second = _completed(api, portal, "demo-subject-7")
    current = _dataset_uri(api, admin)
    current.rename(hidden)
    second_id = _erasures()[1][0]
    erasure.run(second_id)
    with session_scope() as session:
        retry_at = session.get(DatasetErasure, second_id).retry_at
    _tick(retry_at + timedelta(seconds=1))
    erasure.run(second_id)
    [(_, status, _, _, attempts)] = [e for e in _erasures() if e[0] == second_id]
    assert (status, attempts) == ("failed", 2)
    final = _actions("dataset.erasure_failed")[-1]
    assert final["final"] is True and final["notify"] == "admins" and final["retry_at"] is None
    deliver_now()
    # Admins hear of the final failure only, not of the attempts that were retried.
    [told] = admins_rx.received
    assert told.verified_by == [0] and told.payload["type"] == "dataset.erasure_failed"
    assert told.payload["data"]["erasure_id"] == second_id and told.payload["data"]["attempts"] == 2
    assert told.payload["data"]["error_type"] == "InvalidInput"
    assert not _waits(second["id"])
    issue_certificate_now(second["id"])
    document = _certificate(api, admin, second["id"])
    [failed_entry] = document["training_data"]
    assert (failed_entry["status"], failed_entry["attempts"]) == ("erasure_failed", 2)
    assert "could NOT be erased" in document["claim"]
    _tick(retry_at + timedelta(hours=2))
    assert [e[1] for e in _erasures() if e[0] == second_id] == ["failed"]


def test_a_lost_run_is_resumed_by_the_tick(env, api, make_client, install_demo, monkeypatch):
    from app.core.database import session_scope
    from app.registry import erasure
    from app.registry.models import DatasetErasure

    admin, portal = make_client("admin"), make_client("portal")
    install_demo()
    request = _completed(api, portal, "demo-subject-3")
    [(erasure_id, *_)] = _erasures()
    gate = _Gate(monkeypatch, holds=1)
    lost = threading.Thread(target=erasure.run, args=(erasure_id,))
    lost.start()
    gate.wait_entered()
    with session_scope() as session:
        started = session.get(DatasetErasure, erasure_id).started_at
    _tick(started + timedelta(minutes=30))
    assert _erasures()[0][1] == "running"
    _tick(started + timedelta(hours=1, seconds=1))
    assert _erasures()[0][1] == "queued"
    assert _actions("dataset.erasure_retrying") == [{"erasure_id": erasure_id, "attempt": 2, "lost": True}]
    gate.release.set()
    lost.join(120)  # the stale run finishes its rewrite but no longer owns the swap
    assert _erasures()[0][1] == "queued" and _actions("dataset.rows_erased") == []
    run_queued_erasures()
    assert _erasures()[0][1:5:3] == ("done", 2)
    issue_certificate_now(request["id"])
    assert _certificate(api, admin, request["id"])["training_data"][0]["rows_erased"] == len(SUBJECT_3)


# --- an external location: the owner is told, over a real webhook --------------------------------


@pytest.mark.slow
def test_an_external_dataset_gets_the_not_managed_statement_and_a_webhook(webhook_env, api, make_client,
                                                                         make_receiver, start_worker, monkeypatch):
    import fsspec

    from app.core.database import session_scope
    from app.registry import service as registry
    from tests.registry.factory import SCHEMA, rows
    from tests.webhooks.test_dispatch import register

    monkeypatch.setenv("UNLEARND_DATASET_REMOTE_PREFIXES", '["memory://unlearnd-erasure-test/"]')
    webhook_env["UNLEARND_DATASET_REMOTE_PREFIXES"] = '["memory://unlearnd-erasure-test/"]'
    reset_caches()
    admin, ml, other = make_client("admin"), make_client("ml"), make_client("ml")
    owner_rx, other_rx = make_receiver(), make_receiver()
    register(api, ml, owner_rx, events=["dataset.redaction_required"])
    register(api, other, other_rx, events=["dataset.redaction_required"])
    buffer = io.BytesIO()
    pq.write_table(pa.table(rows(40)), buffer)
    uri = "memory://unlearnd-erasure-test/people.parquet"
    with fsspec.open(uri, "wb") as remote:
        remote.write(buffer.getvalue())
    try:
        with session_scope() as session:
            dataset_id = registry.register_dataset(session, name="vendor", uri=uri, fmt="parquet", schema=SCHEMA,
                                                   actor=ml.id).id
        assert registry.ingest_dataset(dataset_id).status == "ready"
        start_worker()
        body = {"selector": {"dataset": "vendor"}, "legal_basis": "contract", "reason": "licence ended"}
        request = api.post("/v1/deletion-requests", json=body, headers=ml.headers).json()
        _tick()  # no model trained on it: the scheduler's tick completes it
        request = api.get(f"/v1/deletion-requests/{request['id']}", headers=ml.headers).json()
        assert request["status"] == "completed", request
        [received] = owner_rx.wait_for(lambda got: len(got) >= 1, timeout=90)
        assert received.verified_by == [0]
        assert received.payload["type"] == "dataset.redaction_required"
        assert received.payload["data"]["dataset_id"] == dataset_id and received.payload["data"]["rows"] == 40
        certificate = wait_for(lambda: (r := api.get(f"/v1/deletion-requests/{request['id']}/certificate",
                                                    headers=admin.headers)).status_code == 200 and r,
                               timeout=120, what="certificate issued by the worker")
        document = certificate.json()["certificate"]
        [entry] = document["training_data"]
        assert (entry["managed"], entry["status"]) == (False, "redaction_required")
        assert "does not manage" in entry["statement"]
        assert "is not managed by Unlearnd; its owner was asked to redact it" in document["claim"]
        # The file is the owner's: untouched.
        with fsspec.open(uri, "rb") as remote:
            assert remote.read() == buffer.getvalue()
        assert other_rx.received == []  # another ml key is not the dataset's owner
    finally:
        fsspec.filesystem("memory").rm(uri)
