"""Verify-or-fallback: an approximate result that does not pass, or a refused certified
removal, is replaced by the exact method, and the report says so."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.core.database import session_scope
from app.demo import DEMO_MODELS, DemoModel
from app.jobs import engine
from app.registry.models import RegisteredModel
from tests.jobs.conftest import TINY_MLP, run_inline, submit


def _unlearn(api, admin, model: str) -> dict:
    response = api.post(f"/v1/models/{model}/unlearn-now", headers=admin.headers)
    assert response.status_code == 202, response.text
    job_id = response.json()["job"]["id"]
    assert run_inline(job_id)["status"] == "succeeded"
    return api.get(f"/v1/jobs/{job_id}", headers=admin.headers).json()


def _qualify_by_fiat(model_name: str, method: str) -> dict:
    """A passing study row written directly (the study itself is tested in test_qualification):
    what lets the job try the approximate method at all."""
    from app.core.database import session_scope, utcnow
    from app.jobs.models import MethodQualification
    from app.registry import service as registry

    with session_scope() as session:
        model = registry.get_model(session, model_name)
        (version,) = registry.list_versions(session, model)
        study = MethodQualification(model_id=model.id, version_id=version.id, method=method, band_min=1,
                                    band_max=1000, status="qualified", report={"test": True},
                                    report_sha256="ab" * 32, finished_at=utcnow())
        session.add(study)
        session.flush()
        return {"id": study.id, "report_sha256": study.report_sha256}


@pytest.mark.slow  # trains a model and runs an unlearning job
def test_an_unqualified_approximate_method_is_not_even_tried(env, api, make_client, install_demo):
    admin, portal = make_client("admin"), make_client("portal")
    [training] = install_demo(DemoModel("digits-mlp", "mlp", TINY_MLP, {"default_method": "finetune"}))
    run_inline(training)
    request = submit(api, portal, "demo-subject-40")["id"]
    job = _unlearn(api, admin, "digits-mlp")
    skipped, exact = job["report"]["attempts"]
    assert skipped["outcome"] == "not qualified" and "no passing qualification" in skipped["reason"]
    assert "unlearning" not in skipped and exact["method"] == "retrain" and job["method_used"] == "retrain"
    assert job["report"]["guarantee"] == "exact"
    history = api.get(f"/v1/deletion-requests/{request}", headers=portal.headers).json()["history"]
    assert ("verifying", "unlearning") not in [(h["from_status"], h["to_status"]) for h in history]


@pytest.mark.slow  # trains a model and runs an unlearning job
def test_impossible_thresholds_fall_back_to_retrain(env, api, make_client, install_demo):
    admin, portal = make_client("admin"), make_client("portal")
    impossible = {"default_method": "finetune", "thresholds": {"max_mia_auc": 0.0, "min_mia_auc": 1.0,
                                                                 "min_forget_size": 1}}
    [training] = install_demo(DemoModel("digits-mlp", "mlp", TINY_MLP, impossible))
    # A row stored before registration checked threshold names: the unknown one is reported, not fatal.
    with session_scope() as session:
        model = session.scalar(select(RegisteredModel).where(RegisteredModel.name == "digits-mlp"))
        model.policy = {**model.policy, "thresholds": {**model.policy["thresholds"], "unknown_metric": 1.0}}
    run_inline(training)
    cited = _qualify_by_fiat("digits-mlp", "finetune")
    request = submit(api, portal, "demo-subject-40")["id"]
    job = _unlearn(api, admin, "digits-mlp")

    report = job["report"]
    assert job["method"] == "finetune" and job["method_used"] == "retrain" and report["fell_back"] is True
    first, last = report["attempts"]
    assert first["method"] == "finetune" and first["outcome"] == "fail" and first["verification"]["reasons"]
    assert first["qualification"] == cited
    assert last["method"] == "retrain" and last["fallback"] is True
    assert report["ignored_thresholds"] == ["unknown_metric"]
    # The request went back from verifying to unlearning for the fallback, then completed.
    history = api.get(f"/v1/deletion-requests/{request}", headers=portal.headers).json()["history"]
    steps = [(h["from_status"], h["to_status"]) for h in history]
    assert ("verifying", "unlearning") in steps and steps[-1] == ("verifying", "completed")


@pytest.mark.slow  # trains a model and runs an unlearning job
def test_refused_certified_removal_falls_back_to_retrain(env, api, make_client, install_demo):
    admin, portal = make_client("admin"), make_client("portal")
    # A residual budget no Newton step can meet: the certified method must refuse.
    strict = {"l2": 1e-3, "max_iter": 50, "residual_budget": 1e-12}
    [training] = install_demo(DemoModel("digits-logreg", "logreg", strict, {"default_method": "newton"}))
    run_inline(training)
    submit(api, portal, "demo-subject-41")
    job = _unlearn(api, admin, "digits-logreg")
    refused, exact = job["report"]["attempts"]
    assert refused == {"method": "newton", "outcome": "refused", "reason": refused["reason"]}
    assert "budget" in refused["reason"] and exact["method"] == "retrain"
    assert job["method_used"] == "retrain"


@pytest.mark.slow  # trains a model and runs an unlearning job
def test_demo_logreg_removes_a_subject_with_a_certificate(env, api, make_client, install_demo):
    admin, portal = make_client("admin"), make_client("portal")
    [demo_logreg] = [model for model in DEMO_MODELS if model.name == "digits-logreg"]
    [training] = install_demo(demo_logreg)
    run_inline(training)
    submit(api, portal, "demo-subject-43")
    job = _unlearn(api, admin, "digits-logreg")
    report = job["report"]
    assert job["method"] == "newton" and job["method_used"] == "newton" and report["fell_back"] is False
    certification = report["certification"]
    assert certification["guarantee"] == "certified"
    assert certification["epsilon"] == 1.0 and certification["delta"] == 1e-4
    assert 0 < certification["bound"] <= certification["budget"]
    assert certification["bound"] == certification["gradient_residual_norm"]  # first removal of the lineage
    # The statistics are still reported: one subject is too few rows for a membership test.
    assert report["verdict"] == "inconclusive"


def test_policy_epsilon_and_delta_reach_a_logreg_recipe_unless_it_sets_its_own():
    policy = {"epsilon": 0.5, "delta": 1e-6}
    assert engine.recipe_under_policy("logreg", {"l2": 1e-3}, **policy) == {"l2": 1e-3, "epsilon": 0.5, "delta": 1e-6}
    assert engine.recipe_under_policy("logreg", {"epsilon": 2.0}, **policy)["epsilon"] == 2.0
    assert engine.recipe_under_policy("mlp", {"hidden": [8]}, **policy) == {"hidden": [8]}
    assert engine.adapter_of("logreg", engine.recipe_under_policy("logreg", {}, **policy)).hyperparameters.epsilon == 0.5
