"""Provenance per record: a source column (or one source for the file) and the ingestion
time are stored on every record; lineage says which versions hold a source's records."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.registry.factory import SCHEMA, ingested, rows


def _provenance(dataset_id: str) -> list[tuple[str, str | None, object]]:
    from app.core.database import session_scope
    from app.registry.models import DataRecord

    with session_scope() as session:
        return list(session.execute(
            select(DataRecord.record_key, DataRecord.source, DataRecord.ingested_at)
            .where(DataRecord.dataset_id == dataset_id).order_by(DataRecord.row_index)).tuples())


@pytest.mark.parametrize("fmt", ["parquet", "csv", "npz"])
def test_each_record_keeps_its_source_and_ingestion_time(env, backend, fmt):
    data = rows(60) | {"feed": [("vendor-x" if i % 3 == 0 else "vendor-y") for i in range(60)]}
    dataset = ingested(f"fed-{fmt}", data, fmt, schema=SCHEMA | {"source_column": "feed"})
    assert dataset.status == "ready", dataset.error
    stored = _provenance(dataset.id)
    assert [source for _, source, _ in stored] == data["feed"]
    times = {at for _, _, at in stored}
    assert len(times) == 1 and None not in times
    assert times.pop() <= dataset.ingested_at


def test_one_source_for_the_whole_file(env):
    dataset = ingested("licensed", rows(10), schema=SCHEMA | {"source": "licence-2026"})
    assert {source for _, source, _ in _provenance(dataset.id)} == {"licence-2026"}


def test_source_column_and_file_source_are_exclusive(env, api, make_client):
    ml = make_client("ml")
    body = {"name": "both", "uri": "x.parquet", "format": "parquet",
            "schema": SCHEMA | {"source_column": "feed", "source": "one"}}
    response = api.post("/v1/datasets", json=body, headers=ml.headers)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")


def test_a_source_value_too_long_fails_the_ingestion(env):
    data = rows(3) | {"feed": ["ok", "x" * 201, "ok"]}
    dataset = ingested("long-source", data, schema=SCHEMA | {"source_column": "feed"})
    assert dataset.status == "failed" and "source column 'feed'" in dataset.error


@pytest.mark.slow  # trains a model version first
def test_lineage_names_the_versions_holding_a_source(env, api, make_client, install_demo):
    from app.core.database import session_scope
    from app.demo import DemoModel
    from app.registry import service as registry
    from tests.jobs.conftest import TINY_MLP, run_inline

    ml = make_client("ml")
    [training] = install_demo(DemoModel("digits-mlp", "mlp", TINY_MLP, {"default_method": "retrain"}))
    run_inline(training)
    feed_a = api.get("/v1/lineage/datasets/digits/sources/feed-a", headers=ml.headers)
    assert feed_a.status_code == 200, feed_a.text
    body = feed_a.json()
    assert body["record_count"] == len([i for i in range(1797) if i % 10 == 3])
    [version] = body["model_versions"]
    assert version["number"] == 1 and body["still_contained"] is True
    with session_scope() as session:
        model = registry.get_model(session, "digits-mlp")
        snapshot = registry.get_snapshot(session, registry.get_version(session, model, 1).snapshot_id)
        trained = set(registry.snapshot_record_keys(session, snapshot))
    assert version["record_count"] == len({f"digit-{i:04d}" for i in range(1797) if i % 10 == 3} & trained) > 0
    unknown = api.get("/v1/lineage/datasets/digits/sources/feed-z", headers=ml.headers).json()
    assert unknown["record_count"] == 0 and unknown["model_versions"] == []
    assert api.get("/v1/lineage/datasets/nope/sources/feed-a", headers=ml.headers).status_code == 404
