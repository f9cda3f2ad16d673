"""Ed25519 signing for tree heads and certificates.

The private key lives in one PEM file (``Settings.resolved_signing_key_path``); embedded
mode creates it on first use, production refuses to. A key is named by its RFC 7638
JWK thumbprint, so anyone holding the public key can recompute the id and nothing
has to be trusted about the mapping. Signatures are lowercase hex: one spelling per
signature, so no byte of a signed document can change without breaking it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from app.core.config import Mode, Settings, get_settings
from app.core.hashing import canonical_json, sha256_hex

ALGORITHM = "EdDSA"
SIGNATURE_HEX_LENGTH = 128


class SignatureInvalid(ValueError):
    """A signature, or a public key offered to check it, that does not hold."""


class SigningKeyMissing(RuntimeError):
    """Production never generates its signing key: a fresh key would orphan every proof."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_id_for(public_key: bytes) -> str:
    """RFC 7638 thumbprint of the OKP key (members crv, kty, x in lexicographic order)."""
    members = {"crv": "Ed25519", "kty": "OKP", "x": _b64url(public_key)}
    return _b64url(bytes.fromhex(sha256_hex(canonical_json(members))))


def public_jwk(public_key: bytes) -> dict[str, str]:
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": _b64url(public_key),
        "kid": key_id_for(public_key),
        "alg": ALGORITHM,
        "use": "sig",
    }


def public_key_from_jwk(jwk: dict[str, Any]) -> bytes:
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or not isinstance(jwk.get("x"), str):
        raise SignatureInvalid("not an OKP/Ed25519 JWK")
    raw = _b64url_decode(jwk["x"])
    if len(raw) != 32:
        raise SignatureInvalid("an Ed25519 public key is 32 bytes")
    if "kid" in jwk and jwk["kid"] != key_id_for(raw):
        raise SignatureInvalid("JWK kid is not the thumbprint of its key")
    return raw


def parse_public_key(text: str) -> bytes:
    """A public key as a PEM block, a JWK object, or the raw 32 bytes in base64url or hex."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise SignatureInvalid("PEM key is not Ed25519")
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if text.startswith("{"):
        return public_key_from_jwk(json.loads(text))
    try:
        raw = bytes.fromhex(text) if len(text) == 64 else _b64url_decode(text)
    except ValueError:
        raise SignatureInvalid("public key is neither PEM, JWK, hex nor base64url") from None
    if len(raw) != 32:
        raise SignatureInvalid("an Ed25519 public key is 32 bytes")
    return raw


def verify_signature(public_key: bytes, data: bytes, signature_hex: str) -> None:
    if len(signature_hex) != SIGNATURE_HEX_LENGTH or signature_hex != signature_hex.lower():
        raise SignatureInvalid("signature must be 128 lowercase hex digits")
    try:
        signature = bytes.fromhex(signature_hex)
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (ValueError, InvalidSignature):
        raise SignatureInvalid("signature does not match the signed bytes") from None


@dataclass(frozen=True)
class Signer:
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def key_id(self) -> str:
        return key_id_for(self.public_key)

    def sign(self, data: bytes) -> str:
        return self.private_key.sign(data).hex()


def _pem(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_private(path: Path, private_key: Ed25519PrivateKey, *, replace: bool) -> None:
    """Write the whole file under a temporary name first, so no reader ever sees half a key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".signing-key-")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(_pem(private_key))
        os.chmod(temporary, 0o600)
        if replace:
            os.replace(temporary, path)
        else:
            # link() fails if the path exists: of two processes starting together, one key wins.
            os.link(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _read_private(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyMissing(f"{path} does not hold an Ed25519 private key")
    return key


def current_signer(settings: Settings | None = None) -> Signer:
    """The key new signatures are made with, read from disk each time so that a rotation
    done by another process is picked up by the next signature."""
    settings = settings or get_settings()
    path = settings.resolved_signing_key_path()
    if not path.exists():
        if settings.mode is Mode.PRODUCTION:
            raise SigningKeyMissing(f"signing key {path} does not exist; production never creates one")
        # Another process may have created it first; theirs is the key.
        with contextlib.suppress(FileExistsError):
            _write_private(path, Ed25519PrivateKey.generate(), replace=False)
    return Signer(_read_private(path))


def create_signing_key(settings: Settings | None = None) -> Signer:
    """The operator's explicit first key (``unlearnd keys init``), in any mode; never over an
    existing one (FileExistsError), since every proof it signed would be orphaned."""
    settings = settings or get_settings()
    signer = Signer(Ed25519PrivateKey.generate())
    _write_private(settings.resolved_signing_key_path(), signer.private_key, replace=False)
    return signer


def replace_signing_key(settings: Settings | None = None) -> Signer:
    """Put a fresh key in place of the current one. The old private key is destroyed: what it
    signed stays verifiable through its published public key, and it can sign nothing more."""
    settings = settings or get_settings()
    signer = Signer(Ed25519PrivateKey.generate())
    _write_private(settings.resolved_signing_key_path(), signer.private_key, replace=True)
    return signer


# --- JWS (RFC 7515 compact serialization, EdDSA per RFC 8037) ---------------------------------

JWS_TYPE = "JOSE"


def jws_sign(signer: Signer, payload: bytes) -> str:
    """Compact JWS of ``payload``: ``b64url(header).b64url(payload).b64url(signature)``.

    The protected header is fixed for a key (canonical JSON of alg, kid, typ) and Ed25519 is
    deterministic, so one key and one payload give one JWS, byte for byte."""
    header = canonical_json({"alg": ALGORITHM, "kid": signer.key_id, "typ": JWS_TYPE})
    signing_input = f"{_b64url(header)}.{_b64url(payload)}".encode()
    return f"{signing_input.decode()}.{_b64url(signer.private_key.sign(signing_input))}"


def jws_verify(token: str, keys: dict[str, bytes]) -> tuple[dict[str, Any], bytes]:
    """Check a compact JWS signed with EdDSA by one of ``keys`` (key id → raw public key);
    return its protected header and payload, or raise SignatureInvalid."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise SignatureInvalid("a compact JWS has three dot-separated parts")
    try:
        header = json.loads(_b64url_decode(parts[0]))
        payload = _b64url_decode(parts[1])
        signature = _b64url_decode(parts[2])
    except (ValueError, UnicodeDecodeError):
        raise SignatureInvalid("JWS parts are not base64url JSON") from None
    if not isinstance(header, dict) or header.get("alg") != ALGORITHM:
        raise SignatureInvalid("JWS header must name alg EdDSA")
    if set(header.get("crit", [])):
        raise SignatureInvalid("JWS header carries critical extensions this verifier does not know")
    public_key = keys.get(header.get("kid", ""))
    if public_key is None:
        raise SignatureInvalid(f"no public key {header.get('kid')!r} among those given")
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, f"{parts[0]}.{parts[1]}".encode())
    except (ValueError, InvalidSignature):
        raise SignatureInvalid("JWS signature does not match its header and payload") from None
    return header, payload


def looks_like_jws(raw: bytes) -> bool:
    return raw[:2] == b"ey" and raw.count(b".") == 2 and b"{" not in raw
