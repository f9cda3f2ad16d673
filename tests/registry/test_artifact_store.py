"""The content-addressed store, on the local data dir and on an fsspec location."""

from __future__ import annotations

import hashlib

import pytest


@pytest.mark.parametrize("store_url", ["", "memory://unlearnd-artifacts"])
def test_store_round_trip_dedupe_and_delete(env, monkeypatch, store_url):
    from app.core.errors import NotFound
    from app.registry import artifacts
    from tests.conftest import reset_caches

    monkeypatch.setenv("UNLEARND_ARTIFACT_STORE_URL", store_url)
    reset_caches()
    data = b"model state " * 1000
    uri, digest = artifacts.put_bytes(data)
    assert uri == f"cas://sha256/{hashlib.sha256(data).hexdigest()}" == artifacts.uri_for(digest)
    assert artifacts.put_bytes(data) == (uri, digest)  # same bytes, stored once
    assert artifacts.get_bytes(uri) == data and artifacts.sha256_of(uri) == digest
    # Local store: the bytes sit under the data dir; fsspec store: nothing is written there.
    assert (artifacts.store_root() / digest[:2] / digest).exists() is (store_url == "")
    assert artifacts.delete(uri) is True and artifacts.delete(uri) is False
    assert not artifacts.exists(uri)
    with pytest.raises(NotFound):
        artifacts.get_bytes(uri)
