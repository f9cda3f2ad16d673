"""No raw subject identifier reaches the database, the logs or a response: seed known raw
identifiers, exercise every deletion-request route and the CLI, then grep a full dump."""

from __future__ import annotations

import io
import logging
import subprocess
from pathlib import Path

from click.testing import CliRunner

from tests.jobs.conftest import wait_for
from tests.requests.conftest import submission

URL = "/v1/deletion-requests"
RAW = {
    "email": "Zelda.Quarantine-7731@Example.org",
    "phone": "+44 20 7946 0958",
    "user_id": "user-raw-55213-xq",
    "custom": "passport-X99887766",
}
MALFORMED_EMAIL = "zelda-malformed-88412.example.org"
# What each raw value becomes after normalisation: it must not appear either.
NEEDLES = [*RAW.values(), "zelda.quarantine-7731@example.org", "+442079460958", "2079460958", MALFORMED_EMAIL]


def _subject(*kinds: str) -> list[dict[str, str]]:
    return [{"type": kind, "value": RAW[kind]} for kind in kinds]


def _database_dump(url: str) -> str:
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        return "".join(p.read_bytes().decode("latin-1") for p in path.parent.glob(path.name + "*"))
    dbname = url.rsplit("/", 1)[1]
    return subprocess.run(
        ["pg_dump", "-h", "127.0.0.1", "-U", "postgres", "--data-only", "--inserts", dbname],
        check=True, capture_output=True, text=True,
    ).stdout


def test_no_raw_identifier_in_database_logs_or_responses(api, make_client, seed_model, env, backend, start_worker,
                                                        tmp_path):
    from app.core.logging import JsonFormatter
    from app.requests.cli import cli

    captured = io.StringIO()
    handler = logging.StreamHandler(captured)
    handler.setFormatter(JsonFormatter())
    root, engine_log = logging.getLogger(), logging.getLogger("sqlalchemy.engine")
    saved = root.level, engine_log.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    engine_log.setLevel(logging.INFO)  # every SQL statement with its parameters
    responses: list[str] = []
    try:
        seeded = seed_model({"k1": ("email", RAW["email"]), "k2": ("phone", RAW["phone"])})
        portal = make_client("portal", name="pii-portal")
        gated = make_client("portal", requires_approval=True)
        admin = make_client("admin")

        def call(method: str, path: str, caller, **kwargs) -> dict:
            response = api.request(method, path, headers={**caller.headers, **kwargs.pop("headers", {})}, **kwargs)
            responses.append(response.text)
            assert response.status_code < 500, response.text
            return response.json()

        full = submission(subject=_subject("email", "phone", "user_id", "custom"), external_ref="pii-1",
                          records=[{"dataset": seeded.dataset, "record_key": "k1"}])
        first = call("POST", URL, portal, json=full, headers={"Idempotency-Key": "pii-key"})
        assert first["status"] == "scheduled"
        call("POST", URL, portal, json=full, headers={"Idempotency-Key": "pii-key"})
        call("POST", URL, portal, json=submission(subject=_subject("email"), jurisdiction="X"),
             headers={"Idempotency-Key": "pii-key"})
        call("POST", URL, portal, json=submission(subject=[{"type": "email", "value": MALFORMED_EMAIL}]))
        call("POST", URL, portal, json=submission(subject=_subject("email"), legal_basis="nope"))
        gated_request = call("POST", URL, gated, json=submission(subject=_subject("phone")))
        rejected = call("POST", URL, gated, json=submission(subject=_subject("email"), external_ref="g2"))
        call("GET", URL, portal)
        call("GET", URL, admin, params={"external_ref": "pii-1"})
        call("GET", f"{URL}/{first['id']}", portal)
        call("POST", f"{URL}/{gated_request['id']}/approve", admin)
        call("POST", f"{URL}/{rejected['id']}/reject", admin, json={"reason": "exempt"})
        call("POST", f"{URL}/{first['id']}/extend", admin, json={"reason": "volume"})
        call("POST", f"{URL}/{gated_request['id']}/cancel", gated)
        call("POST", f"{URL}/{first['id']}/retry", admin)

        runner = CliRunner()
        for args, exit_code in (
            (["submit", "--client", "pii-portal", "--email", RAW["email"], "--phone", RAW["phone"],
              "--legal-basis", "ccpa_1798_105"], 0),
            (["submit", "--client", "pii-portal", "--email", MALFORMED_EMAIL, "--legal-basis", "gdpr_art17"], 1),
            (["list"], 0),
            (["show", first["id"]], 0),
        ):
            result = runner.invoke(cli, args)
            assert result.exit_code == exit_code and result.output.strip(), (args, result.output)
            responses.append(result.output)
        assert '"status": "scheduled"' in responses[-4]
        assert "subject.0.value" in responses[-3]
        assert first["id"] in responses[-2] and first["id"] in responses[-1]

        # A real worker process takes the model's batch: its job fails on the seeded model's
        # missing artifact, so the worker logs the task, the job and its errors and retries.
        start_worker()
        job = call("POST", f"/v1/models/{seeded.model_name}/unlearn-now", admin)["job"]
        wait_for(lambda: call("GET", f"/v1/jobs/{job['id']}", admin)["status"] == "failed", timeout=120,
                 what="the seeded model's job to fail for good")
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        engine_log.setLevel(saved[1])

    logs = captured.getvalue()
    assert "deletion_requests" in logs  # the statements really were captured
    worker_logs = "".join(path.read_text() for path in tmp_path.glob("worker-*.log"))
    assert job["id"] in worker_logs and "job attempt failed" in worker_logs  # the worker's log is in the scan
    haystacks = {
        "database": _database_dump(env["UNLEARND_DATABASE_URL"]).lower(),
        "logs": logs.lower(),
        "worker logs": worker_logs.lower(),
        "responses": "\n".join(responses).lower(),
    }
    assert "deletion_request_history" in haystacks["database"] or "deletion_requests" in haystacks["database"]
    leaks = [(where, needle) for where, text in haystacks.items() for needle in NEEDLES if needle.lower() in text]
    assert leaks == []
