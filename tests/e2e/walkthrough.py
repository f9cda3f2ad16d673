"""The README walk-through, step by step, against a running service: what a newcomer
types, with the checks a newcomer would make by eye turned into assertions."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import Service, unlearnd, wait_until

# A forgery a schema check cannot catch: "no data found" is a valid outcome, so only the
# signature tells that the file was edited.
FORGERY_SED = 's/"outcome":"forgotten"/"outcome":"no_data_found"/'


@dataclass
class Api:
    base_url: str
    key: str

    def response(self, method: str, path: str, *, expect: int | tuple[int, ...] = 200, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.key}", **kwargs.pop("headers", {})}
        response = httpx.request(method, f"{self.base_url}{path}", headers=headers, timeout=30, **kwargs)
        allowed = (expect,) if isinstance(expect, int) else expect
        assert response.status_code in allowed, f"{method} {path}: {response.status_code} {response.text}"
        return response

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.response(method, path, **kwargs).json()


def wait_for_training(api: Api, models: int, *, watch: tuple[Service, ...], timeout: float = 400) -> list[dict]:
    def trained() -> list[dict] | None:
        jobs = api.call("GET", "/v1/jobs?kind=train")
        assert not [j for j in jobs if j["status"] in ("failed", "cancelled")], jobs
        done = [j for j in jobs if j["status"] == "succeeded"]
        return done if len(done) == models else None

    return wait_until(trained, timeout=timeout, what=f"{models} training job(s)", watch=watch)


def submit(api: Api, subject: str, idempotency_key: str) -> dict:
    body = {"subject": [{"type": "user_id", "value": subject}], "legal_basis": "gdpr_art17", "jurisdiction": "EU"}
    created = api.call("POST", "/v1/deletion-requests", expect=202, json=body,
                       headers={"Idempotency-Key": idempotency_key})
    assert created["status"] == "scheduled", created
    replay = api.call("POST", "/v1/deletion-requests", expect=200, json=body, headers={"Idempotency-Key": idempotency_key})
    assert replay["id"] == created["id"]
    return created


def wait_for_request(api: Api, request_id: str, status: str, *, watch: tuple[Service, ...],
                     timeout: float = 300) -> dict:
    def reached() -> dict | None:
        request = api.call("GET", f"/v1/deletion-requests/{request_id}")
        assert request["status"] not in ({"completed", "failed", "rejected"} - {status}), request
        return request if request["status"] == status else None

    return wait_until(reached, timeout=timeout, what=f"request {request_id} {status}", watch=watch)


def walk_through(api: Api, subject: str, *, models: dict[str, set[str]], cli_env: dict[str, str], workdir: Path,
                 watch: tuple[Service, ...]) -> dict:
    """From a submitted request to a verified certificate; ``models`` maps each model the
    subject is in to the methods its job may end with. Returns the completed request."""
    request = submit(api, subject, f"walkthrough-{subject}")
    # Nobody asks for a batch: the scheduler's tick has to find the request on its own.
    done = wait_for_request(api, request["id"], "completed", watch=watch)
    assert done["outcome"] == "forgotten"
    statuses = [step["to_status"] for step in done["history"]]
    assert statuses[-3:] == ["unlearning", "verifying", "completed"] and "scheduled" in statuses, statuses

    jobs = api.call("GET", f"/v1/jobs?request_id={request['id']}")
    assert len(jobs) == len(models), jobs
    for job in jobs:
        assert (job["status"], job["stage"], job["progress"]) == ("succeeded", "done", 1.0), job
        assert job["forget_count"] > 0 and job["result_version_id"], job
        plan = api.call("GET", f"/v1/jobs/{job['id']}")["report"]["plan"]
        assert plan["reason"] != "forced", plan  # planned by a scheduler tick, not by unlearn-now
    model_ids = {api.call("GET", f"/v1/models/{name}")["id"]: name for name in models}
    used = {model_ids[job["model_id"]]: job["method_used"] for job in jobs}
    assert used.keys() == models.keys() and all(used[name] in models[name] for name in models), used

    for name in models:
        versions = api.call("GET", f"/v1/models/{name}/versions")
        base, result = versions[-2], versions[-1]
        assert (base["state"], result["state"], result["origin"]) == ("purged", "active", "unlearned"), versions
        assert result["id"] in {job["result_version_id"] for job in jobs}

    certificate = workdir / f"certificate-{request['id']}.json"
    # A worker issues it through the outbox as the request completes; until then the GET is 202.
    issued = wait_until(lambda: (r := api.response("GET", f"/v1/deletion-requests/{request['id']}/certificate",
                                                   expect=(200, 202))).status_code == 200 and r,
                        timeout=120, what="certificate issued by a worker", watch=watch)
    certificate.write_bytes(issued.content)
    keys = workdir / "keys.json"
    keys.write_bytes(httpx.get(f"{api.base_url}/.well-known/unlearnd-keys", timeout=30).content)
    raw_public_key = json.loads(keys.read_text())["keys"][-1]["x"]
    for how in (["--public-key", str(keys)], ["--keys-url", f"{api.base_url}/.well-known/unlearnd-keys"],
                ["--public-key", raw_public_key]):
        checked = unlearnd("certificate", "verify", str(certificate), *how, env=cli_env, cwd=workdir)
        assert checked.returncode == 0, checked
        assert checked.stdout.startswith("valid: certificate ") and request["id"] in checked.stdout, checked

    forged = workdir / "edited.json"
    forged.write_bytes(subprocess.run(["sed", FORGERY_SED, str(certificate)], check=True, capture_output=True).stdout)
    assert forged.read_bytes() != certificate.read_bytes(), "the forgery changed nothing"
    rejected = unlearnd("certificate", "verify", str(forged), "--public-key", str(keys), env=cli_env, cwd=workdir)
    assert rejected.returncode == 1, rejected
    assert "INVALID: signature" in rejected.stderr, rejected

    audit = unlearnd("audit", "verify", env=cli_env, cwd=workdir)
    assert audit.returncode == 0 and audit.stdout.startswith("ok: "), audit
    listed = unlearnd("requests", "list", env=cli_env, cwd=workdir)
    assert listed.returncode == 0, listed
    [line] = [line for line in listed.stdout.splitlines() if line.startswith(request["id"])]
    assert line.split()[1] == "completed", listed.stdout
    return done
