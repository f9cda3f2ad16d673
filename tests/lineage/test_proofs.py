"""Snapshot Merkle roots and membership proofs: they verify, and tampering is caught."""

from __future__ import annotations

import copy
import json

import pytest
from click.testing import CliRunner

from tests.registry.factory import ingested, model_with_versions, rows


@pytest.fixture
def snapshot(env, backend):
    from app.core.database import session_scope
    from app.registry import service
    from app.registry.models import DatasetSnapshot, ModelVersion

    ingested("proofs", rows(37))
    model_id = model_with_versions("proofs", "m", [["r00004", "r00020"]])
    with session_scope() as session:
        version = session.query(ModelVersion).filter_by(model_id=model_id).one()
        snap = session.get(DatasetSnapshot, version.snapshot_id)
        return snap, service.snapshot_record_keys(session, snap)


def _proof(record_key: str, snapshot_id: str) -> dict:
    from app.core.database import session_scope
    from app.lineage.service import membership_proof

    with session_scope() as session:
        return membership_proof(session, snapshot_id, record_key)


def test_root_is_the_rfc6962_root_of_sorted_key_leaves(snapshot):
    from app.core import merkle
    from app.core.database import session_scope
    from app.registry.leaves import leaf_hash
    from app.registry.models import DataRecord

    snap, keys = snapshot
    assert keys == sorted(keys) and len(keys) == 35 and "r00004" not in keys
    with session_scope() as session:
        content = dict(session.query(DataRecord.record_key, DataRecord.content_hash).all())
    expected = merkle.root([leaf_hash(k, content[k]) for k in sorted(keys)])
    assert snap.merkle_root == expected.hex() and snap.record_count == 35


@pytest.mark.parametrize("key", ["r00000", "r00017", "r00036"])
def test_inclusion_proofs_verify(snapshot, key):
    from app.lineage.proofs import verify_proof

    snap, _ = snapshot
    proof = _proof(key, snap.id)
    assert proof["kind"] == "inclusion" and proof["merkle_root"] == snap.merkle_root
    assert key in verify_proof(proof)


@pytest.mark.parametrize("key", ["a-before-all", "r00004", "r00020", "r000175", "zzz-after-all"])
def test_non_inclusion_proofs_verify(snapshot, key):
    from app.lineage.proofs import verify_proof

    snap, _ = snapshot
    proof = _proof(key, snap.id)
    assert proof["kind"] == "non-inclusion"
    assert "not in the snapshot" in verify_proof(proof)
    assert (proof["left"] is None) == (key == "a-before-all")
    assert (proof["right"] is None) == (key == "zzz-after-all")


def _tamperings(proof: dict) -> list[dict]:
    variants = []
    for change in ("content", "path", "index", "root", "key"):
        bad = copy.deepcopy(proof)
        leaf = bad.get("leaf") or bad["left"]
        if change == "content":
            leaf["content_hash"] = "0" * 64
        elif change == "path":
            leaf["audit_path"][0] = "ff" * 32
        elif change == "index":
            leaf["index"] += 1
        elif change == "root":
            bad["merkle_root"] = "ab" * 32
        else:
            bad["record_key"] = "r00005" if bad["kind"] == "inclusion" else "r00001"
        variants.append(bad)
    return variants


@pytest.mark.parametrize("key", ["r00017", "r00020"])
def test_tampered_proofs_fail(snapshot, key):
    from app.core.merkle import ProofError
    from app.lineage.proofs import verify_proof

    snap, _ = snapshot
    for bad in _tamperings(_proof(key, snap.id)):
        with pytest.raises(ProofError):
            verify_proof(bad)


def test_a_non_inclusion_proof_cannot_hide_a_present_key(snapshot):
    from app.core.merkle import ProofError
    from app.lineage.proofs import verify_proof

    snap, _ = snapshot
    absent = _proof("r00020", snap.id)
    # Claim a present key is absent using the neighbours of an absent one: ordering check fails.
    forged = {**absent, "record_key": "r00019"}
    with pytest.raises(ProofError):
        verify_proof(forged)
    # Claim non-adjacent neighbours bracket a present key.
    left, right = _proof("r00010", snap.id)["leaf"], _proof("r00012", snap.id)["leaf"]
    with pytest.raises(ProofError, match="adjacent"):
        verify_proof({**absent, "record_key": "r00011", "left": left, "right": right})


def test_cli_verifies_offline(snapshot, tmp_path):
    from app.cli import main

    snap, _ = snapshot
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    proof = _proof("r00020", snap.id)
    good.write_text(json.dumps(proof))
    bad.write_text(json.dumps(_tamperings(proof)[0]))
    runner = CliRunner()
    ok = runner.invoke(main, ["lineage", "verify-proof", str(good), "--root", snap.merkle_root])
    assert ok.exit_code == 0 and "VALID" in ok.output
    assert runner.invoke(main, ["lineage", "verify-proof", str(bad)]).exit_code == 1
    assert runner.invoke(main, ["lineage", "verify-proof", str(good), "--root", "00" * 32]).exit_code == 1


def test_proof_over_http(api, make_client, snapshot):
    snap, _ = snapshot
    auditor, portal = make_client("auditor"), make_client("portal")
    response = api.get(f"/v1/lineage/snapshots/{snap.id}/proofs/r00004", headers=auditor.headers)
    assert response.status_code == 200 and response.json()["kind"] == "non-inclusion"
    assert api.get(f"/v1/lineage/snapshots/{snap.id}/proofs/r00004", headers=portal.headers).status_code == 403
    assert api.get("/v1/lineage/snapshots/nope/proofs/r1", headers=auditor.headers).status_code == 404
