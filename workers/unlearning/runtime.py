"""Process-wide execution settings: torch threads, device, derived seeds.

Kept in one place because torch's thread pool and default device are global to
the process; adapters and methods ask this module instead of guessing.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import torch

_device_preference = "auto"


def configure(*, threads: int | None = None, device: str = "auto") -> torch.device:
    """Set torch's intra-op thread count and the device adapters train on.

    ``threads=None`` leaves torch's default. ``device`` is ``"auto"`` (CUDA when
    present, else CPU), ``"cpu"`` or any torch device string. Bit-for-bit
    reproducibility is promised on CPU with a fixed thread count only: CUDA
    kernels and a different thread split may change float summation order.
    """
    global _device_preference
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    torch.device(device if device != "auto" else "cpu")  # fail early on a bad string
    _device_preference = device
    return current_device()


def current_device() -> torch.device:
    if _device_preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(_device_preference)


def derive_seed(seed: int, *labels: object) -> int:
    """A 63-bit seed for a named sub-task (a shard, a stage, a bootstrap).

    Hashing instead of ``seed + i`` keeps sub-seeds independent of each other
    and of how many sub-tasks exist, so adding a shard never reseeds the others.
    """
    text = repr((int(seed), *labels)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block (typically ``nn.Module`` construction) under a fixed CPU RNG.

    torch initialises layers from the global generator; forking it keeps model
    construction reproducible without disturbing whoever else uses that RNG.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
