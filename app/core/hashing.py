"""Keyed hashing of subject identifiers: the raw value is normalised, hashed, and forgotten.

The intake and dataset ingestion both call ``subject_hash`` so that the same person
hashes to the same value on both sides, and nothing else in the system ever sees
the raw identifier.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from enum import StrEnum
from typing import Any

from app.core.errors import InvalidInput

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class IdentifierType(StrEnum):
    EMAIL = "email"
    USER_ID = "user_id"
    PHONE = "phone"
    CUSTOM = "custom"


def normalise_identifier(kind: IdentifierType | str, value: str, *, field: str = "value") -> str:
    kind = IdentifierType(kind)
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


def subject_hash(kind: IdentifierType | str, value: str, pepper: bytes, *, field: str = "value") -> str:
    """HMAC-SHA256 of the normalised identifier; hex. Without the pepper it cannot be reversed
    by hashing a list of e-mail addresses."""
    normalised = normalise_identifier(kind, value, field=field)
    return hmac.new(pepper, normalised.encode(), hashlib.sha256).hexdigest()


def canonical_json(document: Any) -> bytes:
    """One byte form for hashing and signing: sorted keys, no whitespace, UTF-8."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
