"""The embedded default as a newcomer runs it: ``unlearnd run`` from an empty directory
(SQLite, its SQLite queue, one worker with the scheduler, the demo), then the README
walk-through with the README's own commands."""

from __future__ import annotations

import re

import pytest

from tests.conftest import _free_port
from tests.e2e.conftest import clean_environment, http_ready, wait_until
from tests.e2e.walkthrough import Api, wait_for_training, walk_through

SUBJECT = "demo-subject-42"
# README: the demo's first single-subject removal for digits-logreg is a certified Newton step
# (a fresh lineage's budget holds about a dozen of them before a retrain).
DEMO_METHODS = {"digits-sisa": {"sisa"}, "digits-logreg": {"newton"}}


@pytest.mark.timeout(900)
def test_unlearnd_run_takes_the_readme_walkthrough_to_a_verified_certificate(processes, tmp_path):
    port = _free_port()
    # The one documented knob turned: a scheduler tick every 2 s instead of 30 s.
    env = clean_environment(UNLEARND_SCHEDULER_INTERVAL_SECONDS="2")
    service = processes.start("unlearnd-run", ["run", "--port", str(port)], env, cwd=tmp_path, separate_stdout=True)
    base_url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ready(base_url), timeout=180, what="/readyz", watch=(service,))
    printed = service.stdout_path.read_text()
    [key] = re.findall(r"^(ulk_\S+)$", printed, flags=re.MULTILINE)
    assert f"data: {tmp_path / 'var'}" in printed
    for part in ("unlearnd.sqlite3", "queue.sqlite3", "secrets/subject_pepper", "datasets/demo/digits.parquet"):
        assert (tmp_path / "var" / part).exists(), part

    api = Api(base_url, key)
    wait_for_training(api, 2, watch=(service,))
    request = walk_through(api, SUBJECT, models=DEMO_METHODS,
                           cli_env=env, workdir=tmp_path, watch=(service,))
    # README: the digits-logreg job states its certificate.
    [newton] = [job for job in api.call("GET", f"/v1/jobs?request_id={request['id']}") if job["method_used"] == "newton"]
    certification = api.call("GET", f"/v1/jobs/{newton['id']}")["report"]["certification"]
    assert (certification["guarantee"], certification["epsilon"], certification["delta"]) == ("certified", 1.0, 1e-4)
    assert 0 < certification["bound"] <= certification["budget"], certification

    # Generated on first use (the first signed tree head), under the data dir.
    assert (tmp_path / "var" / "secrets" / "signing_key.pem").exists()
    service.stop()
    assert service.process.returncode == 0, service.log()[-3000:]
    log = service.log()
    assert "celery@" in log and "unlearnd.run_job" in log  # the worker's log is in there too
    assert SUBJECT not in log
