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
    from app.registry.models import ModelVersion

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
