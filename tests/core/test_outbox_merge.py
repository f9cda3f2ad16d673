"""The outbox relay merges certificate orders into one broker message, and intake's order
reaches the broker after commit (from the relay thread)."""

from __future__ import annotations

import json
import time


def _queued(broker_url: str) -> list[dict]:
    """Messages waiting in the broker's default queue (this test's own redis-server)."""
    import redis

    client = redis.Redis.from_url(broker_url)
    return [json.loads(raw) for raw in client.lrange("celery", 0, -1)]


def _empty_queue(broker_url: str) -> None:
    """The broker is this test process's own redis-server; earlier tests may have left sends."""
    import redis

    redis.Redis.from_url(broker_url).delete("celery")


def test_certificate_orders_of_many_commits_go_as_one_send(env, monkeypatch):
    from sqlalchemy import select

    from app.core.database import session_scope
    from app.core.outbox import OutboxMessage, enqueue, relay
    from app.core.queue import TaskName
    from tests.conftest import reset_caches

    _empty_queue(env["UNLEARND_BROKER_URL"])
    monkeypatch.setenv("UNLEARND_BROKER_URL", "redis://127.0.0.1:1/0")  # down: everything stays pending
    reset_caches()
    for ids in (["r1"], ["r2", "r3"]):
        with session_scope() as session:
            enqueue(session, TaskName.ISSUE_CERTIFICATE, request_ids=ids)
    with session_scope() as session:
        enqueue(session, TaskName.PING, value="alone")
    with session_scope() as session:
        enqueue(session, TaskName.ISSUE_CERTIFICATE, request_ids=["r4"])
    monkeypatch.setenv("UNLEARND_BROKER_URL", env["UNLEARND_BROKER_URL"])
    reset_caches()
    assert _queued(env["UNLEARND_BROKER_URL"]) == []
    assert relay() == 4
    with session_scope() as session:
        messages = session.scalars(select(OutboxMessage).order_by(OutboxMessage.created_at)).all()
        assert all(m.dispatched_at is not None and m.attempts == 2 for m in messages)
        first_order = messages[0].id
    sent = [(m["headers"]["task"], m["headers"]["id"]) for m in _queued(env["UNLEARND_BROKER_URL"])]
    # Two sends: the merged certificate orders (under the first order's id) and the ping.
    assert len(sent) == 2 and (TaskName.ISSUE_CERTIFICATE, first_order) in sent
    assert sorted(task for task, _ in sent) == sorted([TaskName.ISSUE_CERTIFICATE, TaskName.PING])
    import base64

    bodies = {m["headers"]["task"]: json.loads(base64.b64decode(m["body"])) for m in _queued(env["UNLEARND_BROKER_URL"])}
    assert bodies[TaskName.ISSUE_CERTIFICATE][1] == {"request_ids": ["r1", "r2", "r3", "r4"]}


def test_intake_certificate_order_reaches_the_broker_after_commit(env, make_client, api):
    from sqlalchemy import select

    from app.core.database import session_scope
    from app.core.outbox import OutboxMessage

    _empty_queue(env["UNLEARND_BROKER_URL"])
    portal = make_client("portal")
    response = api.post("/v1/deletion-requests", headers={**portal.headers, "Idempotency-Key": "nobody"},
                        json={"subject": [{"type": "user_id", "value": "nobody-here"}], "legal_basis": "gdpr_art17"})
    assert response.status_code == 202, response.text
    deadline = time.monotonic() + 60
    while True:
        with session_scope() as session:
            (message,) = session.scalars(select(OutboxMessage)).all()
        if message.dispatched_at is not None or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert message.kwargs == {"request_ids": [response.json()["id"]]} and message.dispatched_at is not None
    sent = [m["headers"]["id"] for m in _queued(env["UNLEARND_BROKER_URL"])
            if m["headers"]["task"] == "unlearnd.certificates.issue"]
    assert sent == [message.id]
