"""Lineage answers against a brute-force recomputation, purges, version lineage, HTTP."""

from __future__ import annotations

import random

import pytest

from tests.registry.factory import ingested, model_with_versions, rows

PEPPER = b"test-pepper-not-secret"


def _build_random_registry(rng: random.Random) -> dict:
    """Two datasets sharing subjects, models with versions and SISA-style shard artifacts.
    Returns the ground truth the registry was built from."""
    from app.core.database import session_scope
    from app.registry import artifacts, service
    from app.registry.schemas import ArtifactSpec

    truth = {"keys": {}, "email": {}, "snapshots": {}, "versions": {}, "artifacts": {}}
    for ds in ("alpha", "beta"):
        n = rng.randint(20, 45)
        data = rows(n, subjects=rng.randint(5, 15))
        ingested(ds, data)
        truth["keys"][ds] = set(data["id"])
        for key, email in zip(data["id"], data["email"], strict=True):
            truth["email"][(ds, key)] = email.lower()
    with session_scope() as session:
        for m in range(rng.randint(2, 3)):
            ds = rng.choice(["alpha", "beta"])
            dataset = service.get_dataset(session, ds)
            model = service.register_model(session, name=f"model{m}", adapter="mlp", hyperparameters={},
                                           dataset_name=ds, policy=None, actor="t")
            parent = None
            keys = sorted(truth["keys"][ds])
            for _ in range(rng.randint(1, 4)):
                excluded = set(rng.sample(keys, rng.randint(0, len(keys) // 3)))
                ids = service.record_ids_for_keys(session, dataset, excluded).values()
                snap = service.create_snapshot(session, dataset.id, exclude_record_ids=ids)
                truth["snapshots"][snap.id] = (ds, set(keys) - excluded)
                specs = []
                for shard in range(rng.randint(0, 2)):
                    part = set(rng.sample(sorted(set(keys) - excluded), 5))
                    ids = service.record_ids_for_keys(session, dataset, set(keys) - part).values()
                    shard_snap = service.create_snapshot(session, dataset.id, exclude_record_ids=ids)
                    truth["snapshots"][shard_snap.id] = (ds, part)
                    uri, digest = artifacts.put_bytes(rng.randbytes(16))
                    specs.append(ArtifactSpec(uri=uri, sha256=digest, kind="shard", shard=shard,
                                              snapshot_id=shard_snap.id))
                uri, digest = artifacts.put_bytes(rng.randbytes(16))
                specs.append(ArtifactSpec(uri=uri, sha256=digest))
                version = service.add_version(session, model=model, snapshot=snap, parent=parent, artifacts=specs,
                                              actor="t")
                truth["versions"][version.id] = {"model": model.name, "number": version.number, "snapshot": snap.id,
                                                 "purged": False,
                                                 "parts": [s.snapshot_id or snap.id for s in specs]}
                parent = version
        for vid in rng.sample(sorted(truth["versions"]), k=len(truth["versions"]) // 3):
            service.purge_version(session, session.get(service.ModelVersion, vid), actor="t")
            truth["versions"][vid]["purged"] = True
    return truth


def _expected_versions(truth: dict, ds: str, keys: set[str]) -> dict[str, bool]:
    """version id -> purged, for every version whose data or any part saw one of ``keys``."""
    hit = {sid for sid, (sds, members) in truth["snapshots"].items() if sds == ds and members & keys}
    return {vid: v["purged"] for vid, v in truth["versions"].items() if hit & {v["snapshot"], *v["parts"]}}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lineage_matches_brute_force_on_a_random_registry(env, backend, seed):
    from app.core.database import session_scope
    from app.core.hashing import subject_hash
    from app.lineage import service as lineage

    rng = random.Random(seed)
    truth = _build_random_registry(rng)
    with session_scope() as session:
        for ds, keys in truth["keys"].items():
            for key in rng.sample(sorted(keys), 8):
                got = lineage.record_lineage(session, ds, key)
                expected = _expected_versions(truth, ds, {key})
                assert {v.id for v in got.model_versions} == set(expected)
                assert {s.id for s in got.snapshots} == {
                    sid for sid, (sds, members) in truth["snapshots"].items() if sds == ds and key in members
                }
                assert got.still_contained == (not all(expected.values()) if expected else False)
        emails = sorted(set(truth["email"].values()))
        for email in rng.sample(emails, 5):
            hashed = subject_hash("email", email, PEPPER)
            resolution = lineage.resolve(session, subject_hashes=[hashed], record_refs=[], scope_models=None)
            mine = {pair for pair, e in truth["email"].items() if e == email}
            assert {(r.dataset, r.record_key) for r in resolution.records} == mine
            expected = {}
            for ds in ("alpha", "beta"):
                expected.update(_expected_versions(truth, ds, {k for d, k in mine if d == ds}))
            assert {v.id for v in resolution.model_versions} == {vid for vid, purged in expected.items() if not purged}
            subject = lineage.subject_lineage(session, hashed)
            assert {(r.dataset, r.record_key) for r in subject.records} == mine


def test_resolve_by_record_refs_reports_unknowns_and_scopes(env, backend):
    from app.core.database import session_scope
    from app.lineage import service as lineage

    ingested("ds", rows(20))
    model_with_versions("ds", "keep", [[], ["r00001"]])
    model_with_versions("ds", "other", [[]])
    with session_scope() as session:
        resolution = lineage.resolve(
            session, subject_hashes=[], scope_models=["keep"],
            record_refs=[("ds", "r00001"), ("ds", "r00002"), ("ds", "missing"), ("nosuch", "x")],
        )
    assert [r.record_key for r in resolution.records] == ["r00001", "r00002"]
    assert resolution.unknown_datasets == ["nosuch"]
    assert resolution.unknown_records == [("ds", "missing")]
    got = {(v.model, v.number): set(v.record_ids) for v in resolution.model_versions}
    ids = {r.record_key: r.id for r in resolution.records}
    assert got == {("keep", 1): {ids["r00001"], ids["r00002"]}, ("keep", 2): {ids["r00002"]}}


def test_purge_deletes_unshared_bytes_and_clears_lineage(env, backend):
    from app.core.database import session_scope
    from app.lineage import service as lineage
    from app.registry import artifacts, service
    from app.registry.schemas import ArtifactSpec

    ingested("ds", rows(10))
    with session_scope() as session:
        dataset = service.get_dataset(session, "ds")
        model = service.register_model(session, name="sisa", adapter="mlp", hyperparameters={}, dataset_name="ds",
                                       policy=None, actor="t")
        snap = service.create_snapshot(session, dataset.id)
        shared_uri, shared_sha = artifacts.put_bytes(b"untouched shard")
        own_uri, own_sha = artifacts.put_bytes(b"v1 weights")
        v1 = service.add_version(session, model=model, snapshot=snap, actor="t", artifacts=[
            ArtifactSpec(uri=own_uri, sha256=own_sha), ArtifactSpec(uri=shared_uri, sha256=shared_sha, kind="shard")])
        new_uri, new_sha = artifacts.put_bytes(b"v2 weights")
        v2 = service.add_version(session, model=model, snapshot=snap, parent=v1, origin="unlearned", actor="t",
                                 artifacts=[ArtifactSpec(uri=new_uri, sha256=new_sha),
                                            ArtifactSpec(uri=shared_uri, sha256=shared_sha, kind="shard")])
        assert v1.state == "superseded" and v2.state == "active"
        service.purge_version(session, v1, actor="t")
    assert not artifacts.exists(own_uri) and artifacts.exists(shared_uri) and artifacts.exists(new_uri)
    with session_scope() as session:
        purged = service.get_version(session, service.get_model(session, "sisa"), 1)
        assert purged.state == "purged" and purged.artifact_sha256 == own_sha and purged.purged_at
        before = lineage.record_lineage(session, "ds", "r00003")
        assert before.still_contained
        service.purge_version(session, service.get_version(session, service.get_model(session, "sisa"), 2), "t")
    assert not artifacts.exists(shared_uri)
    with session_scope() as session:
        after = lineage.record_lineage(session, "ds", "r00003")
        assert not after.still_contained and {v.state for v in after.model_versions} == {"purged"}


def test_forgotten_records_leave_later_snapshots(env, backend):
    from app.core.database import session_scope
    from app.registry import service

    ingested("ds", rows(12))
    with session_scope() as session:
        dataset = service.get_dataset(session, "ds")
        ids = service.record_ids_for_keys(session, dataset, ["r00002", "r00007"])
        assert service.mark_records_forgotten(session, ids.values(), actor="t") == 2
        snap = service.create_snapshot(session, dataset.id)
        keys = service.snapshot_record_keys(session, snap)
    assert "r00002" not in keys and "r00007" not in keys and len(keys) == 10


def test_version_lineage_over_http(api, make_client, backend):
    ingested("ds", rows(30))
    model_with_versions("ds", "chain", [[], ["r00003"], ["r00003", "r00009", "r00010"]])
    reader = make_client("ml")
    body = api.get("/v1/models/chain/versions/2/lineage", headers=reader.headers).json()
    assert [a["number"] for a in body["ancestors"]] == [1]
    assert [d["number"] for d in body["descendants"]] == [3]
    edges = {(e["parent"], e["child"]): e for e in body["edges"]}
    assert edges[(1, 2)]["removed_record_keys"] == ["r00003"]
    assert edges[(2, 3)]["removed_record_keys"] == ["r00009", "r00010"] and edges[(2, 3)]["removed_count"] == 2
    record = api.get("/v1/lineage/records/ds/r00009", headers=reader.headers).json()
    assert sorted(v["number"] for v in record["model_versions"]) == [1, 2]
    subject = api.post("/v1/lineage/subjects", json={"identifier_type": "email", "identifier": "PERSON3@example.org"},
                       headers=make_client("admin").headers).json()
    assert [r["record_key"] for r in subject["records"]] == ["r00003"] and subject["still_contained"]
    portal = make_client("portal")
    assert api.get("/v1/lineage/records/ds/r00009", headers=portal.headers).status_code == 403
    assert api.get("/v1/lineage/records/ds/nope", headers=reader.headers).status_code == 404
    bad = api.post("/v1/lineage/subjects", json={"identifier_type": "email", "identifier": "nope"},
                   headers=make_client("admin").headers)
    assert bad.status_code == 422 and bad.json()["field"] == "identifier"


def test_import_version_over_http_checks_artifacts(api, make_client, backend):
    from app.core.database import session_scope
    from app.registry import artifacts, service

    ingested("ds", rows(8))
    ml = make_client("ml")
    created = api.post("/v1/models", json={"name": "ext", "adapter": "logreg", "dataset": "ds",
                                           "policy": {"default_method": "newton", "thresholds": {"max_mia_auc": 0.6}}},
                       headers=ml.headers)
    assert created.status_code == 201, created.text
    assert api.post("/v1/models", json={"name": "x", "adapter": "logreg", "dataset": "none"},
                    headers=ml.headers).json()["field"] == "dataset"
    with session_scope() as session:
        snap = service.create_snapshot(session, service.get_dataset(session, "ds").id)
    uri, digest = artifacts.put_bytes(b"external weights")
    wrong = api.post("/v1/models/ext/versions", headers=ml.headers, json={
        "snapshot_id": snap.id, "artifacts": [{"uri": uri, "sha256": "0" * 64}]})
    assert wrong.status_code == 422 and wrong.json()["field"] == "artifacts.0.sha256"
    ok = api.post("/v1/models/ext/versions", headers=ml.headers, json={
        "snapshot_id": snap.id, "artifacts": [{"uri": uri, "sha256": digest}], "metrics": {"accuracy": 0.9}})
    assert ok.status_code == 201, ok.text
    assert ok.json()["origin"] == "imported" and ok.json()["number"] == 1 and ok.json()["artifact_sha256"] == digest


def test_temporary_models_are_in_lineage_and_hold_the_records_until_destroyed(api, make_client, backend):
    """A qualification study's in-memory models trained on a snapshot: record, subject and
    source lineage list them, and while they are not destroyed the records are still
    contained (even with no model version at all); once closed they are history."""
    from app.core.database import session_scope, utcnow
    from app.registry import service

    ingested("ds", rows(12))
    with session_scope() as session:
        dataset = service.get_dataset(session, "ds")
        model = service.register_model(session, name="m", adapter="mlp", hyperparameters={}, dataset_name="ds",
                                       policy=None, actor="t")
        snapshot = service.create_snapshot(session, dataset.id)
        snapshot_id, model_id = snapshot.id, model.id
        service.open_temporary_models(session, model_id=model_id, snapshot_id=snapshot_id, purpose="qualification",
                                      reference_id="study-1", storage="worker memory only")
    reader, admin = make_client("ml"), make_client("admin")
    record = api.get("/v1/lineage/records/ds/r00004", headers=reader.headers).json()
    assert record["model_versions"] == [] and record["still_contained"] is True
    [held] = record["temporary_models"]
    assert held["purpose"] == "qualification" and held["reference_id"] == "study-1" and held["model"] == "m"
    assert held["snapshot_id"] == snapshot_id and held["destroyed_at"] is None and held["models"] is None
    subject = api.post("/v1/lineage/subjects", json={"identifier_type": "email", "identifier": "person4@example.org"},
                       headers=admin.headers).json()
    assert subject["still_contained"] and subject["records"][0]["temporary_models"][0]["reference_id"] == "study-1"

    counts = {"retrain_reference": 4, "retrain_ceiling": 4, "original": 4, "unlearned": 4}
    with session_scope() as session:
        service.close_temporary_models(session, "qualification", "study-1", models=counts, destroyed_at=utcnow())
    record = api.get("/v1/lineage/records/ds/r00004", headers=reader.headers).json()
    [held] = record["temporary_models"]
    assert held["destroyed_at"] is not None and held["models"] == counts and record["still_contained"] is False
    with session_scope() as session:
        # A later snapshot without the record: a set trained on it says nothing about r00004.
        ids = service.record_ids_for_keys(session, service.get_dataset(session, "ds"), ["r00004"])
        service.mark_records_forgotten(session, ids.values(), actor="t")
        later = service.create_snapshot(session, service.get_dataset(session, "ds").id)
        service.open_temporary_models(session, model_id=model_id, snapshot_id=later.id, purpose="qualification",
                                      reference_id="study-2", storage="worker memory only")
    record = api.get("/v1/lineage/records/ds/r00004", headers=reader.headers).json()
    assert [t["reference_id"] for t in record["temporary_models"]] == ["study-1"] and not record["still_contained"]
    other = api.get("/v1/lineage/records/ds/r00005", headers=reader.headers).json()
    assert [t["reference_id"] for t in other["temporary_models"]] == ["study-1", "study-2"]
    assert other["still_contained"]
