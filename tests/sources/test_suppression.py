"""Forgotten stays forgotten: re-ingesting rows a completed request forgot keeps them out of
every snapshot, reports and audits it; an admin may lift a suppression, with a reason."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.demo import DIGITS_SCHEMA, DemoModel
from tests.jobs.conftest import TINY_MLP, run_inline, submit

SUBJECT_KEYS = {f"digit-{i:04d}" for i in range(3, 1797, 100)}  # demo-subject-3's records
MLP = DemoModel("digits-mlp", "mlp", TINY_MLP, {"default_method": "retrain", "batching_window_hours": 0.0})


def _reingest(name: str, data: bytes):
    from app.core.database import session_scope
    from app.registry import service as registry

    (registry.data_root() / f"{name}.parquet").write_bytes(data)
    with session_scope() as session:
        dataset_id = registry.register_dataset(session, name=name, uri=f"{name}.parquet", fmt="parquet",
                                               schema=DIGITS_SCHEMA, actor="test").id
    return registry.ingest_dataset(dataset_id)


@pytest.mark.slow  # trains, unlearns, re-ingests and trains again
def test_a_forgotten_subject_stays_out_of_a_reingested_file(env, api, make_client, install_demo):
    import pyarrow.parquet as pq

    from app.audit.models import AuditEvent
    from app.core.database import session_scope
    from app.registry import erasure
    from app.registry import service as registry
    from app.registry.models import DataRecord, DatasetErasure

    admin, portal, auditor = make_client("admin"), make_client("portal"), make_client("auditor")
    [training] = install_demo(MLP)
    original = (registry.data_root() / "demo" / "digits.parquet").read_bytes()
    run_inline(training)
    request = submit(api, portal, "demo-subject-3")
    batch = api.post("/v1/models/digits-mlp/unlearn-now", headers=admin.headers)
    assert run_inline(batch.json()["job"]["id"])["status"] == "succeeded"
    done = api.get(f"/v1/deletion-requests/{request['id']}", headers=admin.headers).json()
    assert done["status"] == "completed"

    listed = api.get("/v1/suppressions", headers=auditor.headers).json()
    by_kind = {kind: [e for e in listed if e["kind"] == kind] for kind in ("subject_hash", "record_key")}
    assert {e["value"] for e in by_kind["record_key"]} == SUBJECT_KEYS
    assert {e["value"] for e in by_kind["subject_hash"]} == set(done["subject_hashes"])
    assert {e["request_id"] for e in listed} == {request["id"]}

    again = _reingest("digits-again", original)
    assert again.status == "ready" and again.suppressed_count == len(SUBJECT_KEYS)
    with session_scope() as session:
        states = dict(session.execute(select(DataRecord.record_key, DataRecord.state)
                                      .where(DataRecord.dataset_id == again.id)).tuples().all())
        assert {k for k, state in states.items() if state == "suppressed"} == SUBJECT_KEYS
        assert session.scalar(select(AuditEvent.payload).where(
            AuditEvent.action == "dataset.rows_suppressed", AuditEvent.entity_id == again.id)) == {"rows": 18}
        [queued] = session.scalars(select(DatasetErasure.id).where(DatasetErasure.dataset_id == again.id))
    # No worker here: run the erasure task's body the outbox queued; the file loses the rows too.
    erasure.run(queued)
    rewritten = api.get("/v1/datasets/digits-again", headers=admin.headers).json()["uri"]
    assert not set(pq.read_table(rewritten).column("record_key").to_pylist()) & SUBJECT_KEYS

    # The next training on the re-ingested data never sees them.
    created = api.post("/v1/models", headers=admin.headers, json={
        "name": "again-mlp", "adapter": "mlp", "hyperparameters": TINY_MLP, "dataset": "digits-again"})
    assert created.status_code == 201, created.text
    trained = api.post("/v1/models/again-mlp/train", json={}, headers=admin.headers)
    assert run_inline(trained.json()["id"])["status"] == "succeeded"
    with session_scope() as session:
        version = registry.get_version(session, registry.get_model(session, "again-mlp"), 1)
        seen = set(registry.snapshot_record_keys(session, registry.get_snapshot(session, version.snapshot_id)))
    assert len(seen) > 1000 and not seen & SUBJECT_KEYS

    # Lifting needs an admin and a reason, and is audited; later ingestions take the rows again.
    entry = by_kind["subject_hash"][0]["id"]
    assert api.post(f"/v1/suppressions/{entry}/lift", json={"reason": "x"}, headers=portal.headers).status_code == 403
    assert api.post(f"/v1/suppressions/{entry}/lift", json={}, headers=admin.headers).status_code == 422
    for item in listed:
        lifted = api.post(f"/v1/suppressions/{item['id']}/lift", json={"reason": "consent given again"},
                          headers=admin.headers)
        assert lifted.status_code == 200, lifted.text
        assert lifted.json()["lift_reason"] == "consent given again" and lifted.json()["lifted_by"] == admin.id
    assert api.post(f"/v1/suppressions/{entry}/lift", json={"reason": "twice"}, headers=admin.headers).status_code == 409
    assert api.get("/v1/suppressions", headers=admin.headers).json() == []
    with session_scope() as session:
        lifts = session.scalars(select(AuditEvent.actor).where(AuditEvent.action == "suppression.lifted")).all()
        assert len(lifts) == len(listed) and set(lifts) == {admin.id}
    assert _reingest("digits-third", original).suppressed_count == 0
