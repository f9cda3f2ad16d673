"""No API key is a way to read or delete files on the host.

A corpus of hostile URIs (plain paths, file://, fsspec's other schemes and chains, ../,
symlinks, encoded dots, long names, NUL) is refused with 422 for datasets and artifacts
alike; nothing is registered or read, and a canary outside the store survives a purge of
every version, including versions whose rows were written before the rule.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.registry.factory import SCHEMA, data_root, ingested, rows, write


def _hostile(canary: Path, store_file: Path) -> list[str]:
    """URIs that name something outside the service's folders, or try to."""
    return [
        str(canary),
        f"file://{canary}",
        f"file://localhost{canary}",
        f"FILE://{canary}",
        f"file:{canary}",
        f"local://{canary}",
        f"local:{canary}",
        f"simplecache::file://{canary}",
        f"filecache::file://{canary}",
        f"blockcache::file://{canary}",
        f"dir::file://{canary.parent}",
        f"zip://x.csv::file://{canary}",
        f"tar://x.csv::file://{canary}",
        "data:text/csv;base64,aWQsZW1haWwKMSxhQGIuYwo=",
        "data:,id%2Cemail",
        "ftp://127.0.0.1:1/x.csv",
        "ftp://user:secret@127.0.0.1:21/x.csv",
        "memory://x.csv",
        "memory:///x.csv",
        "http://127.0.0.1:1/x.csv",
        "https://example.invalid/x.csv",
        "s3://bucket/x.csv",
        "sftp://127.0.0.1:22/etc/passwd",
        "reference://x",
        "/etc/passwd",
        "../outside/secret.csv",
        "../../../../../../etc/passwd",
        "sub/../../outside/secret.csv",
        "%2e%2e/outside/secret.csv",
        "file:///%2e%2e/etc/passwd",
        "link-out.csv",  # a symlink under the root pointing at the canary
        "linked-dir/secret.csv",  # a directory symlink under the root
        "dangling.csv",  # a symlink to nothing
        "data.csv\x00.parquet",
        "data.csv\n",
        "a" * 5000 + ".csv",
        "C:\\Windows\\win.ini",
        str(store_file),
        f"file://{store_file}",
        "cas://sha256/../../outside/secret.csv",
        "cas://sha256/" + "A" * 64,
        "cas://sha512/" + "0" * 64,
    ]


@pytest.fixture
def hostile(env, tmp_path):
    """(canary outside every root, the hostile corpus). The canary is a valid CSV, so a
    resolver that let one through would really read it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    canary = outside / "secret.csv"
    canary.write_text("id,email,label,f1,f2\nr1,canary@example.org,0,1,2\n")
    root = data_root()
    (root / "link-out.csv").symlink_to(canary)
    (root / "linked-dir").symlink_to(outside, target_is_directory=True)
    (root / "dangling.csv").symlink_to(tmp_path / "nothing-here.csv")
    from app.registry import artifacts

    uri, _ = artifacts.put_bytes(b"stored bytes")
    store_file = artifacts.store_root() / uri[-64:][:2] / uri[-64:]
    corpus = _hostile(canary, store_file)
    assert len(corpus) >= 30 and len(set(corpus)) == len(corpus)
    return canary, corpus


def _count(model) -> int:
    from app.core.database import session_scope

    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_every_hostile_dataset_uri_is_refused_before_anything_is_read(api, make_client, hostile, backend):
    from app.registry.models import Dataset

    canary, corpus = hostile
    ml = make_client("ml")
    before = canary.stat().st_atime_ns
    for index, uri in enumerate(corpus):
        response = api.post("/v1/datasets", headers=ml.headers,
                            json={"name": f"h{index}", "uri": uri, "format": "csv", "schema": SCHEMA})
        assert response.status_code == 422, (uri[:80], response.text)
        problem = response.json()
        assert problem["field"] == "uri", uri[:80]
        # Refusals never echo the URI: no host, port, credentials or path comes back.
        for secret in ("127.0.0.1", "secret", str(canary.parent)):
            assert secret not in problem["detail"], (uri[:80], problem["detail"])
    assert _count(Dataset) == 0
    assert canary.stat().st_atime_ns == before


def test_ftp_refusals_are_identical_whatever_the_port(api, make_client, env):
    """No port-probe oracle: an open and a closed port read the same."""
    ml = make_client("ml")
    details = {
        api.post("/v1/datasets", headers=ml.headers, json={"name": f"p{port}", "uri": f"ftp://127.0.0.1:{port}/x.csv",
                                                           "format": "csv", "schema": SCHEMA}).json()["detail"]
        for port in (1, 5432, 6379)
    }
    assert len(details) == 1


def test_a_worker_rechecks_the_location_when_it_opens_the_file(hostile, backend):
    """A dataset row written before the rule (or a link swapped in after registration) is
    refused when the worker opens it: it fails without reading a byte."""
    from app.core.database import session_scope
    from app.registry import ingestion
    from app.registry.models import DataRecord, Dataset

    canary, _ = hostile
    inside = write(rows(4), "csv", "swapped")
    with session_scope() as session:
        legacy = Dataset(name="legacy", uri=f"simplecache::file://{canary}", format="csv", schema=SCHEMA)
        swapped = Dataset(name="swapped", uri=str(inside), format="csv", schema=SCHEMA)
        session.add_all([legacy, swapped])
        session.flush()
        ids = legacy.id, swapped.id
    inside.unlink()
    inside.symlink_to(canary)
    for dataset_id in ids:
        done = ingestion.ingest(dataset_id)
        assert done.status == "failed" and done.error.startswith("dataset location refused"), done.error
        assert "secret" not in done.error and str(canary.parent) not in done.error
    assert _count(DataRecord) == 0


def test_training_reads_only_through_the_resolver(hostile):
    from app.jobs import engine

    canary, _ = hostile
    for uri in (str(canary), f"file://{canary}", f"local://{canary}", "link-out.csv"):
        with pytest.raises(engine.EngineInputError, match="location refused"):
            engine.load_dataset(uri, "csv", {"record_key": "id", "label": "label", "features": ["f1", "f2"]})


def test_configured_remote_prefixes_are_the_only_remote_doors(env, monkeypatch):
    from app.core.errors import InvalidInput
    from app.registry import locations
    from tests.conftest import reset_caches

    monkeypatch.setenv("UNLEARND_DATASET_REMOTE_PREFIXES", '["memory://curated/"]')
    reset_caches()
    assert locations.resolve_dataset("memory://curated/train.csv") == "memory://curated/train.csv"
    for uri in ("memory://curated/../other.csv", "memory://curated/%2e%2e/x.csv", "memory://curatedx/a.csv",
                "memory://curated/", "memory://curated//etc/passwd", "simplecache::memory://curated/a.csv",
                "memory://other/a.csv"):
        with pytest.raises(InvalidInput):
            locations.resolve_dataset(uri)


def _model_with_snapshot(api, ml) -> str:
    from app.core.database import session_scope
    from app.registry import service

    ingested("ds", rows(6))
    created = api.post("/v1/models", json={"name": "ext", "adapter": "logreg", "dataset": "ds"}, headers=ml.headers)
    assert created.status_code == 201, created.text
    with session_scope() as session:
        return service.create_snapshot(session, service.get_dataset(session, "ds").id).id


def test_every_hostile_artifact_uri_is_refused(api, make_client, hostile, backend):
    from app.registry.models import ModelVersion

    canary, corpus = hostile
    ml = make_client("ml")
    snapshot_id = _model_with_snapshot(api, ml)
    digest = hashlib.sha256(canary.read_bytes()).hexdigest()
    for uri in corpus:
        response = api.post("/v1/models/ext/versions", headers=ml.headers, json={
            "snapshot_id": snapshot_id, "artifacts": [{"uri": uri, "sha256": digest}]})
        assert response.status_code == 422, (uri[:80], response.text)
        assert response.json()["field"] in {"artifacts.0.uri", "artifacts.0.sha256"}, uri[:80]
        assert str(canary.parent) not in response.json()["detail"]
    assert _count(ModelVersion) == 0


def test_uploaded_artifacts_get_a_store_issued_uri_and_a_service_computed_hash(api, make_client, env, backend):
    ml = make_client("ml")
    snapshot_id = _model_with_snapshot(api, ml)
    payload = os.urandom(300 * 1024)  # well past the 64 KiB JSON body limit: streamed
    uploaded = api.post("/v1/artifacts", content=payload, headers={**ml.headers, "Content-Type": "application/octet-stream"})
    assert uploaded.status_code == 201, uploaded.text
    body = uploaded.json()
    assert body["sha256"] == hashlib.sha256(payload).hexdigest() and body["size_bytes"] == len(payload)
    assert body["uri"] == "cas://sha256/" + body["sha256"]
    version = api.post("/v1/models/ext/versions", headers=ml.headers, json={
        "snapshot_id": snapshot_id, "artifacts": [{"uri": body["uri"], "sha256": body["sha256"]}]})
    assert version.status_code == 201, version.text
    assert api.post("/v1/artifacts", content=b"", headers=ml.headers).status_code == 422
    assert api.post("/v1/artifacts", content=b"x", headers=make_client("portal").headers).status_code == 403


def test_an_upload_over_the_limit_is_refused_and_leaves_nothing(api, make_client, env, monkeypatch):
    from app.registry import artifacts
    from tests.conftest import reset_caches

    monkeypatch.setenv("UNLEARND_MAX_ARTIFACT_BYTES", "1000")
    reset_caches()
    ml = make_client("ml")
    response = api.post("/v1/artifacts", content=b"x" * 5000, headers=ml.headers)
    assert response.status_code == 413, response.text
    incoming = artifacts.store_root() / ".incoming"
    assert not incoming.exists() or list(incoming.iterdir()) == []


def test_a_canary_outside_the_store_survives_a_purge_of_every_version(hostile, backend):
    """Versions written before the rule (rows naming host paths and fsspec chains) and a
    store entry swapped for a link to the canary: purging them all deletes store bytes only."""
    from app.core.database import session_scope
    from app.core.errors import Conflict, InvalidInput
    from app.registry import artifacts, service
    from app.registry.models import ModelArtifact, ModelVersion, RegisteredModel, VersionState

    canary, _ = hostile
    ingested("ds", rows(4))
    kept, _ = artifacts.put_bytes(b"model bytes")
    legacy_uris = [str(canary), f"file://{canary}", f"local://{canary}", f"simplecache::file://{canary}",
                   f"dir::file://{canary.parent}", kept]
    with session_scope() as session:
        dataset = service.get_dataset(session, "ds")
        model = RegisteredModel(name="legacy", adapter="logreg", hyperparameters={}, dataset_id=dataset.id, policy={})
        session.add(model)
        session.flush()
        for number, uri in enumerate(legacy_uris, start=1):
            version = ModelVersion(model_id=model.id, number=number, artifact_uri=uri, artifact_sha256="0" * 64,
                                   state=VersionState.SUPERSEDED)
            session.add(version)
            session.flush()
            session.add(ModelArtifact(version_id=version.id, kind="model", uri=uri, sha256="0" * 64))
        versions = [v.id for v in session.scalars(select(ModelVersion).where(ModelVersion.model_id == model.id))]
    # Used as a base, such a version's bytes are not read either.
    for uri in legacy_uris[:-1]:
        with pytest.raises(InvalidInput):
            artifacts.get_bytes(uri)
    for version_id in versions:
        with session_scope() as session:
            service.purge_version(session, session.get(ModelVersion, version_id), actor="test")
    assert canary.exists() and not artifacts.exists(kept)

    # A store entry replaced by a link pointing out is refused at delete time.
    linked, _ = artifacts.put_bytes(b"other model bytes")
    target = artifacts.store_root() / linked[-64:][:2] / linked[-64:]
    target.unlink()
    target.symlink_to(canary)
    with pytest.raises(Conflict):
        artifacts.delete(linked)
    assert canary.exists()
