"""The one RFC 6962 Merkle tree: dataset snapshots and the audit log both use it.

Leaves are hashed as ``sha256(0x00 || data)`` and interior nodes as
``sha256(0x01 || left || right)`` so a leaf can never be passed off as a node.
Verification follows RFC 9162 section 2.1.3.2 and 2.1.4.2, and needs nothing
but the hashes: certificates and proofs are checked offline with it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(ValueError):
    """A proof that does not lead to the claimed root."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _next_level(level: Sequence[bytes]) -> list[bytes]:
    # An unpaired last node moves up unchanged: this is exactly RFC 6962's split
    # at the largest power of two below n, computed bottom-up.
    paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
    if len(level) % 2:
        paired.append(level[-1])
    return paired


def root(leaves: Sequence[bytes]) -> bytes:
    """Merkle tree hash of already-hashed leaves."""
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    while len(level) > 1:
        level = _next_level(level)
    return level[0]


def levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """Every level of the tree, leaves first: build once, then take many audit paths."""
    built = [list(leaves)]
    while len(built[-1]) > 1:
        built.append(_next_level(built[-1]))
    return built


def path_from_levels(built: Sequence[Sequence[bytes]], index: int) -> list[bytes]:
    """Audit path for leaf ``index`` of a tree given by :func:`levels`, bottom-up."""
    if not 0 <= index < len(built[0]):
        raise IndexError(f"leaf {index} outside a tree of {len(built[0])}")
    proof: list[bytes] = []
    for level in built[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        index //= 2
    return proof


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Audit path for ``leaves[index]`` (hashed leaves), bottom-up."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} outside a tree of {len(leaves)}")
    return path_from_levels(levels(leaves), index)


def verify_inclusion(
    leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], expected_root: bytes
) -> None:
    """Raise ProofError unless ``leaf`` (a leaf hash) sits at ``index`` under ``expected_root``."""
    if not 0 <= index < tree_size:
        raise ProofError("leaf index outside the tree")
    fn, sn, r = index, tree_size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("proof longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0 or r != expected_root:
        raise ProofError("inclusion proof does not lead to the root")


def _largest_power_of_two_below(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def consistency_proof(leaves: Sequence[bytes], first_size: int) -> list[bytes]:
    """Proof that the tree of ``first_size`` leaves is a prefix of the tree of all ``leaves``."""
    if not 0 < first_size <= len(leaves):
        raise ValueError("first_size must be in 1..len(leaves)")

    def subproof(m: int, data: Sequence[bytes], complete: bool) -> list[bytes]:
        n = len(data)
        if m == n:
            return [] if complete else [root(data)]
        k = _largest_power_of_two_below(n)
        if m <= k:
            return subproof(m, data[:k], complete) + [root(data[k:])]
        return subproof(m - k, data[k:], False) + [root(data[:k])]

    return subproof(first_size, leaves, True)


def verify_consistency(
    first_size: int, second_size: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """Raise ProofError unless the first tree is a prefix of the second (append-only growth)."""
    if first_size < 1 or first_size > second_size:
        raise ProofError("sizes out of order")
    if first_size == second_size:
        if proof or first_root != second_root:
            raise ProofError("equal sizes need an empty proof and equal roots")
        return
    path = list(proof)
    if first_size & (first_size - 1) == 0:
        path.insert(0, first_root)
    if not path:
        raise ProofError("empty consistency proof")
    fn, sn = first_size - 1, second_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("proof longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0 or fr != first_root or sr != second_root:
        raise ProofError("consistency proof does not match the roots")


# A stored tree (Trillian's layout): node (level, index) is the hash of the perfect subtree
# over leaves [index * 2**level, (index + 1) * 2**level); it is written once, when its last
# leaf arrives, and never changes. Every hash a head or a proof needs is a fold of O(log n)
# such nodes, so the functions below plan which ranges a proof is made of, which stored
# nodes make up a range, and how appended leaves complete new nodes.

NodeKey = tuple[int, int]


def range_nodes(start: int, end: int) -> list[NodeKey]:
    """The stored nodes whose fold, right to left, is the hash of leaves [start, end).

    Holds for the ranges of RFC 6962's recursion (a split at the largest power of two below
    the length leaves an aligned perfect left part), which are all a head or proof uses."""
    if not 0 <= start < end:
        raise ValueError(f"empty or negative range [{start}, {end})")
    nodes: list[NodeKey] = []
    while start < end:
        length = end - start
        width = length if length & (length - 1) == 0 else _largest_power_of_two_below(length)
        if start % width:
            raise ValueError(f"[{start}, {end}) is not a range of an RFC 6962 tree")
        nodes.append((width.bit_length() - 1, start // width))
        start += width
    return nodes


def fold_nodes(hashes: Sequence[bytes]) -> bytes:
    """Hash of a range from the hashes of its :func:`range_nodes`, left to right."""
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def inclusion_ranges(index: int, tree_size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes make up :func:`inclusion_proof`, in the same order."""
    if not 0 <= index < tree_size:
        raise IndexError(f"leaf {index} outside a tree of {tree_size}")
    ranges: list[tuple[int, int]] = []
    low, high = 0, tree_size
    while high - low > 1:
        k = _largest_power_of_two_below(high - low)
        if index < low + k:
            ranges.append((low + k, high))
            high = low + k
        else:
            ranges.append((low, low + k))
            low += k
    return ranges[::-1]


def consistency_ranges(first_size: int, second_size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes make up :func:`consistency_proof`, in the same order."""
    if not 0 < first_size <= second_size:
        raise ValueError("first_size must be in 1..second_size")

    def subproof(m: int, low: int, high: int, complete: bool) -> list[tuple[int, int]]:
        if m == high - low:
            return [] if complete else [(low, high)]
        k = _largest_power_of_two_below(high - low)
        if m <= k:
            return subproof(m, low, low + k, complete) + [(low + k, high)]
        return subproof(m - k, low + k, high, False) + [(low, low + k)]

    return subproof(first_size, 0, second_size, True)


def append_nodes(size: int, frontier: dict[int, bytes], new_leaves: Sequence[bytes]) -> list[tuple[int, int, bytes]]:
    """Nodes completed by appending ``new_leaves`` to a tree of ``size`` leaves, as
    ``(level, index, hash)``. ``frontier`` maps each level of ``range_nodes(0, size)`` to
    its hash and is updated in place to the frontier of the grown tree."""
    completed: list[tuple[int, int, bytes]] = []
    for leaf in new_leaves:
        index, level, value = size, 0, leaf
        completed.append((0, index, value))
        while index & 1:
            value = node_hash(frontier.pop(level), value)
            index >>= 1
            level += 1
            completed.append((level, index, value))
        frontier[level] = value
        size += 1
    return completed
