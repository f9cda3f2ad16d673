"""What a verifier needs without the database: the leaf of an event, the bytes a tree head
signs, and checks of both. Certificates carry these and are checked offline with them."""

from __future__ import annotations

from typing import Any

from app.core import merkle
from app.core.hashing import canonical_json
from app.core.signing import verify_signature

TREE_HEAD_CONTEXT = "unlearnd-audit-tree-head-v1"


def event_leaf(event_hash: str) -> bytes:
    """The Merkle leaf of an event is its chain hash, so the tree commits to the whole chain."""
    return merkle.leaf_hash(bytes.fromhex(event_hash))


def tree_head_statement(*, tree_size: int, root_hash: str, signed_at: str, key_id: str) -> bytes:
    # The context string keeps a tree-head signature from being replayed as any other document.
    return canonical_json(
        {
            "context": TREE_HEAD_CONTEXT,
            "tree_size": tree_size,
            "root_hash": root_hash,
            "signed_at": signed_at,
            "key_id": key_id,
        }
    )


def verify_tree_head(head: dict[str, Any], public_key: bytes) -> None:
    """Raise ``SignatureInvalid`` unless ``head`` (the published form) was signed by the key."""
    statement = tree_head_statement(
        tree_size=head["tree_size"], root_hash=head["root_hash"], signed_at=head["signed_at"], key_id=head["key_id"]
    )
    verify_signature(public_key, statement, head["signature"])


def verify_event_inclusion(event_hash: str, leaf_index: int, tree_size: int, path: list[str], root_hash: str) -> None:
    """Raise ``merkle.ProofError`` unless the event sits at ``leaf_index`` under ``root_hash``."""
    merkle.verify_inclusion(
        event_leaf(event_hash), leaf_index, tree_size, [bytes.fromhex(p) for p in path], bytes.fromhex(root_hash)
    )
