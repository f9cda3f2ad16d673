"""Single intake answers the common case itself (app/api/direct.py: a cached key, a valid body)
and hands everything else to the declared FastAPI endpoint: each answer must be the same
whether the caller's client is cached yet or not."""

from __future__ import annotations

from tests.requests.conftest import submission
from tests.test_api_foundation import assert_problem

URL = "/v1/deletion-requests"


def _twice(api, *args, **kwargs):
    """The same call before and after its key's client is cached (a read with the key caches it)."""
    from app.core.auth import client_cache

    client_cache._entries.clear()
    first = api.post(*args, **kwargs)
    api.get(URL, headers={"Authorization": kwargs["headers"]["Authorization"]})
    assert client_cache._entries, "the read should have cached the caller's client"
    return first, api.post(*args, **kwargs)


def test_a_replay_and_a_conflict_are_the_same_through_both_paths(api, make_client):
    portal = make_client("portal")
    headers = {**portal.headers, "Idempotency-Key": "k-1"}
    created, replayed = _twice(api, URL, json=submission(), headers=headers)
    assert created.status_code == 202 and replayed.status_code == 200, (created.text, replayed.text)
    assert replayed.headers["idempotent-replayed"] == "true" and replayed.json()["id"] == created.json()["id"]
    assert replayed.headers["location"] == f"{URL}/{created.json()['id']}"
    for response in _twice(api, URL, json=submission(legal_basis="cpra"), headers=headers):
        assert assert_problem(response, 409)["existing_request"] == created.json()["id"]


def test_refusals_are_the_same_through_both_paths(api, make_client):
    portal, auditor = make_client("portal"), make_client("auditor")
    cases = [
        ({"json": submission(), "headers": auditor.headers}, 403, None),
        ({"json": {**submission(), "legal_basis": "nope"}, "headers": portal.headers}, 422, "legal_basis"),
        ({"json": {**submission(), "extra": 1}, "headers": portal.headers}, 422, "extra"),
        ({"content": b"{not json", "headers": {**portal.headers, "Content-Type": "application/json"}}, 422, None),
        ({"json": submission(), "headers": {**portal.headers, "Idempotency-Key": "k" * 256}}, 422, "Idempotency-Key"),
        ({"json": submission(), "headers": {"Authorization": portal.headers["Authorization"] + "x"}}, 401, None),
    ]
    for kwargs, status, field in cases:
        first, second = _twice(api, URL, **kwargs)
        assert first.status_code == second.status_code == status, (kwargs, first.text, second.text)
        a, b = first.json(), second.json()
        a.pop("request_id", None), b.pop("request_id", None)
        assert a == b
        if field is not None:
            assert a["field"] == field


def test_a_batch_is_answered_the_same_through_both_paths(api, make_client):
    """Bulk intake takes the direct path too: the same mixed batch (new, replayed, conflicting,
    malformed and non-object items) gets the same answers as through FastAPI's handler, and a
    batch that does not validate as a whole (over 1,000 items) is refused as before."""
    from app.core.auth import client_cache

    portal, auditor = make_client("portal"), make_client("auditor")

    def batch(tag: str) -> list:
        return [
            submission(idempotency_key=f"{tag}-1"),
            submission(idempotency_key=f"{tag}-1"),                      # replay of item 0
            submission(idempotency_key=f"{tag}-1", legal_basis="cpra"),  # same key, other body: 409
            submission(idempotency_key=f"{tag}-2", legal_basis="nope"),  # refused by its shape
            submission(),                                                # neither key nor external_ref
            "not an object",
        ]

    def shape(response) -> list:
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["created"], body["replayed"], body["refused"]) == (1, 1, 4)
        return [(r["outcome"], r["status"], r["problem"] and (r["problem"]["status"], r["problem"]["field"]))
                for r in body["results"]]

    client_cache._entries.clear()
    declared = api.post(f"{URL}/batch", json={"requests": batch("a")}, headers=portal.headers)
    api.get(URL, headers=portal.headers)
    assert client_cache._entries, "the read should have cached the caller's client"
    direct = api.post(f"{URL}/batch", json={"requests": batch("b")}, headers=portal.headers)
    assert shape(declared) == shape(direct)
    assert direct.json()["results"][1]["id"] == direct.json()["results"][0]["id"]
    assert direct.json()["results"][2]["problem"]["existing_request"] == direct.json()["results"][0]["id"]
    api.get(URL, headers=auditor.headers)
    assert api.post(f"{URL}/batch", json={"requests": batch("c")}, headers=auditor.headers).status_code == 403
    too_many = api.post(f"{URL}/batch", json={"requests": [submission(idempotency_key=f"d-{n}") for n in range(1001)]},
                        headers=portal.headers)
    assert too_many.status_code == 422 and too_many.json()["field"] == "requests", too_many.text
