"""The dashboard's webhooks page: endpoints with their health, recent deliveries, replay."""

from __future__ import annotations

import re

from tests.webhooks.test_dispatch import deliver_now, register, submit


def test_webhooks_page_lists_deliveries_and_replays_one(webhook_env, api, make_client, receiver):
    admin, portal = make_client("admin"), make_client("portal")
    register(api, admin, receiver)
    submit(api, portal, "dash@example.org")
    deliver_now()
    first = receiver.wait_for(lambda got: len(got) >= 1)[0]

    signed_in = api.post("/admin/login", data={"api_key": admin.api_key}, follow_redirects=False)
    assert signed_in.status_code == 303
    page = api.get("/admin/webhooks")
    assert page.status_code == 200 and receiver.url in page.text and "dash@example.org" not in page.text
    assert f'data-delivery="{first.webhook_id}"' in page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)

    assert api.post(f"/admin/webhooks/deliveries/{first.webhook_id}/replay", data={}).status_code == 403
    replayed = api.post(f"/admin/webhooks/deliveries/{first.webhook_id}/replay", data={"csrf": csrf},
                        follow_redirects=False)
    assert replayed.status_code == 303
    deliver_now()
    again = receiver.wait_for(lambda got: sum(r.webhook_id == first.webhook_id for r in got) >= 2)
    assert [r.webhook_id for r in again].count(first.webhook_id) == 2, "a replay keeps its webhook-id"


def test_auditor_cannot_open_the_webhooks_page(webhook_env, api, make_client):
    auditor = make_client("auditor")
    api.post("/admin/login", data={"api_key": auditor.api_key}, follow_redirects=False)
    assert api.get("/admin/webhooks").status_code == 403
