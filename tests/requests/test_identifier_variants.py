"""Intake finds a subject however the portal spelled the identifier, and data ingested
under the previous canonicaliser is still found; a no_data_found certificate says which
identifier types and canonicaliser versions were checked."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from tests.core.test_identifiers import EMAIL, EMAIL_VARIANTS, PHONE_VARIANTS, USER_ID, USER_ID_VARIANTS
from tests.requests.conftest import PEPPER

URL = "/v1/deletion-requests"


@pytest.fixture
def gb(monkeypatch, env):
    from tests.conftest import reset_caches

    monkeypatch.setenv("UNLEARND_PHONE_DEFAULT_REGION", "GB")
    reset_caches()


def _resolved(api, portal, kind: str, value: str) -> tuple[dict, set[int]]:
    from app.core.database import session_scope
    from app.requests.models import RequestRecord

    body = {"subject": [{"type": kind, "value": value}], "legal_basis": "gdpr_art17", "external_ref": uuid.uuid4().hex}
    response = api.post(URL, json=body, headers=portal.headers)
    assert response.status_code == 202, response.text
    request = response.json()
    with session_scope() as session:
        records = set(session.scalars(select(RequestRecord.record_id).where(RequestRecord.request_id == request["id"])))
    return request, records


@pytest.mark.parametrize(("kind", "canonical", "variants"), [
    ("email", EMAIL, EMAIL_VARIANTS),
    ("user_id", USER_ID, USER_ID_VARIANTS),
    ("phone", "+447700900123", PHONE_VARIANTS),
])
def test_every_variant_resolves_to_the_same_records(api, make_client, seed_model, gb, backend, kind, canonical, variants):
    seeded = seed_model({"a": (kind, canonical), "b": (kind, canonical), "other": ("user_id", "someone-else")})
    portal = make_client("portal")
    for value in variants:
        request, records = _resolved(api, portal, kind, value)
        assert request["status"] == "scheduled" and request["outcome"] is None, value
        assert records == {seeded.record_ids["a"], seeded.record_ids["b"]}, value


def test_records_hashed_by_the_previous_canonicaliser_are_still_found(api, make_client, env, backend):
    """A dataset ingested before version 2 keeps its version-1 hashes; intake hashes under
    both and finds them, and says so."""
    from app.core.database import session_scope
    from app.core.hashing import sha256_hex, subject_hash
    from app.registry.models import DataRecord, Dataset

    with session_scope() as session:
        dataset = Dataset(name="old", uri="/data/old.csv", format="csv", schema={}, status="ready",
                          canonicaliser_version=1)
        session.add(dataset)
        session.flush()
        record = DataRecord(dataset_id=dataset.id, row_index=0, record_key="k1", content_hash=sha256_hex(b"k1"),
                            subject_hash=subject_hash("email", " Alice@Example.com", PEPPER, version=1))
        session.add(record)
        session.flush()
        record_id = record.id
    request, records = _resolved(api, make_client("portal"), "email", "\u200bALICE@example.com\u00a0")
    assert records == {record_id}
    assert request["affected"]["identifiers_checked"] == {"types": ["email"], "canonicaliser_versions": [1, 2]}


def test_user_id_case_folds_only_for_a_dataset_that_asks_for_it(api, make_client, seed_model, env, backend):
    from app.core.database import session_scope
    from app.core.hashing import sha256_hex, subject_hash
    from app.registry.models import DataRecord, Dataset

    exact = seed_model({"e1": ("user_id", "Bob")}, trained=False)
    with session_scope() as session:
        folding = Dataset(name="folding", uri="/data/f.csv", format="csv", status="ready",
                          schema={"record_key": "id", "subject_column": "uid", "identifier_type": "user_id",
                                  "fold_case": True, "features": ["f"]})
        session.add(folding)
        session.flush()
        folded = DataRecord(dataset_id=folding.id, row_index=0, record_key="f1", content_hash=sha256_hex(b"f1"),
                            subject_hash=subject_hash("user_id", "bob", PEPPER, fold_case=True))
        session.add(folded)
        session.flush()
        folded_id = folded.id
    portal = make_client("portal")
    _, upper = _resolved(api, portal, "user_id", "BOB")
    assert upper == {folded_id}  # the exact-case dataset's "Bob" is someone else to "BOB"
    _, same = _resolved(api, portal, "user_id", "Bob")
    assert same == {folded_id, exact.record_ids["e1"]}


def test_no_data_found_certificate_names_what_was_checked(api, make_client, env, backend):
    from app.certificates.service import certificate_file, issue_certificate
    from app.certificates.verify import verify_certificate
    from app.core.database import session_scope
    from tests.certificates.test_certificates import _keys

    portal = make_client("portal")
    request, records = _resolved(api, portal, "user_id", "nobody-at-all")
    assert request["outcome"] == "no_data_found" and not records
    with session_scope() as session:
        raw = certificate_file(issue_certificate(session, request["id"]))
    checked = verify_certificate(raw, _keys(api)).document["non_inclusion"]["identifiers_checked"]
    assert checked == {"types": ["user_id"], "canonicaliser_versions": [2], "record_ref_count": 0}
