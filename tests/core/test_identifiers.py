"""The identifier canonicaliser: every way a portal can spell one person hashes alike.

Variants a form, a copy-paste or another script's keyboard produce: NFC vs NFD, full-width
(NFKC) forms, zero-width space and joiner, BOM, soft hyphen, no-break spaces, case for
e-mail, and for phones +44 / 0044 / national format and non-ASCII digits.
"""

from __future__ import annotations

import unicodedata

import pytest

from app.core.errors import InvalidInput
from app.core.hashing import CANONICALISER_VERSION, normalise_identifier, subject_hash

PEPPER = b"pepper"

EMAIL = "josé.núñez@example.org"
EMAIL_VARIANTS = [
    unicodedata.normalize("NFC", EMAIL),
    unicodedata.normalize("NFD", EMAIL),
    "JOSÉ.NÚÑEZ@EXAMPLE.ORG",
    "José.Núñez@Example.org",
    "\u200bjosé.núñez@example.org",  # zero-width space
    "jos\u200dé.núñez@example.org",  # zero-width joiner
    "\ufeffjosé.núñez@example.org",  # byte-order mark
    "jo\u00adsé.núñez@example.org",  # soft hyphen
    "\u00a0josé.núñez@example.org\u00a0",  # no-break spaces
    "\u3000josé.núñez@example.org\u2003",  # ideographic and em spaces
    "ｊｏｓé.ｎúñｅｚ@ｅｘａｍｐｌｅ.ｏｒｇ",  # full-width letters
    unicodedata.normalize("NFD", "  JOSÉ.NÚÑEZ@example.ORG\u200b "),
]

USER_ID = "demo-subject-43"
USER_ID_VARIANTS = [
    "demo-subject-43",
    "demo-subject-４３",  # full-width digits
    "ｄｅｍｏ-subject-43",
    "\u200bdemo-subject-43",
    "demo-subject-4\u200d3",
    "\ufeffdemo-subject-43",
    "demo-sub\u00adject-43",
    "\u00a0demo-subject-43\u00a0",
    "demo-subject-43\u2060",  # word joiner
]

PHONE_VARIANTS = [
    "+44 7700 900123",
    "+447700900123",
    "0044 7700 900123",
    "00447700900123",
    "07700 900123",  # national format, default region GB
    "(07700) 900-123",
    "+４４ ７７００ ９００１２３",  # full-width digits
    "+٤٤٧٧٠٠٩٠٠١٢٣",  # Arabic-Indic digits
    "+४४७७००९००१२३",  # Devanagari digits
    "\u200b+44\u00a07700\u00a0900123\ufeff",
]


@pytest.fixture
def gb(monkeypatch):
    from tests.conftest import reset_caches

    monkeypatch.setenv("UNLEARND_PHONE_DEFAULT_REGION", "GB")
    reset_caches()
    yield
    reset_caches()


@pytest.mark.parametrize(("kind", "variants"), [("email", EMAIL_VARIANTS), ("user_id", USER_ID_VARIANTS)])
def test_every_variant_hashes_to_one_subject(kind, variants):
    hashes = {subject_hash(kind, value, PEPPER) for value in variants}
    assert len(hashes) == 1, [normalise_identifier(kind, v) for v in variants]


def test_every_phone_spelling_is_one_e164_number(gb):
    assert {normalise_identifier("phone", v) for v in PHONE_VARIANTS} == {"phone:+447700900123"}


def test_without_a_region_only_international_numbers_are_accepted(monkeypatch):
    from tests.conftest import reset_caches

    monkeypatch.delenv("UNLEARND_PHONE_DEFAULT_REGION", raising=False)
    reset_caches()
    assert normalise_identifier("phone", "0044 7700 900123") == "phone:+447700900123"
    with pytest.raises(InvalidInput, match="UNLEARND_PHONE_DEFAULT_REGION"):
        normalise_identifier("phone", "07700 900123")


def test_user_ids_stay_case_sensitive_unless_the_dataset_folds_case():
    assert subject_hash("user_id", "Bob", PEPPER) != subject_hash("user_id", "bob", PEPPER)
    assert subject_hash("user_id", "Bob", PEPPER, fold_case=True) == subject_hash("user_id", "BOB", PEPPER, fold_case=True)
    # A folded hash never matches an exact one, even for an id already in lower case.
    assert subject_hash("user_id", "bob", PEPPER, fold_case=True) != subject_hash("user_id", "bob", PEPPER)


def test_version_one_is_kept_for_data_ingested_before_version_two():
    assert CANONICALISER_VERSION == 2
    assert normalise_identifier("email", " Alice@Example.com ", version=1) == "email:alice@example.com"
    assert normalise_identifier("phone", "447700900123", version=1) == "phone:+447700900123"
    # Version 1 did not clean Unicode; the two versions differ exactly there.
    assert normalise_identifier("user_id", "demo-subject-４３", version=1) == "user_id:demo-subject-４３"
    assert normalise_identifier("user_id", "demo-subject-４３", version=2) == "user_id:demo-subject-43"


@pytest.mark.parametrize("value", ["\u200b", "\ufeff\u00a0", "\u00ad", "   "])
def test_an_identifier_of_only_invisible_characters_is_refused(value):
    with pytest.raises(InvalidInput, match="empty"):
        subject_hash("user_id", value, PEPPER)
