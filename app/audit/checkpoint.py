"""Signed tree heads as C2SP signed notes (``tlog-checkpoint``), checkable with any note
verifier (Go's ``golang.org/x/mod/sumdb/note``, sigsum, a few lines of ``cryptography``).

The note body is the checkpoint: the log's origin line, the tree size in decimal and the
root hash in standard base64, each ending in a newline. One signature line follows a blank
line: ``— <key name> base64(key hash || Ed25519 signature over the body)``, where the key
hash is the first four bytes of ``SHA-256(key name || 0x0A || 0x01 || public key)``.
The tree is the RFC 9162 tree of the audit chain (leaf ``i`` is ``SHA-256(0x00 || event
hash)`` of event ``i + 1``), so the inclusion and consistency proofs served beside it are
RFC 9162 section 2.1.3 and 2.1.4 proofs against this root.
"""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import urlsplit

from app.core.config import Settings, get_settings
from app.core.signing import Signer

ED25519_ALGORITHM_BYTE = b"\x01"
SIGNATURE_PREFIX = "\u2014 "
DEFAULT_ORIGIN = "unlearnd/audit-log"


def origin(settings: Settings | None = None) -> str:
    """The log's name: ``UNLEARND_CHECKPOINT_ORIGIN``, else the public URL's host and path
    plus ``/audit-log``, else ``unlearnd/audit-log``. It names the signing key too."""
    settings = settings or get_settings()
    if settings.checkpoint_origin:
        return settings.checkpoint_origin
    if settings.public_url:
        parts = urlsplit(settings.public_url)
        return f"{parts.netloc}{parts.path.rstrip('/')}/audit-log"
    return DEFAULT_ORIGIN


def key_hash(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519_ALGORITHM_BYTE + public_key).digest()[:4]


def verifier_key(name: str, public_key: bytes) -> str:
    """The note verifier key: ``<name>+<key hash, hex>+<base64(0x01 || public key)>``."""
    return f"{name}+{key_hash(name, public_key).hex()}+{base64.b64encode(ED25519_ALGORITHM_BYTE + public_key).decode()}"


def checkpoint_body(name: str, tree_size: int, root_hash: bytes) -> str:
    return f"{name}\n{tree_size}\n{base64.b64encode(root_hash).decode()}\n"


def signed_checkpoint(signer: Signer, name: str, tree_size: int, root_hash: bytes) -> str:
    body = checkpoint_body(name, tree_size, root_hash)
    signature = signer.private_key.sign(body.encode())
    line = base64.b64encode(key_hash(name, signer.public_key) + signature).decode()
    return f"{body}\n{SIGNATURE_PREFIX}{name} {line}\n"
