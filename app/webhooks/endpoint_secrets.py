"""Endpoint signing secrets: generated, sealed at rest with Fernet, and used to sign.

A secret is ``whsec_`` + base64 of 32 random bytes (Standard Webhooks allows 24-64). The
database holds it only Fernet-encrypted under ``UNLEARND_WEBHOOK_SECRET_KEY`` (several keys,
newest first, let that key be rotated: MultiFernet decrypts with any, encrypts with the first).
"""

from __future__ import annotations

import base64
import secrets
from datetime import datetime

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from standardwebhooks.webhooks import Webhook

from app.core.config import MissingSecretError, get_settings
from app.core.errors import ServiceUnavailable

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _cipher() -> MultiFernet:
    try:
        keys = get_settings().webhook_secret_keys()
    except MissingSecretError as exc:
        raise ServiceUnavailable(str(exc)) from exc
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except ValueError as exc:
        raise ServiceUnavailable("UNLEARND_WEBHOOK_SECRET_KEY is not a valid Fernet key") from exc


def seal(secret: str) -> str:
    return _cipher().encrypt(secret.encode()).decode()


def open_sealed(token: str) -> str:
    try:
        return _cipher().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise ServiceUnavailable("an endpoint secret does not decrypt with UNLEARND_WEBHOOK_SECRET_KEY") from exc


def signature_header(keys: list[str], message_id: str, timestamp: datetime, body: str) -> str:
    """``webhook-signature``: one ``v1,<base64>`` per secret, space-separated (rotation grace)."""
    return " ".join(Webhook(key).sign(message_id, timestamp, body) for key in keys)
