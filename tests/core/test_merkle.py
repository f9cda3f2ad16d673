"""RFC 6962 Merkle tree: roots against the recursive definition, proofs, tampering."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core import merkle


def reference_root(leaves: list[bytes]) -> bytes:
    """MTH straight from RFC 6962 section 2.1, recursively."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return merkle.node_hash(reference_root(leaves[:k]), reference_root(leaves[k:]))


def leaves_of(n: int) -> list[bytes]:
    return [merkle.leaf_hash(f"leaf-{i}".encode()) for i in range(n)]


def test_rfc6962_domain_separation():
    assert merkle.leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert merkle.EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@given(st.integers(min_value=1, max_value=70))
@settings(max_examples=70, deadline=None)
def test_root_matches_the_recursive_definition(n):
    leaves = leaves_of(n)
    assert merkle.root(leaves) == reference_root(leaves)


@given(st.integers(min_value=1, max_value=70), st.data())
@settings(max_examples=80, deadline=None)
def test_every_inclusion_proof_verifies_and_a_tampered_one_fails(n, data):
    leaves = leaves_of(n)
    index = data.draw(st.integers(min_value=0, max_value=n - 1))
    root = merkle.root(leaves)
    proof = merkle.inclusion_proof(leaves, index)
    merkle.verify_inclusion(leaves[index], index, n, proof, root)
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(merkle.leaf_hash(b"other"), index, n, proof, root)
    if proof:
        bad = list(proof)
        bad[0] = bytes(32)
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(leaves[index], index, n, bad, root)
    if n > 1:
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(leaves[index], (index + 1) % n, n, proof, root)


@given(st.integers(min_value=1, max_value=60), st.data())
@settings(max_examples=80, deadline=None)
def test_consistency_proofs(n, data):
    leaves = leaves_of(n)
    m = data.draw(st.integers(min_value=1, max_value=n))
    proof = merkle.consistency_proof(leaves, m)
    merkle.verify_consistency(m, n, merkle.root(leaves[:m]), merkle.root(leaves), proof)
    if m < n:
        forged = leaves[: m - 1] + [merkle.leaf_hash(b"rewritten")] + leaves[m:]
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(m, n, merkle.root(leaves[:m]), merkle.root(forged), proof)
