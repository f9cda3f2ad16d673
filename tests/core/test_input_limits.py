"""Every input a fuzzer found answered with 500 is a 4xx problem now (issue 21).

Each case is a request a client can send; the assertion is the status and that the body is
RFC 9457 problem details, not a stack trace. On PostgreSQL, which is the database that
refuses NUL and out-of-range integers; the checks run before any database sees the value.
"""

from __future__ import annotations

import json

import pytest

PROBLEM = "application/problem+json"


def _problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body = response.json()
    assert body["status"] == status
    return body


def _post_json(api, path: str, text: str, headers: dict[str, str]):
    """Send ``text`` verbatim: NaN and Infinity cannot come out of a compliant JSON encoder."""
    return api.post(path, content=text.encode(), headers={**headers, "Content-Type": "application/json"})


@pytest.fixture(scope="module")
def service(request, tmp_path_factory, redis_server):
    """One database and app for the module: every case here is refused before it writes anything."""
    from fastapi.testclient import TestClient

    from app.clients.service import create_client
    from app.core.database import session_scope
    from app.main import create_app
    from tests.conftest import _fresh_database, reset_caches

    tmp_path = tmp_path_factory.mktemp("limits")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {
            "UNLEARND_MODE": "embedded",
            "UNLEARND_DATA_DIR": str(tmp_path / "var"),
            "UNLEARND_DATABASE_URL": _fresh_database("postgresql", request, tmp_path),
            "UNLEARND_BROKER_URL": f"{redis_server}/9",
            "UNLEARND_SUBJECT_PEPPER": "test-pepper-not-secret",
        }.items():
            patch.setenv(key, value)
        reset_caches()
        keys = {}
        with session_scope() as session:
            for role in ("admin", "portal"):
                keys[role] = create_client(session, name=f"limits-{role}", role=role).api_key
        with TestClient(create_app(), raise_server_exceptions=False) as client:
            yield client, {role: {"Authorization": f"Bearer {key}"} for role, key in keys.items()}
        reset_caches()


@pytest.fixture
def api(service):
    return service[0]


class _Caller:
    def __init__(self, headers):
        self.headers = headers


@pytest.fixture
def admin(service):
    return _Caller(service[1]["admin"])


@pytest.fixture
def portal(service):
    return _Caller(service[1]["portal"])


@pytest.mark.parametrize(
    "body",
    [
        {"legal_basis": "gdpr_art17", "records": [{"dataset": "d\u0000s", "record_key": "k"}]},
        {"legal_basis": "gdpr_art17", "records": [{"dataset": "ds", "record_key": "k\u0000"}]},
        {"legal_basis": "gdpr_art17", "external_ref": "ref\u0000", "subject": [{"type": "email", "value": "a@b.org"}]},
        {"legal_basis": "gdpr_art17", "subject": [{"type": "user_id", "value": "u\u00001"}]},
    ],
    ids=["records.dataset", "records.record_key", "external_ref", "subject.value"],
)
def test_nul_in_a_body_string_is_422(api, portal, body):
    problem = _problem(api.post("/v1/deletion-requests", json=body, headers=portal.headers), 422)
    assert "NUL" in problem["detail"]


def test_nul_in_an_object_key_is_422(api, admin):
    body = {"name": "m", "adapter": "logreg", "dataset": "d", "hyperparameters": {"l\u0000r": 1}}
    _problem(api.post("/v1/models", json=body, headers=admin.headers), 422)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/deletion-requests?external_ref=a%00b",
        "/v1/deletion-requests/abc%00def",
        "/v1/datasets/x%00y",
        "/v1/models/m%00/versions",
        "/v1/lineage/records/ds/key%00",
        "/v1/audit/verification?expected_head=%00",
    ],
)
def test_nul_in_path_or_query_is_422(api, admin, path):
    problem = _problem(api.get(path, headers=admin.headers), 422)
    assert "NUL" in problem["detail"]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/x/versions/2147483648",
        "/v1/models/x/versions/-2147483649/artifacts",
        "/v1/models/x/versions/99999999999999999999/lineage",
        "/v1/audit/events/9223372036854775808/inclusion-proof",
        "/v1/audit/events/1/inclusion-proof?tree_size=9223372036854775808",
        "/v1/audit/consistency-proof?first=9223372036854775808",
        "/v1/audit/events?cursor=9223372036854775808",
    ],
)
def test_integer_beyond_column_range_in_a_path_is_422(api, admin, path):
    _problem(api.get(path, headers=admin.headers), 422)


@pytest.mark.parametrize("field", ["shard", "slice", "size_bytes"])
def test_integer_beyond_column_range_in_a_body_is_422(api, admin, field):
    too_big = 2**63 if field == "size_bytes" else 2**31
    artifact = {"uri": "file:///m.pt", "sha256": "0" * 64, field: too_big}
    body = {"snapshot_id": "s", "artifacts": [artifact]}
    problem = _problem(api.post("/v1/models/m/versions", json=body, headers=admin.headers), 422)
    assert field in problem["field"]


def test_integer_beyond_range_in_a_request_parent_is_422(api, admin):
    body = {"snapshot_id": "s", "parent": 2**31, "artifacts": [{"uri": "file:///m.pt", "sha256": "0" * 64}]}
    _problem(api.post("/v1/models/m/versions", json=body, headers=admin.headers), 422)


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "m", "adapter": "logreg", "dataset": "d", "policy": {"thresholds": {"max_mia_auc": NaN}}}',
        '{"name": "m", "adapter": "logreg", "dataset": "d", "hyperparameters": {"lr": Infinity}}',
        '{"name": "m", "adapter": "logreg", "dataset": "d", "hyperparameters": {"lr": -Infinity}}',
        '{"name": "m", "adapter": "logreg", "dataset": "d", "policy": {"batching_window_hours": NaN}}',
        '{"name": "m", "adapter": "logreg", "dataset": "d", "policy": {"thresholds": {"x": 1e999}}}',
    ],
    ids=["threshold-nan", "hyper-inf", "hyper-neg-inf", "window-nan", "threshold-overflow"],
)
def test_non_finite_numbers_are_422(api, admin, text):
    _problem(_post_json(api, "/v1/models", text, admin.headers), 422)


def test_non_finite_metric_in_a_version_import_is_422(api, admin):
    text = '{"snapshot_id": "s", "metrics": {"acc": NaN}, "artifacts": [{"uri": "file:///m", "sha256": "%s"}]}' % ("0" * 64)
    _problem(_post_json(api, "/v1/models/m/versions", text, admin.headers), 422)


@pytest.mark.parametrize(
    "field,value",
    [
        ("requested_at", "0001-01-01T05:00:00+14:00"),
        ("requested_at", "9999-12-31T20:00:00-14:00"),
        ("identity_verification", {"method": "email", "verified_at": "0001-01-01T00:00:00+01:00"}),
    ],
)
def test_datetimes_that_overflow_are_422(api, portal, field, value):
    body = {"legal_basis": "gdpr_art17", "subject": [{"type": "email", "value": "a@b.org"}], field: value}
    _problem(api.post("/v1/deletion-requests", json=body, headers=portal.headers), 422)


def test_extension_due_date_that_overflows_is_422(api, admin):
    body = {"reason": "complex", "due_at": "0001-01-01T05:00:00+14:00"}
    response = api.post("/v1/deletion-requests/00000000-0000-0000-0000-000000000000/extend", json=body, headers=admin.headers)
    _problem(response, 422)


@pytest.mark.parametrize("uri", ["a" * 2000, "/" + "a" * 1999, "sub/" * 499 + "abcd", "a" * 2001])
def test_two_thousand_character_dataset_uri_is_422(api, admin, uri):
    body = {
        "name": "long", "uri": uri, "format": "csv",
        "schema": {"record_key": "id", "features": ["f"]},
    }
    _problem(api.post("/v1/datasets", json=body, headers=admin.headers), 422)


@pytest.mark.parametrize("cursor", ["²", "٣", "1e3", "-1", " 1"])
def test_audit_cursor_that_is_not_a_plain_number_is_422(api, admin, cursor):
    _problem(api.get("/v1/audit/events", params={"cursor": cursor}, headers=admin.headers), 422)


@pytest.mark.parametrize("body", [b"\xff", b"\x0f*\xc3(", b'{"legal_basis": "gdpr_art17", "reason": "\xe9"}'],
                         ids=["lone-byte", "bad-continuation", "latin-1-in-a-string"])
@pytest.mark.parametrize("path", ["/v1/deletion-requests", "/v1/deletion-requests/r/extend", "/v1/lineage/subjects"])
def test_a_body_that_is_not_utf8_is_422(api, admin, path, body):
    """Found by schemathesis: the guard's pre-screen skipped such bodies (no NaN, no exponent), and
    FastAPI's parser answered an undeclared 400."""
    response = api.post(path, content=body, headers={**admin.headers, "Content-Type": "application/json"})
    assert "utf-8" in _problem(response, 422)["detail"]


def test_text_plain_body_is_415(api, portal):
    body = json.dumps({"legal_basis": "gdpr_art17", "subject": [{"type": "email", "value": "a@b.org"}]})
    response = api.post("/v1/deletion-requests", content=body, headers={**portal.headers, "Content-Type": "text/plain"})
    problem = _problem(response, 415)
    assert "application/json" in problem["detail"]


def test_json_with_a_charset_and_problem_json_are_accepted(api, portal):
    body = json.dumps({"legal_basis": "gdpr_art17", "subject": [{"type": "email", "value": "a@b.org"}]})
    headers = {**portal.headers, "Content-Type": "application/json; charset=utf-8"}
    assert api.post("/v1/deletion-requests", content=body, headers=headers).status_code == 202


def test_a_body_without_content_type_is_415(api, portal):
    response = api.post("/v1/deletion-requests", content=b'{"legal_basis": "gdpr_art17"}', headers=portal.headers)
    _problem(response, 415)


def test_405_names_the_allowed_methods(api, admin):
    response = api.delete("/v1/datasets", headers=admin.headers)
    _problem(response, 405)
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}


def test_openapi_declares_problem_responses(api):
    spec = api.get("/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    assert "Problem" in spec["components"]["schemas"]
    create = spec["paths"]["/v1/deletion-requests"]["post"]["responses"]
    for code in ("401", "403", "409", "413", "415", "422", "503"):
        assert code in create, code
        assert list(create[code]["content"]) == [PROBLEM]
        assert create[code]["content"][PROBLEM]["schema"] == {"$ref": "#/components/schemas/Problem"}
    show = spec["paths"]["/v1/deletion-requests/{request_id}"]["get"]["responses"]
    assert {"401", "403", "404", "422", "503"} <= set(show)
    assert "415" not in show  # no body, so no media type to refuse
    assert "401" not in spec["paths"]["/healthz"]["get"]["responses"]


def test_the_pre_screen_lets_through_only_bodies_the_guard_would_pass():
    """``_may_refuse`` (substring tests) against the regular expression it replaced, as an oracle,
    on random bodies built from the characters that matter: a body it lets skip the second parse
    must hold none of NaN, Infinity, a NUL escape, a digit before an exponent, 300 digits in a
    row, or a byte outside ASCII 1-127; and it must not flag a body that holds none of them."""
    import random
    import re

    from app.core.inputs import _may_refuse

    oracle = re.compile(rb"NaN|Infinity|\\u0000|[0-9][eE]|[0-9]{300}|[^\x01-\x7f]")
    pieces = [b"1", b"9", b"0", b"e", b"E", b"a", b"N", b"aN", b"NaN", b"Infinity", b"Infinit", b"\\u0000",
              b"\\u000", b"\x00", b"\x7f", b"\x80", "é".encode(), b'"', b"{", b"}", b":", b",", b" ",
              b"9" * 150, b"0" * 299, b"-", b"."]
    rng = random.Random(15)
    for _ in range(5000):
        body = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert _may_refuse(body) == (oracle.search(body) is not None), body
