"""The certificate's byte form, shared by the issuer and the offline verifier."""

from __future__ import annotations

from typing import Any

from app.core.hashing import canonical_json, sha256_hex
from app.core.signing import ALGORITHM

CERTIFICATE_TYPE = "unlearnd.deletion-certificate"
SCHEMA_VERSION = 1


def content_digest(document: dict[str, Any]) -> str:
    """What the anchoring audit event commits to: everything but the anchor itself."""
    return sha256_hex(canonical_json({k: v for k, v in document.items() if k != "anchor"}))


def envelope_bytes(document: dict[str, Any], *, key_id: str, signature: str) -> bytes:
    """Canonical JSON, so a certificate has exactly one spelling and any edited byte shows."""
    return canonical_json({"certificate": document, "signature": {"alg": ALGORITHM, "key_id": key_id, "value": signature}})
