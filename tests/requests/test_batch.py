"""Bulk intake (POST /v1/deletion-requests/batch): every item judged on its own, each written
whole or not at all, the whole batch safe to send again."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from tests.requests.conftest import submission
from tests.test_api_foundation import assert_problem

URL = "/v1/deletion-requests"
BATCH = f"{URL}/batch"


def _counts() -> dict[str, int]:
    """Rows intake writes, table by table."""
    from app.audit.models import AuditEvent, PendingAuditEvent
    from app.core.database import session_scope
    from app.core.outbox import OutboxMessage
    from app.requests.models import DeletionRequest, RequestModelVersion, RequestRecord, RequestTransition

    with session_scope() as session:
        # One statement, so one snapshot: a sealer committing between two counts moves an event
        # from pending to sealed unseen by both (sealing may still run after the response).
        events = session.scalar(select(sum(
            select(func.count()).select_from(m).where(m.action == "request.received").scalar_subquery()
            for m in (AuditEvent, PendingAuditEvent))))
        counts = {m.__tablename__: session.scalar(select(func.count()).select_from(m)) for m in (
            DeletionRequest, RequestTransition, RequestRecord, RequestModelVersion, OutboxMessage)}
    return {**counts, "received_events": events}


def _item(key: str | None = None, **overrides: object) -> dict:
    body = submission(subject=[{"type": "email", "value": f"{key or overrides.get('external_ref')}@example.org"}])
    body.update(overrides)
    if key is not None:
        body["idempotency_key"] = key
    return body


def test_mixed_batch_answers_each_item_and_writes_only_the_good_ones(api, make_client, seed_model, backend):
    from app.core.database import session_scope
    from app.requests import service

    seeded = seed_model({"r1": ("email", "known@example.org")})
    portal = make_client("portal")
    earlier = api.post(URL, json=submission(external_ref="earlier-1"), headers=portal.headers)
    assert earlier.status_code == 202
    before = _counts()
    items = [
        _item("k-new"),                                                        # 0 created, no data found
        _item("k-known", subject=[{"type": "email", "value": "known@example.org"}]),  # 1 created, scheduled
        _item("k-bad-basis", legal_basis="magna_carta"),                       # 2 refused by its shape
        submission(subject=[{"type": "email", "value": "anon@example.org"}]),  # 3 refused: neither key nor ref
        _item("k-no-dataset", records=[{"dataset": "no-such", "record_key": "x"}]),  # 4 refused by the service
        _item("k-new"),                                                        # 5 same key, same body: replay of 0
        _item("k-new", jurisdiction="US"),                                     # 6 same key, other body: 409
        submission(external_ref="earlier-1"),                                  # 7 replay of the earlier request
        "not an object",                                                       # 8 refused
        _item("k-colour", colour="blue"),                                      # 9 refused: unknown member
    ]
    response = api.post(BATCH, json={"requests": items}, headers=portal.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["created"], body["replayed"], body["refused"]) == (2, 2, 6)
    results = body["results"]
    assert [r["index"] for r in results] == list(range(len(items)))
    assert [r["outcome"] for r in results] == [
        "created", "created", "refused", "refused", "refused", "replayed", "refused", "replayed", "refused", "refused"]
    assert results[0]["status"] == "completed" and results[1]["status"] == "scheduled"
    assert results[5]["id"] == results[0]["id"]
    assert results[7]["id"] == earlier.json()["id"]
    fields = {i: results[i]["problem"]["field"] for i in (2, 3, 4, 6, 9)}
    assert fields == {2: "legal_basis", 3: "idempotency_key", 4: "records.0.dataset", 6: "Idempotency-Key",
                      9: "colour"}
    for i in (2, 3, 4, 6, 8, 9):
        problem = results[i]["problem"]
        assert problem["type"].startswith("https://") and problem["title"] and problem["detail"]
        assert problem["status"] == (409 if i == 6 else 422)
        assert results[i]["id"] is None
    assert results[6]["problem"]["existing_request"] == results[0]["id"]
    # Exactly the two created items were written, each whole: row, two history steps, one
    # audit event, the known subject's record and version, the completed one's certificate order.
    after = _counts()
    assert {k: after[k] - before[k] for k in after} == {
        "deletion_requests": 2, "deletion_request_history": 4, "deletion_request_records": 1,
        "deletion_request_model_versions": 1, "outbox_messages": 1, "received_events": 2,
    }
    with session_scope() as session:
        scheduled = service.get_request(session, results[1]["id"])
        assert scheduled.affected["record_count"] == 1
        assert scheduled.affected["model_versions"][0]["id"] == seeded.version_id
        assert [h.to_status for h in service.history(session, scheduled.id)] == ["received", "scheduled"]
    # The same idempotency key through the single endpoint is the same request.
    single = api.post(URL, json=submission(subject=[{"type": "email", "value": "k-new@example.org"}]),
                      headers={**portal.headers, "Idempotency-Key": "k-new"})
    assert single.status_code == 200 and single.json()["id"] == results[0]["id"]


def test_sending_the_whole_batch_again_replays_every_item(api, make_client):
    portal = make_client("portal")
    items = [_item(f"again-{n}") for n in range(5)] + [submission(external_ref=f"ref-{n}") for n in range(5)]
    first = api.post(BATCH, json={"requests": items}, headers=portal.headers)
    assert first.status_code == 200 and first.json()["created"] == 10
    written = _counts()
    second = api.post(BATCH, json={"requests": items}, headers=portal.headers)
    assert second.status_code == 200
    assert (second.json()["created"], second.json()["replayed"], second.json()["refused"]) == (0, 10, 0)
    assert [r["id"] for r in second.json()["results"]] == [r["id"] for r in first.json()["results"]]
    assert _counts() == written


def test_more_than_1000_items_is_refused_whole(api, make_client):
    portal = make_client("portal")
    before = _counts()
    items = [{"legal_basis": "gdpr_art17", "external_ref": f"r{n}", "records": [{"dataset": "d", "record_key": "k"}]}
             for n in range(1001)]
    problem = assert_problem(api.post(BATCH, json={"requests": items}, headers=portal.headers), 422)
    assert problem["field"] == "requests"
    assert_problem(api.post(BATCH, json={"requests": []}, headers=portal.headers), 422)
    assert _counts() == before


@pytest.mark.slow
def test_1000_items_fit_in_one_body(api, make_client):
    portal = make_client("portal")
    items = [_item(f"full-{n}", jurisdiction="EU-" + "x" * 40) for n in range(1000)]
    response = api.post(BATCH, json={"requests": items}, headers=portal.headers)
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 1000
    assert _counts()["deletion_requests"] == 1000
    # The completed requests' certificate orders are one outbox message for the whole batch,
    # handed to the broker right after commit by the outbox's relay thread.
    from app.core.database import session_scope
    from app.core.outbox import OutboxMessage

    deadline = time.monotonic() + 120
    while True:
        with session_scope() as session:
            waiting = session.scalar(select(func.count()).select_from(OutboxMessage)
                                     .where(OutboxMessage.dispatched_at.is_(None)))
        if waiting == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert waiting == 0
    assert _counts()["outbox_messages"] == 1
    with session_scope() as session:
        (message,) = session.scalars(select(OutboxMessage))
        assert sorted(message.kwargs["request_ids"]) == sorted(r["id"] for r in response.json()["results"])


def test_body_over_the_batch_limit_is_413(api, make_client):
    padding = [{"dataset": "d", "record_key": "k" * 250}] * 1000
    items = [_item(f"big-{n}", records=padding) for n in range(20)]  # ~5 MiB
    assert_problem(api.post(BATCH, json={"requests": items}, headers=make_client("portal").headers), 413)
    assert _counts()["deletion_requests"] == 0


def test_portals_are_isolated_and_only_portals_submit(api, make_client):
    first, second = make_client("portal"), make_client("portal")
    items = [_item("shared-key"), submission(external_ref="shared-ref")]
    a = api.post(BATCH, json={"requests": items}, headers=first.headers).json()
    b = api.post(BATCH, json={"requests": items}, headers=second.headers).json()
    assert a["created"] == 2 and b["created"] == 2
    assert not {r["id"] for r in a["results"]} & {r["id"] for r in b["results"]}
    # The other portal cannot read what the first one sent.
    assert api.get(f"{URL}/{a['results'][0]['id']}", headers=second.headers).status_code == 404
    for role in ("auditor", "ml"):
        assert_problem(api.post(BATCH, json={"requests": items}, headers=make_client(role).headers), 403)
    assert_problem(api.post(BATCH, json={"requests": items}), 401)


@pytest.mark.parametrize("k", [0, 3])
def test_a_connection_killed_mid_batch_leaves_every_item_whole_or_absent(api, make_client, env, k):
    """The database session dies while item k is written (a trigger terminates its own backend,
    as an operator's pg_terminate_backend or a crashed server would): the answer is a 503, and
    no item of the batch is half written; sending the batch again writes every item once."""
    import psycopg

    portal = make_client("portal")
    dsn = env["UNLEARND_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("""
            CREATE FUNCTION die_on_doomed() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.to_status = 'received' AND EXISTS (
                    SELECT 1 FROM deletion_requests WHERE id = NEW.request_id AND external_ref = 'doomed') THEN
                    PERFORM pg_terminate_backend(pg_backend_pid());
                    PERFORM pg_sleep(5);
                END IF;
                RETURN NEW;
            END $$""")
        conn.execute("CREATE TRIGGER die_on_doomed BEFORE INSERT ON deletion_request_history "
                     "FOR EACH ROW EXECUTE FUNCTION die_on_doomed()")
    items = [_item(f"crash-{n}") for n in range(6)]
    items[k] = {**items[k], "external_ref": "doomed"}
    before = _counts()
    response = api.post(BATCH, json={"requests": items}, headers=portal.headers)
    assert_problem(response, 503)
    assert response.headers["retry-after"]
    assert _counts() == before
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TRIGGER die_on_doomed ON deletion_request_history")
    again = api.post(BATCH, json={"requests": items}, headers=portal.headers)
    assert again.status_code == 200 and again.json()["created"] == 6
    after = _counts()
    assert after["deletion_requests"] - before["deletion_requests"] == 6
    assert after["deletion_request_history"] - before["deletion_request_history"] == 12
    assert after["received_events"] - before["received_events"] == 6


def test_items_refused_by_a_check_now_are_still_replays_of_what_was_written(api, make_client, seed_model, backend):
    """Earlier requests are not read up front (nearly every item is new); the items a check
    refuses have theirs read afterwards, so a resent batch is answered as replays even after
    a model it named was renamed. An item that is new and names the old name is refused."""
    from sqlalchemy import update

    from app.core.database import session_scope
    from app.registry.models import RegisteredModel

    seeded = seed_model({"r1": ("email", "known@example.org")})
    portal = make_client("portal")
    scoped = [_item(f"scoped-{n}", scope={"models": [seeded.model_name]}) for n in range(3)]
    first = api.post(BATCH, json={"requests": scoped}, headers=portal.headers).json()
    assert first["created"] == 3
    with session_scope() as session:
        session.execute(update(RegisteredModel).where(RegisteredModel.id == seeded.model_id).values(name="renamed"))
    written = _counts()
    again = api.post(BATCH, json={"requests": [*scoped, _item("scoped-new", scope={"models": [seeded.model_name]})]},
                     headers=portal.headers).json()
    assert [r["outcome"] for r in again["results"]] == ["replayed"] * 3 + ["refused"]
    assert [r["id"] for r in again["results"][:3]] == [r["id"] for r in first["results"]]
    assert again["results"][3]["problem"]["status"] == 422
    assert _counts() == written


def test_a_batchs_events_are_chained_by_its_own_commit(api, make_client, backend):
    """No pending events for the sealer to read back: the batch's transaction chains them, and
    the log verifies."""
    from app.audit.models import PendingAuditEvent
    from app.audit.verify import verify_log
    from app.core.database import session_scope

    portal = make_client("portal")
    response = api.post(BATCH, json={"requests": [_item(f"chained-{n}") for n in range(25)]}, headers=portal.headers)
    assert response.json()["created"] == 25
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(PendingAuditEvent)
                              .where(PendingAuditEvent.action == "request.received")) == 0
        assert verify_log(session).ok
    assert _counts()["received_events"] == 25


def test_batches_take_turns_and_a_batch_that_waits_too_long_is_a_503(api, make_client, monkeypatch):
    """At most ``BATCHES_AT_ONCE`` batches are planned and written at once in a process; one that
    gets no turn within ``BATCH_TURN_SECONDS`` is answered 503 with Retry-After, nothing written."""
    import threading

    from app.core.auth import ApiClient
    from app.core.database import get_sessionmaker
    from app.requests import service

    portal = make_client("portal")
    monkeypatch.setattr(service, "BATCH_TURN_SECONDS", 0.2)
    for _ in range(service.BATCHES_AT_ONCE):
        assert service._batch_turns.acquire(timeout=1)
    try:
        before = _counts()
        response = api.post(BATCH, json={"requests": [_item("waited")]}, headers=portal.headers)
        problem = assert_problem(response, 503)
        assert int(response.headers["Retry-After"]) >= 1 and "retry" in problem["detail"]
        assert _counts() == before
    finally:
        for _ in range(service.BATCHES_AT_ONCE):
            service._batch_turns.release()
    assert api.post(BATCH, json={"requests": [_item("waited")]}, headers=portal.headers).json()["created"] == 1

    # Six batches sent at once run at most BATCHES_AT_ONCE at a time.
    running, most = 0, 0
    guard = threading.Lock()
    submit_all = service._submit_all

    def counted(*args, **kwargs):
        nonlocal running, most
        with guard:
            running += 1
            most = max(most, running)
        try:
            time.sleep(0.05)
            return submit_all(*args, **kwargs)
        finally:
            with guard:
                running -= 1

    monkeypatch.setattr(service, "_submit_all", counted)
    with get_sessionmaker()() as session:
        client = session.scalar(select(ApiClient).where(ApiClient.id == portal.id))
        session.expunge(client)

    def one_batch(n: int) -> None:
        with get_sessionmaker()() as session:
            results = service.submit_batch(session, client=client, items=[_item(f"turn-{n}-{i}") for i in range(3)],
                                           provenance=service.Provenance(channel="api"))
            session.commit()
            assert all(r.submission is not None for r in results)

    threads = [threading.Thread(target=one_batch, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert most == service.BATCHES_AT_ONCE
    assert _counts()["deletion_requests"] == before["deletion_requests"] + 1 + 18
