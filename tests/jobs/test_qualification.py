"""Method qualification through the API: only approximate methods, a study run by the task
body, its report signed and listed under the model."""

from __future__ import annotations

from datetime import datetime

import pytest

from app.demo import DemoModel
from tests.jobs.conftest import TINY_MLP, run_inline


@pytest.mark.slow
def test_a_study_is_queued_run_signed_and_listed_under_the_model(env, api, make_client, install_demo):
    from app.core.database import session_scope
    from app.core.hashing import canonical_json, sha256_hex
    from app.core.outbox import OutboxMessage
    from app.core.signing import public_key_from_jwk, verify_signature
    from app.jobs import qualification

    ml, portal = make_client("ml"), make_client("portal")
    [training] = install_demo(DemoModel("digits-mlp", "mlp", TINY_MLP, {"default_method": "neggrad_plus"}))
    run_inline(training)
    url = "/v1/models/digits-mlp/qualifications"

    refused = api.post(url, json={"method": "retrain", "band_min": 1, "band_max": 20}, headers=ml.headers)
    assert refused.status_code == 422 and refused.json()["field"] == "method"
    assert api.post(url, json={"method": "neggrad_plus", "band_min": 9, "band_max": 3},
                    headers=ml.headers).status_code == 422
    assert api.post(url, json={"method": "neggrad_plus", "band_min": 1, "band_max": 3},
                    headers=portal.headers).status_code == 403
    assert api.post(url, json={"method": "neggrad_plus", "band_min": 1, "band_max": 3, "forget_sets": 9},
                    headers=ml.headers).status_code == 422
    assert api.post("/v1/models/nope/qualifications", json={"method": "neggrad_plus", "band_min": 1, "band_max": 3},
                    headers=ml.headers).status_code == 404

    started = api.post(url, json={"method": "neggrad_plus", "band_min": 1, "band_max": 20, "runs": 2},
                       headers=ml.headers)
    assert started.status_code == 202, started.text
    study = started.json()
    assert study["status"] == "running"
    with session_scope() as session:
        tasks = [m.kwargs for m in session.query(OutboxMessage).filter_by(task_name="unlearnd.jobs.qualify_method")]
    assert {"qualification_id": study["id"]} in tasks

    qualification.run(study["id"])
    qualification.run(study["id"])  # a redelivered message leaves a finished study alone
    (listed,) = api.get(url, headers=ml.headers).json()
    assert listed["id"] == study["id"] and listed["status"] in ("qualified", "not_qualified")
    report = listed["report"]
    result = report["study"]
    assert report["forget_size"] == 20 and result["runs"] == 2 and report["method"] == "neggrad_plus"
    # Two forget sets by default, spread over the band and judged each; the report aggregates them.
    assert report["forget_sizes"] == [10, 20] and result["forget_sets"] == 2 and len(result["per_set"]) == 2
    assert [s["forget_size"] for s in result["per_set"]] == [10, 20]
    assert len(set(report["forget_set_sha256"])) == 2
    assert result["qualified"] == all(s["qualified"] for s in result["per_set"])
    assert result["reference_score_std"] > 0
    assert result["qualified"] == (listed["status"] == "qualified") and "never" in report["temporary_models"]
    for figure in ("flag_rate_unlearned", "flag_rate_retrain", "forget_score", "forget_score_ceiling",
                   "accuracy_unlearned", "accuracy_retrain"):
        assert isinstance(result[figure], float), figure
    body = canonical_json(report)
    assert listed["report_sha256"] == sha256_hex(body)
    keys = {k["kid"]: public_key_from_jwk(k) for k in api.get("/.well-known/unlearnd-keys").json()["keys"]}
    verify_signature(keys[listed["key_id"]], body, listed["signature"])
    assert api.get(f"{url}/{study['id']}", headers=ml.headers).json()["report_sha256"] == listed["report_sha256"]

    # The temporary models are on record: what was trained, on which snapshot, kept where,
    # destroyed when; the destruction is audited, and the signed report says the same.
    from app.audit.models import AuditEvent
    from app.registry import service as registry
    from app.registry.models import Dataset, ModelVersion

    def moment(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    temporary = listed["temporary_models"]
    assert temporary == report["temporary_model_record"]
    assert temporary["models"] == {"retrain_reference": 4, "retrain_ceiling": 4, "original": 4, "unlearned": 4}
    assert temporary["storage"].startswith("worker memory only")
    assert moment(temporary["created_at"]) <= moment(temporary["destroyed_at"]) <= moment(listed["finished_at"])
    with session_scope() as session:
        version = session.get(ModelVersion, listed["version_id"])
        snapshot = registry.get_snapshot(session, version.snapshot_id)
        assert temporary["snapshot_id"] == snapshot.id and temporary["snapshot_merkle_root"] == snapshot.merkle_root
        assert temporary["trained_on_records"] == len(registry.snapshot_record_keys(session, snapshot))
        [destroyed] = session.query(AuditEvent).filter_by(action="qualification.temporary_models_destroyed",
                                                          entity_id=study["id"]).all()
        assert destroyed.payload == temporary
        some_key = sorted(registry.snapshot_record_keys(session, snapshot))[0]
        dataset_name = session.get(Dataset, snapshot.dataset_id).name
    # Lineage lists them beside the versions: what they were for, how many, when destroyed.
    lineage = api.get(f"/v1/lineage/records/{dataset_name}/{some_key}", headers=ml.headers).json()
    [held] = [t for t in lineage["temporary_models"] if t["reference_id"] == study["id"]]
    assert held["purpose"] == "qualification" and held["model"] == "digits-mlp"
    assert held["snapshot_id"] == temporary["snapshot_id"] and held["models"] == temporary["models"]
    assert moment(held["destroyed_at"]) == moment(temporary["destroyed_at"])
    assert held["storage"] == temporary["storage"]


@pytest.mark.slow
def test_a_job_under_a_study_judges_utility_against_the_studys_retrains(env, api, make_client, install_demo):
    """The approximate attempt's utility check compares with the covering study's retrains
    (their held-out accuracy, read from its report) and says so; a result below what those
    retrains reach fails and the job runs the exact method."""
    from app.core.database import session_scope, utcnow
    from app.jobs.models import MethodQualification
    from app.registry import service as registry
    from tests.jobs.conftest import submit

    admin, portal = make_client("admin"), make_client("portal")
    # Membership checks opened up so that the utility check alone decides; no drop allowed.
    lenient = {"min_forget_size": 1, "max_mia_auc": 1.0, "min_mia_auc": 0.0, "max_attack_auc": 1.0,
               "min_power": 0.0, "max_heldout_accuracy_drop": 0.0}
    [training] = install_demo(DemoModel("digits-mlp", "mlp", TINY_MLP,
                                        {"default_method": "finetune", "thresholds": lenient}))
    run_inline(training)

    def study(mean: float) -> str:
        report = {"study": {"qualified": True, "reference_score_std": 1.0,
                            "policy": {"alpha": 0.05, "flag_margin": 0.05},
                            "retrain_accuracy": {"mean": mean, "std": 0.0, "models": 8, "rows": 150}}}
        with session_scope() as session:
            model = registry.get_model(session, "digits-mlp")
            version = [v for v in registry.list_versions(session, model) if v.state == "active"][0]
            row = MethodQualification(model_id=model.id, version_id=version.id, method="finetune", band_min=1,
                                      band_max=1000, status="qualified", report=report, report_sha256="ab" * 32,
                                      finished_at=utcnow())
            session.add(row)
            session.flush()
            return row.id

    def unlearn(subject: str) -> dict:
        submit(api, portal, subject)
        response = api.post("/v1/models/digits-mlp/unlearn-now", headers=admin.headers)
        assert response.status_code == 202, response.text
        job_id = response.json()["job"]["id"]
        assert run_inline(job_id)["status"] == "succeeded"
        return api.get(f"/v1/jobs/{job_id}", headers=admin.headers).json()

    low = study(0.0)  # retrains that reach nothing: any result is at least as useful
    kept = unlearn("demo-subject-40")
    [attempt] = kept["report"]["attempts"]
    checks = {c["name"]: c for c in attempt["verification"]["checks"]}
    assert "heldout_accuracy_drop" not in checks
    check = checks["heldout_accuracy_vs_retrains"]
    assert check["passed"] and check["limit"] == pytest.approx(0.0)
    assert f"8 exact retrains of qualification {low}" in check["basis"]
    assert kept["method_used"] == "finetune" and attempt["qualification"]["id"] == low

    high = study(1.0)  # a newer study whose retrains are perfect: a tiny MLP cannot match them
    fell = unlearn("demo-subject-41")
    first, exact = fell["report"]["attempts"]
    assert first["method"] == "finetune" and first["outcome"] == "fail"
    check = {c["name"]: c for c in first["verification"]["checks"]}["heldout_accuracy_vs_retrains"]
    assert not check["passed"] and check["limit"] == pytest.approx(1.0)
    assert f"qualification {high}" in check["basis"]
    assert any("below what an exact retrain reaches" in r for r in first["verification"]["reasons"])
    assert exact["method"] == "retrain" and fell["method_used"] == "retrain"
