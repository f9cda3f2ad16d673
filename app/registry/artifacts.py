"""Content-addressed artifact store: bytes are filed under their sha256.

URIs are logical (``cas://sha256/<hex>``) so that moving the store (another data dir,
an fsspec bucket) does not rewrite the registry. The store is a folder under the data dir
unless ``UNLEARND_ARTIFACT_STORE_URL`` names an fsspec location (``s3://bucket/prefix``,
needed when workers run on several machines). Identical bytes are stored once, which
is why purging checks that no other live artifact still names the same URI.
Clients never name host paths: an imported version's bytes are uploaded (``receive``,
behind ``POST /v1/artifacts``) and get a store-issued URI, or they live under a configured
remote prefix (``app.registry.locations``), which is read but never deleted. Deletion
touches only files inside the store, checked again at delete time.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import fsspec
from fsspec import AbstractFileSystem

from app.core.config import get_settings
from app.core.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from app.registry.locations import check_remote_artifact

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
        raise InvalidInput("not a content-addressed artifact URI (cas://sha256/<64 hex digits>)", field="uri")
    return digest


def check_stored_uri(uri: str, *, field: str = "uri") -> str:
    try:
        _digest(uri)
    except InvalidInput as exc:
        raise InvalidInput(exc.detail, field=field) from None
    return uri


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
        with fsspec.open(check_remote_artifact(uri), "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise NotFound("artifact not found under its remote prefix") from None


def exists(uri: str) -> bool:
    if is_stored_uri(uri) and (remote := _remote_location(uri)):
        fs, path = remote
        return bool(fs.exists(path))
    if is_stored_uri(uri):
        return _path(uri).exists()
    fs, path = fsspec.core.url_to_fs(check_remote_artifact(uri))
    return bool(fs.exists(path))


def delete(uri: str) -> bool:
    """Remove the bytes from the store; return whether anything was deleted. Idempotent.

    Only store-issued URIs are ever deleted, and only once the file is confirmed to sit in
    its digest folder directly inside the store root (links resolved now, not when the URI
    was written). Anything else (a remote-prefix artifact, a row written before this rule)
    is left alone and reported as not deleted."""
    if not is_stored_uri(uri):
        return False
    if remote := _remote_location(uri):
        fs, path = remote
        if not fs.exists(path):
            return False
        fs.rm(path)
        return True
    path = _path(uri)
    if not path.exists() and not path.is_symlink():
        return False
    root = store_root().resolve()
    if path.parent.resolve().parent != root or not path.resolve().is_relative_to(root):
        raise Conflict("artifact file lies outside the artifact store; refusing to delete it")
    path.unlink(missing_ok=True)
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
        opener = fsspec.open(check_remote_artifact(uri), "rb").open()
    with opener as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Received:
    uri: str
    sha256: str
    size_bytes: int


async def receive(chunks: AsyncIterator[bytes], max_bytes: int) -> Received:
    """Stream an upload into the store, hashing as it arrives: the sha256 is the service's,
    never the client's. Nothing is kept of an upload that goes over ``max_bytes``."""
    staging = store_root() / ".incoming"
    staging.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    fd, tmp = tempfile.mkstemp(dir=staging, prefix="upload-")
    try:
        with os.fdopen(fd, "wb") as handle:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(f"artifact exceeds {max_bytes} bytes")
                digest.update(chunk)
                handle.write(chunk)
        if size == 0:
            raise InvalidInput("the upload is empty", field="body")
        uri = uri_for(digest.hexdigest())
        if remote := _remote_location(uri):
            fs, path = remote
            if not fs.exists(path):
                fs.put_file(tmp, path)
        else:
            target = _path(uri)
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return Received(uri=uri, sha256=digest.hexdigest(), size_bytes=size)
