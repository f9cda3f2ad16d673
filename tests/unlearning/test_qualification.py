"""The qualification study's statistics, on tiny models: an exact retrain qualifies, the
untouched original does not (it is flagged per example and scores far below the ceiling)."""

from __future__ import annotations

import pytest
import torch

from workers.unlearning import get_adapter, split
from workers.unlearning.qualification import (
    epsilon_score,
    example_epsilon,
    per_example_flags,
    run_study,
)

RECIPE = {"hidden": [64, 64], "epochs": 40, "batch_size": 32}


def _fit(data, seed):
    return get_adapter("mlp", **RECIPE).fit(data, seed=seed)


@pytest.fixture(scope="module")
def study_data(noisy):
    train, _, heldout = split(noisy, [], 0.4, seed=0)
    return train, list(train.keys[::8]), heldout


def test_epsilon_is_zero_for_one_sample_and_large_for_a_clean_split():
    same = [0.1, 0.4, 0.2, 0.3]
    assert example_epsilon(same, same) == pytest.approx(0.0, abs=0.05) or epsilon_score(example_epsilon(same, same)) == 1
    apart = example_epsilon([5.0, 6.0, 7.0, 8.0], [0.0, 1.0, 2.0, 3.0])
    assert apart > 1.5 and epsilon_score(apart) < 0.25
    assert epsilon_score(0.0) == 1.0 and epsilon_score(0.5) == 1.0 and epsilon_score(0.6) == 0.5


def test_per_example_flags_catch_both_remembering_and_over_forgetting():
    gen = torch.Generator().manual_seed(0)
    reference = torch.randn(20, 50, generator=gen)
    same = torch.randn(20, 50, generator=gen)
    assert per_example_flags(reference, same, 0.05).double().mean() < 0.15
    assert per_example_flags(reference, same + 4, 0.05).double().mean() > 0.9
    assert per_example_flags(reference, same - 4, 0.05).double().mean() > 0.9


@pytest.mark.slow
def test_retrain_qualifies_and_the_untouched_original_does_not(study_data):
    train, forget_keys, heldout = study_data

    def retrain(original, retain, forget, seed):
        return _fit(retain, seed)

    def untouched(original, retain, forget, seed):
        return original

    exact = run_study(_fit, retrain, train, forget_keys, heldout, runs=4, seed=1)
    assert exact.qualified, exact.reasons
    noop = run_study(_fit, untouched, train, forget_keys, heldout, runs=4, seed=1)
    assert not noop.qualified
    assert noop.flag_rate_unlearned > noop.flag_rate_retrain + 0.05
    assert noop.forget_score < 0.8 * noop.forget_score_ceiling
    assert noop.forget_score == pytest.approx(noop.forget_score_original)
