"""API clients and bearer-key authentication.

A key is ``ulk_<key_id>_<secret>``. Only ``key_id`` (public, for lookup) and the
SHA-256 of the secret are stored; the secret is shown once at creation. Keys carry
256 bits of entropy, so a fast hash is sufficient (nothing to brute-force).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from datetime import datetime

from sqlalchemy import String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from app.core.config import get_settings
from app.core.database import Base, new_id, utcnow
from app.core.errors import Unauthenticated
from app.core.roles import Role

KEY_PREFIX = "ulk"


class ApiClient(Base):
    __tablename__ = "api_clients"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    key_id: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    # Portals whose requests an admin must approve before any model is touched.
    requires_approval: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)

    @property
    def role_enum(self) -> Role:
        return Role(self.role)


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue_key() -> tuple[str, str, str]:
    """Return (key_id, plaintext key, stored hash)."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return key_id, f"{KEY_PREFIX}_{key_id}_{secret}", _hash_secret(secret)


class _ClientCache:
    """Recently seen clients by key id, for a few seconds: a portal posting hundreds of
    requests a second should not cost a lookup each. The secret is still checked on every
    call; a revocation made in another process takes effect within the TTL."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._entries: dict[str, tuple[float, ApiClient]] = {}
        self._lock = threading.Lock()
        self._max = max_entries

    def get(self, key_id: str) -> ApiClient | None:
        with self._lock:
            entry = self._entries.get(key_id)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key_id: str, client: ApiClient, ttl: float) -> None:
        with self._lock:
            if len(self._entries) >= self._max:
                self._entries.clear()
            self._entries[key_id] = (time.monotonic() + ttl, client)

    def forget(self, key_id: str) -> None:
        with self._lock:
            self._entries.pop(key_id, None)


client_cache = _ClientCache()


def _cached(key_id: str) -> ApiClient | None:
    return client_cache.get(key_id) if get_settings().auth_cache_seconds > 0 else None


# One read per key at a time: when a busy key's entry expires, every request in flight misses it
# at once (32 clients: 32 reads of the same row). The others wait for the first read (a second
# at most: a slow or failing database must not queue them behind it) and find it cached.
_reading: dict[str, threading.Event] = {}
_reading_lock = threading.Lock()
FOLLOWER_WAIT_SECONDS = 1.0


def _lookup(session: Session, key_id: str) -> ApiClient | None:
    cached = _cached(key_id)
    if cached is not None:
        return cached
    with _reading_lock:
        first = _reading.get(key_id)
        if first is None:
            _reading[key_id] = mine = threading.Event()
    if first is not None:
        first.wait(FOLLOWER_WAIT_SECONDS)
        return _cached(key_id) or _read(session, key_id)
    try:
        return _read(session, key_id)
    finally:
        with _reading_lock:
            _reading.pop(key_id, None)
        mine.set()


def _read(session: Session, key_id: str) -> ApiClient | None:
    client = session.scalar(select(ApiClient).where(ApiClient.key_id == key_id))
    ttl = get_settings().auth_cache_seconds
    if client is not None and ttl > 0:
        session.expunge(client)  # a detached copy is safe to share between requests
        client_cache.put(key_id, client, ttl)
    return client


def _parts(key: str) -> tuple[str, str]:
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX:
        raise Unauthenticated("malformed API key")
    return parts[1], parts[2]


def authenticate_cached(key: str) -> ApiClient | None:
    """``authenticate`` from the cache alone, with no session: None when the key's client is not
    cached (the caller then calls ``authenticate``). Lets an async caller answer the common case
    without handing the call to a worker thread."""
    key_id, secret = _parts(key)
    client = _cached(key_id)
    return _verified(client, secret) if client is not None else None


def authenticate(session: Session, key: str) -> ApiClient:
    key_id, secret = _parts(key)
    return _verified(_lookup(session, key_id), secret)


def _verified(client: ApiClient | None, secret: str) -> ApiClient:
    # Compare even when the client is unknown so timing does not reveal which key ids exist.
    expected = client.key_hash if client else "0" * 64
    if not hmac.compare_digest(expected, _hash_secret(secret)) or client is None:
        raise Unauthenticated("unknown API key")
    if client.revoked_at is not None:
        raise Unauthenticated("API key revoked")
    return client
