"""Group commit of single intakes (app/core/coalesce.py, app/api/direct.py): submissions of one
client that arrive while an earlier group of its is being written go together in the next
transaction, and each is answered exactly as it would be alone."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.requests.conftest import submission
from tests.test_api_foundation import assert_problem

URL = "/v1/deletion-requests"


def _direct_answer():
    from app.requests.router import router

    (route,) = [r for r in router.routes if getattr(r, "path", None) == URL and "POST" in r.methods]
    return route.direct


def _cache(api, caller) -> None:
    api.get(URL, headers=caller.headers)  # a read with the key caches its client


def test_the_common_case_is_answered_at_the_edge_and_a_cache_miss_alone(api, make_client, monkeypatch):
    """A cached key's submission goes through the group path; one whose client is not cached yet
    through the single path in a worker thread; a batch through its own direct answer. None of
    them reaches FastAPI's declared handler."""
    from app.api import direct
    from app.core.auth import client_cache
    from app.requests import router as requests_router

    groups, singles, declared = [], [], []
    in_one_session, in_session = direct.DirectAnswer._in_one_session, direct._in_session
    monkeypatch.setattr(direct.DirectAnswer, "_in_one_session",
                        lambda self, group: groups.append(len(group)) or in_one_session(self, group))
    monkeypatch.setattr(direct, "_in_session", lambda *args: singles.append(args[0].__name__) or in_session(*args))
    submit = requests_router._submit  # what the declared handler calls; the direct answers hold their own
    monkeypatch.setattr(requests_router, "_submit", lambda *a: declared.append(1) or submit(*a))

    portal = make_client("portal")
    client_cache._entries.clear()
    miss = api.post(URL, json=submission(external_ref="miss"), headers=portal.headers)
    assert miss.status_code == 202, miss.text
    assert singles == ["_submit"] and groups == []
    _cache(api, portal)
    hit = api.post(URL, json=submission(external_ref="hit"), headers=portal.headers)
    assert hit.status_code == 202, hit.text
    assert groups == [1] and singles == ["_submit"]
    batch = api.post(f"{URL}/batch", json={"requests": [submission(external_ref="b-1")]}, headers=portal.headers)
    assert batch.status_code == 200 and batch.json()["created"] == 1, batch.text
    assert singles == ["_submit", "_submit_batch"] and declared == []


@pytest.fixture
def held_group(monkeypatch):
    """The first group of the test waits inside its worker thread until released, so that the
    calls sent meanwhile queue behind it and go together in the next group."""
    answer = _direct_answer()
    release, entered, sizes = threading.Event(), threading.Event(), []
    together = answer.together

    def holding(session, client, calls):  # noqa: ANN001, ANN202
        sizes.append(len(calls))
        if len(sizes) == 1:
            entered.set()
            assert release.wait(30), "the held group was never released"
        return together(session, client, calls)

    monkeypatch.setattr(answer, "together", holding)

    def waiting() -> int:
        return sum(len(queue.waiting) for queue in answer.groups._queues.values())

    return release, entered, sizes, waiting


def _send_while_held(api, held_group, first: tuple, others: list[tuple]) -> tuple:
    """Send ``first``, and once its group is held, ``others`` at once; release when they all
    queue. The answers of ``first`` and of each of ``others``."""
    release, entered, sizes, waiting = held_group
    with ThreadPoolExecutor(len(others) + 1) as pool:
        head = pool.submit(api.post, URL, json=first[0], headers=first[1])
        assert entered.wait(30), "the first submission never reached its group"
        rest = [pool.submit(api.post, URL, json=body, headers=headers) for body, headers in others]
        deadline = time.monotonic() + 30
        while waiting() < len(others) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert waiting() == len(others), "the other submissions did not queue behind the held group"
        release.set()
        return head.result(30), [f.result(30) for f in rest]


def test_submissions_sent_meanwhile_are_written_together_each_answered_as_alone(backend, api, make_client,
                                                                                 held_group):
    portal = make_client("portal")
    _cache(api, portal)
    keyed = {**portal.headers, "Idempotency-Key": "same-key"}
    others = [(submission(external_ref=f"other-{i}"), portal.headers) for i in range(5)]
    others += [
        (submission(external_ref="twice"), portal.headers),
        (submission(external_ref="twice"), portal.headers),                     # a replay of the one before
        (submission(), keyed),
        (submission(legal_basis="cpra"), keyed),                                # same key, other body: 409
        (submission(external_ref="unknown", scope={"models": ["no-such-model"]}), portal.headers),  # refused
    ]
    head, answers = _send_while_held(api, held_group, (submission(external_ref="head"), portal.headers), others)
    assert held_group[2] == [1, len(others)], "one group held, then every other submission in one more"

    assert head.status_code == 202, head.text
    for response in answers[:5]:
        assert response.status_code == 202, response.text
    # Which of two repeats is written depends on which arrived first; the other is its replay.
    twice, again = sorted(answers[5:7], key=lambda r: r.status_code, reverse=True)
    assert (twice.status_code, again.status_code) == (202, 200), (twice.text, again.text)
    assert again.json()["id"] == twice.json()["id"] and again.headers["idempotent-replayed"] == "true"
    keyed_first, conflicting = sorted(answers[7:9], key=lambda r: r.status_code)
    assert keyed_first.status_code == 202, keyed_first.text
    assert assert_problem(conflicting, 409)["existing_request"] == keyed_first.json()["id"]
    assert assert_problem(answers[9], 422)["field"] == "scope.models.0"

    created = [r.json()["id"] for r in [head, *answers[:5], twice, keyed_first]]
    assert len(set(created)) == len(created) == 8
    for request_id in created:
        shown = api.get(f"{URL}/{request_id}", headers=portal.headers)
        assert shown.status_code == 200 and shown.json()["status"] == "completed", shown.text  # no data found
    listed = api.get(URL, headers=portal.headers, params={"limit": 50}).json()["items"]
    assert sorted(r["id"] for r in listed) == sorted(created), "nothing more, nothing less was written"


def test_a_call_that_breaks_its_group_fails_alone(api, make_client, held_group, monkeypatch):
    """An unexpected failure (not the database's) of a group's transaction: each call runs again
    alone, so only the call that causes it fails (a 500), and the others are written."""
    from app.requests import service

    provenance_document = service._provenance_document

    def breaking(client, provenance, submission_):  # noqa: ANN001, ANN202
        if provenance.user_agent == "breaks":
            raise RuntimeError("a bug that one submission triggers")
        return provenance_document(client, provenance, submission_)

    monkeypatch.setattr(service, "_provenance_document", breaking)
    portal = make_client("portal")
    _cache(api, portal)
    others = [(submission(external_ref=f"fine-{i}"), portal.headers) for i in range(3)]
    others.insert(1, (submission(external_ref="broken"), {**portal.headers, "User-Agent": "breaks"}))
    head, answers = _send_while_held(api, held_group, (submission(external_ref="head"), portal.headers), others)
    assert held_group[2] == [1, 4, 1, 1, 1, 1], "the group of four failed and each of its calls ran alone"
    assert head.status_code == 202, head.text
    assert [r.status_code for r in answers] == [202, 500, 202, 202], [r.text for r in answers]
    assert_problem(answers[1], 500)
    listed = api.get(URL, headers=portal.headers, params={"limit": 50}).json()["items"]
    assert sorted(r["external_ref"] for r in listed) == ["fine-0", "fine-1", "fine-2", "head"]


def test_a_transient_failure_of_a_group_is_every_calls_and_each_is_retried(api, make_client, held_group,
                                                                          monkeypatch):
    """A deadlock that rolls back a group's transaction: every call of the group runs again (the
    edge's one retry), and each is written once."""
    from sqlalchemy import exc as sa_exc

    answer = _direct_answer()
    holding, failures = answer.together, []

    class Deadlock(Exception):
        sqlstate = "40P01"

    def deadlocking_once(session, client, calls):  # noqa: ANN001, ANN202
        if len(calls) > 1 and not failures:  # rolled back before anything was written
            failures.append(len(calls))
            raise sa_exc.OperationalError("INSERT", {}, Deadlock())
        return holding(session, client, calls)

    monkeypatch.setattr(answer, "together", deadlocking_once)
    portal = make_client("portal")
    _cache(api, portal)
    others = [(submission(external_ref=f"retried-{i}"), portal.headers) for i in range(4)]
    head, answers = _send_while_held(api, held_group, (submission(external_ref="head"), portal.headers), others)
    assert failures == [4]
    assert head.status_code == 202 and [r.status_code for r in answers] == [202] * 4, [r.text for r in answers]
    listed = api.get(URL, headers=portal.headers, params={"limit": 50}).json()["items"]
    assert sorted(r["external_ref"] for r in listed) == ["head", *[f"retried-{i}" for i in range(4)]]
