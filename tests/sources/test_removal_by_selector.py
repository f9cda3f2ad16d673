"""Removal requests by selector: a whole dataset, one source, or rows ingested before a
time, through the same request resource and pipeline as a subject's request."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.demo import DIGITS_SCHEMA, DemoModel
from tests.jobs.conftest import TINY_MLP, wait_for, wait_job

FEED_A = {f"digit-{i:04d}" for i in range(1797) if i % 10 == 3}
BODY = {"selector": {"dataset": "digits", "source": "feed-a"}, "legal_basis": "data_quality",
        "reason": "vendor feed-a was found to be poisoned"}
# finetune asks for an approximate method; removing a whole feed (10%) must go exact directly.
MLP = DemoModel("digits-mlp", "mlp", TINY_MLP, {"default_method": "finetune", "batching_window_hours": 0.0})


def _keys(api):
    from app.core.signing import public_key_from_jwk

    return {jwk["kid"]: public_key_from_jwk(jwk) for jwk in api.get("/.well-known/unlearnd-keys").json()["keys"]}


def test_who_may_send_a_selector_and_what_it_needs(env, api, make_client, install_demo):
    portal, ml, admin = make_client("portal"), make_client("ml"), make_client("admin")
    install_demo()
    refused = api.post("/v1/deletion-requests", json=BODY, headers=portal.headers)
    assert refused.status_code == 403, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    # An ml key removes data by selector, never a person by identifier.
    subject = {"subject": [{"type": "user_id", "value": "demo-subject-1"}], "legal_basis": "gdpr_art17"}
    assert api.post("/v1/deletion-requests", json=subject, headers=ml.headers).status_code == 403
    for body, field in (({**BODY, "reason": None}, "reason"),
                        ({**BODY, "selector": {"dataset": "nope"}}, "selector.dataset"),
                        ({**BODY, **subject, "legal_basis": "data_quality"}, "selector")):
        response = api.post("/v1/deletion-requests", json=body, headers=admin.headers)
        assert response.status_code == 422, response.text
        assert field in response.text
    accepted = api.post("/v1/deletion-requests", json=BODY, headers=ml.headers)
    assert accepted.status_code == 202, accepted.text
    request = accepted.json()
    assert request["selector"] == BODY["selector"] and request["reason"] == BODY["reason"]
    # No model trained on it yet: only the records are forgotten.
    assert request["affected"]["record_count"] == len(FEED_A)
    assert request["legal_basis"] == "data_quality"

    # The ml key reads back the removals it submitted, and only those; certificates stay with
    # portals, auditors and admins.
    mine = api.get(f"/v1/deletion-requests/{request['id']}", headers=ml.headers)
    assert mine.status_code == 200, mine.text
    assert mine.json()["selector"] == BODY["selector"] and mine.json()["reason"] == BODY["reason"]
    assert [r["id"] for r in api.get("/v1/deletion-requests", headers=ml.headers).json()["items"]] == [request["id"]]
    other = make_client("ml")
    assert api.get(f"/v1/deletion-requests/{request['id']}", headers=other.headers).status_code == 404
    assert api.get("/v1/deletion-requests", headers=other.headers).json()["items"] == []
    assert api.get(f"/v1/deletion-requests/{request['id']}/certificate", headers=ml.headers).status_code == 403


def test_selectors_by_dataset_and_by_ingestion_time(env, api, make_client, install_demo):
    from datetime import UTC, datetime, timedelta

    admin = make_client("admin")
    install_demo()
    later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    earlier = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    counts = {}
    for name, selector in (("all", {"dataset": "digits"}), ("before-later", {"dataset": "digits", "ingested_before": later}),
                           ("before-earlier", {"dataset": "digits", "ingested_before": earlier})):
        body = {"selector": selector, "legal_basis": "contract", "reason": "licence ended", "external_ref": name}
        response = api.post("/v1/deletion-requests", json=body, headers=admin.headers)
        assert response.status_code == 202, response.text
        counts[name] = response.json()["affected"]["record_count"]
    assert counts["all"] == 1797
    # The first request is still open (its records are at stake), but it resolves the same rows.
    assert counts["before-later"] == 1797 and counts["before-earlier"] == 0


@pytest.mark.slow
def test_removing_a_source_end_to_end_with_a_worker(env, api, make_client, install_demo, start_worker):
    import hashlib

    import pyarrow.parquet as pq

    from app.certificates.verify import verify_certificate
    from app.core.database import session_scope
    from app.lineage import proofs
    from app.lineage import service as lineage
    from app.registry import service as registry
    from app.registry.models import ModelVersion

    ml, admin = make_client("ml"), make_client("admin")
    [training] = install_demo(MLP)
    original = registry.data_root() / "demo" / "digits.parquet"
    original_bytes = original.read_bytes()
    original_sha256 = hashlib.sha256(original_bytes).hexdigest()
    start_worker()
    wait_job(training)
    before = api.get("/v1/lineage/datasets/digits/sources/feed-a", headers=ml.headers).json()
    [held] = before["model_versions"]
    assert held["record_count"] > 0 and before["still_contained"]

    request = api.post("/v1/deletion-requests", json=BODY, headers=ml.headers).json()
    assert request["status"] == "scheduled" and request["affected"]["model_versions"][0]["id"] == held["id"]
    batch = api.post("/v1/models/digits-mlp/unlearn-now", headers=admin.headers)
    assert batch.status_code == 202, batch.text
    job_id = batch.json()["job"]["id"]
    wait_job(job_id)
    job = api.get(f"/v1/jobs/{job_id}", headers=admin.headers).json()
    assert job["method"] == "retrain" and job["method_used"] == "retrain"
    large = job["report"]["plan"]["large_removal"]
    assert large["policy_method"] == "finetune" and large["fraction"] >= large["threshold"] == 0.1

    versions = api.get("/v1/models/digits-mlp/versions", headers=admin.headers).json()
    assert [(v["number"], v["state"]) for v in versions] == [(1, "purged"), (2, "active")]
    with session_scope() as session:
        result = session.get(ModelVersion, versions[1]["id"])
        trained = set(registry.snapshot_record_keys(session, registry.get_snapshot(session, result.snapshot_id)))
        assert not trained & FEED_A and len(trained) > 1000
        found = lineage.membership_proofs(session, result.snapshot_id, sorted(FEED_A))
    assert {p["kind"] for p in found} == {proofs.NON_INCLUSION}
    # Each proof verifies (verify_proof raises otherwise) and claims absence.
    assert all("is not in the snapshot" in proofs.verify_proof(p) for p in found)

    # The ml key that submitted the removal follows it to completion.
    done = wait_for(lambda: (r := api.get(f"/v1/deletion-requests/{request['id']}", headers=ml.headers).json())
                    ["status"] == "completed" and r, what="request completed")
    assert done["outcome"] == "forgotten" and done["guarantee"] == "exact"
    after = api.get("/v1/lineage/datasets/digits/sources/feed-a", headers=ml.headers).json()
    assert after["still_contained"] is False and after["forgotten_count"] == len(FEED_A)
    certificate = wait_for(lambda: (r := api.get(f"/v1/deletion-requests/{request['id']}/certificate",
                                                headers=admin.headers)).status_code == 200 and r,
                           timeout=120, what="certificate issued by the worker")
    document = verify_certificate(certificate.content, _keys(api)).document
    assert document["request"]["selector"] == BODY["selector"]
    assert document["forgotten_records"]["count"] == len(FEED_A)
    assert "selected by dataset 'digits', source 'feed-a'" in document["claim"]
    assert json.loads(certificate.content)["certificate"]["models"][0]["unlearning"][0]["lineage_proofs"]

    # The training rows themselves left the managed file: a new content-addressed file without
    # one row of feed-a, the dataset pointing at it, the old bytes gone.
    dataset = api.get("/v1/datasets/digits", headers=ml.headers).json()
    rewritten = Path(dataset["uri"])
    assert rewritten.parent == registry.data_root() / "managed" and not original.exists()
    new_sha256 = hashlib.sha256(rewritten.read_bytes()).hexdigest()
    assert rewritten.name == f"{new_sha256}.parquet"
    table = pq.read_table(rewritten)
    assert table.num_rows == 1797 - len(FEED_A)
    assert not set(table.column("record_key").to_pylist()) & FEED_A
    assert set(table.column("source").to_pylist()) == {"feed-b"}
    [erased] = document["training_data"]
    assert (erased["status"], erased["managed"], erased["rows_erased"]) == ("erased", True, len(FEED_A))
    assert (erased["old_file_sha256"], erased["new_file_sha256"]) == (original_sha256, new_sha256)
    assert erased["old_bytes_destroyed"] is True
    assert "erased from the managed dataset store" in document["claim"]
    # The file still trains: the next run reads the rewritten file by record key.
    again = api.post("/v1/models/digits-mlp/train", json={}, headers=ml.headers)
    assert again.status_code == 202, again.text
    wait_job(again.json()["id"])

    # Next month's export still carries feed-a: re-ingested, its rows stay out.
    (registry.data_root() / "export.parquet").write_bytes(original_bytes)
    registered = api.post("/v1/datasets", headers=ml.headers, json={
        "name": "digits-export", "uri": "export.parquet", "format": "parquet", "schema": DIGITS_SCHEMA})
    assert registered.status_code == 202, registered.text
    export = wait_for(lambda: (d := api.get("/v1/datasets/digits-export", headers=ml.headers).json())["status"]
                      == "ready" and Path(d["uri"]).parent.name == "managed" and d, what="export ingested and rewritten")
    assert export["record_count"] == 1797 and export["suppressed_count"] == len(FEED_A)
    assert not set(pq.read_table(export["uri"]).column("record_key").to_pylist()) & FEED_A
    assert not (registry.data_root() / "export.parquet").exists()
    model = api.post("/v1/models", headers=ml.headers, json={
        "name": "export-mlp", "adapter": "mlp", "hyperparameters": TINY_MLP, "dataset": "digits-export"})
    assert model.status_code == 201, model.text
    trained = api.post("/v1/models/export-mlp/train", json={}, headers=ml.headers)
    wait_job(trained.json()["id"])
    with session_scope() as session:
        version = registry.get_version(session, registry.get_model(session, "export-mlp"), 1)
        seen = set(registry.snapshot_record_keys(session, registry.get_snapshot(session, version.snapshot_id)))
    assert seen and not seen & FEED_A
