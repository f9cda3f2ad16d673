"""/metrics: who may read it, and that its figures are the database's and every process's."""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.requests.conftest import submission


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text format (labels matched exactly)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
        if line.split("{")[0].split(" ")[0] == name and found == labels:
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_need_an_admin_key(api, make_client):
    assert api.get("/metrics").status_code == 401
    assert api.get("/metrics", headers=make_client("portal").headers).status_code == 403
    assert api.get("/metrics", headers=make_client("ml").headers).status_code == 403
    response = api.get("/metrics", headers=make_client("admin").headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")


def test_request_counts_and_intake_latency_follow_what_happened(api, make_client, backend):
    admin, portal = make_client("admin"), make_client("portal")
    before = api.get("/metrics", headers=admin.headers).text
    assert sample(before, "unlearnd_deletion_requests", status="completed", legal_basis="gdpr_art17") is None
    statuses = set()
    for n in range(3):
        created = api.post("/v1/deletion-requests", json=submission(external_ref=f"m-{n}"), headers=portal.headers)
        assert created.status_code in (201, 202), created.text
        statuses.add(str(created.status_code))
    (status,) = statuses
    text = api.get("/metrics", headers=admin.headers).text
    # Unknown subjects complete at once with "no data found".
    assert sample(text, "unlearnd_deletion_requests", status="completed", legal_basis="gdpr_art17") == 3
    # The HTTP histogram is this process's (other tests ran here before): count the difference.
    timed = {"route": "/v1/deletion-requests", "method": "POST", "status": status}
    timed_before = sample(before, "unlearnd_http_request_duration_seconds_count", **timed) or 0
    assert sample(text, "unlearnd_http_request_duration_seconds_count", **timed) == timed_before + 3
    assert sample(text, "unlearnd_request_completion_seconds_gcount") == 3
    assert sample(text, "unlearnd_open_request_deadline_slack_seconds_gcount") == 0
    assert sample(text, "unlearnd_outbox_pending") is not None
    # Route templates, never raw paths: an id in a path would make a series per request.
    request_id = created.json()["id"]
    assert api.get(f"/v1/deletion-requests/{request_id}", headers=portal.headers).status_code == 200
    text = api.get("/metrics", headers=admin.headers).text
    # Starlette keeps a path converter in the template ({record_key:path}); OpenAPI drops it.
    routes = {re.sub(r":\w+}", "}", r) for r in re.findall(r'route="([^"]*)"', text)}
    assert "/v1/deletion-requests/{request_id}" in routes
    # Whatever other tests in this process called (dashboard, DRP, docs), no label carries an id:
    # every varying segment is a {placeholder}.
    raw_id = re.compile(r"^([0-9a-f]{8}-[0-9a-f-]{27}|[0-9a-f]{16,}|\d+)$", re.IGNORECASE)
    raw = {r for r in routes if any(raw_id.match(segment) for segment in r.split("/"))}
    assert not raw and not any(request_id in r for r in routes), raw


def test_open_requests_report_their_deadline_slack(api, make_client, seed_model):
    seeded = seed_model({"r-1": ("email", "ann@example.org")})
    portal, admin = make_client("portal"), make_client("admin")
    body = submission(subject=[{"type": "email", "value": "ann@example.org"}])
    assert api.post("/v1/deletion-requests", json=body, headers=portal.headers).status_code in (201, 202)
    text = api.get("/metrics", headers=admin.headers).text
    assert sample(text, "unlearnd_open_request_deadline_slack_seconds_gcount") == 1
    # Due in about a month: above 20 days, within 45.
    assert sample(text, "unlearnd_open_request_deadline_slack_seconds_bucket", le=repr(20 * 86400.0)) == 0
    assert sample(text, "unlearnd_open_request_deadline_slack_seconds_bucket", le=repr(45 * 86400.0)) == 1
    assert seeded.version_id


def test_allow_list_parses_cidrs_and_matches_addresses(monkeypatch):
    from app.core.config import Settings
    from app.metrics.service import address_allowed

    settings = Settings(metrics_allow_cidrs="10.0.0.0/8, 127.0.0.1/32")
    assert settings.metrics_allow_cidrs == [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32")]
    assert address_allowed("10.2.3.4", settings.metrics_allow_cidrs)
    assert not address_allowed("192.168.1.1", settings.metrics_allow_cidrs)
    assert not address_allowed("testclient", settings.metrics_allow_cidrs)
    with pytest.raises(ValueError):
        Settings(metrics_allow_cidrs="10.0.0.0/33")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_api_processes_are_summed_and_an_allow_listed_scraper_needs_no_key(env, make_client, tmp_path):
    """Two `unlearnd serve` processes on one data dir: a scrape of either counts both."""
    portal = make_client("portal")
    process_env = {**os.environ, **env, "UNLEARND_METRICS_ALLOW_CIDRS": "127.0.0.1/32"}
    unlearnd = Path(sys.executable).with_name("unlearnd")
    ports = [_free_port(), _free_port()]
    processes = [
        subprocess.Popen([str(unlearnd), "serve", "--port", str(port)], env=process_env,
                         stdout=(tmp_path / f"serve-{port}.log").open("wb"), stderr=subprocess.STDOUT,
                         start_new_session=True)
        for port in ports
    ]
    try:
        for port in ports:
            deadline = time.monotonic() + 90
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, (tmp_path / f"serve-{port}.log").read_text()[-2000:]
                time.sleep(0.3)
        for n, port in enumerate([ports[0], ports[0], ports[1]]):
            created = httpx.post(f"http://127.0.0.1:{port}/v1/deletion-requests",
                                 json=submission(external_ref=f"mp-{n}"), headers=portal.headers, timeout=30)
            assert created.status_code == 202, created.text
        for port in ports:
            scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
            assert scraped.status_code == 200, scraped.text
            assert sample(scraped.text, "unlearnd_http_request_duration_seconds_count",
                          route="/v1/deletion-requests", method="POST", status="202") == 3
            assert sample(scraped.text, "unlearnd_deletion_requests",
                          status="completed", legal_basis="gdpr_art17") == 3
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
