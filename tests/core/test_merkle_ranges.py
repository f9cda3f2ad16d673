"""The stored-tree plans (ranges, nodes, appends) give exactly the hashes of the reference
functions, which build the whole tree from every leaf."""

from __future__ import annotations

import random

import pytest

from app.core import merkle


def _leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def _store(leaves: list[bytes], chunks: list[int]) -> dict[merkle.NodeKey, bytes]:
    """Append ``leaves`` in chunks of the given sizes, as the log does batch by batch."""
    stored: dict[merkle.NodeKey, bytes] = {}
    frontier: dict[int, bytes] = {}
    size = 0
    for chunk in chunks:
        for level, position, value in merkle.append_nodes(size, frontier, leaves[size : size + chunk]):
            assert (level, position) not in stored, "a node is written once"
            stored[(level, position)] = value
        size += chunk
    assert size == len(leaves)
    return stored


def _range(stored: dict[merkle.NodeKey, bytes], start: int, end: int) -> bytes:
    return merkle.fold_nodes([stored[key] for key in merkle.range_nodes(start, end)])


def _chunks(n: int, rng: random.Random) -> list[int]:
    chunks = []
    while sum(chunks) < n:
        chunks.append(min(rng.randint(1, 7), n - sum(chunks)))
    return chunks


@pytest.mark.parametrize("n", [*range(1, 40), 63, 64, 65, 127, 128, 129, 1000, 1023, 1024, 1025])
def test_stored_tree_gives_the_reference_roots_and_proofs(n):
    rng = random.Random(n)
    leaves = _leaves(n)
    stored = _store(leaves, _chunks(n, rng))
    assert len(stored) == 2 * n - bin(n).count("1"), "one node per perfect subtree"
    indices = range(n) if n <= 130 else rng.sample(range(n), 40)
    sizes = range(1, n + 1) if n <= 130 else [1, 2, n // 3, n // 2, n - 1, n, *rng.sample(range(1, n + 1), 20)]
    for size in sizes:
        assert _range(stored, 0, size) == merkle.root(leaves[:size])
        assert [_range(stored, *r) for r in merkle.consistency_ranges(size, n)] == merkle.consistency_proof(leaves, size)
    for index in indices:
        assert [_range(stored, *r) for r in merkle.inclusion_ranges(index, n)] == merkle.inclusion_proof(leaves, index)


def test_consistency_between_arbitrary_sizes():
    rng = random.Random(7)
    leaves = _leaves(300)
    stored = _store(leaves, _chunks(300, rng))
    for _ in range(300):
        second = rng.randint(1, 300)
        first = rng.randint(1, second)
        proof = [_range(stored, *r) for r in merkle.consistency_ranges(first, second)]
        assert proof == merkle.consistency_proof(leaves[:second], first)
        merkle.verify_consistency(first, second, _range(stored, 0, first), _range(stored, 0, second), proof)


def test_frontier_is_the_root_decomposition():
    leaves = _leaves(45)
    frontier: dict[int, bytes] = {}
    merkle.append_nodes(0, frontier, leaves)
    assert sorted(frontier) == sorted(level for level, _ in merkle.range_nodes(0, 45))
    assert merkle.fold_nodes([frontier[level] for level, _ in merkle.range_nodes(0, 45)]) == merkle.root(leaves)


@pytest.mark.parametrize(("start", "end"), [(1, 3), (3, 5), (2, 8), (0, 0), (5, 4)])
def test_ranges_that_are_no_subtree_are_refused(start, end):
    with pytest.raises(ValueError):
        merkle.range_nodes(start, end)


def test_proof_plans_refuse_out_of_range_arguments():
    with pytest.raises(IndexError):
        merkle.inclusion_ranges(5, 5)
    with pytest.raises(ValueError):
        merkle.consistency_ranges(6, 5)
