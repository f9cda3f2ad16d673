"""Certificates issued from what real jobs reported: three models of different guarantee
classes unlearn one subject through the job entry point, and the certificate must say
exactly what each job's report says (method, fallback, verification, guarantee, result
version hashes), verify offline, survive a key rotation, and break under any edit."""

from __future__ import annotations

import json

import pytest

from app.demo import DemoModel
from tests.conftest import issue_certificate_now
from tests.jobs.conftest import TINY_MLP, TINY_SISA, run_inline, submit

MODELS = (
    DemoModel("digits-sisa", "sisa", TINY_SISA, {"default_method": "sisa"}),
    DemoModel("digits-logreg", "logreg", {"l2": 1e-3, "max_iter": 100}, {"default_method": "newton"}),
    # An approximate method whose verification decides whether it stands or falls back.
    DemoModel("digits-mlp", "mlp", TINY_MLP, {"default_method": "finetune"}),
)


def _keys(api) -> dict[str, bytes]:
    from app.core.signing import public_key_from_jwk

    return {jwk["kid"]: public_key_from_jwk(jwk) for jwk in api.get("/.well-known/unlearnd-keys").json()["keys"]}


@pytest.mark.slow
def test_certificate_states_what_the_real_jobs_reported(env, api, make_client, install_demo):
    from app.certificates.verify import CertificateInvalid, verify_certificate
    from app.core.hashing import canonical_json, json_safe

    admin, portal = make_client("admin"), make_client("portal")
    for training in install_demo(*MODELS):
        assert run_inline(training)["status"] == "succeeded"
    request = submit(api, portal, "demo-subject-12")
    jobs = {}
    for model in MODELS:
        batch = api.post(f"/v1/models/{model.name}/unlearn-now", headers=admin.headers)
        assert batch.status_code == 202, batch.text
        assert run_inline(batch.json()["job"]["id"])["status"] == "succeeded"
        jobs[model.name] = api.get(f"/v1/jobs/{batch.json()['job']['id']}", headers=admin.headers).json()
    done = api.get(f"/v1/deletion-requests/{request['id']}", headers=portal.headers).json()
    assert (done["status"], done["outcome"]) == ("completed", "forgotten")

    issue_certificate_now(request["id"])
    raw = api.get(f"/v1/deletion-requests/{request['id']}/certificate", headers=portal.headers)
    assert raw.status_code == 200, raw.text
    document = verify_certificate(raw.content, _keys(api)).document
    assert document["request"]["id"] == request["id"] and document["request"]["outcome"] == "forgotten"
    assert {m["model_name"] for m in document["models"]} == {m.name for m in MODELS}
    for described in document["models"]:
        job = jobs[described["model_name"]]
        [unlearning] = described["unlearning"]
        report = job["report"]
        assert unlearning["job_id"] == job["id"]
        assert (unlearning["method"], unlearning["method_used"]) == (job["method"], job["method_used"])
        assert unlearning["fallback"] is (job["method_used"] != job["method"])
        assert unlearning["verification"] == json_safe(report["verification"])
        assert unlearning["guarantee"] == report["guarantee"]
        versions = {v["id"]: v for v in api.get(f"/v1/models/{described['model_name']}/versions",
                                                 headers=admin.headers).json()}
        result, base = versions[job["result_version_id"]], versions[job["base_version_id"]]
        assert unlearning["result_version"]["id"] == result["id"]
        assert unlearning["result_version"]["artifact_sha256"] == result["artifact_sha256"]
        assert unlearning["base_version"]["artifact_sha256"] == base["artifact_sha256"]
        [affected] = described["affected_versions"]
        assert affected["version"]["id"] == base["id"] and base["state"] == "purged"
    # SISA and retraining are exact, the finetuned MLP only if its verification failed and it fell back.
    guarantees = {m["model_name"]: m["unlearning"][0]["guarantee"] for m in document["models"]}
    assert guarantees["digits-sisa"] == "exact"
    if jobs["digits-mlp"]["method_used"] == "retrain":
        assert guarantees["digits-mlp"] == "exact"

    # Still valid under the published keys after a rotation; any edit breaks it.
    assert api.post("/v1/audit/tree-heads", headers=admin.headers).status_code == 201
    from click.testing import CliRunner

    from app.cli import main

    assert CliRunner().invoke(main, ["keys", "rotate"]).exit_code == 0
    assert verify_certificate(raw.content, _keys(api)).document == document
    envelope = json.loads(raw.content)
    envelope["certificate"]["models"][0]["unlearning"][0]["method_used"] = "forged"
    with pytest.raises(CertificateInvalid, match="signature"):
        verify_certificate(canonical_json(envelope), _keys(api))
