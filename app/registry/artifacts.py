"""Content-addressed artifact store: bytes are filed under their sha256.

URIs are logical (``cas://sha256/<hex>``) so that moving the store (another data dir,
an fsspec bucket) does not rewrite the registry. The store is a folder under the data dir
unless ``UNLEARND_ARTIFACT_STORE_URL`` names an fsspec location (``s3://bucket/prefix``,
needed when workers run on several machines). Identical bytes are stored once, which
is why purging checks that no other live artifact still names the same URI.
Other URIs (``s3://``, ``file://``, ...) are read through fsspec for imported models.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

import fsspec
from fsspec import AbstractFileSystem

from app.core.config import get_settings
from app.core.errors import InvalidInput, NotFound

SCHEME = "cas://sha256/"
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def store_root() -> Path:
    return get_settings().artifacts_dir


def _remote_location(uri: str) -> tuple[AbstractFileSystem, str] | None:
    """(filesystem, path) of a stored artifact when the store is an fsspec URL, else None."""
    url = get_settings().artifact_store_url
    if not url:
        return None
    fs, root = fsspec.core.url_to_fs(url)
    digest = _digest(uri)
    return fs, f"{root.rstrip('/')}/{digest[:2]}/{digest}"


def uri_for(sha256: str) -> str:
    return SCHEME + sha256


def is_stored_uri(uri: str) -> bool:
    return uri.startswith(SCHEME)


def _digest(uri: str) -> str:
    digest = uri.removeprefix(SCHEME)
    if not _DIGEST.match(digest):
        raise InvalidInput(f"not a content-addressed artifact URI: {uri!r}", field="uri")
    return digest


def _path(uri: str) -> Path:
    digest = _digest(uri)
    return store_root() / digest[:2] / digest


def put_bytes(data: bytes) -> tuple[str, str]:
    """Store ``data``; return (uri, sha256). Writing the same bytes twice is a no-op."""
    digest = hashlib.sha256(data).hexdigest()
    uri = uri_for(digest)
    if remote := _remote_location(uri):
        fs, path = remote
        if not fs.exists(path):
            # Object stores have no folders, but a file:// store (a shared mount) does, and
            # fsspec's local filesystem does not create them on write.
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            fs.pipe_file(path, data)  # one object write: readers never see part of it
        return uri, digest
    target = _path(uri)
    if target.exists():
        return uri, digest
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename: a reader never sees a half-written artifact under its final name.
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return uri, digest


def get_bytes(uri: str) -> bytes:
    if is_stored_uri(uri) and (remote := _remote_location(uri)):
        fs, path = remote
        if not fs.exists(path):
            raise NotFound(f"artifact {uri} is not in the store (purged or never written)")
        return fs.cat_file(path)
    if is_stored_uri(uri):
        path = _path(uri)
        if not path.exists():
            raise NotFound(f"artifact {uri} is not in the store (purged or never written)")
        return path.read_bytes()
    try:
        with fsspec.open(uri, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise NotFound(f"artifact {uri} not found") from None


def exists(uri: str) -> bool:
    if is_stored_uri(uri) and (remote := _remote_location(uri)):
        fs, path = remote
        return bool(fs.exists(path))
    if is_stored_uri(uri):
        return _path(uri).exists()
    fs, path = fsspec.core.url_to_fs(uri)
    return bool(fs.exists(path))


def delete(uri: str) -> bool:
    """Remove the bytes; return whether anything was there. Idempotent."""
    if is_stored_uri(uri) and (remote := _remote_location(uri)):
        fs, path = remote
        if not fs.exists(path):
            return False
        fs.rm(path)
        return True
    if is_stored_uri(uri):
        path = _path(uri)
        existed = path.exists()
        path.unlink(missing_ok=True)
        return existed
    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.exists(path):
        return False
    fs.rm(path)
    return True


def sha256_of(uri: str) -> str:
    """Hash an artifact in 1 MiB chunks so large model files are not loaded whole."""
    digest = hashlib.sha256()
    if is_stored_uri(uri) and (remote := _remote_location(uri)):
        fs, path = remote
        if not fs.exists(path):
            raise NotFound(f"artifact {uri} is not in the store")
        opener = fs.open(path, "rb")
    elif is_stored_uri(uri):
        path = _path(uri)
        if not path.exists():
            raise NotFound(f"artifact {uri} is not in the store")
        opener = path.open("rb")
    else:
        opener = fsspec.open(uri, "rb").open()
    with opener as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
