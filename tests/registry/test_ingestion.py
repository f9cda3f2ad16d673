"""Dataset registration and ingestion: three formats, every bad-file case, on both databases."""

from __future__ import annotations

import os

import numpy as np
import pytest
from sqlalchemy import func, select

from tests.registry.factory import SCHEMA, data_root, ingested, rows, write

PEPPER = b"test-pepper-not-secret"


def _records(dataset_id: str) -> list:
    from app.core.database import session_scope
    from app.registry.models import DataRecord

    with session_scope() as session:
        return list(session.execute(
            select(DataRecord.row_index, DataRecord.record_key, DataRecord.subject_hash, DataRecord.content_hash,
                   DataRecord.state).where(DataRecord.dataset_id == dataset_id).order_by(DataRecord.row_index)
        ))


@pytest.mark.parametrize("fmt", ["parquet", "csv", "npz"])
def test_ingests_each_format_with_keyed_subject_hashes(env, backend, fmt):
    from app.core.hashing import subject_hash

    data = rows(120, subjects=40)
    dataset = ingested(f"people-{fmt}", data, fmt)
    assert dataset.status == "ready", dataset.error
    assert dataset.record_count == 120 and dataset.progress == 1.0
    stored = _records(dataset.id)
    assert [r.record_key for r in stored] == data["id"]
    assert [r.row_index for r in stored] == list(range(120))
    # Same normalisation as the intake: case-folded e-mail, the settings pepper.
    assert stored[5].subject_hash == subject_hash("email", "person5@example.org", PEPPER)
    assert stored[5].subject_hash == stored[45].subject_hash
    assert {r.state for r in stored} == {"active"}
    dump = repr(stored)
    assert "Example.org" not in dump and "example.org" not in dump


def test_content_hash_does_not_depend_on_the_file_format(env, backend):
    data = rows(30)
    hashes = {fmt: [r.content_hash for r in _records(ingested(f"d-{fmt}", data, fmt).id)]
              for fmt in ("parquet", "csv", "npz")}
    assert hashes["parquet"] == hashes["csv"] == hashes["npz"]
    changed = dict(data, f1=[*data["f1"][:-1], 99.0])
    other = [r.content_hash for r in _records(ingested("d-changed", changed).id)]
    assert other[:-1] == hashes["parquet"][:-1] and other[-1] != hashes["parquet"][-1]


def test_npz_image_arrays_stream(env, backend):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, size=(70, 4, 4), dtype=np.uint8)
    data = {"id": np.arange(70), "email": [f"u{i}@x.org" for i in range(70)], "label": np.arange(70) % 3}
    target = data_root() / "images.npz"
    np.savez_compressed(target, images=images, **{k: np.asarray(v) for k, v in data.items()})
    from app.core.database import session_scope
    from app.registry import service

    schema = {"record_key": "id", "subject_column": "email", "identifier_type": "email", "label": "label",
              "image": "images"}
    with session_scope() as session:
        dataset_id = service.register_dataset(session, name="imgs", uri="images.npz", fmt="npz", schema=schema,
                                              actor="t").id
    dataset = service.ingest_dataset(dataset_id)
    assert dataset.status == "ready", dataset.error
    stored = _records(dataset_id)
    assert stored[3].record_key == "3" and len({r.content_hash for r in stored}) == 70


def _bad(fmt: str, case: str):
    data = rows(50)
    if case == "duplicate key":
        data["id"][40] = data["id"][3]
    elif case == "duplicate key across batches":
        data["id"][49] = data["id"][0]
    elif case == "missing column":
        del data["f2"]
    elif case == "non-numeric feature":
        data["f2"] = [str(v) if i != 30 else "abc" for i, v in enumerate(data["f2"])]
        if fmt == "parquet":
            data["f2"] = [str(v) for v in data["f2"]]
    elif case == "invalid subject":
        data["email"][17] = "not-an-email"
    return data


BAD_CASES = {
    "duplicate key": "duplicate record key 'r00003'",
    "duplicate key across batches": "duplicate record key 'r00000'",
    "missing column": "missing column(s): f2",
    "non-numeric feature": "feature column 'f2' is not numeric",
    "invalid subject": "row 17: subject column 'email': not a valid e-mail address",
}


# NPZ arrays carry one dtype each: its non-numeric case is test_npz_non_numeric_array.
BAD_FILES = [(fmt, case) for fmt in ("parquet", "csv", "npz") for case in sorted(BAD_CASES)
             if (fmt, case) != ("npz", "non-numeric feature")]


@pytest.mark.parametrize(("fmt", "case"), BAD_FILES)
def test_bad_files_fail_with_a_stored_error_and_leave_nothing(env, backend, fmt, case, monkeypatch):
    from app.registry import readers

    monkeypatch.setattr(readers, "BATCH_ROWS", 20)
    dataset = ingested(f"bad-{fmt}", _bad(fmt, case), fmt)
    assert dataset.status == "failed"
    assert BAD_CASES[case] in dataset.error
    assert "not-an-email" not in dataset.error
    assert _records(dataset.id) == [] and dataset.record_count == 0


def test_npz_non_numeric_array(env, backend):
    data = rows(10)
    data["f1"] = [f"x{i}" for i in range(10)]
    dataset = ingested("bad-npz-text", data, "npz")
    assert dataset.status == "failed" and "feature array 'f1' is not a numeric" in dataset.error


@pytest.mark.parametrize("fmt", ["parquet", "csv", "npz"])
def test_unreadable_file_fails_cleanly(env, backend, fmt):
    from app.core.database import session_scope
    from app.registry import service

    (data_root() / f"garbage.{fmt}").write_bytes(b"\x00\xff" * 100 if fmt != "csv" else b"\xff\xfe\x00bad")
    with session_scope() as session:
        dataset_id = service.register_dataset(session, name="garbage", uri=f"garbage.{fmt}", fmt=fmt,
                                              schema=SCHEMA, actor="t").id
    dataset = service.ingest_dataset(dataset_id)
    assert dataset.status == "failed" and "unreadable" in dataset.error
    assert _records(dataset_id) == []


def test_reingesting_is_idempotent(env):
    from app.registry import service

    dataset = ingested("twice", rows(15))
    again = service.ingest_dataset(dataset.id)
    assert again.status == "ready" and len(_records(dataset.id)) == 15


def _post(api, caller, **overrides):
    body = {"name": "people", "uri": "people.parquet", "format": "parquet", "schema": SCHEMA, **overrides}
    return api.post("/v1/datasets", json=body, headers=caller.headers)


def test_register_over_http_queues_ingestion_and_reports_progress(api, make_client, backend):
    from app.core.database import session_scope
    from app.core.outbox import OutboxMessage
    from app.core.queue import TaskName
    from app.registry import service

    ml = make_client("ml")
    write(rows(25), "parquet", "people")
    created = _post(api, ml)
    assert created.status_code == 202, created.text
    body = created.json()
    assert body["status"] == "pending" and body["schema"]["record_key"] == "id"
    with session_scope() as session:
        queued = session.scalars(select(OutboxMessage)).all()
    assert [(m.task_name, m.kwargs) for m in queued] == [(TaskName.INGEST_DATASET, {"dataset_id": body["id"]})]
    service.ingest_dataset(body["id"])
    shown = api.get("/v1/datasets/people", headers=make_client("auditor").headers).json()
    assert shown["status"] == "ready" and shown["record_count"] == 25 and shown["progress"] == 1.0
    assert _post(api, ml).status_code == 409


def test_path_outside_the_data_root_is_refused_before_reading(api, make_client, tmp_path):
    ml = make_client("ml")
    outside = tmp_path / "secret.parquet"
    write(rows(3), "parquet", "inside")
    os.rename(data_root() / "inside.parquet", outside)
    for uri in (str(outside), "../secret.parquet", f"file://{outside}"):
        response = _post(api, ml, uri=uri)
        assert response.status_code == 422, response.text
        assert response.json()["field"] == "uri"
    (data_root() / "link.parquet").symlink_to(outside)
    refused = _post(api, ml, uri="link.parquet")
    assert refused.status_code == 422 and "data root" in refused.json()["detail"]
    from app.core.database import session_scope
    from app.registry.models import Dataset

    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Dataset)) == 0


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"format": "xlsx"}, "format"),
        ({"schema": {"record_key": "id"}}, "schema"),
        ({"schema": {**SCHEMA, "identifier_type": "dna"}}, "schema.identifier_type"),
        ({"schema": {**SCHEMA, "image": "pixels"}}, "schema.image"),
        ({"uri": "missing.parquet"}, "uri"),
        ({"uri": "nope://bucket/x"}, "uri"),
    ],
)
def test_bad_registration_names_the_field(api, make_client, overrides, field):
    write(rows(3), "parquet", "people")
    response = _post(api, make_client("admin"), **overrides)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field


def test_portals_cannot_register_or_read_datasets(api, make_client):
    portal = make_client("portal")
    assert _post(api, portal).status_code == 403
    assert api.get("/v1/datasets", headers=portal.headers).status_code == 403
