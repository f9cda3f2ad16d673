"""OpenLineage RunEvents from the worker's job path: START/COMPLETE/FAIL for training and
unlearning runs, valid against the spec, to a JSON-lines file or a real HTTP receiver; a
lineage backend that is down fails no job."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from app.demo import DemoModel
from tests.conftest import reset_caches
from tests.jobs.conftest import run_inline, submit
from tests.jobs.openlineage_spec import validate

LOGREG = DemoModel("digits-logreg", "logreg", {"l2": 1e-3}, {"default_method": "newton"})


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _set(monkeypatch, env, **values: str) -> None:
    for key, value in values.items():
        monkeypatch.setenv(key, value)
        env[key] = value
    reset_caches()


@pytest.mark.slow
def test_training_and_unlearning_runs_are_emitted_to_the_file_and_valid(env, api, make_client, install_demo):
    from app.core.database import session_scope
    from app.jobs.models import UnlearningJob
    from app.registry.models import DatasetSnapshot, ModelVersion

    admin, portal = make_client("admin"), make_client("portal")
    [training] = install_demo(LOGREG)
    assert run_inline(training)["status"] == "succeeded"
    submit(api, portal, "demo-subject-3")
    unlearn = api.post("/v1/models/digits-logreg/unlearn-now", headers=admin.headers)
    assert unlearn.status_code in (200, 202), unlearn.text
    job_id = unlearn.json()["job"]["id"]
    assert run_inline(job_id)["status"] == "succeeded"

    events = _events(Path(env["UNLEARND_DATA_DIR"]) / "openlineage" / "events.jsonl")
    for event in events:
        validate(event)
    assert [(e["run"]["runId"], e["eventType"]) for e in events] == [
        (training, "START"), (training, "COMPLETE"), (job_id, "START"), (job_id, "COMPLETE")]
    assert {e["job"]["name"] for e in events} == {"digits-logreg.train", "digits-logreg.unlearn"}

    with session_scope() as session:
        job = session.get(UnlearningJob, job_id)
        trained = session.get(ModelVersion, session.get(UnlearningJob, training).result_version_id)
        unlearned = session.get(ModelVersion, job.result_version_id)
        snapshot = session.get(DatasetSnapshot, trained.snapshot_id)
        expected_snapshot = {"snapshotId": snapshot.id, "recordCount": snapshot.record_count,
                             "merkleRoot": snapshot.merkle_root}
        forget_count, method_used = job.forget_count, job.method_used
        trained_id, unlearned_id, unlearned_number = trained.id, unlearned.id, unlearned.number

    trained_complete, unlearned_complete = events[1], events[3]
    [snapshot_input] = trained_complete["inputs"]
    assert snapshot_input["name"] == "datasets/digits"
    assert {k: snapshot_input["facets"]["unlearnd_snapshot"][k] for k in expected_snapshot} == expected_snapshot
    assert snapshot_input["inputFacets"]["inputStatistics"]["rowCount"] == expected_snapshot["recordCount"]
    [model_output] = trained_complete["outputs"]
    assert model_output["name"] == "models/digits-logreg"
    assert model_output["facets"]["unlearnd_modelVersion"]["versionId"] == trained_id

    # Unlearning reads the base version and the snapshot it was trained on, writes the new version.
    inputs = {i["name"]: i for i in unlearned_complete["inputs"]}
    assert inputs["datasets/digits"]["facets"]["unlearnd_snapshot"]["merkleRoot"] == expected_snapshot["merkleRoot"]
    assert inputs["models/digits-logreg"]["facets"]["unlearnd_modelVersion"]["versionId"] == trained_id
    [output] = unlearned_complete["outputs"]
    assert output["facets"]["unlearnd_modelVersion"]["versionId"] == unlearned_id
    assert output["facets"]["version"]["datasetVersion"] == str(unlearned_number)
    facet = unlearned_complete["run"]["facets"]["unlearning"]
    assert facet["forgottenCount"] == forget_count > 0
    assert facet["methodUsed"] == method_used and facet["method"] == "newton"
    assert facet["guarantee"] in ("certified", "approximate", "exact")
    assert facet["purgedVersions"] == [trained_id]
    assert facet["requestCount"] == 1
    assert facet["verification"]["attempts"] >= 1 and facet["verification"]["verdict"]
    # Nothing about the subject: not the identifier, not its record keys.
    assert "demo-subject-3" not in json.dumps(events)


class _Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, status: int = 200) -> None:
        self.status, self.received, self.paths = status, [], []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.paths.append((self.path, self.headers.get("Authorization")))
                receiver.received.append(json.loads(body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def lineage_receiver():
    receiver = _Receiver()
    yield receiver
    receiver.shutdown()
    receiver.server_close()


@pytest.mark.slow
def test_http_transport_posts_valid_events_and_a_failed_run_sends_fail(env, install_demo, monkeypatch,
                                                                       lineage_receiver):
    _set(monkeypatch, env, UNLEARND_OPENLINEAGE_TRANSPORT="http", UNLEARND_OPENLINEAGE_URL=lineage_receiver.url,
         UNLEARND_OPENLINEAGE_API_KEY="marquez-key", UNLEARND_OPENLINEAGE_NAMESPACE="acme-ml")
    from app.registry import service as registry

    [training] = install_demo(LOGREG)
    # The dataset file vanishes after ingestion: every training attempt fails, and the job with them.
    (registry.data_root() / "demo" / "digits.parquet").unlink()
    assert run_inline(training)["status"] == "failed"

    events = lineage_receiver.received
    for event in events:
        validate(event)
    assert [e["eventType"] for e in events] == ["START", "RUNNING", "RUNNING", "FAIL"]
    assert {e["job"]["namespace"] for e in events} == {"acme-ml"}
    assert {e["run"]["runId"] for e in events} == {training}
    error = events[-1]["run"]["facets"]["errorMessage"]
    assert error["programmingLanguage"] == "python" and ":" not in error["message"]  # the class, not the text
    assert not (Path(env["UNLEARND_DATA_DIR"]) / "openlineage").exists()
    assert {p for p, _ in lineage_receiver.paths} == {"/api/v1/lineage"}
    assert {a for _, a in lineage_receiver.paths} == {"Bearer marquez-key"}


@pytest.mark.slow
def test_a_lineage_backend_that_refuses_or_is_gone_fails_no_job(env, install_demo, monkeypatch, caplog):
    refusing = _Receiver(status=400)
    try:
        _set(monkeypatch, env, UNLEARND_OPENLINEAGE_TRANSPORT="http", UNLEARND_OPENLINEAGE_URL=refusing.url)
        [training] = install_demo(LOGREG)
        assert run_inline(training)["status"] == "succeeded"
        assert [e["eventType"] for e in refusing.received] == ["START", "COMPLETE"]
        assert [r.getMessage() for r in caplog.records if r.name == "unlearnd.openlineage"] == [
            "OpenLineage event not emitted"] * 2  # a 400 is an error too: logged, not raised
        caplog.clear()
    finally:
        refusing.shutdown()
        refusing.server_close()
    # Nothing listens there any more: connection refused, logged, the job unaffected.
    [again] = install_demo(DemoModel("digits-logreg-2", "logreg", {"l2": 1e-3}, {"default_method": "newton"}))
    with caplog.at_level("WARNING", logger="unlearnd.openlineage"):
        assert run_inline(again)["status"] == "succeeded"
    assert [r.getMessage() for r in caplog.records if r.name == "unlearnd.openlineage"] == [
        "OpenLineage event not emitted"] * 2


def test_the_schema_check_rejects_what_the_spec_rejects():
    """The validator is live: a facet without its producer, an unknown facet, a bad run id fail."""
    import jsonschema
    from referencing.exceptions import Unresolvable

    good = {"eventTime": "2026-01-01T00:00:00+00:00", "producer": "https://example.org/p",
            "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent", "eventType": "START",
            "run": {"runId": "3f1d7e52-1c1a-4c57-9b0e-0d1f0a6f4a11", "facets": {}},
            "job": {"namespace": "n", "name": "j", "facets": {}}, "inputs": [], "outputs": []}
    validate(good)
    bad_run = json.loads(json.dumps(good))
    bad_run["run"]["runId"] = "not-a-uuid"
    unknown_facet = json.loads(json.dumps(good))
    unknown_facet["run"]["facets"]["x"] = {"_producer": "https://e.org", "_schemaURL": "https://e.org/none.json"}
    no_producer = json.loads(json.dumps(good))
    no_producer["run"]["facets"]["unlearning"] = {
        "_schemaURL": "https://unlearnd.dev/spec/facets/1-0-0/UnlearningRunFacet.json#/$defs/UnlearningRunFacet",
        "forgottenCount": 1, "requestCount": 1, "purgedVersions": [],
        "verification": {"fellBack": False, "attempts": 1, "reasons": []}}
    for event in (bad_run, unknown_facet, no_producer):
        with pytest.raises((jsonschema.ValidationError, Unresolvable)):
            validate(event)


@pytest.mark.slow
def test_a_job_whose_worker_was_lost_every_time_sends_fail(env, install_demo):
    """The claim itself fails such a job (no attempt runs): FAIL all the same."""
    from datetime import timedelta

    from app.core.database import session_scope, utcnow
    from app.jobs import service
    from app.jobs.models import UnlearningJob

    [training] = install_demo(LOGREG)
    with session_scope() as session:
        job = session.get(UnlearningJob, training)
        job.status, job.worker, job.attempts = "running", "vanished:1", job.max_attempts
        job.heartbeat_at = utcnow() - timedelta(hours=1)
    assert service.execute(training, "worker-b") is None
    [event] = _events(Path(env["UNLEARND_DATA_DIR"]) / "openlineage" / "events.jsonl")
    validate(event)
    assert (event["eventType"], event["run"]["runId"]) == ("FAIL", training)
    assert event["run"]["facets"]["errorMessage"]["message"] == "WorkerLost"
