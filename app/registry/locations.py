"""Where a client-named URI may point: the one check for dataset files and artifacts.

A client never names a host path outside the service's own folders. A dataset URI is a
local file under ``<data_dir>/datasets`` (symlinks resolved first), or a URL under one of
``UNLEARND_DATASET_REMOTE_PREFIXES``; an imported artifact URI is store-issued
(``cas://sha256/...``) or under one of ``UNLEARND_ARTIFACT_REMOTE_PREFIXES``. Everything
else is refused, notably fsspec's other doors: chained URLs (``simplecache::file://``),
``local:``, ``data:``, ``memory:``, ``ftp:``, ``dir::``. The check runs at registration
and again when a worker opens the file, so a row written before the rule, or a symlink
swapped in later, is caught where it matters. Refusals never repeat the URI: it may hold
credentials or a host and port, and an error that differs by reachability is an oracle.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import fsspec

from app.core.config import get_settings
from app.core.errors import InvalidInput


def dataset_root() -> Path:
    """Local dataset files must live under this folder (symlinks are resolved first)."""
    return get_settings().data_dir / "datasets"


def _refuse(reason: str, field: str) -> InvalidInput:
    return InvalidInput(reason, field=field)


def _basic_checks(uri: str, field: str) -> None:
    limit = get_settings().max_uri_length
    if not uri or len(uri) > limit:
        raise _refuse(f"a URI must be 1-{limit} characters", field)
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in uri):
        raise _refuse("a URI may not contain control characters (NUL, newline, ...)", field)
    if "::" in uri:
        raise _refuse("chained (::) URLs are not accepted", field)


def _scheme(uri: str) -> str | None:
    scheme, sep, _ = uri.partition(":")
    if not sep or not scheme or not (scheme[0].isascii() and scheme[0].isalpha()):
        return None
    if not all(ch.isascii() and (ch.isalnum() or ch in "+.-") for ch in scheme):
        return None
    return scheme.lower()


def under_prefix(uri: str, prefixes: list[str]) -> bool:
    """True when ``uri`` lies under one of the configured remote prefixes, path segments
    compared exactly (no ``..``, ``.`` or empty segment can climb out of the prefix)."""
    for prefix in prefixes:
        if not prefix:
            continue
        base = prefix if prefix.endswith("/") else prefix + "/"
        if not uri.startswith(base):
            continue
        rest = uri[len(base):]
        segments = rest.split("/")
        # "%": an encoded dot or slash could still climb out once a backend decodes it.
        return bool(rest) and not any(s in {"", ".", ".."} for s in segments) and not any(
            ch in rest for ch in "\\?#%")
    return False


def _local_path(uri: str, field: str) -> Path:
    scheme = _scheme(uri)
    if scheme == "file":
        parts = urlsplit(uri)
        if parts.netloc not in {"", "localhost"} or parts.query or parts.fragment:
            raise _refuse("a file: URI must name a local path (file:///...)", field)
        raw = parts.path
    elif scheme is None:
        raw = uri
    else:
        raise _refuse(
            f"URI scheme '{scheme}' is not allowed; use a file under the dataset root or a configured "
            "remote prefix (UNLEARND_DATASET_REMOTE_PREFIXES)", field)
    root = dataset_root().resolve()
    candidate = Path(raw) if Path(raw).is_absolute() else root / raw
    try:
        # strict: a dangling link or a missing file is refused here, not half-way through a read.
        real = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        raise _refuse("no such file under the data root", field) from None
    if not real.is_relative_to(root) or real == root:
        raise _refuse("a dataset file must be under the data root (<data_dir>/datasets; symlinks are followed)", field)
    if not real.is_file():
        raise _refuse("no such file under the data root", field)
    return real


def resolve_dataset(uri: str, *, field: str = "uri") -> str:
    """The location ingestion and training will open: an absolute local path under the
    dataset root, or a URL under a configured remote prefix. Anything else: 422."""
    _basic_checks(uri, field)
    if under_prefix(uri, get_settings().dataset_remote_prefixes):
        return uri
    return str(_local_path(uri, field))


def local_dataset_path(uri: str, *, field: str = "uri") -> Path:
    """For readers that need a local file (the training engine): checked again now."""
    location = resolve_dataset(uri, field=field)
    if under_prefix(location, get_settings().dataset_remote_prefixes):
        raise _refuse("the training engine reads local dataset files only", field)
    return Path(location)


def open_dataset(uri: str) -> IO[bytes]:
    """Open a registered dataset file for reading, re-checking where it points now."""
    location = resolve_dataset(uri)
    if under_prefix(location, get_settings().dataset_remote_prefixes):
        return fsspec.open(location, "rb").open()
    # O_NOFOLLOW: the path was just resolved, so its last part being a link now means a swap.
    fd = os.open(location, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    return os.fdopen(fd, "rb")


def check_remote_artifact(uri: str, *, field: str = "uri") -> str:
    """An artifact URI the store did not issue must be under a configured remote prefix."""
    _basic_checks(uri, field)
    if not under_prefix(uri, get_settings().artifact_remote_prefixes):
        raise _refuse(
            "an artifact URI must be one the store issued (upload it with POST /v1/artifacts) or lie "
            "under a configured remote prefix (UNLEARND_ARTIFACT_REMOTE_PREFIXES)", field)
    return uri
