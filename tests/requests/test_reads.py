"""Reading requests: filters, cursor pagination, and portal isolation on every route."""

from __future__ import annotations

import pytest

from tests.requests.conftest import submission
from tests.test_api_foundation import assert_problem

URL = "/v1/deletion-requests"


def _submit_many(api, caller, count: int, **overrides) -> list[dict]:
    return [
        api.post(URL, json=submission(external_ref=f"{caller.id[:8]}-{i}", **overrides), headers=caller.headers).json()
        for i in range(count)
    ]


def test_cursor_pagination_walks_every_request_once_newest_first(api, make_client, backend):
    portal = make_client("portal")
    created = _submit_many(api, portal, 7)
    seen, cursor = [], None
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = api.get(URL, params=params, headers=portal.headers)
        assert page.status_code == 200, page.text
        seen += [item["id"] for item in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == [c["id"] for c in reversed(created)]


def test_filters(api, make_client, backend):
    portal = make_client("portal")
    gdpr = _submit_many(api, portal, 2, requested_at="2025-01-01T00:00:00Z")
    ccpa = api.post(URL, json=submission(legal_basis="ccpa_1798_105", external_ref="ccpa-1",
                                         requested_at="2025-06-01T00:00:00Z"), headers=portal.headers).json()

    def ids(**params) -> set[str]:
        response = api.get(URL, params=params, headers=portal.headers)
        assert response.status_code == 200, response.text
        return {item["id"] for item in response.json()["items"]}

    assert ids(legal_basis="ccpa_1798_105") == {ccpa["id"]}
    assert ids(external_ref="ccpa-1") == {ccpa["id"]}
    assert ids(due_before="2025-03-01T00:00:00Z") == {g["id"] for g in gdpr}
    assert ids(status="completed") == {g["id"] for g in gdpr} | {ccpa["id"]}
    assert ids(status="scheduled") == set()


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "asleep"}, "status"),
        ({"legal_basis": "whim"}, "legal_basis"),
        ({"due_before": "2025-01-01T00:00:00"}, "due_before"),
        ({"limit": 0}, "limit"),
        ({"cursor": "bm90IGEgY3Vyc29y"}, "cursor"),
    ],
)
def test_bad_list_parameters_name_the_field(api, make_client, params, field):
    problem = assert_problem(api.get(URL, params=params, headers=make_client("admin").headers), 422)
    assert problem["field"] == field


def test_a_portal_never_sees_another_portals_request_on_any_route(api, make_client, seed_model, backend):
    seed_model({"r1": ("email", "iris@example.org")})
    owner, stranger = make_client("portal"), make_client("portal")
    theirs = api.post(URL, json=submission(subject=[{"type": "email", "value": "iris@example.org"}], external_ref="x"),
                      headers=owner.headers).json()
    _submit_many(api, stranger, 1)
    listing = api.get(URL, headers=stranger.headers).json()["items"]
    assert theirs["id"] not in {item["id"] for item in listing} and len(listing) == 1
    assert api.get(URL, params={"external_ref": "x"}, headers=stranger.headers).json()["items"] == []
    assert_problem(api.get(f"{URL}/{theirs['id']}", headers=stranger.headers), 404)
    assert_problem(api.post(f"{URL}/{theirs['id']}/cancel", headers=stranger.headers), 404)
    # Admin-only actions refuse a portal by role, whoever owns the request.
    for action, body in (("approve", None), ("reject", {"reason": "r"}), ("retry", None), ("extend", {"reason": "r"})):
        assert_problem(api.post(f"{URL}/{theirs['id']}/{action}", json=body, headers=stranger.headers), 403)
    # The same external_ref and idempotency key from another portal is a new request, not theirs.
    mine = api.post(URL, json=submission(subject=[{"type": "email", "value": "iris@example.org"}], external_ref="x"),
                    headers=stranger.headers).json()
    assert mine["id"] != theirs["id"]
    assert api.get(f"{URL}/{theirs['id']}", headers=owner.headers).json()["status"] == "scheduled"


def test_admin_and_auditor_see_all_and_ml_sees_only_its_own(api, make_client):
    one, two = make_client("portal"), make_client("portal")
    ids = {r["id"] for r in _submit_many(api, one, 2) + _submit_many(api, two, 2)}
    for role in ("admin", "auditor"):
        caller = make_client(role)
        assert {i["id"] for i in api.get(URL, headers=caller.headers).json()["items"]} == ids
        assert api.get(f"{URL}/{sorted(ids)[0]}", headers=caller.headers).status_code == 200
    auditor = make_client("auditor")
    assert_problem(api.post(f"{URL}/{sorted(ids)[0]}/cancel", headers=auditor.headers), 403)
    # An ml key reads back only the selector removals it submitted itself: none of these.
    ml = make_client("ml")
    assert api.get(URL, headers=ml.headers).json()["items"] == []
    assert_problem(api.get(f"{URL}/{sorted(ids)[0]}", headers=ml.headers), 404)


def test_unknown_request_is_404(api, make_client):
    admin = make_client("admin")
    for method, suffix in (("GET", ""), ("POST", "/approve"), ("POST", "/retry"), ("POST", "/cancel")):
        assert_problem(api.request(method, f"{URL}/00000000-0000-0000-0000-000000000000{suffix}", headers=admin.headers), 404)
