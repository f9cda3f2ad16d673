"""The delivery path as deployed: PostgreSQL, Redis, real Celery worker processes, a real receiver."""

from __future__ import annotations

import threading

from sqlalchemy import select

from tests.webhooks.conftest import wait_until
from tests.webhooks.test_dispatch import register, submit


def test_worker_delivers_right_after_commit(webhook_env, api, make_client, make_receiver, start_worker):
    admin, portal_a, portal_b = make_client("admin"), make_client("portal"), make_client("portal")
    admin_rx, a_rx, b_rx = make_receiver(), make_receiver(), make_receiver()
    register(api, admin, admin_rx)
    register(api, portal_a, a_rx)
    register(api, portal_b, b_rx)
    start_worker()  # no beat: only the after-commit wake-up can deliver
    a_ids = [submit(api, portal_a, f"a{n}@example.org") for n in range(3)]
    b_ids = [submit(api, portal_b, f"b{n}@example.org") for n in range(2)]
    a_rx.wait_for(lambda got: len(got) >= 2 * len(a_ids))
    b_rx.wait_for(lambda got: len(got) >= 2 * len(b_ids))
    admin_rx.wait_for(lambda got: len({i.payload["data"].get("request_id") for i in got} & set(a_ids + b_ids)) == 5)
    assert {i.payload["data"]["request_id"] for i in a_rx.received} == set(a_ids)
    assert {i.payload["data"]["request_id"] for i in b_rx.received} == set(b_ids)
    for rx in (admin_rx, a_rx, b_rx):
        assert all(i.verified_by == [0] for i in rx.received)
        assert not any(b"@example.org" in i.body for i in rx.received), "no raw identifier in any payload"


def test_outage_then_recovery_delivers_everything_in_order(webhook_env, api, make_client, receiver, start_worker,
                                                            tmp_path):
    admin = make_client("admin")
    register(api, admin, receiver, events=["deletion_request.received", "deletion_request.completed"])
    start_worker("--beat", "--schedule", str(tmp_path / "beat-schedule"))
    receiver.stop()
    ids = [submit(api, admin, f"outage{n}@example.org") for n in range(5)]

    def first_attempts_failed() -> bool:
        found = api.get(f"/v1/webhooks/endpoints/{_endpoint_id(api, admin)}", headers=admin.headers).json()
        return found["consecutive_failures"] >= 5

    wait_until(first_attempts_failed, timeout=60)
    receiver.start()
    receiver.wait_for(lambda got: len({i.webhook_id for i in got}) >= 2 * len(ids), timeout=90)
    unique = receiver.unique()
    assert len(unique) == 2 * len(ids), "none lost, none extra"
    for rid in ids:
        kinds = [i.payload["type"] for i in unique if i.payload["data"]["request_id"] == rid]
        assert kinds == ["deletion_request.received", "deletion_request.completed"]


def _endpoint_id(api, caller) -> str:
    (endpoint,) = api.get("/v1/webhooks/endpoints", headers=caller.headers).json()
    return endpoint["id"]


def test_dispatcher_killed_between_send_and_mark_redelivers_same_id(webhook_env, api, make_client, make_receiver,
                                                                     start_worker, tmp_path):
    from app.core.database import session_scope
    from app.webhooks.models import WebhookAttempt, WebhookDelivery

    arrived, killed = threading.Event(), threading.Event()

    def hold_the_first(item):
        if not arrived.is_set():
            arrived.set()
            killed.wait(30)  # answer only once the sender is dead: its mark never happens
        return 200, {}

    admin = make_client("admin")
    rx = make_receiver(behaviour=hold_the_first)
    register(api, admin, rx, events=["deletion_request.received"])
    first_worker = start_worker()
    submit(api, admin, "killed@example.org")
    assert arrived.wait(60), "the first worker never sent"
    first_worker.kill()
    killed.set()
    start_worker("--beat", "--schedule", str(tmp_path / "beat-schedule"))
    rx.wait_for(lambda got: len(got) >= 2, timeout=90)
    first, second = rx.received[:2]
    assert first.webhook_id == second.webhook_id, "redelivered under the same webhook-id"
    assert second.verified_by == [0]
    with session_scope() as session:
        delivery = session.get(WebhookDelivery, first.webhook_id)
        wait_until(lambda: session.refresh(delivery) or delivery.status == "delivered", timeout=30)
        attempts = session.scalars(select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery.id)).all()
    # The killed attempt left no record; the one that finished did.
    assert [a.delivered for a in attempts] == [True]
