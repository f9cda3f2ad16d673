"""A request whose subject is in two models completes only when both have forgotten it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app.demo import DemoModel
from tests.jobs.conftest import TINY_MLP, TINY_SISA, run_inline, submit


@pytest.mark.slow  # trains and unlearns several models
def test_request_waits_for_every_model(env, api, make_client, install_demo):
    from app.core.database import session_scope, utcnow
    from app.jobs import service

    admin, portal = make_client("admin"), make_client("portal")
    trainings = install_demo(DemoModel("digits-sisa", "sisa", TINY_SISA, {"default_method": "sisa"}),
                             DemoModel("digits-mlp", "mlp", TINY_MLP, {"default_method": "retrain", "batching_window_hours": 0}))
    for training in trainings:
        run_inline(training)
    request = submit(api, portal, "demo-subject-60")["id"]

    def status() -> str:
        return api.get(f"/v1/deletion-requests/{request}", headers=portal.headers).json()["status"]

    first = api.post("/v1/models/digits-sisa/unlearn-now", headers=admin.headers).json()["job"]["id"]
    assert run_inline(first)["status"] == "succeeded"
    assert status() == "unlearning"  # the MLP still remembers

    with session_scope() as session:  # the scheduler sees the request pending for the MLP only
        later = utcnow() + timedelta(minutes=1)
        pending = {o.model: o.decision for o in service.schedule(session, now=later)}
    assert set(pending) == {"digits-mlp"} and pending["digits-mlp"].reason == "window expired"
    assert [p.request_id for p in pending["digits-mlp"].batch] == [request]

    second = api.get(f"/v1/jobs?request_id={request}&model=digits-mlp", headers=admin.headers).json()
    assert len(second) == 1 and run_inline(second[0]["id"])["status"] == "succeeded"
    assert status() == "completed"
    history = api.get(f"/v1/deletion-requests/{request}", headers=portal.headers).json()["history"]
    assert [h["to_status"] for h in history] == ["received", "scheduled", "unlearning", "verifying", "completed"]
