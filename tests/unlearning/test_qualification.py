"""The qualification study's statistics, on tiny models: an exact retrain qualifies, the
untouched original does not (it is flagged per example and scores far below the ceiling)."""

from __future__ import annotations

import pytest
import torch

from workers.unlearning import get_adapter, split
from workers.unlearning.qualification import (
    audit_comparison,
    combine,
    epsilon_score,
    example_epsilon,
    per_example_flags,
    run_studies,
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


def test_the_sampling_audit_comparison_flags_a_result_off_the_retrain_per_record(study_data):
    train, forget_keys, _ = study_data
    forget, retain = train.select(forget_keys), train.without(forget_keys)
    quick = {"hidden": [16], "epochs": 5, "batch_size": 32}
    original = get_adapter("mlp", **quick).fit(train, seed=0)
    retrained = get_adapter("mlp", **quick).fit(retain, seed=1)
    levels = {"alpha": 0.05, "flag_margin": 0.05}
    same = audit_comparison(retrained, retrained, forget, 1.0, **levels)
    assert same["flagged"] == 0 and not same["degraded"] and same["records"] == len(forget)
    # At a spread far below the models' real differences, every record is flagged: degraded.
    off = audit_comparison(original, retrained, forget, 1e-9, **levels)
    assert off["flagged"] == len(forget) and off["degraded"] and off["p_value"] < 1e-6
    assert off["remembered"] + off["over_forgotten"] == off["flagged"]
    # The binomial test: one flagged record in many is chance at the allowed rate, not a revocation.
    assert audit_comparison(original, retrained, forget, 1e9, **levels)["degraded"] is False
    with pytest.raises(ValueError):
        audit_comparison(original, retrained, forget, 0.0, **levels)


def test_several_forget_sets_qualify_only_together(study_data):
    train, forget_keys, heldout = study_data
    quick = {"hidden": [16], "epochs": 3, "batch_size": 32}

    def fit(data, seed):
        return get_adapter("mlp", **quick).fit(data, seed=seed)

    def untouched(original, retain, forget, seed):
        return original

    def retrain(original, retain, forget, seed):
        return fit(retain, seed)

    bad = run_study(fit, untouched, train, forget_keys, heldout, runs=2, seed=1)
    good = run_study(fit, retrain, train, forget_keys[:5], heldout, runs=2, seed=2)
    both = combine([good, bad])
    assert both["forget_sets"] == 2 and both["forget_sizes"] == [5, len(forget_keys)]
    assert both["qualified"] is (good.qualified and bad.qualified)
    assert all(reason.startswith("forget set 2") for reason in both["reasons"][len(good.reasons):])
    assert both["models_trained"]["unlearned"] == 4 and both["forget_score"] == pytest.approx(
        (good.forget_score + bad.forget_score) / 2)
    with pytest.raises(ValueError):
        combine([])


def test_studies_of_several_methods_share_their_retrains_and_record_the_retrains_accuracy(study_data):
    """run_studies gives each method what run_study would with the same seeds, and every
    study records its 2N retrains' held-out accuracy (the utility check's yardstick);
    combine pools the spread within sets."""
    train, forget_keys, heldout = study_data
    quick = {"hidden": [16], "epochs": 3, "batch_size": 32}
    fitted = []

    def fit(data, seed):
        fitted.append(seed)
        return get_adapter("mlp", **quick).fit(data, seed=seed)

    def untouched(original, retain, forget, seed):
        return original

    def retrain(original, retain, forget, seed):
        return fit(retain, seed)

    both = run_studies(fit, {"noop": untouched, "retrain": retrain}, train, forget_keys, heldout, runs=2, seed=1)
    # 2 runs x (reference, ceiling, original) shared, plus the retrain "method"'s own 2 fits.
    assert len(fitted) == 2 * 3 + 2
    alone = run_study(fit, untouched, train, forget_keys, heldout, runs=2, seed=1)
    assert both["noop"].forget_score == pytest.approx(alone.forget_score)
    assert both["noop"].flag_rate_unlearned == pytest.approx(alone.flag_rate_unlearned)
    measured = alone.retrain_accuracy
    assert measured["models"] == 4 and measured["rows"] == len(heldout)
    assert 0.0 <= measured["mean"] <= 1.0 and measured["std"] >= 0.0
    assert both["retrain"].retrain_accuracy == measured
    other = run_study(fit, untouched, train, forget_keys[:5], heldout, runs=3, seed=7)
    pooled = combine([alone, other])["retrain_accuracy"]
    assert pooled["models"] == 4 + 6 and pooled["rows"] == len(heldout)
    assert pooled["mean"] == pytest.approx((measured["mean"] * 4 + other.retrain_accuracy["mean"] * 6) / 10)
    assert pooled["std"] == pytest.approx(((3 * measured["std"] ** 2 + 5 * other.retrain_accuracy["std"] ** 2) / 8) ** 0.5)
