"""The lifecycle: one place enforces transitions; history and audit follow every change."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from tests.requests.conftest import submission
from tests.test_api_foundation import assert_problem

URL = "/v1/deletion-requests"


@pytest.fixture
def scheduled(api, make_client, seed_model):
    """A scheduled request (its subject is in a trained model) and the portal that sent it."""
    seed_model({"r1": ("email", "erin@example.org")})
    portal = make_client("portal")
    created = api.post(URL, json=submission(subject=[{"type": "email", "value": "erin@example.org"}]),
                       headers=portal.headers).json()
    assert created["status"] == "scheduled"
    return created["id"], portal


def _move(request_id: str, *steps: str, **kwargs) -> None:
    from app.core.database import session_scope
    from app.requests import service

    with session_scope() as session:
        request = service.get_for_update(session, request_id)
        for step in steps:
            service.transition(session, request, step, actor="jobs-test", **kwargs)


def test_the_whole_happy_path_writes_history_and_a_verifiable_chain(api, scheduled, make_client, backend):
    from app.audit.models import AuditEvent
    from app.audit.service import GENESIS_HASH, chain_hash, event_body
    from app.core.database import session_scope

    request_id, portal = scheduled
    _move(request_id, "unlearning", "verifying", "unlearning", "verifying", "completed")
    detail = api.get(f"{URL}/{request_id}", headers=portal.headers).json()
    assert detail["status"] == "completed" and detail["outcome"] == "forgotten"
    assert [h["to_status"] for h in detail["history"]] == [
        "received", "scheduled", "unlearning", "verifying", "unlearning", "verifying", "completed",
    ]
    with session_scope() as session:
        events = list(session.scalars(select(AuditEvent).order_by(AuditEvent.seq)))
    ours = [e.action for e in events if e.entity_id == request_id]
    assert ours == ["request.received", "request.unlearning", "request.verifying",
                    "request.unlearning", "request.verifying", "request.completed"]
    previous = GENESIS_HASH
    for event in events:
        assert event.prev_hash == previous and event.hash == chain_hash(previous, event_body(event))
        previous = event.hash


@pytest.mark.parametrize(
    ("path", "illegal"),
    [
        ((), "verifying"),
        ((), "received"),
        (("unlearning",), "cancelled"),
        (("unlearning",), "completed"),
        (("unlearning", "verifying", "completed"), "failed"),
        (("cancelled",), "scheduled"),
        (("failed",), "completed"),
    ],
)
def test_illegal_transitions_are_refused_and_leave_no_trace(scheduled, path, illegal, backend):
    from app.core.database import session_scope
    from app.core.errors import IllegalTransition
    from app.requests import service

    request_id, _ = scheduled
    _move(request_id, *path)
    with session_scope() as session:
        before = len(service.history(session, request_id))
        request = service.get_request(session, request_id)
        status = request.status
        with pytest.raises(IllegalTransition) as refused:
            service.transition(session, request, illegal, actor="jobs-test")
        assert refused.value.status == 409
        assert request.status == status
        assert len(service.history(session, request_id)) == before


def test_portal_cancels_before_unlearning_but_not_after(api, make_client, seed_model, backend):
    seed_model({"r1": ("email", "f@example.org"), "r2": ("email", "g@example.org")})
    portal = make_client("portal")
    early = api.post(URL, json=submission(subject=[{"type": "email", "value": "f@example.org"}]),
                     headers=portal.headers).json()
    late = api.post(URL, json=submission(subject=[{"type": "email", "value": "g@example.org"}]),
                    headers=portal.headers).json()
    cancelled = api.post(f"{URL}/{early['id']}/cancel", json={"reason": "requester withdrew"}, headers=portal.headers)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["history"][-1] | {"at": None} == {
        "from_status": "scheduled", "to_status": "cancelled", "actor": portal.id,
        "reason": "requester withdrew", "at": None,
    }
    _move(late["id"], "unlearning")
    problem = assert_problem(api.post(f"{URL}/{late['id']}/cancel", headers=portal.headers), 409)
    assert problem["type"].endswith("illegal-transition")
    assert problem["current_status"] == "unlearning"


def test_admin_retries_a_failed_request(api, scheduled, make_client, backend):
    request_id, portal = scheduled
    admin = make_client("admin")
    assert_problem(api.post(f"{URL}/{request_id}/retry", headers=admin.headers), 409)
    _move(request_id, "unlearning", "failed", reason="worker ran out of memory")
    retried = api.post(f"{URL}/{request_id}/retry", headers=admin.headers)
    assert retried.status_code == 200, retried.text
    assert [h["to_status"] for h in retried.json()["history"]][-3:] == ["unlearning", "failed", "scheduled"]
    assert_problem(api.post(f"{URL}/{request_id}/retry", headers=portal.headers), 403)


def test_a_closed_request_has_no_deadline_to_extend(api, make_client, backend):
    portal, admin = make_client("portal"), make_client("admin")
    done = api.post(URL, json=submission(), headers=portal.headers).json()
    assert done["status"] == "completed"
    assert_problem(api.post(f"{URL}/{done['id']}/extend", json={"reason": "r"}, headers=admin.headers), 409)


def test_extension_bounds(api, scheduled, make_client, backend):
    request_id, portal = scheduled
    admin = make_client("admin")
    original = datetime.fromisoformat(api.get(f"{URL}/{request_id}", headers=portal.headers).json()["due_at"])
    from app.requests.deadlines import add_months

    too_far = add_months(original, 2) + timedelta(seconds=1)
    problem = assert_problem(api.post(f"{URL}/{request_id}/extend",
                                      json={"reason": "complex", "due_at": too_far.isoformat()}, headers=admin.headers), 422)
    assert problem["field"] == "due_at"
    assert_problem(api.post(f"{URL}/{request_id}/extend", json={"due_at": too_far.isoformat()}, headers=admin.headers), 422)
    assert_problem(api.post(f"{URL}/{request_id}/extend", json={"reason": "x"}, headers=portal.headers), 403)
    extended = api.post(f"{URL}/{request_id}/extend", json={"reason": "many models affected"}, headers=admin.headers)
    assert extended.status_code == 200, extended.text
    assert datetime.fromisoformat(extended.json()["due_at"]) == add_months(original, 2)
    assert extended.json()["extension_reason"] == "many models affected"
    again = assert_problem(api.post(f"{URL}/{request_id}/extend", json={"reason": "more"}, headers=admin.headers), 409)
    assert "once" in again["detail"]


def test_ccpa_extends_by_45_days_and_lgpd_not_at_all(api, make_client, seed_model):
    seed_model({"r1": ("email", "h@example.org")})
    portal, admin = make_client("portal"), make_client("admin")
    subject = [{"type": "email", "value": "h@example.org"}]
    ccpa = api.post(URL, json=submission(legal_basis="ccpa_1798_105", subject=subject, external_ref="c"),
                    headers=portal.headers).json()
    lgpd = api.post(URL, json=submission(legal_basis="lgpd_art18", subject=subject, external_ref="l"),
                    headers=portal.headers).json()
    extended = api.post(f"{URL}/{ccpa['id']}/extend", json={"reason": "volume"}, headers=admin.headers).json()
    gap = datetime.fromisoformat(extended["due_at"]) - datetime.fromisoformat(ccpa["due_at"])
    assert gap.days == 45
    problem = assert_problem(api.post(f"{URL}/{lgpd['id']}/extend", json={"reason": "volume"}, headers=admin.headers), 409)
    assert problem["field"] == "legal_basis"
