"""The dashboard over HTTP: sign-in, roles, CSRF, and actions through the services."""

from __future__ import annotations

import pytest

from tests.dashboard.conftest import add_purged_lineage, add_study, model_and_version, retrain_from_scratch


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


def test_model_page_lists_qualifications_with_their_scores(api, sign_in, seeded):
    sign_in("admin")
    qualified = add_study(seeded.model_name)
    refused = add_study(seeded.model_name, status="not_qualified", score=0.2)
    page = api.get(f"/admin/models/{seeded.model_name}").text
    assert f'data-qualification="{qualified}"' in page and f'data-qualification="{refused}"' in page
    assert '<span data-field="forget-score">0.91</span> (0.95 / 0.12)' in page
    assert '<span class="bad">not_qualified</span>' in page and "Why not: too weak" in page


@pytest.mark.slow  # the train button's recipe check loads torch in this process, as the API's does
def test_admin_trains_and_unlearns_now_from_the_model_page(api, make_client, sign_in, seeded):
    admin = make_client("admin")
    csrf = sign_in("admin")
    page = api.get(f"/admin/models/{seeded.model_name}").text
    assert "Train a new version" in page and "Unlearn now" in page
    # Nothing approved yet: the scheduler's own refusal, shown as a page, nothing queued.
    nothing = api.post(f"/admin/models/{seeded.model_name}/unlearn-now", data={"csrf": csrf})
    assert nothing.status_code == 409 and "nothing to unlearn" in nothing.text
    assert api.get("/v1/jobs", headers=admin.headers).json() == []
    for request_id in seeded.pending[:2]:
        api.post(f"/admin/requests/{request_id}/approve", data={"csrf": csrf})
    batch = api.post(f"/admin/models/{seeded.model_name}/unlearn-now", data={"csrf": csrf}, follow_redirects=False)
    assert batch.status_code == 303
    job_id = batch.headers["location"].rsplit("/", 1)[1]
    job = api.get(f"/v1/jobs/{job_id}", headers=admin.headers).json()
    assert job["kind"] == "unlearn" and sorted(job["request_ids"]) == sorted(seeded.pending[:2])
    trained = api.post(f"/admin/models/{seeded.model_name}/train", data={"csrf": csrf}, follow_redirects=False)
    assert trained.status_code == 303
    train_job = api.get(f"/v1/jobs/{trained.headers['location'].rsplit('/', 1)[1]}", headers=admin.headers).json()
    assert (train_job["kind"], train_job["status"]) == ("train", "queued")
    # Without the form's token nothing is queued; an unknown action is refused.
    assert api.post(f"/admin/models/{seeded.model_name}/train", data={}).status_code == 403
    assert api.post(f"/admin/models/{seeded.model_name}/delete", data={"csrf": csrf}).status_code == 400
    assert len(api.get("/v1/jobs", headers=admin.headers).json()) == 2


def test_auditor_sees_qualifications_but_no_model_buttons_and_cannot_train(api, make_client, sign_in, seeded):
    admin = make_client("admin")
    csrf = sign_in("auditor")
    add_study(seeded.model_name)
    page = api.get(f"/admin/models/{seeded.model_name}").text
    assert "neggrad_plus" in page and "<button" in page  # only the sign-out button
    assert "Train a new version" not in page and "Unlearn now" not in page
    assert page.count("<button") == 1
    assert api.post(f"/admin/models/{seeded.model_name}/train", data={"csrf": csrf}).status_code == 403
    assert api.get("/v1/jobs", headers=admin.headers).json() == []


def test_overview_shows_failing_webhooks_and_lapsed_qualifications(webhook_env, api, make_client, sign_in, seeded):
    import socket

    from tests.webhooks.test_dispatch import deliver_now

    admin = make_client("admin")
    csrf = sign_in("admin")
    overview = api.get("/admin").text
    assert "All webhook endpoints are delivering." in overview and "No qualification has lapsed." in overview
    with socket.socket() as sock:  # a port nothing listens on: every delivery is refused
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    created = api.post("/v1/webhooks/endpoints", json={"url": f"http://127.0.0.1:{closed}/hook"},
                       headers=admin.headers)
    assert created.status_code == 201, created.text
    endpoint_id = created.json()["id"]
    assert "All webhook endpoints are delivering." in api.get("/admin").text
    api.post(f"/admin/requests/{seeded.pending[0]}/approve", data={"csrf": csrf})
    deliver_now()  # the real dispatcher tries, fails, and marks the endpoint failing
    overview = api.get("/admin").text
    assert f'data-endpoint="{endpoint_id}"' in overview and f"127.0.0.1:{closed}/hook" in overview

    add_study(seeded.model_name)
    assert "No qualification has lapsed." in api.get("/admin").text  # v1 is still the active version
    retrain_from_scratch(seeded.model_name)
    overview = api.get("/admin").text
    assert f'data-lapsed="{seeded.model_name}:neggrad_plus"' in overview
    assert "<td>v1</td><td>v2</td>" in overview


def test_job_page_plots_the_per_record_loss_distributions(api, make_client, sign_in, seeded):
    from app.core.database import session_scope
    from app.jobs.models import UnlearningJob

    sign_in("auditor")
    model_id, version_id = model_and_version(seeded.model_name)
    histogram = {"edges": [0.0, 0.5, 1.0, 1.5, 2.0],
                 "counts": {"forget": [1, 2, 3, 2], "heldout": [2, 4, 6, 4],
                            "original_forget": [7, 1, 0, 0], "original_heldout": [2, 4, 6, 4]},
                 "clipped": {"forget": 0, "heldout": 1, "original_forget": 0, "original_heldout": 1}}
    mia = {"auc": 0.51, "auc_ci_low": 0.4, "auc_ci_high": 0.62, "original_auc": 0.83, "power": 0.9,
           "forget_size": 8, "reference_size": 16, "loss_histogram": histogram}
    with session_scope() as session:
        plotted = UnlearningJob(model_id=model_id, base_version_id=version_id, method="retrain", status="succeeded",
                                report={"verification": {"verdict": "pass", "mia": mia}, "verdict": "pass"})
        older = UnlearningJob(model_id=model_id, method="retrain", status="succeeded",
                              report={"verification": {"verdict": "pass", "mia": {"testable": False}}})
        session.add_all([plotted, older])
        session.flush()
        plotted_id, older_id = plotted.id, older.id
    page = api.get(f"/admin/jobs/{plotted_id}").text
    assert '<title id="loss-title-0">Per-record loss after unlearning' in page
    assert '<title id="loss-title-1">Per-record loss under the original model' in page
    assert page.count("8 forget-set records against 16 held-out records") == 2
    # Two plots (after unlearning, the original), each with one bar per bin and a held-out line.
    assert page.count('class="bar forget"') == 8 and page.count('class="line heldout"') == 2
    assert "Loss-attack AUC 0.51" in page and "the original model's 0.83" in page
    assert "No per-record loss distribution was recorded" in api.get(f"/admin/jobs/{older_id}").text


def test_audit_browser_filters_by_event_type_entity_actor_and_time(api, make_client, sign_in, seeded):
    from datetime import UTC, datetime, timedelta

    from app.audit.service import seal_if_free

    csrf = sign_in("admin")
    first = seeded.pending[0]
    api.post(f"/admin/requests/{first}/approve", data={"csrf": csrf})
    seal_if_free()  # chain whatever the sealer after commit has not reached yet
    everything = api.get("/admin/audit").text
    assert "request.scheduled" in everything and "request.received" in everything
    approved = api.get("/admin/audit", params={"action": "request.scheduled"}).text
    assert _actions(approved) == ["request.scheduled"]
    assert "<select" in approved and '<option value="request.scheduled" selected>' in approved
    by_entity = api.get("/admin/audit", params={"entity_id": first}).text
    assert set(_actions(by_entity)) >= {"request.received", "request.scheduled"}
    assert all(f"<code>{first}</code>" in row for row in by_entity.split("<tr data-seq")[1:])
    future = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    assert "No events match." in api.get("/admin/audit", params={"since": future}).text
    assert "request.received" in api.get("/admin/audit", params={"until": future}).text
    assert "No events match." in api.get("/admin/audit", params={"actor": "nobody"}).text
    assert api.get("/admin/audit", params={"since": "not a time"}).status_code == 422


def test_audit_browser_pages_back_through_older_events(api, make_client, sign_in, seeded):
    import re

    sign_in("admin")
    from app.audit.service import record, seal_if_free
    from app.core.database import session_scope

    with session_scope() as session:  # enough events for more than one page
        for n in range(50):
            record(session, actor="test", action="test.filler", entity_type="test", entity_id=str(n), payload={})
    seal_if_free()
    page = api.get("/admin/audit").text
    seqs = [int(s) for s in re.findall(r'data-seq="(\d+)"', page)]
    assert len(seqs) == 50 and seqs == sorted(seqs, reverse=True)
    older = re.search(r'<a href="([^"]+)">Older events</a>', page).group(1).replace("&amp;", "&")
    more = [int(s) for s in re.findall(r'data-seq="(\d+)"', api.get(older).text)]
    assert more and max(more) < min(seqs)


def _actions(page: str) -> list[str]:
    import re

    return re.findall(r'<td data-field="action">([^<]+)</td>', page)


def test_filter_forms_send_empty_fields_as_any(api, sign_in, seeded):
    """A browser submits every field of a GET form; the empty ones mean "any"."""
    sign_in("admin")
    listed = api.get("/admin/requests", params={"status": "", "external_ref": "", "due_days": ""})
    assert listed.status_code == 200 and all(r in listed.text for r in seeded.pending)
    events = api.get("/admin/audit", params={"action": "", "entity_type": "", "entity_id": "", "actor": "",
                                             "since": "", "until": ""})
    assert events.status_code == 200 and "request.received" in events.text
    assert api.get("/admin/requests", params={"due_days": "soon"}).status_code == 422
    assert api.get("/admin/requests", params={"due_days": "-1"}).status_code == 422
    assert api.get("/admin/audit", params={"before": "0"}).status_code == 422


def test_every_page_title_is_plain_text_and_each_section_appears_once(api, sign_in, seeded):
    import re

    sign_in("admin")
    pages = {"/admin": "Overview", "/admin/requests": "Requests", "/admin/jobs": "Jobs", "/admin/models": "Models",
             f"/admin/models/{seeded.model_name}": f"Model {seeded.model_name}", "/admin/audit": "Audit",
             "/admin/webhooks": "Webhooks"}
    for path, name in pages.items():
        page = api.get(path).text
        [title] = re.findall(r"<title>(.*?)</title>", page, flags=re.DOTALL)
        assert title == f"{name} · Unlearnd admin", (path, title[:200])
        headings = re.findall(r'<h2 id="([^"]+)"', page)
        assert len(headings) == len(set(headings)), (path, headings)
