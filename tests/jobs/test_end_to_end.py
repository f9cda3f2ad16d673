"""A deletion request all the way through a real Celery worker on Redis, with PostgreSQL
(production) and SQLite (embedded) as the database."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from app.demo import DemoModel
from tests.jobs.conftest import TINY_SISA, submit, wait_for, wait_job


def _versions(model_name: str) -> list:
    from app.core.database import session_scope
    from app.registry import service as registry

    with session_scope() as session:
        model = registry.get_model(session, model_name)
        return [(v.number, v.state, v.id, v.parent_id, v.artifact_uri) for v in registry.list_versions(session, model)]


def test_training_stores_a_version_with_one_snapshot_per_shard(env, api, make_client, install_demo, start_worker):
    from app.core.database import session_scope
    from app.registry.models import DatasetSnapshot, ModelArtifact

    ml = make_client("ml")
    install_demo(DemoModel("digits-sisa", "sisa", TINY_SISA, {"default_method": "sisa"}))
    start_worker()
    again = api.post("/v1/models/digits-sisa/train", json={"seed": 3}, headers=ml.headers)
    assert again.status_code == 202, again.text
    wait_job(again.json()["id"])
    (_, first_state, *_), (number, state, version_id, *_) = _versions("digits-sisa")
    assert (first_state, number, state) == ("superseded", 2, "active")
    with session_scope() as session:
        parts = list(session.scalars(select(ModelArtifact).where(ModelArtifact.version_id == version_id)))
        counts = {(p.kind, p.shard, p.slice): session.get(DatasetSnapshot, p.snapshot_id).record_count for p in parts}
    whole = counts.pop(("model", None, None))
    shards = {key: n for key, n in counts.items() if key[0] == "shard"}
    assert len(shards) == 4 and sum(shards.values()) == whole
    # A first-slice checkpoint saw only part of its shard.
    for (_, shard, _), n in ((k, v) for k, v in counts.items() if k[0] == "checkpoint"):
        assert 0 < n < shards[("shard", shard, 1)]


def test_request_is_unlearned_verified_purged_and_completed(backend, env, api, make_client, install_demo, start_worker):
    from app.core.config import get_settings
    from app.core.database import session_scope
    from app.core.hashing import subject_hash
    from app.lineage import service as lineage
    from app.registry import artifacts
    from app.registry import service as registry
    from app.registry.models import DataRecord, ModelArtifact, ModelVersion

    admin, portal = make_client("admin"), make_client("portal")
    [training] = install_demo(DemoModel("digits-sisa", "sisa", TINY_SISA, {"default_method": "sisa"}))
    start_worker()
    wait_job(training)
    [(_, _, base_id, _, base_uri)] = _versions("digits-sisa")
    with session_scope() as session:
        base_snapshot = session.get(ModelVersion, base_id).snapshot_id
        base_parts = {(p.kind, p.shard, p.slice): (p.uri, p.snapshot_id) for p in session.scalars(
            select(ModelArtifact).where(ModelArtifact.version_id == base_id))}

    # The portal sends demo-subject-7 as a careless form would: a zero-width space, a
    # full-width digit and a trailing no-break space. It must still find the subject.
    request = submit(api, portal, "\u200bdemo-subject-\uff17\u00a0")
    assert request["status"] == "scheduled" and request["affected"]["record_count"] > 0
    batch = api.post("/v1/models/digits-sisa/unlearn-now", headers=admin.headers)
    assert batch.status_code == 202, batch.text
    job_id = batch.json()["job"]["id"]
    wait_job(job_id)

    job = api.get(f"/v1/jobs/{job_id}", headers=admin.headers).json()
    assert job["stage"] == "done" and job["progress"] == 1.0 and job["method_used"] == "sisa"
    assert job["request_ids"] == [request["id"]]
    # The subject's records the base version trained on (held-out rows never were).
    with session_scope() as session:
        base_keys = set(registry.snapshot_record_keys(session, registry.get_snapshot(session, base_snapshot)))
    subject_keys = {f"digit-{i:04d}" for i in range(7, 1797, 100)}
    assert job["forget_count"] == len(base_keys & subject_keys) > 0
    touched = job["report"]["attempts"][-1]["unlearning"]["details"]["shards_touched"]
    assert job["cost_units"] == len(touched) and job["report"]["verification"]["verdict"]

    (_, old_state, _, _, _), (_, new_state, new_id, parent, _) = _versions("digits-sisa")
    assert (old_state, new_state, parent) == ("purged", "active", base_id)
    assert job["result_version_id"] == new_id
    # Every part of the old version that saw a forgotten record is gone from the store; a
    # part that saw none (an untouched shard or slice checkpoint) is byte-identical to the
    # new version's and stays.
    assert not artifacts.exists(base_uri)
    with session_scope() as session:
        for part, (uri, snapshot_id) in base_parts.items():
            saw = set(registry.snapshot_record_keys(session, registry.get_snapshot(session, snapshot_id)))
            assert artifacts.exists(uri) == (not saw & subject_keys), part
    assert sum(artifacts.exists(uri) for uri, _ in base_parts.values()) < len(base_parts) - len(touched)

    done = api.get(f"/v1/deletion-requests/{request['id']}", headers=portal.headers).json()
    assert (done["status"], done["outcome"]) == ("completed", "forgotten")
    # Issued by the worker through the outbox when the request completed, not by this read.
    certificate = wait_for(lambda: (r := api.get(f"/v1/deletion-requests/{request['id']}/certificate",
                                                headers=portal.headers)).status_code == 200 and r,
                           timeout=120, what="certificate issued by the worker")
    assert json.loads(certificate.content)["certificate"]["request"]["outcome"] == "forgotten"
    hashed = subject_hash("user_id", "demo-subject-7", get_settings().pepper_bytes())
    with session_scope() as session:
        states = set(session.scalars(select(DataRecord.state).where(DataRecord.subject_hash == hashed)))
        assert states == {"forgotten"}
        assert lineage.subject_lineage(session, hashed).still_contained is False

    # The worker reported both runs to OpenLineage (the default file transport), valid per the spec.
    from pathlib import Path

    from tests.jobs.openlineage_spec import validate

    lines = (Path(env["UNLEARND_DATA_DIR"]) / "openlineage" / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    runs: dict[str, list[str]] = {}
    for event in events:
        validate(event)
        runs.setdefault(event["run"]["runId"], []).append(event["eventType"])
    assert runs[training][0] == "START" and runs[training][-1] == "COMPLETE"  # RUNNING between: after its shards
    assert runs[job_id] == ["START", "COMPLETE"] and len(runs) == 2  # shard jobs are parts of their parent's run
    facet = next(e for e in events if e["run"]["runId"] == job_id and e["eventType"] == "COMPLETE")
    unlearning = facet["run"]["facets"]["unlearning"]
    assert (unlearning["methodUsed"], unlearning["guarantee"]) == ("sisa", "exact")
    assert unlearning["purgedVersions"] == [base_id] and unlearning["forgottenCount"] == job["forget_count"]


@pytest.mark.slow  # trains every shard and a whole fit
def test_sisa_training_fans_out_one_job_per_shard_and_matches_a_whole_fit(env, api, make_client, install_demo):
    import hashlib

    from app.core.database import session_scope
    from app.jobs import engine
    from app.registry import service as registry
    from tests.jobs.conftest import run_inline

    admin = make_client("admin")
    [training] = install_demo(DemoModel("digits-sisa", "sisa", TINY_SISA, {"default_method": "sisa"}))
    assert run_inline(training)["status"] == "succeeded"
    shards = api.get("/v1/jobs?kind=train_shard", headers=admin.headers).json()
    assert len(shards) == 4 and {j["status"] for j in shards} == {"succeeded"}
    parent = api.get(f"/v1/jobs/{training}", headers=admin.headers).json()
    assert sorted(parent["report"]["fanout"]["jobs"]) == sorted(j["id"] for j in shards)

    with session_scope() as session:
        [version] = registry.list_versions(session, registry.get_model(session, "digits-sisa"))
        dataset = registry.get_dataset(session, "digits")
        keys = registry.snapshot_record_keys(session, registry.get_snapshot(session, version.snapshot_id))
        source = (dataset.uri, dataset.format, dict(dataset.schema))
    whole = engine.fit("sisa", TINY_SISA, engine.load_dataset(*source).select(keys), 0)
    assert hashlib.sha256(whole.state_bytes()).hexdigest() == version.artifact_sha256
    # The shards' scratch states (no artifact row names them) are gone once assembled.
    from app.registry import artifacts

    scratch = [api.get(f"/v1/jobs/{j['id']}", headers=admin.headers).json()["report"]["state_uri"] for j in shards]
    assert len(scratch) == 4 and not any(artifacts.exists(uri) for uri in scratch)


def test_a_shard_job_that_fails_fails_its_training_job(env, api, make_client, install_demo):
    from app.jobs import service
    from app.registry import service as registry
    from tests.jobs.conftest import job_state, run_inline

    [training] = install_demo(DemoModel("digits-sisa", "sisa", TINY_SISA, {"default_method": "sisa"}))
    assert service.execute(training, "worker-a") is None  # fanned out, waiting for its shards
    assert job_state(training)["status"] == "queued"
    (registry.data_root() / "demo" / "digits.parquet").unlink()
    state = run_inline(training)
    assert state["status"] == "failed" and state["error"].startswith("ShardJobFailed")
    assert _versions("digits-sisa") == []
