"""Keyed hashing of subject identifiers: the raw value is canonicalised, hashed, and forgotten.

The intake and dataset ingestion both call ``subject_hash`` so that the same person
hashes to the same value on both sides, and nothing else in the system ever sees
the raw identifier.

The canonicaliser is versioned, because changing it changes every hash. Each dataset
records the version its rows were hashed with, and intake hashes an identifier once per
version present, so data ingested under an older version is still found.

- Version 1 (datasets ingested before migration 0010): whitespace stripped; e-mail
  lower-cased; phone: separators dropped and a ``+`` prefixed.
- Version 2 (current): format characters (Unicode category Cf: zero-width space and
  joiner, BOM, soft hyphen, bidi marks) removed, Unicode NFKC (full-width forms, NFD vs
  NFC, compatibility digits fold together), all Unicode whitespace trimmed from both ends.
  Then, per type: ``email`` is case-folded (``str.casefold``: the local part is
  case-insensitive at every mail provider a portal deals with in practice, though RFC 5321
  leaves it to the host); ``phone`` is parsed by ``phonenumbers`` and written as E.164
  (``+447700900123``; a national number needs ``UNLEARND_PHONE_DEFAULT_REGION``, and
  ``00`` is read as the international prefix); ``user_id`` and ``custom`` are kept exact,
  case included, unless the dataset folds case (``fold_case``), which hashes under a
  type of its own so a folded lookup never matches another dataset's exact ids.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import unicodedata
from enum import StrEnum
from typing import Any

import phonenumbers

from app.core.config import get_settings
from app.core.errors import InvalidInput

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
CANONICALISER_VERSION = 2
CANONICALISER_VERSIONS = (1, 2)


class IdentifierType(StrEnum):
    EMAIL = "email"
    USER_ID = "user_id"
    PHONE = "phone"
    CUSTOM = "custom"


def _v1(kind: IdentifierType, value: str, field: str) -> str:
    text = value.strip()
    if not text:
        raise InvalidInput("identifier is empty", field=field)
    if kind is IdentifierType.EMAIL:
        text = text.lower()
        if not _EMAIL.match(text):
            raise InvalidInput("not a valid e-mail address", field=field)
    elif kind is IdentifierType.PHONE:
        digits = re.sub(r"[\s().-]", "", text)
        if not re.fullmatch(r"\+?\d{6,15}", digits):
            raise InvalidInput("not a valid phone number", field=field)
        text = digits if digits.startswith("+") else "+" + digits
    return f"{kind.value}:{text}"


def unicode_clean(value: str) -> str:
    """Cf characters out first (one between a letter and its accent would block composition),
    then NFKC, then Unicode whitespace trimmed."""
    if value.isascii():  # no Cf character is ASCII and NFKC leaves ASCII as it is: the common case, cheaply
        return value.strip()
    without_format = "".join(ch for ch in value if unicodedata.category(ch) != "Cf")
    return unicodedata.normalize("NFKC", without_format).strip()


def _e164(text: str, region: str | None, field: str) -> str:
    # Any script's decimal digits (Arabic-Indic, Devanagari, ...) count as digits.
    ascii_digits = "".join(str(d) if (d := unicodedata.decimal(ch, None)) is not None else ch for ch in text)
    if not region and ascii_digits.startswith("00"):
        ascii_digits = "+" + ascii_digits[2:]
    try:
        number = phonenumbers.parse(ascii_digits, region or None)
    except phonenumbers.NumberParseException:
        hint = "" if region or ascii_digits.startswith("+") else " (a national number needs UNLEARND_PHONE_DEFAULT_REGION)"
        raise InvalidInput(f"not a valid phone number{hint}", field=field) from None
    if not phonenumbers.is_possible_number(number):
        raise InvalidInput("not a valid phone number", field=field)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _v2(kind: IdentifierType, value: str, field: str, fold_case: bool, region: str | None) -> str:
    text = unicode_clean(value)
    if not text:
        raise InvalidInput("identifier is empty", field=field)
    if kind is IdentifierType.EMAIL:
        text = text.casefold()
        if not _EMAIL.match(text):
            raise InvalidInput("not a valid e-mail address", field=field)
    elif kind is IdentifierType.PHONE:
        text = _e164(text, region, field)
    elif fold_case and kind is IdentifierType.USER_ID:
        return f"{kind.value}/casefold:{text.casefold()}"
    return f"{kind.value}:{text}"


def normalise_identifier(
    kind: IdentifierType | str,
    value: str,
    *,
    field: str = "value",
    version: int = CANONICALISER_VERSION,
    fold_case: bool = False,
    region: str | None = None,
) -> str:
    """``type:canonical value`` under canonicaliser ``version``; ``region`` defaults to the setting."""
    kind = IdentifierType(kind)
    if version == 1:
        return _v1(kind, value, field)
    if version != 2:
        raise ValueError(f"unknown canonicaliser version {version}")
    if region is None:
        region = get_settings().phone_default_region
    return _v2(kind, value, field, fold_case, region)


def subject_hash(
    kind: IdentifierType | str,
    value: str,
    pepper: bytes,
    *,
    field: str = "value",
    version: int = CANONICALISER_VERSION,
    fold_case: bool = False,
    region: str | None = None,
) -> str:
    """HMAC-SHA256 of the canonical identifier; hex. Without the pepper it cannot be reversed
    by hashing a list of e-mail addresses."""
    normalised = normalise_identifier(kind, value, field=field, version=version, fold_case=fold_case, region=region)
    # One call into OpenSSL: ``hmac.new``'s object, built and read per identifier, cost more.
    return hmac.digest(pepper, normalised.encode(), "sha256").hex()


# Built once: ``json.dumps`` with these options builds an encoder per call, a sixth of the cost
# of hashing an audit event (intake hashes two documents per request).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def canonical_json(document: Any) -> bytes:
    """One byte form for hashing and signing: sorted keys, no whitespace, UTF-8."""
    return _CANONICAL.encode(document).encode()


# For a document hashed before it is stored (and verified from what was stored): a value JSON
# does not hold as it is (a datetime, NaN) is refused, where ``canonical_json`` would hash its
# ``str`` while the database kept another form of it.
_CANONICAL_STRICT = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_json_strict(document: Any) -> bytes:
    """``canonical_json`` of a document of JSON's own types only; TypeError or ValueError otherwise."""
    return _CANONICAL_STRICT.encode(document).encode()


def json_safe(value: Any) -> Any:
    """JSON has no NaN or infinity (an empty group's accuracy, say): they are stated as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
