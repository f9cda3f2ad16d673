"""``unlearnd jobs``: the same service as the API, from the command line."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from app.demo import DemoModel
from tests.jobs.conftest import TINY_MLP, run_inline, submit


@pytest.mark.slow  # trains a model, then drives the batch scheduler through the CLI
def test_jobs_commands(env, api, make_client, install_demo):
    from app.cli import main

    portal = make_client("portal")
    [training] = install_demo(DemoModel("digits-mlp", "mlp", TINY_MLP, {"default_method": "retrain"}))
    runner = CliRunner()
    listed = runner.invoke(main, ["jobs", "list", "--kind", "train"])
    assert listed.exit_code == 0 and training in listed.output and "queued" in listed.output
    header, row = listed.output.splitlines()
    assert header.split() == ["ID", "KIND", "MODEL", "STATUS", "STAGE", "DONE", "METHOD", "GUARANTEE", "VERDICT"]
    assert row.split()[:4] == [training, "train", "digits-mlp", "queued"]
    run_inline(training)
    submit(api, portal, "demo-subject-70")

    tick = runner.invoke(main, ["jobs", "schedule"])
    assert tick.exit_code == 0 and "digits-mlp: waiting for more requests; 1 request(s)" in tick.output
    forced = runner.invoke(main, ["jobs", "unlearn-now", "digits-mlp"])
    assert forced.exit_code == 0 and '"status": "queued"' in forced.output
    missing = runner.invoke(main, ["jobs", "unlearn-now", "nope"])
    assert missing.exit_code == 1 and "no model named 'nope'" in missing.output
    refused = runner.invoke(main, ["jobs", "retry", training])
    assert refused.exit_code == 1 and "status: only a failed job can be retried" in refused.output


@pytest.mark.slow  # trains a model, then queues, cancels and runs jobs through the CLI
def test_jobs_cancel_withdraws_a_queued_job_and_refuses_a_finished_one(env, api, make_client, install_demo):
    from app.cli import main

    admin, portal = make_client("admin"), make_client("portal")
    [training] = install_demo(DemoModel("digits-mlp", "mlp", TINY_MLP, {"default_method": "retrain"}))
    run_inline(training)
    request = submit(api, portal, "demo-subject-71")
    runner = CliRunner()
    job_id = json.loads(runner.invoke(main, ["jobs", "unlearn-now", "digits-mlp"]).output)["id"]

    cancelled = runner.invoke(main, ["jobs", "cancel", job_id])
    assert cancelled.exit_code == 0, cancelled.output
    assert json.loads(cancelled.output)["status"] == "cancelled"
    # Withdrawn before unlearning started: the request waits for the next batch.
    assert api.get(f"/v1/deletion-requests/{request['id']}", headers=admin.headers).json()["status"] == "scheduled"
    again = runner.invoke(main, ["jobs", "cancel", job_id])
    assert again.exit_code == 1 and "can be cancelled only before unlearning starts" in again.output
    finished = runner.invoke(main, ["jobs", "cancel", training])
    assert finished.exit_code == 1 and "this one is succeeded" in finished.output, finished.output
    missing = runner.invoke(main, ["jobs", "cancel", "no-such-job"])
    assert missing.exit_code == 1 and "no job no-such-job" in missing.output
