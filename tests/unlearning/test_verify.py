import json

import pytest
import torch
from sklearn.metrics import roc_auc_score

from workers.unlearning import Thresholds, get_adapter, split, unlearn, verify
from workers.unlearning.stats import (
    auc,
    auc_confidence_interval,
    logistic_attack_auc,
    min_group_size,
    null_auc_halfwidth,
)


@pytest.fixture(scope="module")
def memorised(noisy):
    """An MLP that memorised noisy labels, its retrain, and calibration/test held-out halves."""
    train, _, _ = split(noisy, [], 0.4, seed=0)
    retain, forget, heldout = split(noisy, train.keys[::6], 0.4, seed=0)
    calibration = heldout.take(torch.arange(len(heldout)) % 2 == 0)
    test = heldout.take(torch.arange(len(heldout)) % 2 == 1)
    original = get_adapter("mlp", hidden=[64, 64], epochs=40, batch_size=32).fit(train, seed=0)
    retrained, _ = unlearn("retrain", original, retain, forget, calibration)
    return original, retrained, retain, forget, calibration, test


def test_the_unmodified_original_fails(memorised):
    original, _, retain, forget, _, test = memorised
    report = verify(original, original, retain, forget, test)
    assert report.verdict == "fail"
    assert report.mia["testable"] and report.mia["auc"] > 0.58
    assert any("recognisable" in reason for reason in report.reasons)
    # Accuracy alone would have passed it: the utility check is green.
    checks = {check.name: check for check in report.checks}
    assert checks["heldout_accuracy_drop"].passed
    assert not checks["mia_auc_max"].passed
    json.dumps(report.to_dict())


def test_a_retrained_model_passes_with_a_reference(memorised):
    original, retrained, retain, forget, _, test = memorised
    report = verify(original, retrained, retain, forget, test, reference=retrained)
    assert report.verdict == "pass", report.reasons
    assert report.divergence == {"forget": pytest.approx(0.0, abs=1e-9), "heldout": pytest.approx(0.0, abs=1e-9)}
    assert report.mia["auc_ci_low"] <= report.mia["auc"] <= report.mia["auc_ci_high"]
    assert report.mia["original_auc"] > report.mia["auc"]


def test_divergence_threshold_gates_when_set(memorised):
    original, retrained, retain, forget, _, test = memorised
    report = verify(original, original, retain, forget, test, thresholds={"max_js_divergence": 1e-6},
                    reference=retrained)
    assert "js_divergence_forget" in {check.name for check in report.checks if not check.passed}


def test_a_tiny_forget_set_is_inconclusive(memorised):
    original, retrained, retain, forget, _, test = memorised
    few = forget.take([0, 1, 2])
    report = verify(original, retrained, retain, few, test)
    assert report.verdict == "inconclusive"
    assert not report.mia["testable"] and report.mia["min_forget_size"] > 3
    assert "too small" in report.reasons[0]
    # ...even for the original: never a pass without a membership test.
    assert verify(original, original, retain, few, test).verdict != "pass"


def test_accuracy_loss_fails_even_without_membership_power(memorised):
    original, _, retain, forget, _, test = memorised
    broken = get_adapter("mlp", hidden=[8], epochs=0).fit(retain, seed=0)  # untrained
    report = verify(original, broken, retain, forget.take([0, 1]), test)
    assert report.verdict == "fail" and "accuracy fell" in report.reasons[0]


def test_the_accuracy_limit_can_allow_for_the_paired_noise_of_the_heldout_rows(memorised):
    """By default the utility limit is the point estimate (0.03); with accuracy_drop_z it is
    0.03 plus that many standard errors of the paired accuracy difference."""
    original, retrained, retain, forget, _, test = memorised
    kept = test.take(torch.tensor([y in set(retain.labels.tolist()) for y in test.labels.tolist()]))
    before = (original.predict(kept.features) == kept.labels).double()
    after = (retrained.predict(kept.features) == kept.labels).double()
    se = float((before - after).std()) / len(kept) ** 0.5
    assert se > 0.01  # these models disagree on a real share of the rows

    plain = {c.name: c for c in verify(original, retrained, retain, forget, test).checks}
    assert plain["heldout_accuracy_drop"].limit == pytest.approx(0.03)
    assert plain["heldout_accuracy_drop"].value == pytest.approx(float(before.mean() - after.mean()))
    noisy = {c.name: c for c in verify(original, retrained, retain, forget, test,
                                       Thresholds(accuracy_drop_z=1.96)).checks}
    assert noisy["heldout_accuracy_drop"].limit == pytest.approx(0.03 + 1.96 * se)
    # A model that lost real utility still fails, noise allowance and all.
    broken = get_adapter("mlp", hidden=[8], epochs=0).fit(retain, seed=0)
    ruined = {c.name: c for c in verify(original, broken, retain, forget, test,
                                        Thresholds(accuracy_drop_z=1.96)).checks}["heldout_accuracy_drop"]
    assert not ruined.passed and ruined.value > ruined.limit


@pytest.mark.slow  # trains a model and retrains it
def test_removed_class_must_be_forgotten(blobs_split):
    train, _, _, heldout = blobs_split
    model = get_adapter("mlp", hidden=[32], epochs=20, batch_size=32).fit(train, seed=0)
    retain, forget, _ = split(train, [k for k, y in zip(train.keys, train.labels.tolist(), strict=True)
                                      if y == 1], 0.0, seed=0)
    report = verify(model, model, retain, forget, heldout)
    assert report.verdict == "fail"
    assert any(check.name == "removed_class_accuracy" and not check.passed for check in report.checks)
    retrained = model.fit_fresh(retain, 0)
    passed = {c.name: c.passed for c in verify(model, retrained, retain, forget, heldout).checks}
    assert passed["removed_class_accuracy"]


def test_thresholds_accept_a_mapping_and_explicit_minimum(memorised):
    original, retrained, retain, forget, _, test = memorised
    report = verify(original, retrained, retain, forget, test,
                    Thresholds(min_forget_size=len(forget) + 1))
    assert report.verdict == "inconclusive"
    assert report.thresholds["min_forget_size"] == len(forget) + 1


def test_auc_matches_sklearn_including_ties():
    gen = torch.Generator().manual_seed(0)
    pos = torch.randint(0, 5, (40,), generator=gen).double()
    neg = torch.randint(0, 4, (70,), generator=gen).double()
    expected = roc_auc_score([1] * 40 + [0] * 70, torch.cat([pos, neg]).numpy())
    assert auc(pos, neg) == pytest.approx(expected)
    point, low, high = auc_confidence_interval(pos, neg)
    assert low < point < high and point == pytest.approx(expected)


def test_null_interval_and_minimum_size_agree():
    m = min_group_size(0.08, 1000)
    assert null_auc_halfwidth(m, 1000) <= 0.08 < null_auc_halfwidth(m - 1, 1000)
    assert 40 < m < 70
    assert min_group_size(0.08, 100) > m  # fewer held-out rows need more forget rows


def test_logistic_attack_sees_separation_only_when_present():
    gen = torch.Generator().manual_seed(1)
    same = logistic_attack_auc(torch.randn(200, 4, generator=gen), torch.randn(400, 4, generator=gen))
    apart = logistic_attack_auc(torch.randn(200, 4, generator=gen) + 1.0, torch.randn(400, 4, generator=gen))
    assert abs(same - 0.5) < 0.08 and apart > 0.85


# Bands wide enough that the membership checks alone would pass anything.
_OPEN_BANDS = {"max_mia_auc": 1.0, "min_mia_auc": 0.0, "max_attack_auc": 1.0, "min_power": 0.0}


def test_a_result_whose_parameters_equal_the_base_never_passes(memorised):
    original, _, retain, forget, _, test = memorised
    report = verify(original, original.clone(), retain, forget, test, _OPEN_BANDS)
    assert report.verdict == "fail"
    assert {c.name: c.passed for c in report.checks}["parameters_changed"] is False
    assert any("nothing was unlearned" in reason for reason in report.reasons)


def test_a_membership_test_that_would_not_catch_the_original_is_inconclusive(memorised):
    original, retrained, retain, forget, _, test = memorised
    # With the upper band edge far above the original's AUC, the original itself would pass:
    # the test has no power, so the retrain cannot pass either.
    lenient = {"max_mia_auc": 0.99, "max_attack_auc": 1.0}
    report = verify(original, retrained, retain, forget, test, lenient)
    assert report.mia["original_auc"] < 0.9 and report.mia["power"] < 0.05
    assert report.verdict == "inconclusive" and "no power" in report.reasons[0]
    # At the default band the same forget set has power against the original, and the retrain passes.
    powered = verify(original, retrained, retain, forget, test)
    assert powered.mia["power"] >= 0.8 and powered.verdict == "pass", powered.reasons


def test_loss_histogram_bins_every_record_on_one_scale():
    from workers.unlearning.stats import loss_histogram

    forget = torch.tensor([0.0, 0.1, 0.2, 0.3])
    heldout = torch.cat([torch.linspace(0.0, 2.0, 99), torch.tensor([50.0])])
    histogram = loss_histogram({"forget": forget, "heldout": heldout, "empty": torch.zeros(0)}, bins=10)
    edges = histogram["edges"]
    assert len(edges) == 11 and edges[0] == 0.0 and edges == sorted(edges)
    # The outlier does not stretch the scale (the 99th percentile, just under 2, ends it): it and
    # the top 2.0 are counted in the last bin and as clipped.
    assert edges[-1] < 50.0 and histogram["clipped"] == {"forget": 0, "heldout": 2, "empty": 0}
    assert [sum(c) for c in histogram["counts"].values()] == [4, 100, 0]
    # The low forget losses land in the first bins, the spread held-out ones across all.
    assert histogram["counts"]["forget"][0] >= 1 and sum(histogram["counts"]["forget"][:3]) == 4
    assert histogram["counts"]["heldout"][-1] >= 2
    all_zero = loss_histogram({"a": torch.zeros(3)}, bins=4)
    assert all_zero["edges"][-1] == 1.0 and all_zero["counts"]["a"] == [3, 0, 0, 0]
    # The scale starts at the smallest loss, not at 0: no empty bins on the left.
    shifted = loss_histogram({"a": torch.tensor([1.0, 1.5, 2.0, 3.0])}, bins=4)
    assert shifted["edges"][0] == 1.0 and shifted["counts"]["a"][0] >= 1


def test_the_report_carries_binned_loss_distributions_and_no_single_loss(memorised):
    original, _, retain, forget, _, test = memorised
    report = verify(original, original, retain, forget, test)
    histogram = report.mia["loss_histogram"]
    assert set(histogram["counts"]) == {"forget", "heldout", "original_forget", "original_heldout"}
    assert sum(histogram["counts"]["forget"]) == len(forget)
    assert sum(histogram["counts"]["heldout"]) == report.mia["reference_size"]
    # The model remembers: the forget set's losses sit lower than the held-out ones.
    bins = len(histogram["edges"]) - 1
    mean_bin = {name: sum(i * c for i, c in enumerate(counts)) / max(sum(counts), 1)
                for name, counts in histogram["counts"].items()}
    assert mean_bin["forget"] < mean_bin["heldout"] < bins
    assert all(isinstance(c, int) for counts in histogram["counts"].values() for c in counts)


def test_with_a_retrain_reference_the_utility_check_compares_with_retrains_not_the_original(memorised):
    """A qualification study's retrains, scored on the same rows, replace the original as the
    utility check's yardstick: one-sided, floor = mean - 0.03 - z * sd * sqrt(1 + 1/models),
    and the check says what it compared. Forgetting is still the membership tests' call."""
    original, retrained, retain, forget, _, test = memorised
    value = retrained.accuracy(test)
    # A reference just above this retrain: no seed noise allowed (sd 0), so 0.03 is the whole slack.
    close = {"mean": value + 0.02, "std": 0.0, "models": 8, "rows": len(test), "source": "study X"}
    report = verify(original, retrained, retain, forget, test, retrain_accuracy=close)
    checks = {c.name: c for c in report.checks}
    assert "heldout_accuracy_drop" not in checks  # the original's own seed luck is not held against it
    check = checks["heldout_accuracy_vs_retrains"]
    assert check.passed and check.value == pytest.approx(value)
    assert check.limit == pytest.approx(value + 0.02 - 0.03)
    assert "8 exact retrains of study X" in check.basis and f"{len(test)} rows" in check.basis
    assert report.accuracy["heldout_accuracy_floor"] == pytest.approx(check.limit)
    # Retrains clearly better than this result, beyond 0.03 and their measured spread: fail, and say so.
    better = {"mean": value + 0.10, "std": 0.01, "models": 8, "rows": len(test)}
    failed = verify(original, retrained, retain, forget, test, retrain_accuracy=better)
    floor = value + 0.10 - 0.03 - 1.96 * 0.01 * (1 + 1 / 8) ** 0.5
    assert failed.verdict == "fail"
    assert {c.name: c for c in failed.checks}["heldout_accuracy_vs_retrains"].limit == pytest.approx(floor)
    assert any("below what an exact retrain reaches" in reason for reason in failed.reasons)
    # The seed spread the study measured widens the floor: the same gap within the noise passes.
    noisy = {"mean": value + 0.10, "std": 0.05, "models": 8, "rows": len(test)}
    assert {c.name: c for c in verify(original, retrained, retain, forget, test,
                                      retrain_accuracy=noisy).checks}["heldout_accuracy_vs_retrains"].passed
    # The allowance never passes a model that remembers: the original still fails on membership.
    remembered = verify(original, original, retain, forget, test, retrain_accuracy=noisy)
    assert remembered.verdict == "fail" and not {c.name: c for c in remembered.checks}["mia_auc_max"].passed


def test_every_check_says_what_it_compared(memorised):
    original, retrained, retain, forget, _, test = memorised
    report = verify(original, retrained, retain, forget, test)
    assert all(check.basis for check in report.checks), [c.name for c in report.checks if not c.basis]


def test_a_removed_class_keeps_the_check_against_the_original(blobs_split):
    """The study's retrains forgot random rows, not a class: no yardstick for a class removal."""
    train, _, _, heldout = blobs_split
    model = get_adapter("mlp", hidden=[32], epochs=20, batch_size=32).fit(train, seed=0)
    retain, forget, _ = split(train, [k for k, y in zip(train.keys, train.labels.tolist(), strict=True)
                                      if y == 1], 0.0, seed=0)
    retrained = model.fit_fresh(retain, 0)
    names = {c.name for c in verify(model, retrained, retain, forget, heldout,
                                    retrain_accuracy={"mean": 1.0, "std": 0.0, "models": 4, "rows": 1}).checks}
    assert "heldout_accuracy_drop" in names and "heldout_accuracy_vs_retrains" not in names
