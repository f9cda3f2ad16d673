"""Small, fast fixtures for the unlearning engine tests (CPU, one thread)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits, make_classification

from workers.unlearning import configure, split
from workers.unlearning.data import from_arrays


@pytest.fixture(autouse=True, scope="session")
def _single_cpu_thread():
    configure(threads=1, device="cpu")
    yield


@pytest.fixture(scope="session")
def blobs():
    """4 well-separated classes, 600 rows: adapters learn it in a few epochs."""
    x, y = make_classification(600, 10, n_informative=6, n_redundant=2, n_classes=4,
                               class_sep=2.0, random_state=0)
    return from_arrays(x, y, [f"r{i:04d}" for i in range(len(y))])


@pytest.fixture(scope="session")
def noisy():
    """Label noise an MLP memorises: a strong membership signal on forgotten rows."""
    x, y = make_classification(1600, 20, n_informative=10, n_classes=4, flip_y=0.3,
                               class_sep=1.5, random_state=1)
    return from_arrays(x, y, [f"n{i:04d}" for i in range(len(y))])


@pytest.fixture(scope="session")
def digits():
    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:500]
    return from_arrays(images, bunch.target[:500], [f"d{i}" for i in range(500)])


@pytest.fixture(scope="session")
def blobs_split(blobs):
    train, _, heldout = split(blobs, [], 0.25, seed=0)
    forget_keys = list(train.keys[::20])
    retain, forget, heldout = split(blobs, forget_keys, 0.25, seed=0)
    return train, retain, forget, heldout


@pytest.fixture(scope="session")
def sha():
    import hashlib

    return lambda raw: hashlib.sha256(raw).hexdigest()


@pytest.fixture
def torch_rng_untouched():
    state = torch.random.get_rng_state()
    yield
    assert torch.equal(state, torch.random.get_rng_state()), "global torch RNG was consumed"
