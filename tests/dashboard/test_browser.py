"""The dashboard in a real browser (Debian's Chromium driven by Playwright), on a real server.

Every page is also checked with axe-core for serious or critical accessibility violations,
and screenshotted at 1280x800 and 390 px wide into artifacts/dashboard/ (git-ignored).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect

from tests.dashboard.conftest import add_purged_lineage, add_study

pytestmark = pytest.mark.slow
# Generous waits: CI's two cores also run the other half of the suite meanwhile.
expect.set_options(timeout=30_000)
SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "dashboard"
SIZES = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
DOCS = Path(__file__).resolve().parents[2] / "docs"
# Set to refresh the README's screenshots (docs/dashboard-*.png) from a real run.
REFRESH_DOCS = os.environ.get("UNLEARND_DOCS_SCREENSHOTS") == "1"


def sign_in(page: Page, base: str, key: str) -> None:
    page.set_default_timeout(60_000)
    page.goto(f"{base}/admin/login")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def check_page(page: Page, name: str) -> None:
    """No serious or critical axe violation; screenshots at both sizes."""
    results = Axe().run(page)
    bad = [v for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
    assert not bad, [(v["id"], v["help"], [n["target"] for n in v["nodes"]][:3]) for v in bad]
    SHOTS.mkdir(parents=True, exist_ok=True)
    for label, size in SIZES.items():
        page.set_viewport_size(size)
        page.screenshot(path=str(SHOTS / f"{name}-{label}.png"), full_page=True)
    page.set_viewport_size(SIZES["desktop"])


def for_readme(name: str) -> None:
    """Copy a page's desktop screenshot into docs/ when asked to (UNLEARND_DOCS_SCREENSHOTS=1)."""
    if REFRESH_DOCS:
        shutil.copyfile(SHOTS / f"{name}-desktop.png", DOCS / f"dashboard-{name}.png")


def test_admin_works_through_the_pages(page: Page, live_server, make_client, seeded):
    admin = make_client("admin")
    add_purged_lineage(seeded.model_name)
    sign_in(page, live_server, admin.api_key)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    check_page(page, "overview")

    first, second, *rest = seeded.pending
    page.goto(f"{live_server}/admin/requests/{first}")
    check_page(page, "request")
    page.get_by_role("button", name="Approve").click()
    expect(page.locator("[data-field=status]")).to_have_text("scheduled")

    page.goto(f"{live_server}/admin/requests/{second}")
    page.get_by_label("Reason to reject").fill("identity could not be verified")
    page.get_by_role("button", name="Reject").click()
    expect(page.locator("[data-field=status]")).to_have_text("rejected")
    expect(page.get_by_text("identity could not be verified")).to_be_visible()

    page.goto(f"{live_server}/admin/requests?status=pending_approval")
    check_page(page, "requests")
    for request_id in rest:
        page.get_by_label(f"Select request {request_id}").check()
    page.get_by_label("With the selected").select_option("approve")
    page.get_by_role("button", name="Apply to selected").click()
    for request_id in rest:
        expect(page.locator(f"tr[data-request='{request_id}'] [data-field=status]")).to_have_text("scheduled")

    add_study(seeded.model_name)
    page.goto(f"{live_server}/admin/models")
    expect(page.get_by_role("link", name=seeded.model_name)).to_be_visible()
    check_page(page, "models")
    page.goto(f"{live_server}/admin/models/{seeded.model_name}")
    expect(page.locator("[data-field=forget-score]")).to_have_text("0.91")
    graph = page.get_by_role("img", name=f"Version lineage of {seeded.model_name}")
    expect(graph).to_be_visible()
    expect(graph.locator("g.state-purged line.strike")).to_have_count(1)
    expect(page.get_by_role("button", name="Train a new version")).to_be_visible()
    expect(page.get_by_role("button", name="Unlearn now")).to_be_visible()
    check_page(page, "model")
    for_readme("model")

    page.goto(f"{live_server}/admin/jobs")
    check_page(page, "jobs")
    page.goto(f"{live_server}/admin/audit")
    page.get_by_role("button", name="Verify the whole chain").click()
    expect(page.get_by_role("status")).to_contain_text("Chain verified")
    check_page(page, "audit")
    page.get_by_label("Event type").select_option("request.rejected")
    page.get_by_role("button", name="Filter events").click()
    expect(page.locator("td[data-field=action]")).to_have_text(["request.rejected"])
    expect(page.get_by_role("link", name="Clear filters")).to_be_visible()

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    check_page(page, "login")


def test_auditor_sees_no_action_buttons_and_a_portal_key_is_refused(page: Page, live_server, make_client, seeded):
    sign_in(page, live_server, make_client("portal").api_key)
    expect(page.get_by_role("alert")).to_contain_text("admins and auditors")
    sign_in(page, live_server, make_client("auditor").api_key)
    expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
    expect(page.get_by_role("link", name="Requests")).to_have_count(0)
    page.goto(f"{live_server}/admin/jobs")
    expect(page.get_by_role("button", name="Retry job")).to_have_count(0)
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)
    page.goto(f"{live_server}/admin/models/{seeded.model_name}")
    expect(page.get_by_role("heading", name=f"Model {seeded.model_name}")).to_be_visible()
    # Signing out is the only button an auditor gets.
    expect(page.get_by_role("button")).to_have_count(1)
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def test_demo_request_completes_live_and_shows_its_evidence(page: Page, live_server, make_client, start_worker):
    """The demo's digits and a SISA model; a portal's request; an admin presses "Unlearn now"
    and watches the job page, which was loaded before any worker ran, follow the job to the end
    on its own; then the job's evidence plot."""
    from app import demo
    from tests.jobs.conftest import TINY_SISA, run_inline

    [training] = demo.install(actor="test", models=(
        demo.DemoModel("digits-sisa", "sisa", TINY_SISA, {"default_method": "sisa", "batching_window_hours": 0.0}),))
    assert run_inline(training)["status"] == "succeeded"  # the worker's own entry point, in this process
    admin, portal = make_client("admin"), make_client("portal")
    created = httpx.post(f"{live_server}/v1/deletion-requests", headers=portal.headers, timeout=60,
                         json={"subject": [{"type": "user_id", "value": demo.subject_id(7)}],
                               "legal_basis": "gdpr_art17", "external_ref": "demo-7"})
    assert created.status_code == 202, created.text
    request_id = created.json()["id"]
    careful = make_client("portal", requires_approval=True)  # two more wait for an admin's approval
    for n in (11, 12):
        waiting = httpx.post(f"{live_server}/v1/deletion-requests", headers=careful.headers, timeout=60,
                             json={"subject": [{"type": "user_id", "value": demo.subject_id(n)}],
                                   "legal_basis": "gdpr_art17"})
        assert waiting.status_code == 202 and waiting.json()["status"] == "pending_approval", waiting.text

    sign_in(page, live_server, admin.api_key)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    page.goto(f"{live_server}/admin/models/digits-sisa")
    page.get_by_role("button", name="Unlearn now").click()
    expect(page.get_by_role("heading", name="Unlearn job")).to_be_visible()
    status = page.locator("[data-field=status]")
    expect(status).to_have_text("queued")  # no worker yet: nothing can have run
    check_page(page, "job-queued")

    start_worker()
    # The page polls its progress; the test only waits and never reloads it.
    expect(status).to_have_text("succeeded", timeout=240_000)
    for when in ("after unlearning", "under the original model"):
        plot = page.get_by_role("img", name=f"Per-record loss {when}: forget set against held-out records")
        expect(plot).to_be_visible(timeout=60_000)
        expect(plot.locator("rect.bar.forget")).to_have_count(20)  # one bar per bin
    expect(page.get_by_text("Loss-attack AUC")).to_be_visible()
    check_page(page, "job")
    for_readme("job")

    page.goto(f"{live_server}/admin/requests/{request_id}")
    expect(page.locator("[data-field=status]")).to_have_text("completed (forgotten)")
    expect(page.get_by_text(demo.subject_id(7))).to_have_count(0)
    page.goto(f"{live_server}/admin")
    expect(page.locator("[data-count=completed]")).to_have_text("1")
    expect(page.locator("[data-count=pending_approval]")).to_have_text("2")
    check_page(page, "overview")
    for_readme("overview")


def test_webhook_delivery_is_replayed_from_the_browser_and_a_post_without_csrf_is_refused(
        webhook_env, page: Page, live_server, api, make_client, receiver):
    """An admin replays a delivery from the webhooks page (the receiver gets the same
    webhook-id twice, both signatures verified); the same signed-in browser posting the
    replay form without its CSRF token is refused and nothing more is sent."""
    from tests.webhooks.test_dispatch import deliver_now, register, submit

    admin, portal = make_client("admin"), make_client("portal")
    register(api, admin, receiver)
    submit(api, portal, "browser.replay@example.org")
    deliver_now()
    first = receiver.wait_for(lambda got: len(got) >= 1)[0]

    sign_in(page, live_server, admin.api_key)
    page.goto(f"{live_server}/admin/webhooks")
    expect(page.get_by_role("heading", name="Webhooks")).to_be_visible()
    expect(page.get_by_text("browser.replay@example.org")).to_have_count(0)
    check_page(page, "webhooks")

    forged = page.request.post(f"{live_server}/admin/webhooks/deliveries/{first.webhook_id}/replay",
                               form={"csrf": "not-the-token"}, max_redirects=0)
    assert forged.status == 403, forged.status
    missing = page.request.post(f"{live_server}/admin/webhooks/deliveries/{first.webhook_id}/replay",
                                form={}, max_redirects=0)
    assert missing.status == 403, missing.status
    deliver_now()
    assert [r.webhook_id for r in receiver.received].count(first.webhook_id) == 1, "a refused post sent nothing"

    page.get_by_role("button", name=f"Replay delivery {first.webhook_id}").click()
    expect(page.get_by_role("heading", name="Webhooks")).to_be_visible()
    deliver_now()
    again = receiver.wait_for(lambda got: sum(r.webhook_id == first.webhook_id for r in got) >= 2)
    assert [r.webhook_id for r in again].count(first.webhook_id) == 2, "a replay keeps its webhook-id"
