"""The dispatcher in this process, on PostgreSQL and SQLite, against a real HTTP receiver:
who receives what, signatures, thin payloads, order, rollback, retries and disabling."""

from __future__ import annotations

import base64

import pytest
from sqlalchemy import select

from tests.conftest import issue_certificate_now
from tests.webhooks.conftest import Receiver, submission


def deliver_now() -> int:
    """Seal what is pending and run the dispatcher until nothing is due."""
    from app.audit.service import seal_if_free
    from app.webhooks.dispatch import dispatch

    seal_if_free()
    return dispatch(budget_seconds=30)


def register(api, caller, receiver: Receiver, **body) -> dict:
    response = api.post("/v1/webhooks/endpoints", json={"url": receiver.url, **body}, headers=caller.headers)
    assert response.status_code == 201, response.text
    created = response.json()
    receiver.secrets.append(created["secret"])
    return created


def submit(api, caller, email: str) -> str:
    response = api.post("/v1/deletion-requests", json=submission(email), headers=caller.headers)
    assert response.status_code in (200, 202), response.text
    return response.json()["id"]


def test_each_client_receives_what_it_may_see_signed_and_thin(webhook_env, backend, api, make_client, make_receiver):
    admin, portal_a, portal_b = make_client("admin"), make_client("portal"), make_client("portal")
    admin_rx, a_rx, b_rx = make_receiver(), make_receiver(), make_receiver()
    register(api, admin, admin_rx)
    register(api, portal_a, a_rx)
    register(api, portal_b, b_rx, events=["deletion_request.completed"])
    emails = {"alice.raw@example.org": portal_a, "bob.raw@example.org": portal_b, "carol.raw@example.org": portal_a}
    owner = {submit(api, caller, email): caller.id for email, caller in emails.items()}
    # A certificate for one of A's requests (what the outbox task does on completion).
    first_a = next(rid for rid, cid in owner.items() if cid == portal_a.id)
    issue_certificate_now(first_a)
    assert api.get(f"/v1/deletion-requests/{first_a}/certificate", headers=portal_a.headers).status_code == 200

    deliver_now()

    for rx in (admin_rx, a_rx, b_rx):
        assert rx.received, "nothing delivered"
        for item in rx.received:
            assert item.verified_by == [0], "every delivery verifies with the endpoint's secret"
            assert len(item.body) < 20 * 1024
            assert set(item.payload) == {"type", "timestamp", "data"}
            for email in emails:
                assert email not in item.body.decode() and email.split("@")[0] not in item.body.decode()
    a_requests = {rid for rid, cid in owner.items() if cid == portal_a.id}
    b_requests = set(owner) - a_requests
    a_types = [(i.payload["type"], i.payload["data"]["request_id"]) for i in a_rx.received]
    assert {rid for _, rid in a_types} == a_requests, "portal A only hears about its own requests"
    assert sorted(t for t, _ in a_types) == sorted(
        ["deletion_request.received", "deletion_request.completed"] * 2 + ["certificate.issued"]
    )
    # No data found completes at intake: received, then completed, in that order.
    for rid in a_requests:
        kinds = [t for t, r in a_types if r == rid and t.startswith("deletion_request")]
        assert kinds == ["deletion_request.received", "deletion_request.completed"]
    assert [(i.payload["type"], i.payload["data"]["request_id"]) for i in b_rx.received] == [
        ("deletion_request.completed", rid) for rid in b_requests
    ], "portal B filtered to one type and only its own request"
    completed = next(i.payload["data"] for i in b_rx.received)
    assert completed["guarantee_class"] == "exact" and completed["outcome"] == "no_data_found"
    assert completed["certificate_url"].endswith(f"/v1/deletion-requests/{completed['request_id']}/certificate")
    admin_requests = {i.payload["data"].get("request_id") for i in admin_rx.received}
    assert set(owner) <= admin_requests, "admins receive every portal's events"
    issued = [i.payload["data"] for i in a_rx.received if i.payload["type"] == "certificate.issued"]
    assert issued[0]["request_id"] == first_a and len(issued[0]["content_sha256"]) == 64


def test_secret_format_and_encrypted_at_rest(webhook_env, api, make_client, receiver):
    from app.core.database import session_scope
    from app.webhooks.models import WebhookEndpoint

    admin = make_client("admin")
    created = register(api, admin, receiver, description="compliance")
    assert created["secret"].startswith("whsec_")
    assert 24 <= len(base64.b64decode(created["secret"].removeprefix("whsec_"))) <= 64
    assert "secret" not in api.get(f"/v1/webhooks/endpoints/{created['id']}", headers=admin.headers).json()
    with session_scope() as session:
        stored = session.get(WebhookEndpoint, created["id"])
        assert created["secret"] not in stored.secret_encrypted
        assert created["secret"].removeprefix("whsec_") not in stored.secret_encrypted


def test_rolled_back_change_sends_nothing(webhook_env, backend, api, make_client, receiver):
    from app.audit import service as audit
    from app.core.database import get_sessionmaker

    admin = make_client("admin")
    register(api, admin, receiver)
    deliver_now()
    before = len(receiver.received)
    with get_sessionmaker()() as session:
        audit.record(session, actor="test", action="request.failed", entity_type="deletion_request",
                     entity_id="00000000-0000-0000-0000-000000000000", payload={"from": "unlearning", "to": "failed"})
        session.flush()
        session.rollback()
    assert deliver_now() == 0
    assert len(receiver.received) == before


def test_receiver_down_then_up_loses_nothing_and_keeps_order(webhook_env, backend, api, make_client, receiver):
    admin = make_client("admin")
    register(api, admin, receiver, events=["deletion_request.received", "deletion_request.completed"])
    receiver.stop()
    ids = [submit(api, admin, f"subject{n}@example.org") for n in range(4)]
    deliver_now()  # every first attempt is refused
    assert receiver.received == []
    receiver.start()
    from tests.webhooks.conftest import wait_until

    def all_delivered() -> bool:
        deliver_now()
        return len(receiver.unique()) >= 2 * len(ids)

    wait_until(all_delivered, timeout=60, interval=0.2)
    unique = receiver.unique()
    assert len(unique) == 2 * len(ids)
    for rid in ids:
        kinds = [i.payload["type"] for i in unique if i.payload["data"]["request_id"] == rid]
        assert kinds == ["deletion_request.received", "deletion_request.completed"], "in order per request"
    detail = api.get(f"/v1/webhooks/deliveries/{unique[0].webhook_id}", headers=admin.headers).json()
    assert detail["status"] == "delivered"
    assert [a["delivered"] for a in detail["attempt_log"]][-1] is True
    assert detail["attempt_log"][0]["error"] and detail["attempt_log"][0]["status_code"] is None
    assert detail["attempt_log"][-1]["status_code"] == 200 and detail["attempt_log"][-1]["response_excerpt"] == "ok"


def test_gone_disables_and_tells_the_owner_and_admins(webhook_env, backend, api, make_client, make_receiver):
    from app.audit.models import AuditEvent
    from app.core.database import session_scope

    admin, portal = make_client("admin"), make_client("portal")
    gone_rx = make_receiver(behaviour=lambda _: (410, {}))
    admin_rx, portal_rx = make_receiver(), make_receiver()
    gone = register(api, portal, gone_rx, events=["deletion_request.received"])
    register(api, portal, portal_rx, events=["webhook_endpoint.disabled"])
    register(api, admin, admin_rx, events=["webhook_endpoint.disabled"])
    submit(api, portal, "someone@example.org")
    deliver_now()
    deliver_now()  # the disabling's own audit event fans out
    assert len(gone_rx.received) == 1, "nothing more is sent after 410"
    endpoint = api.get(f"/v1/webhooks/endpoints/{gone['id']}", headers=portal.headers).json()
    assert endpoint["enabled"] is False and "410" in endpoint["disabled_reason"]
    for rx in (portal_rx, admin_rx):
        assert [i.payload["type"] for i in rx.received] == ["webhook_endpoint.disabled"]
        assert rx.received[0].payload["data"]["endpoint_id"] == gone["id"]
    with session_scope() as session:
        actions = session.scalars(select(AuditEvent.action).where(AuditEvent.entity_id == gone["id"])).all()
    assert "webhook.endpoint_disabled" in actions


def test_consecutive_failed_deliveries_disable(webhook_env, monkeypatch, api, make_client, make_receiver):
    from tests.conftest import reset_caches
    from tests.webhooks.conftest import wait_until

    monkeypatch.setenv("UNLEARND_WEBHOOK_RETRY_SCHEDULE_SECONDS", "[0.1]")
    monkeypatch.setenv("UNLEARND_WEBHOOK_DISABLE_AFTER_FAILED_DELIVERIES", "2")
    reset_caches()
    admin = make_client("admin")
    failing = make_receiver(behaviour=lambda _: (500, {}))
    created = register(api, admin, failing, events=["deletion_request.received"])
    submit(api, admin, "x1@example.org")
    submit(api, admin, "x2@example.org")

    def disabled() -> bool:
        deliver_now()
        return not api.get(f"/v1/webhooks/endpoints/{created['id']}", headers=admin.headers).json()["enabled"]

    wait_until(disabled, timeout=30, interval=0.2)
    endpoint = api.get(f"/v1/webhooks/endpoints/{created['id']}", headers=admin.headers).json()
    assert endpoint["disabled_reason"] == "2 deliveries in a row failed"
    assert len(failing.received) == 4  # two deliveries, each a first try and one retry


@pytest.mark.slow  # waits out a real Retry-After
def test_retry_after_is_honoured(webhook_env, backend, api, make_client, make_receiver):
    from tests.webhooks.conftest import wait_until

    admin = make_client("admin")
    answers = iter([(429, {"Retry-After": "2"})])
    rx = make_receiver(behaviour=lambda _: next(answers, (200, {})))
    register(api, admin, rx, events=["deletion_request.received"])
    submit(api, admin, "limited@example.org")

    def twice() -> bool:
        deliver_now()
        return len(rx.received) >= 2

    wait_until(twice, timeout=30, interval=0.2)
    first, second = rx.received[:2]
    assert first.webhook_id == second.webhook_id
    # The schedule alone would retry after 0.3 s (±20%); the receiver asked for 2 s.
    assert second.at - first.at >= 1.9


def test_rotation_signs_with_both_secrets_during_grace(webhook_env, backend, api, make_client, receiver):
    admin = make_client("admin")
    created = register(api, admin, receiver, events=["deletion_request.received"])
    rotated = api.post(f"/v1/webhooks/endpoints/{created['id']}/rotate-secret", json={"grace_seconds": 3600},
                       headers=admin.headers)
    assert rotated.status_code == 200, rotated.text
    receiver.secrets.append(rotated.json()["secret"])
    assert rotated.json()["secret"] != created["secret"]
    submit(api, admin, "rotating@example.org")
    deliver_now()
    (item,) = receiver.received
    assert len(item.headers["webhook-signature"].split(" ")) == 2
    assert item.verified_by == [0, 1], "the old and the new secret each verify on their own"
    # Grace over: only the new secret signs.
    api.post(f"/v1/webhooks/endpoints/{created['id']}/rotate-secret", json={"grace_seconds": 0},
             headers=admin.headers)


def test_replay_and_recover(webhook_env, backend, monkeypatch, api, make_client, make_receiver):
    from datetime import UTC, datetime, timedelta

    from tests.conftest import reset_caches

    monkeypatch.setenv("UNLEARND_WEBHOOK_RETRY_SCHEDULE_SECONDS", "[]")  # one try, then failed
    reset_caches()
    admin = make_client("admin")
    state = {"status": 500}
    rx = make_receiver(behaviour=lambda _: (state["status"], {}))
    created = register(api, admin, rx, events=["deletion_request.received"])
    since = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    submit(api, admin, "r1@example.org")
    submit(api, admin, "r2@example.org")
    deliver_now()
    failed = api.get(f"/v1/webhooks/endpoints/{created['id']}/deliveries?status=failed", headers=admin.headers).json()
    assert len(failed) == 2
    state["status"] = 200
    replayed = api.post(f"/v1/webhooks/deliveries/{failed[0]['id']}/replay", headers=admin.headers)
    assert replayed.status_code == 202 and replayed.json()["status"] == "pending"
    deliver_now()
    assert rx.received[-1].webhook_id == failed[0]["id"], "a replay keeps its webhook-id"
    recovered = api.post(f"/v1/webhooks/endpoints/{created['id']}/recover", json={"since": since},
                         headers=admin.headers)
    assert recovered.json() == {"deliveries": 1}
    deliver_now()
    assert rx.received[-1].webhook_id == failed[1]["id"]
    statuses = api.get(f"/v1/webhooks/endpoints/{created['id']}/deliveries", headers=admin.headers).json()
    assert {d["status"] for d in statuses} == {"delivered"}


@pytest.mark.parametrize("url", [
    "https://127.0.0.1/hook", "https://10.0.0.1/hook", "https://169.254.169.254/latest/meta-data",
    "https://[::1]/hook", "https://localhost/hook", "http://example.com/hook", "ftp://example.com/x",
    "https://user:pw@example.com/hook", "https://[::ffff:127.0.0.1]/hook",
])
def test_registration_refuses_unsafe_urls(env, api, make_client, url):
    admin = make_client("admin")
    response = api.post("/v1/webhooks/endpoints", json={"url": url}, headers=admin.headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["field"] == "url"


def test_endpoints_are_owned(webhook_env, api, make_client, receiver):
    admin, portal_a, portal_b = make_client("admin"), make_client("portal"), make_client("portal")
    mine = register(api, portal_a, receiver)
    assert api.get(f"/v1/webhooks/endpoints/{mine['id']}", headers=portal_b.headers).status_code == 404
    assert api.patch(f"/v1/webhooks/endpoints/{mine['id']}", json={"enabled": False},
                     headers=portal_b.headers).status_code == 404
    assert [e["id"] for e in api.get("/v1/webhooks/endpoints", headers=portal_b.headers).json()] == []
    assert [e["id"] for e in api.get("/v1/webhooks/endpoints", headers=admin.headers).json()] == [mine["id"]]
    bad = api.post("/v1/webhooks/endpoints", json={"url": receiver.url, "events": ["no.such"]},
                   headers=portal_a.headers)
    assert bad.status_code == 422 and bad.json()["field"] == "events"
    patched = api.patch(f"/v1/webhooks/endpoints/{mine['id']}", json={"enabled": False, "description": "off"},
                        headers=portal_a.headers).json()
    assert patched["enabled"] is False and patched["description"] == "off"
    assert api.delete(f"/v1/webhooks/endpoints/{mine['id']}", headers=portal_a.headers).status_code == 204
    assert api.get(f"/v1/webhooks/endpoints/{mine['id']}", headers=portal_a.headers).status_code == 404
