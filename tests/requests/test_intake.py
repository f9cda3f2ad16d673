"""Intake over HTTP: resolution outcomes, deadlines, idempotency and bad input, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from tests.requests.conftest import submission
from tests.test_api_foundation import assert_problem

URL = "/v1/deletion-requests"


def _count(model) -> int:
    from app.core.database import session_scope

    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(model))


def _audit_actions(entity_id: str) -> list[str]:
    from app.audit.models import AuditEvent
    from app.core.database import session_scope

    with session_scope() as session:
        query = select(AuditEvent.action).where(AuditEvent.entity_id == entity_id).order_by(AuditEvent.seq)
        return list(session.scalars(query))


def _audit_payload(entity_id: str) -> dict:
    from app.audit.models import AuditEvent
    from app.core.database import session_scope

    with session_scope() as session:
        return session.scalar(select(AuditEvent.payload).where(AuditEvent.entity_id == entity_id))


def test_unknown_subject_completes_at_once_with_no_data_found(api, make_client, backend):
    portal = make_client("portal")
    response = api.post(URL, json=submission(external_ref="t-1"), headers={**portal.headers, "User-Agent": "portal/1"})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "completed" and body["outcome"] == "no_data_found"
    assert body["completed_at"] is not None
    assert response.headers["location"] == f"{URL}/{body['id']}"
    assert len(body["subject_hashes"]) == 1 and len(body["subject_hashes"][0]) == 64
    assert body["provenance"]["client_id"] == portal.id
    assert body["provenance"]["user_agent"] == "portal/1"
    assert body["provenance"]["source_ip"]
    assert body["provenance"]["identity_verification"]["method"] == "email_link"
    assert len(body["request_hash"]) == 64
    detail = api.get(f"{URL}/{body['id']}", headers=portal.headers).json()
    assert [(h["from_status"], h["to_status"]) for h in detail["history"]] == [
        (None, "received"), ("received", "completed"),
    ]
    assert _audit_actions(body["id"]) == ["request.received"]
    assert _audit_payload(body["id"])["transitions"] == [[None, "received"], ["received", "completed"]]


def test_known_subject_is_scheduled_with_its_records_and_versions(api, make_client, seed_model, backend):
    from app.core.database import session_scope
    from app.registry import service as registry
    from app.requests import service

    seeded = seed_model({"r1": ("email", "Alice@Example.org"), "r2": ("email", "bob@example.org")})
    portal = make_client("portal")
    # Normalisation: case and surrounding space do not change who the subject is.
    body = submission(subject=[{"type": "email", "value": "  ALICE@example.ORG "}])
    response = api.post(URL, json=body, headers=portal.headers)
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["status"] == "scheduled" and created["outcome"] is None
    assert created["affected"]["record_count"] == 1
    [affected] = created["affected"]["model_versions"]
    assert (affected["id"], affected["model_id"], affected["model"], affected["record_count"]) == (
        seeded.version_id, seeded.model_id, seeded.model_name, 1,
    )
    with session_scope() as session:
        waiting = [r.id for r in service.awaiting_for_model(session, seeded.model_id)]
        models = service.models_of(session, created["id"])
        dataset_id = registry.get_dataset(session, seeded.dataset).id
        records = service.records_in_dataset(session, [created["id"]], dataset_id)
    # What the jobs room batches on: the request, the model it touches, and its record.
    assert waiting == [created["id"]] and models == {seeded.model_id}
    assert records == [(created["id"], seeded.record_ids["r1"], "r1")]


def test_explicit_records_resolve_without_a_subject(api, make_client, seed_model):
    seeded = seed_model({"r1": ("user_id", "u-1"), "r2": ("user_id", "u-2")})
    portal = make_client("portal")
    body = submission(subject=[], records=[{"dataset": seeded.dataset, "record_key": "r2"}])
    created = api.post(URL, json=body, headers=portal.headers).json()
    assert created["status"] == "scheduled"
    assert created["record_refs"] == [{"dataset": seeded.dataset, "record_key": "r2"}]
    assert created["affected"]["record_count"] == 1


def test_records_no_model_saw_are_scheduled_for_record_forgetting(api, make_client, seed_model):
    from app.core.database import session_scope
    from app.requests import service

    seeded = seed_model({"r1": ("user_id", "u-9")}, trained=False)
    created = api.post(URL, json=submission(subject=[{"type": "user_id", "value": "u-9"}]),
                       headers=make_client("portal").headers).json()
    assert created["status"] == "scheduled"
    with session_scope() as session:
        assert service.awaiting_for_model(session, seeded.model_id) == []
        loose = service.list_scheduled_without_models(session)
    assert [(s.request_id, s.record_ids, s.version_ids) for s in loose] == [
        (created["id"], [seeded.record_ids["r1"]], [])
    ]


def test_client_requiring_approval_waits_for_an_admin(api, make_client, seed_model, backend):
    seed_model({"r1": ("email", "carol@example.org")})
    portal, admin = make_client("portal", requires_approval=True), make_client("admin")
    body = submission(subject=[{"type": "email", "value": "carol@example.org"}])
    created = api.post(URL, json=body, headers=portal.headers).json()
    assert created["status"] == "pending_approval"
    approved = api.post(f"{URL}/{created['id']}/approve", headers=admin.headers)
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "scheduled"
    assert [h["to_status"] for h in approved.json()["history"]] == ["received", "pending_approval", "scheduled"]
    assert approved.json()["history"][-1]["actor"] == admin.id
    assert_problem(api.post(f"{URL}/{created['id']}/approve", headers=admin.headers), 409)


def test_reject_needs_a_reason_and_ends_the_request(api, make_client, seed_model):
    seed_model({"r1": ("email", "dan@example.org")})
    portal, admin = make_client("portal", requires_approval=True), make_client("admin")
    created = api.post(URL, json=submission(subject=[{"type": "email", "value": "dan@example.org"}]),
                       headers=portal.headers).json()
    body = assert_problem(api.post(f"{URL}/{created['id']}/reject", json={}, headers=admin.headers), 422)
    assert body["field"] == "reason"
    assert_problem(api.post(f"{URL}/{created['id']}/reject", json={"reason": "  "}, headers=admin.headers), 422)
    rejected = api.post(f"{URL}/{created['id']}/reject", json={"reason": "Art. 17(3)(b) legal obligation"},
                        headers=admin.headers).json()
    assert rejected["status"] == "rejected"
    assert rejected["history"][-1]["reason"] == "Art. 17(3)(b) legal obligation"
    assert_problem(api.post(f"{URL}/{created['id']}/approve", headers=admin.headers), 409)


@pytest.mark.parametrize(
    ("basis", "requested", "due"),
    [
        ("gdpr_art17", "2025-01-31T10:00:00+00:00", "2025-02-28T10:00:00+00:00"),
        ("gdpr_art17", "2024-01-31T10:00:00+00:00", "2024-02-29T10:00:00+00:00"),
        ("gdpr_art17", "2025-03-15T10:00:00+00:00", "2025-04-15T10:00:00+00:00"),
        ("ccpa_1798_105", "2025-03-15T10:00:00+00:00", "2025-04-29T10:00:00+00:00"),
        ("cpra", "2025-12-01T00:00:00+00:00", "2026-01-15T00:00:00+00:00"),
        ("lgpd_art18", "2025-03-01T00:00:00+00:00", "2025-03-16T00:00:00+00:00"),
    ],
)
def test_due_at_follows_the_legal_basis(api, make_client, basis, requested, due):
    portal = make_client("portal")
    created = api.post(URL, json=submission(legal_basis=basis, requested_at=requested), headers=portal.headers).json()
    assert datetime.fromisoformat(created["due_at"]) == datetime.fromisoformat(due)


def test_configured_deadline_days_apply_to_non_statutory_bases(api, make_client, monkeypatch):
    from tests.conftest import reset_caches

    monkeypatch.setenv("UNLEARND_DEFAULT_DEADLINE_DAYS", '{"internal_policy": 7}')
    reset_caches()
    created = api.post(URL, json=submission(legal_basis="internal_policy", requested_at="2025-03-01T00:00:00Z"),
                       headers=make_client("portal").headers).json()
    assert created["due_at"].startswith("2025-03-08T00:00:00")


def test_requested_at_defaults_to_now(api, make_client):
    before = datetime.now(UTC)
    created = api.post(URL, json=submission(), headers=make_client("portal").headers).json()
    requested = datetime.fromisoformat(created["requested_at"])
    assert before - timedelta(seconds=1) <= requested <= datetime.now(UTC)
    assert requested == datetime.fromisoformat(created["received_at"])


def test_same_idempotency_key_and_body_returns_the_original(api, make_client, backend):
    from app.requests.models import DeletionRequest

    portal = make_client("portal")
    headers = {**portal.headers, "Idempotency-Key": "key-1"}
    first = api.post(URL, json=submission(), headers=headers)
    # Same body, other key order and other spelling of the same identifier.
    again = dict(reversed(list(submission(subject=[{"type": "email", "value": "NOBODY@example.org"}]).items())))
    second = api.post(URL, json=again, headers=headers)
    assert first.status_code == 202 and second.status_code == 200, second.text
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json()["id"] == first.json()["id"]
    assert _count(DeletionRequest) == 1


def test_same_idempotency_key_with_another_body_is_409(api, make_client, backend):
    from app.requests.models import DeletionRequest

    portal = make_client("portal")
    headers = {**portal.headers, "Idempotency-Key": "key-1"}
    first = api.post(URL, json=submission(), headers=headers).json()
    body = assert_problem(api.post(URL, json=submission(jurisdiction="FR"), headers=headers), 409)
    assert body["field"] == "Idempotency-Key" and body["existing_request"] == first["id"]
    assert _count(DeletionRequest) == 1


def test_idempotency_keys_are_scoped_per_client(api, make_client):
    one, two = make_client("portal"), make_client("portal")
    a = api.post(URL, json=submission(), headers={**one.headers, "Idempotency-Key": "shared"})
    b = api.post(URL, json=submission(), headers={**two.headers, "Idempotency-Key": "shared"})
    assert a.status_code == b.status_code == 202
    assert a.json()["id"] != b.json()["id"]


def test_external_ref_deduplicates_per_client(api, make_client, backend):
    portal = make_client("portal")
    first = api.post(URL, json=submission(external_ref="case-7"), headers=portal.headers)
    again = api.post(URL, json=submission(external_ref="case-7"), headers={**portal.headers, "Idempotency-Key": "k2"})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    body = assert_problem(api.post(URL, json=submission(external_ref="case-7", jurisdiction="DE"),
                                   headers=portal.headers), 409)
    assert body["field"] == "external_ref"
    other = api.post(URL, json=submission(external_ref="case-7"), headers=make_client("portal").headers)
    assert other.status_code == 202 and other.json()["id"] != first.json()["id"]


def test_concurrent_duplicates_create_one_request(env, make_client):
    """Two submissions racing with one key: the loser's insert hits the unique constraint and
    it answers with the winner's request."""
    import threading

    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.requests.models import DeletionRequest

    portal = make_client("portal")
    headers = {**portal.headers, "Idempotency-Key": "race"}
    answers: list = []
    # A thread that dies before the barrier breaks it for the others (BrokenBarrierError)
    # instead of leaving them waiting for ever.
    barrier = threading.Barrier(4, timeout=120)

    def post() -> None:
        with TestClient(create_app()) as client:
            barrier.wait()
            answers.append(client.post(URL, json=submission(), headers=headers))

    threads = [threading.Thread(target=post) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert not any(thread.is_alive() for thread in threads)
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 202]
    assert len({a.json()["id"] for a in answers}) == 1
    assert _count(DeletionRequest) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (submission(legal_basis="magna_carta"), "legal_basis"),
        (submission(subject=[], records=[]), "subject"),
        (submission(subject=[{"type": "email", "value": "not-an-address"}]), "subject.0.value"),
        (submission(subject=[{"type": "phone", "value": "call me"}]), "subject.0.value"),
        (submission(subject=[{"type": "fingerprint", "value": "x"}]), "subject.0.type"),
        (submission(requested_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat()), "requested_at"),
        (submission(requested_at="2025-01-01T00:00:00"), "requested_at"),
        (submission(records=[{"dataset": "no-such-dataset", "record_key": "k"}]), "records.0.dataset"),
        (submission(scope={"models": ["no-such-model"]}), "scope.models.0"),
        (submission(colour="blue"), "colour"),
    ],
)
def test_bad_input_is_422_naming_the_field_and_writes_nothing(api, make_client, body, field, backend):
    from app.audit.models import AuditEvent
    from app.requests.models import DeletionRequest, RequestTransition

    portal = make_client("portal")
    events_before = _count(AuditEvent)
    problem = assert_problem(api.post(URL, json=body, headers=portal.headers), 422)
    assert problem["field"] == field
    assert _count(DeletionRequest) == 0 and _count(RequestTransition) == 0
    assert _count(AuditEvent) == events_before


def test_idempotency_key_over_255_characters_is_refused(api, make_client):
    portal = make_client("portal")
    problem = assert_problem(api.post(URL, json=submission(), headers={**portal.headers, "Idempotency-Key": "k" * 256}), 422)
    assert problem["field"] == "Idempotency-Key"


def test_body_over_64_kib_is_413(api, make_client):
    from app.requests.models import DeletionRequest

    padding = [{"dataset": "d", "record_key": "k" * 250}] * 300
    response = api.post(URL, json=submission(records=padding), headers=make_client("portal").headers)
    assert_problem(response, 413)
    assert _count(DeletionRequest) == 0


def test_roles_that_may_not_submit(api, make_client):
    for role in ("ml", "auditor"):
        assert_problem(api.post(URL, json=submission(), headers=make_client(role).headers), 403)
