"""What a completed request and its certificate claim, and on what grounds: an exact job's
certificate proves, per model and per retrained part, that no record of the request is in
the live snapshot; counts say what the model actually held; a repeat request for records
already forgotten says so and cites the earlier proof."""

from __future__ import annotations

import json

import pytest

from app.core.hashing import canonical_json
from app.demo import DemoModel
from tests.conftest import issue_certificate_now
from tests.jobs.conftest import TINY_SISA, run_inline, submit

# Slow: each test trains, forgets and verifies a certificate.
pytestmark = pytest.mark.slow

SUBJECT_KEYS = {f"digit-{i:04d}" for i in range(7, 1797, 100)}  # demo-subject-7's 18 records


def _keys(api) -> dict[str, bytes]:
    from app.core.signing import public_key_from_jwk

    return {jwk["kid"]: public_key_from_jwk(jwk) for jwk in api.get("/.well-known/unlearnd-keys").json()["keys"]}


def _forget(api, admin, portal, subject: str) -> tuple[dict, dict]:
    request = submit(api, portal, subject)
    batch = api.post("/v1/models/digits-sisa/unlearn-now", headers=admin.headers)
    assert batch.status_code == 202, batch.text
    job_id = batch.json()["job"]["id"]
    assert run_inline(job_id)["status"] == "succeeded"
    return request, api.get(f"/v1/jobs/{job_id}", headers=admin.headers).json()


@pytest.fixture
def forgotten(env, api, make_client, install_demo):
    admin, portal = make_client("admin"), make_client("portal")
    [training] = install_demo(DemoModel("digits-sisa", "sisa", TINY_SISA, {"default_method": "sisa"}))
    assert run_inline(training)["status"] == "succeeded"
    request, job = _forget(api, admin, portal, "demo-subject-7")
    issue_certificate_now(request["id"])
    certificate = api.get(f"/v1/deletion-requests/{request['id']}/certificate", headers=portal.headers)
    assert certificate.status_code == 200, certificate.text
    return admin, portal, request, job, certificate.content


def test_exact_certificate_proves_non_inclusion_per_model_and_retrained_part(api, forgotten):
    from app.certificates.verify import verify_certificate

    _, portal, request, job, raw = forgotten
    status = api.get(f"/v1/deletion-requests/{request['id']}", headers=portal.headers).json()
    assert (status["outcome"], status["guarantee"]) == ("forgotten", "exact")
    assert job["report"]["guarantee"] == "exact"

    verified = verify_certificate(raw, _keys(api))
    document = verified.document
    assert document["request"]["guarantee"] == "exact"
    (model,) = document["models"]
    (unlearning,) = model["unlearning"]
    assert unlearning["guarantee"] == "exact" and "lineage" in unlearning["guarantee_basis"]
    blocks = unlearning["lineage_proofs"]
    assert blocks[0]["part"]["kind"] == "version"
    assert blocks[0]["snapshot_id"] == api.get(
        f"/v1/models/digits-sisa/versions/{unlearning['result_version']['number']}",
        headers=forgotten[0].headers).json()["snapshot_id"]
    # Every shard the job retrained has its own block (untouched shards kept the parent's snapshot).
    touched = set(job["report"]["attempts"][-1]["unlearning"]["details"]["shards_touched"])
    assert {b["part"]["shard"] for b in blocks[1:] if b["part"]["kind"] == "shard"} == touched
    for block in blocks:
        assert {p["record_key"] for p in block["proofs"]} == SUBJECT_KEYS
        assert {p["kind"] for p in block["proofs"]} == {"non-inclusion"}
    assert verified.lineage_proofs_checked == len(blocks) * len(SUBJECT_KEYS)

    # Counts: what the model actually held, not "18 removed".
    counts = unlearning["records"]
    assert sum(counts.values()) == len(SUBJECT_KEYS) == document["forgotten_records"]["count"]
    assert counts["trained_on"] == job["forget_count"] and counts["held_out"] > 0
    assert f"trained on {counts['trained_on']} of them ({counts['held_out']} held out" in document["claim"]


def _reissued(raw: bytes, edit) -> bytes:
    """The certificate with one proof edited, re-serialised canonically (the signature no
    longer matches, but the proof check runs first and must name the proof)."""
    envelope = json.loads(raw)
    edit(envelope["certificate"]["models"][0]["unlearning"][0]["lineage_proofs"][0]["proofs"])
    return canonical_json(envelope)


def test_an_edited_non_inclusion_proof_fails_verification(api, forgotten, tmp_path):
    from app.certificates.verify import CertificateInvalid, verify_certificate

    raw = forgotten[-1]
    keys = _keys(api)

    def claim_a_neighbour_is_absent(proofs):
        proof = next(p for p in proofs if p["left"])
        proof["record_key"] = proof["left"]["record_key"]

    def bend_the_audit_path(proofs):
        proof = next(p for p in proofs if p["left"] and p["left"]["audit_path"])
        node = proof["left"]["audit_path"][0]
        proof["left"]["audit_path"][0] = ("0" if node[0] != "0" else "1") + node[1:]

    def skip_a_leaf(proofs):
        proof = next(p for p in proofs if p["left"] and p["right"])
        proof["right"]["index"] += 1

    for edit in (claim_a_neighbour_is_absent, bend_the_audit_path, skip_a_leaf):
        with pytest.raises(CertificateInvalid, match="non-inclusion proof"):
            verify_certificate(_reissued(raw, edit), keys)

    # The command-line verifier says the same, with no database.
    from tests.certificates.test_certificates import _cli

    jwks = tmp_path / "keys.json"
    jwks.write_text(api.get("/.well-known/unlearnd-keys").text)
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_bytes(raw)
    bad.write_bytes(_reissued(raw, bend_the_audit_path))
    ok = _cli("certificate", "verify", str(good), "--public-key", str(jwks), cwd=tmp_path)
    assert ok.returncode == 0 and "non-inclusion proof(s) checked" in ok.stdout, ok.stderr
    refused = _cli("certificate", "verify", str(bad), "--public-key", str(jwks), cwd=tmp_path)
    assert refused.returncode == 1 and "non-inclusion proof" in refused.stderr


def test_a_request_for_records_already_forgotten_cites_the_earlier_request(api, forgotten):
    from app.certificates.verify import verify_certificate

    _, portal, first, _, first_raw = forgotten
    again = submit(api, portal, "demo-subject-7", external_ref="second-ask")
    assert (again["status"], again["outcome"], again["guarantee"]) == ("completed", "already_forgotten", "exact")
    assert again["affected"]["already_forgotten"] == {"record_count": len(SUBJECT_KEYS),
                                                      "earlier_request_ids": [first["id"]]}
    issue_certificate_now(again["id"])
    raw = api.get(f"/v1/deletion-requests/{again['id']}/certificate", headers=portal.headers).content
    document = verify_certificate(raw, _keys(api)).document
    assert document["request"]["outcome"] == "already_forgotten" and document["non_inclusion"] is None
    assert document["already_forgotten"]["earlier"] == [
        {"request_id": first["id"], "certificate_id": json.loads(first_raw)["certificate"]["certificate_id"]}]
    assert "already been forgotten" in document["claim"] and "no training record" not in document["claim"]
