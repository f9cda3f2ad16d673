"""A dataset at an fsspec URL (not a local path) is ingested and trained on through the same opener."""

from __future__ import annotations

import io

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from tests.jobs.conftest import TINY_MLP, run_inline
from tests.registry.factory import SCHEMA, rows


def test_a_dataset_on_an_object_store_trains(env, api, make_client, monkeypatch):
    from app.core.database import session_scope
    from app.registry import service
    from tests.conftest import reset_caches

    monkeypatch.setenv("UNLEARND_DATASET_REMOTE_PREFIXES", '["memory://unlearnd-test-bucket/"]')
    reset_caches()

    # fsspec's in-memory filesystem stands in for s3:// or gs:// (same interface, no network).
    buffer = io.BytesIO()
    pq.write_table(pa.table(rows(60)), buffer)
    uri = "memory://unlearnd-test-bucket/people.parquet"
    with fsspec.open(uri, "wb") as remote:
        remote.write(buffer.getvalue())
    try:
        with session_scope() as session:
            dataset_id = service.register_dataset(session, name="remote", uri=uri, fmt="parquet", schema=SCHEMA,
                                                  actor="test").id
        assert service.ingest_dataset(dataset_id).status == "ready"
        ml = make_client("ml")
        created = api.post("/v1/models", headers=ml.headers, json={
            "name": "remote-mlp", "adapter": "mlp", "hyperparameters": TINY_MLP, "dataset": "remote"})
        assert created.status_code == 201, created.text
        job = api.post("/v1/models/remote-mlp/train", headers=ml.headers)
        assert job.status_code == 202, job.text
        state = run_inline(job.json()["id"])
        assert state["status"] == "succeeded", state
        versions = api.get("/v1/models/remote-mlp/versions", headers=ml.headers).json()
        assert [v["state"] for v in versions] == ["active"]
    finally:
        fsspec.filesystem("memory").rm(uri)
