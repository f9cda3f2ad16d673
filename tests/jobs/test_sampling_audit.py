"""The sampling audit: every k-th job that keeps a qualified approximate result also runs the
exact method and compares the two per record; a degraded comparison revokes the study, tells
admins, and the job keeps the exact result. Real models and the real comparison throughout:
what decides the outcome is the study's measured score spread, the number the audit's test
is scaled by (a study that measured a tiny spread makes any difference a flag)."""

from __future__ import annotations

import pytest

from app.demo import DemoModel
from tests.jobs.conftest import TINY_MLP, run_inline, submit

# Thresholds a finetune of one subject passes, so the approximate result is kept and audited.
LENIENT = {"min_forget_size": 1, "max_mia_auc": 1.0, "min_mia_auc": 0.0, "max_attack_auc": 1.0, "min_power": 0.0,
           "max_heldout_accuracy_drop": 1.0}


def _study(model_name: str, method: str, score_std: float) -> str:
    """A passing study row whose report states the spread the audit compares against (the
    study itself is tested in test_qualification)."""
    from app.core.database import session_scope, utcnow
    from app.jobs.models import MethodQualification
    from app.registry import service as registry

    report = {"study": {"qualified": True, "reference_score_std": score_std,
                        "policy": {"alpha": 0.05, "flag_margin": 0.05}}}
    with session_scope() as session:
        model = registry.get_model(session, model_name)
        (version,) = registry.list_versions(session, model)
        study = MethodQualification(model_id=model.id, version_id=version.id, method=method, band_min=1,
                                    band_max=1000, status="qualified", report=report, report_sha256="ab" * 32,
                                    finished_at=utcnow())
        session.add(study)
        session.flush()
        return study.id


def _unlearn(api, admin, portal, subject: str) -> dict:
    submit(api, portal, subject)
    response = api.post("/v1/models/digits-mlp/unlearn-now", headers=admin.headers)
    assert response.status_code == 202, response.text
    job_id = response.json()["job"]["id"]
    assert run_inline(job_id)["status"] == "succeeded"
    return api.get(f"/v1/jobs/{job_id}", headers=admin.headers).json()


def _install(install_demo, every: int) -> None:
    policy = {"default_method": "finetune", "thresholds": LENIENT, "sampling_audit_every": every}
    [training] = install_demo(DemoModel("digits-mlp", "mlp", TINY_MLP, policy))
    run_inline(training)


@pytest.mark.slow
def test_a_degraded_audit_revokes_the_study_tells_admins_and_keeps_the_exact_result(
        env, api, make_client, install_demo):
    from sqlalchemy import select

    from app.audit.models import AuditEvent
    from app.core.database import session_scope
    from app.jobs.models import MethodQualification
    from app.webhooks.events import AuditFact, from_audit

    admin, portal, ml = make_client("admin"), make_client("portal"), make_client("ml")
    _install(install_demo, every=1)
    study_id = _study("digits-mlp", "finetune", score_std=1e-9)

    job = _unlearn(api, admin, portal, "demo-subject-40")
    report = job["report"]
    audit = report["sampling_audit"]
    assert audit["degraded"] is True and audit["exact_method"] == "retrain"
    assert audit["records"] == job["forget_count"] and audit["flagged"] == audit["records"]
    assert audit["p_value"] < 0.05
    # The approximate result passed its own checks, and was replaced all the same.
    finetune, retrain = report["attempts"]
    assert finetune["method"] == "finetune" and finetune["outcome"] == "pass"
    assert retrain["method"] == "retrain" and retrain["fallback"] is True and "sampling audit" in retrain["reason"]
    assert job["method_used"] == "retrain" and report["guarantee"] == "exact" and report["fell_back"] is True

    (listed,) = api.get("/v1/models/digits-mlp/qualifications", headers=ml.headers).json()
    assert listed["status"] == "revoked" and listed["revoked_at"] and listed["approximate_jobs"] == 1
    assert listed["revocation"]["job_id"] == job["id"] and listed["revocation"]["comparison"] == audit
    with session_scope() as session:
        [event] = session.scalars(select(AuditEvent).where(AuditEvent.action == "qualification.revoked"))
        assert event.entity_id == study_id and event.payload["notify"] == "admins"
        assert event.payload["job_id"] == job["id"] and event.payload["flagged"] == audit["flagged"]
        [webhook] = from_audit(AuditFact(seq=event.seq, occurred_at=event.occurred_at.isoformat(),
                                         action=event.action, entity_id=event.entity_id, payload=event.payload))
        assert webhook.type == "method_qualification.revoked" and webhook.request_id is None
        assert webhook.client_id is None  # admins' and auditors' endpoints only

    # The revoked study covers nothing: the next job goes straight to the exact method.
    following = _unlearn(api, admin, portal, "demo-subject-41")
    skipped, exact = following["report"]["attempts"]
    assert skipped["outcome"] == "not qualified" and exact["method"] == "retrain"
    assert "sampling_audit" not in following["report"]
    with session_scope() as session:
        assert session.get(MethodQualification, study_id).approximate_jobs == 1


@pytest.mark.slow
def test_every_kth_job_is_audited_and_a_sound_comparison_keeps_the_study(env, api, make_client, install_demo):
    from app.core.database import session_scope
    from app.jobs.models import MethodQualification

    admin, portal = make_client("admin"), make_client("portal")
    _install(install_demo, every=2)
    # A spread far beyond any score difference: the comparison cannot be degraded.
    study_id = _study("digits-mlp", "finetune", score_std=1e9)

    first = _unlearn(api, admin, portal, "demo-subject-40")
    assert first["method_used"] == "finetune" and "sampling_audit" not in first["report"]
    second = _unlearn(api, admin, portal, "demo-subject-41")
    audit = second["report"]["sampling_audit"]
    assert audit["degraded"] is False and audit["flagged"] == 0 and audit["records"] == second["forget_count"]
    assert second["method_used"] == "finetune" and second["report"]["guarantee"] == "approximate"
    with session_scope() as session:
        study = session.get(MethodQualification, study_id)
        assert study.status == "qualified" and study.revoked_at is None and study.approximate_jobs == 2
