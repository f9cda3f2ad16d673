"""Where a record key lands, from keyed hashes alone: held out of training or not, and which
SISA shard and slice. No PyTorch here, so the API can answer "which shard holds this record"
and "was it ever trained on" without loading the engine's models.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

SISA = "sisa"


def is_held_out(key: str, heldout_fraction: float, seed: int) -> bool:
    """Whether ``data.split`` holds this key out (never trains on it), from the key alone."""
    return _unit_hash(seed, str(key)) < heldout_fraction


def _unit_hash(seed: int, key: str) -> float:
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64


@dataclass(frozen=True)
class SisaParams:
    base: str = "mlp"
    base_params: dict[str, Any] = field(default_factory=dict)  # the base recipe, per shard
    shards: int = 10
    slices: int = 4
    num_classes: int | None = None

    def __post_init__(self) -> None:
        if self.base == SISA:
            raise ValueError("sisa cannot wrap sisa")
        if self.shards < 1 or self.slices < 1:
            raise ValueError("shards and slices must be >= 1")


def sisa_place(seed: int, key: str, shards: int, slices: int) -> tuple[int, int, bytes]:
    """(shard, slice, digest) of a record key: a keyed hash of (seed, key), so the recipe and
    the seed alone decide it; the digest orders keys within their cell."""
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=16).digest()
    return int.from_bytes(digest[:8], "little") % shards, int.from_bytes(digest[8:], "little") % slices, digest
