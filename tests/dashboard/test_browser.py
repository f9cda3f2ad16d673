"""The dashboard in a real browser (Debian's Chromium driven by Playwright), on a real server.

Every page is also checked with axe-core for serious or critical accessibility violations,
and screenshotted at 1280x800 and 390 px wide into artifacts/dashboard/ (git-ignored).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect

from tests.dashboard.conftest import add_purged_lineage

pytestmark = pytest.mark.slow
# Generous waits: CI's two cores also run the other half of the suite meanwhile.
expect.set_options(timeout=30_000)
SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "dashboard"
SIZES = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}


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

    page.goto(f"{live_server}/admin/models/{seeded.model_name}")
    graph = page.get_by_role("img", name=f"Version lineage of {seeded.model_name}")
    expect(graph).to_be_visible()
    expect(graph.locator("g.state-purged line.strike")).to_have_count(1)
    check_page(page, "model")

    page.goto(f"{live_server}/admin/jobs")
    check_page(page, "jobs")
    page.goto(f"{live_server}/admin/audit")
    page.get_by_role("button", name="Verify the whole chain").click()
    expect(page.get_by_role("status")).to_contain_text("Chain verified")
    check_page(page, "audit")

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
