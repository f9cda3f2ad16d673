"""The dashboard over HTTP: sign-in, roles, CSRF, and actions through the services."""

from __future__ import annotations

import pytest

from tests.dashboard.conftest import add_purged_lineage


def _status(api, request_id: str, headers: dict) -> str:
    return api.get(f"/v1/deletion-requests/{request_id}", headers=headers).json()["status"]


def test_pages_need_a_session(api):
    for path in ("/admin", "/admin/requests", "/admin/jobs", "/admin/models", "/admin/audit"):
        response = api.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/admin/login", path


def test_portal_and_ml_keys_cannot_sign_in_and_bad_keys_are_refused(api, make_client):
    for role in ("portal", "ml"):
        response = api.post("/admin/login", data={"api_key": make_client(role).api_key}, follow_redirects=False)
        assert response.status_code == 403
        assert "unlearnd_dashboard" not in response.cookies
    assert api.post("/admin/login", data={"api_key": "ulk_nope_nope"}, follow_redirects=False).status_code == 401


def test_the_session_cookie_is_http_only_and_strict_and_stored_hashed(api, make_client):
    from sqlalchemy import select

    from app.core.database import session_scope
    from app.dashboard.models import DashboardSession

    response = api.post("/admin/login", data={"api_key": make_client("admin").api_key}, follow_redirects=False)
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/admin" in cookie
    token = response.cookies["unlearnd_dashboard"]
    with session_scope() as session:
        stored = session.scalars(select(DashboardSession.token_hash)).all()
    assert token not in stored and len(stored) == 1


def test_admin_approves_rejects_with_a_reason_and_bulk_approves(api, make_client, sign_in, seeded):
    admin = make_client("admin")
    csrf = sign_in("admin")
    overview = api.get("/admin")
    assert overview.status_code == 200 and 'data-count="pending_approval">5<' in overview.text
    first, second, *rest = seeded.pending
    detail = api.get(f"/admin/requests/{first}")
    assert detail.status_code == 200 and "Approve" in detail.text and "person0@example.org" not in detail.text
    assert api.post(f"/admin/requests/{first}/approve", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    assert _status(api, first, admin.headers) == "scheduled"
    # A rejection needs a reason: refused without one, nothing changes.
    refused = api.post(f"/admin/requests/{second}/reject", data={"csrf": csrf, "reason": ""})
    assert refused.status_code == 422
    assert _status(api, second, admin.headers) == "pending_approval"
    api.post(f"/admin/requests/{second}/reject", data={"csrf": csrf, "reason": "identity not verified"})
    assert _status(api, second, admin.headers) == "rejected"
    history = api.get(f"/v1/deletion-requests/{second}", headers=admin.headers).json()["history"]
    assert history[-1]["reason"] == "identity not verified"
    bulk = api.post("/admin/requests", data={"csrf": csrf, "action": "approve", "ids": rest}, follow_redirects=False)
    assert bulk.status_code == 303
    assert {_status(api, r, admin.headers) for r in rest} == {"scheduled"}


def test_bulk_reports_each_refusal_and_keeps_the_rest(api, make_client, sign_in, seeded):
    admin = make_client("admin")
    csrf = sign_in("admin")
    first, second = seeded.pending[:2]
    api.post(f"/admin/requests/{first}/approve", data={"csrf": csrf})
    page = api.post("/admin/requests", data={"csrf": csrf, "action": "approve", "ids": [first, second]})
    assert page.status_code == 207 and first in page.text
    assert _status(api, second, admin.headers) == "scheduled"


def test_a_post_without_the_csrf_token_changes_nothing(api, make_client, sign_in, seeded):
    admin = make_client("admin")
    sign_in("admin")
    request_id = seeded.pending[0]
    for data in ({}, {"csrf": "forged"}):
        assert api.post(f"/admin/requests/{request_id}/approve", data=data).status_code == 403
    assert _status(api, request_id, admin.headers) == "pending_approval"


def test_auditor_reads_without_action_buttons_and_cannot_act(api, make_client, sign_in, seeded):
    admin = make_client("admin")
    csrf = sign_in("auditor")
    assert api.get("/admin", follow_redirects=False).headers["location"] == "/admin/audit"
    assert api.get(f"/admin/requests/{seeded.pending[0]}").status_code == 403
    add_purged_lineage(seeded.model_name)
    for path in ("/admin/audit", "/admin/jobs", f"/admin/models/{seeded.model_name}"):
        page = api.get(path)
        assert page.status_code == 200 and "Approve" not in page.text and "Retry" not in page.text
    refused = api.post(f"/admin/requests/{seeded.pending[0]}/approve", data={"csrf": csrf})
    assert refused.status_code == 403
    assert _status(api, seeded.pending[0], admin.headers) == "pending_approval"


def test_lineage_graph_strikes_out_the_purged_version(api, sign_in, seeded):
    sign_in("admin")
    add_purged_lineage(seeded.model_name)
    page = api.get(f"/admin/models/{seeded.model_name}").text
    assert '<g class="version state-purged" data-version="1">' in page
    assert 'class="strike"' in page and "<del>purged</del>" in page
    assert '<g class="version state-active" data-version="2">' in page


def test_csv_export_has_hashes_and_no_identifier(api, sign_in, seeded):
    sign_in("admin")
    export = api.get("/admin/requests.csv")
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    lines = export.text.strip().splitlines()
    assert len(lines) == 1 + len(seeded.pending)
    assert "example.org" not in export.text


def test_audit_verify_button_runs_the_cli_check(api, sign_in, seeded):
    csrf = sign_in("auditor")
    page = api.post("/admin/audit/verify", data={"csrf": csrf})
    assert page.status_code == 200 and 'data-verdict="ok"' in page.text


@pytest.mark.parametrize("days,colour", [(20, "green"), (9.5, "amber"), (4, "red"), (-1, "red")])
def test_countdown_colours(days, colour):
    from app.dashboard.service import urgency

    assert urgency(days) == colour


def test_sign_out_ends_the_session(api, sign_in):
    csrf = sign_in("admin")
    assert api.post("/admin/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    assert api.get("/admin/audit", follow_redirects=False).status_code == 303
