from __future__ import annotations

import pytest

from app.core.errors import InvalidInput
from app.core.hashing import canonical_json, subject_hash

PEPPER = b"pepper"


def test_equivalent_emails_hash_alike_and_differ_by_pepper():
    a = subject_hash("email", "  Alice@Example.COM ", PEPPER)
    assert a == subject_hash("email", "alice@example.com", PEPPER)
    assert a != subject_hash("email", "alice@example.com", b"other pepper")
    assert a != subject_hash("user_id", "alice@example.com", PEPPER)
    assert "alice" not in a and len(a) == 64


def test_phone_numbers_normalise():
    assert subject_hash("phone", "+1 (555) 010-0000", PEPPER) == subject_hash("phone", "+15550100000", PEPPER)


@pytest.mark.parametrize(("kind", "value"), [("email", "not-an-email"), ("email", "   "), ("phone", "abc"), ("user_id", "")])
def test_bad_identifiers_are_refused(kind, value):
    with pytest.raises(InvalidInput):
        subject_hash(kind, value, PEPPER)


def test_canonical_json_is_order_independent():
    assert canonical_json({"b": 1, "a": [1, 2]}) == canonical_json({"a": [1, 2], "b": 1}) == b'{"a":[1,2],"b":1}'
