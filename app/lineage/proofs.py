"""Snapshot membership proofs as plain JSON documents, and their offline verification.

Inclusion: the record's leaf, its index and its RFC 6962 audit path.
Non-inclusion: leaves are sorted by record key, so a key that is absent falls between two
adjacent leaves (or before the first / after the last); proving both neighbours' inclusion
and their adjacency proves there is no room for the key. Verification needs nothing but
the document and the snapshot's published Merkle root.
"""

from __future__ import annotations

from typing import Any

from app.core import merkle
from app.core.merkle import ProofError
from app.registry.leaves import leaf_hash

INCLUSION = "inclusion"
NON_INCLUSION = "non-inclusion"


def leaf_proof(record_key: str, content_hash: str, index: int, path: list[bytes]) -> dict[str, Any]:
    return {"record_key": record_key, "content_hash": content_hash, "index": index,
            "audit_path": [node.hex() for node in path]}


def _check_leaf(leaf: dict[str, Any], tree_size: int, root: bytes) -> None:
    try:
        path = [bytes.fromhex(node) for node in leaf["audit_path"]]
        hashed = leaf_hash(str(leaf["record_key"]), str(leaf["content_hash"]))
        merkle.verify_inclusion(hashed, int(leaf["index"]), tree_size, path, root)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ProofError):
            raise
        raise ProofError(f"malformed leaf proof: {exc}") from None


def verify_proof(document: dict[str, Any]) -> str:
    """Raise ProofError unless the document proves what it claims; return the claim in words."""
    try:
        kind = document["kind"]
        key = str(document["record_key"])
        tree_size = int(document["tree_size"])
        root = bytes.fromhex(document["merkle_root"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ProofError(f"malformed proof: {exc}") from None
    if kind == INCLUSION:
        leaf = document.get("leaf") or {}
        if leaf.get("record_key") != key:
            raise ProofError("the proven leaf is not the claimed record key")
        _check_leaf(leaf, tree_size, root)
        return f"record '{key}' is in the snapshot (leaf {leaf['index']} of {tree_size})"
    if kind != NON_INCLUSION:
        raise ProofError(f"unknown proof kind {kind!r}")
    left, right = document.get("left"), document.get("right")
    if tree_size == 0:
        if left or right or root != merkle.EMPTY_ROOT:
            raise ProofError("an empty snapshot has no leaves and the empty root")
        return f"record '{key}' is not in the (empty) snapshot"
    if not left and not right:
        raise ProofError("a non-inclusion proof needs at least one neighbouring leaf")
    if left:
        _check_leaf(left, tree_size, root)
        if not str(left["record_key"]) < key:
            raise ProofError("left neighbour does not sort before the key")
        if not right and int(left["index"]) != tree_size - 1:
            raise ProofError("without a right neighbour the left one must be the last leaf")
    if right:
        _check_leaf(right, tree_size, root)
        if not key < str(right["record_key"]):
            raise ProofError("right neighbour does not sort after the key")
        if not left and int(right["index"]) != 0:
            raise ProofError("without a left neighbour the right one must be the first leaf")
    if left and right and int(right["index"]) != int(left["index"]) + 1:
        raise ProofError("neighbours are not adjacent leaves")
    return f"record '{key}' is not in the snapshot of {tree_size} records"
