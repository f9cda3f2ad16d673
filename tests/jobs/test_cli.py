"""``unlearnd jobs``: the same service as the API, from the command line."""

from __future__ import annotations

from click.testing import CliRunner

from app.demo import DemoModel
from tests.jobs.conftest import TINY_MLP, run_inline, submit


def test_jobs_commands(env, api, make_client, install_demo):
    from app.cli import main

    portal = make_client("portal")
    [training] = install_demo(DemoModel("digits-mlp", "mlp", TINY_MLP, {"default_method": "retrain"}))
    runner = CliRunner()
    listed = runner.invoke(main, ["jobs", "list", "--kind", "train"])
    assert listed.exit_code == 0 and training in listed.output and "queued" in listed.output
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
