"""§2.03 status callbacks: an agent's ``status_callback`` gets the §2.02 Exercise Status body
POSTed each time the DRP state changes, through the webhooks room's dispatcher (SSRF rules,
retries, delivery log), against a real HTTP receiver; unsafe callback URLs are refused at intake."""

from __future__ import annotations

import base64

import pytest
from nacl.signing import SigningKey
from sqlalchemy import func, select

from app.core.database import session_scope
from tests.drp.test_drp import TEXT, drp, exercise, pairwise, sign  # noqa: F401 - drp: a fixture
from tests.webhooks.conftest import make_receiver, wait_until, webhook_env  # noqa: F401 - fixtures
from tests.webhooks.test_dispatch import deliver_now


@pytest.fixture
def gated(webhook_env, api, drp):  # noqa: F811 - the fixtures imported above
    """An approval-gated agent (its requests stay open until approved) and its token."""
    admin, _ = drp
    key = SigningKey.generate()
    created = api.post("/v1/drp/agents", headers=admin.headers, json={
        "id": "CB", "name": "Callbacks", "verify_key": base64.b64encode(bytes(key.verify_key)).decode(),
        "requires_approval": True})
    assert created.status_code == 201, created.text
    token = api.post("/v1/agent/CB", content=sign(key, pairwise("CB")), headers=TEXT).json()["token"]
    return admin, key, {"Authorization": f"Bearer {token}", **TEXT}


def _exercise(api, key, auth, email: str, ref: str, callback: str):
    body = exercise(email, **{"agent-id": "CB", "agent-request-id": ref, "status_callback": callback})
    return api.post("/v1/data-rights-request", content=sign(key, body), headers=auth)


def _complete(request_id: str) -> None:
    from app.requests import service as requests

    with session_scope() as session:
        requests.transition(session, requests.get_for_update(session, request_id), "completed", actor="test",
                            guarantee="exact")


def test_each_state_change_is_called_back_with_the_status_body(backend, api, gated, seed_model, make_receiver):  # noqa: F811
    admin, key, auth = gated
    seed_model({"a": ("email", "cb@example.com")})
    receiver = make_receiver()
    answer = _exercise(api, key, auth, "cb@example.com", "r-1", receiver.url)
    assert answer.status_code == 200, answer.text
    request_id = answer.json()["request_id"]
    assert answer.json()["status"] == "open"
    deliver_now()
    assert receiver.received == []  # the agent was told "open" in the answer: nothing changed yet

    assert api.post(f"/v1/deletion-requests/{request_id}/approve", headers=admin.headers).status_code == 200
    deliver_now()
    receiver.wait_for(lambda got: len(got) >= 1)
    _complete(request_id)
    deliver_now()
    got = receiver.wait_for(lambda got: len(got) >= 2)
    bodies = [item.payload for item in receiver.unique()]
    assert [b["status"] for b in bodies] == ["in_progress", "fulfilled"]
    # The body is what §2.02's status endpoint answers now, sent as JSON.
    assert bodies[-1] == api.get(f"/v1/data-rights-request/{request_id}", headers=auth).json()
    assert bodies[-1]["results_url"].endswith(f"/v1/deletion-requests/{request_id}/certificate")
    assert got[-1].headers["content-type"].startswith("application/json") and got[-1].headers["webhook-id"]
    # A final state is not called back again, and the callback is no webhook endpoint of the agent's.
    deliver_now()
    assert len(receiver.unique()) == 2
    assert api.get("/v1/webhooks/endpoints", headers=admin.headers).json() == []


@pytest.mark.parametrize("url", ["https://10.1.2.3/cb", "https://169.254.169.254/latest", "http://example.org/cb",
                                 "ftp://127.0.0.1/cb", "https://user:pw@127.0.0.1/cb"])
def test_unsafe_callback_urls_are_refused_at_intake(api, gated, seed_model, url):
    from app.drp.models import DrpCallback
    from app.requests.models import DeletionRequest

    _, key, auth = gated
    seed_model({"a": ("email", "cb@example.com")})
    answer = _exercise(api, key, auth, "cb@example.com", "r-unsafe", url)
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert problem["code"] == "422" and problem["fatal"] is True and "status_callback" in problem["message"]
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(DeletionRequest)) == 0
        assert session.scalar(select(func.count()).select_from(DrpCallback)) == 0


def test_a_failing_receiver_is_retried_until_it_takes_the_callback(api, gated, seed_model, make_receiver):  # noqa: F811
    from app.webhooks.models import WebhookAttempt

    admin, key, auth = gated
    seed_model({"a": ("email", "cb@example.com")})
    answers = iter([503, 500])
    receiver = make_receiver(behaviour=lambda _: (next(answers, 200), {}))
    request_id = _exercise(api, key, auth, "cb@example.com", "r-2", receiver.url).json()["request_id"]
    assert api.post(f"/v1/deletion-requests/{request_id}/approve", headers=admin.headers).status_code == 200

    def delivered() -> bool:
        deliver_now()
        return len(receiver.received) >= 3

    wait_until(delivered)
    assert {item.webhook_id for item in receiver.received} == {receiver.received[0].webhook_id}  # one delivery
    assert all(item.payload["status"] == "in_progress" for item in receiver.received)
    with session_scope() as session:
        attempts = session.scalars(select(WebhookAttempt.status_code).order_by(WebhookAttempt.id)).all()
    assert attempts == [503, 500, 200]


def test_a_worker_calls_back_right_after_the_change_commits(api, gated, seed_model, make_receiver,  # noqa: F811
                                                              start_worker):
    admin, key, auth = gated
    seed_model({"a": ("email", "cb@example.com")})
    receiver = make_receiver()
    request_id = _exercise(api, key, auth, "cb@example.com", "r-3", receiver.url).json()["request_id"]
    start_worker()  # no beat: the after-commit wake-up of the webhook dispatcher must carry it
    assert api.post(f"/v1/deletion-requests/{request_id}/approve", headers=admin.headers).status_code == 200
    (got,) = receiver.wait_for(lambda got: len(got) >= 1, timeout=90)
    assert got.payload == {**api.get(f"/v1/data-rights-request/{request_id}", headers=auth).json(),
                           "status": "in_progress"}
    assert b"cb@example.com" not in got.body


def test_a_gone_callback_fails_that_delivery_only(api, gated, seed_model, make_receiver):  # noqa: F811
    from app.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint

    admin, key, auth = gated
    seed_model({"a": ("email", "cb@example.com")})
    answers = iter([410])
    receiver = make_receiver(behaviour=lambda _: (next(answers, 200), {}))
    request_id = _exercise(api, key, auth, "cb@example.com", "r-4", receiver.url).json()["request_id"]
    assert api.post(f"/v1/deletion-requests/{request_id}/approve", headers=admin.headers).status_code == 200
    deliver_now()
    receiver.wait_for(lambda got: len(got) >= 1)
    _complete(request_id)
    deliver_now()
    got = receiver.wait_for(lambda got: len(got) >= 2)
    assert [item.payload["status"] for item in got] == ["in_progress", "fulfilled"]
    with session_scope() as session:
        (endpoint,) = session.scalars(select(WebhookEndpoint)).all()
        assert endpoint.active and endpoint.kind == "drp_callback"
        states = session.scalars(select(WebhookDelivery.status).order_by(WebhookDelivery.event_seq)).all()
    assert states == [DeliveryStatus.FAILED, DeliveryStatus.DELIVERED]
