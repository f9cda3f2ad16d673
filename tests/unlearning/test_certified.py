"""Certified removal (Guo et al. 2020) as the default for logreg: objective perturbation
derived from (epsilon, delta), the exact gradient residual charged against a budget that
accumulates over a model's lineage, refusal only once it is spent, and a retrain resets it."""

import math

import pytest
import torch
import torch.nn.functional as F

from workers.unlearning import adapter_from_state, get_adapter, split, unlearn
from workers.unlearning.methods import CertifiedBudgetExceeded


def brute_force_residual(model, retain) -> float:
    """||grad L_{D'}(W)|| written out from the objective's definition, by autograd:
    sum CE over unit-norm rows with a bias column + (n l2 / 2)||W||^2 + <b, W>."""
    flat = retain.features.reshape(len(retain), -1).to(torch.float64)
    rows = torch.cat([flat / flat.norm(dim=1, keepdim=True), torch.ones(len(retain), 1, dtype=torch.float64)], 1)
    weights = model.weights().clone().requires_grad_(True)
    l2 = model.hyperparameters.l2
    objective = (F.cross_entropy(rows @ weights, retain.labels, reduction="sum")
                 + 0.5 * len(retain) * l2 * weights.pow(2).sum() + (model.objective_noise() * weights).sum())
    objective.backward()
    return float(weights.grad.norm())


@pytest.fixture(scope="module")
def small_problem(blobs):
    """120 rows of the blobs: the retain objective is cheap to write out by hand."""
    data = blobs.take(list(range(160)))
    train, _, heldout = split(data, [], 0.25, seed=0)
    return train, heldout, get_adapter("logreg", residual_allowance=1.0).fit(train, seed=3)


def test_noise_scale_and_budget_follow_epsilon_and_delta(small_problem):
    train, _, model = small_problem
    hp = model.hyperparameters
    c = math.sqrt(2 * math.log(1.5 / hp.delta))
    assert hp.noise_std is None and model.certified
    assert model.noise_scale == pytest.approx(c * hp.residual_allowance * len(train) * hp.l2 / hp.epsilon)
    assert model.removal_budget() == pytest.approx(model.noise_scale * hp.epsilon / c)
    # A stricter epsilon means more noise for the same allowance (Theorem 3: sigma = c eps' / epsilon).
    stricter = get_adapter("logreg", residual_allowance=1.0, epsilon=0.5).fit(train, seed=3)
    assert stricter.noise_scale == pytest.approx(2 * model.noise_scale)
    # The lineage keeps its sigma through state bytes and retrains.
    restored = adapter_from_state(model.state_bytes())
    assert restored.noise_scale == model.noise_scale
    assert restored.fit_fresh(train.take(list(range(100))), 3).noise_scale == model.noise_scale


def test_reported_residual_matches_a_brute_force_gradient(small_problem):
    train, heldout, model = small_problem
    retain, forget, _ = split(train, list(train.keys[:2]), 0.0, seed=0)
    unlearned, report = unlearn("newton", model, retain, forget, heldout)
    first = brute_force_residual(unlearned, retain)
    assert report.details["gradient_residual_norm"] == pytest.approx(first, rel=1e-6, abs=1e-12)
    assert report.details["bound"] == pytest.approx(first, rel=1e-6)
    assert report.details["guarantee"] == "certified"
    # The Newton step really moved the weights: the pre-removal model's residual on the
    # retain set is much larger than what is left after the step.
    assert brute_force_residual(model, retain) > 10 * first
    retain2, forget2, _ = split(retain, list(retain.keys[:1]), 0.0, seed=0)
    again, report2 = unlearn("newton", unlearned, retain2, forget2, heldout)
    second = brute_force_residual(again, retain2)
    assert report2.details["gradient_residual_norm"] == pytest.approx(second, rel=1e-6, abs=1e-12)
    assert report2.details["bound"] == pytest.approx(first + second, rel=1e-6)
    assert again.residual_bound == pytest.approx(first + second, rel=1e-6)


def test_budget_spent_refuses_then_retrain_resets_it(blobs, sha):
    train, _, heldout = split(blobs, [], 0.25, seed=0)
    # A small allowance so the budget runs out after a few single-record removals.
    model = get_adapter("logreg", residual_allowance=0.05).fit(train, seed=1)
    current, data, accepted = model, train, 0
    for step in range(60):
        retain, forget, _ = split(data, [data.keys[step * 7 % len(data)]], 0.0, seed=0)
        try:
            current, report = unlearn("newton", current, retain, forget, heldout)
        except CertifiedBudgetExceeded as refused:
            assert refused.budget == pytest.approx(model.removal_budget())
            assert refused.bound > refused.budget >= current.residual_bound
            break
        assert report.details["bound"] <= report.details["budget"]
        accepted, data = accepted + 1, retain
    else:
        pytest.fail("the budget never ran out")
    assert accepted >= 1
    before = sha(current.state_bytes())
    with pytest.raises(CertifiedBudgetExceeded):
        unlearn("newton", current, retain, forget, heldout)
    assert sha(current.state_bytes()) == before  # a refusal changes nothing

    # The exact fallback forgets the refused record and resets the lineage's budget.
    retrained, _ = unlearn("retrain", current, retain, forget, heldout)
    assert retrained.residual_bound == 0.0 and retrained.noise_scale == model.noise_scale
    retain2, forget2, _ = split(retain, [retain.keys[1]], 0.0, seed=0)
    after, report = unlearn("newton", retrained, retain2, forget2, heldout)
    assert report.details["previous_bound"] == 0.0
    assert report.details["bound"] == pytest.approx(report.details["gradient_residual_norm"])
    assert after.residual_bound <= after.removal_budget()


def test_a_state_saved_before_derived_noise_loads_as_it_was_trained(small_problem):
    """States written before this change carry no noise_scale and were fitted on raw rows."""
    from workers.unlearning.serialization import pack, unpack

    train, _, _ = small_problem
    old = get_adapter("logreg", noise_std=1.0, unit_rows=False).fit(train, seed=3)
    state = unpack(old.state_bytes())
    header = dict(state.header)
    header["extra"] = {k: v for k, v in header["extra"].items() if k != "noise_scale"}
    header["hyperparameters"] = {k: v for k, v in header["hyperparameters"].items()
                                 if k not in ("unit_rows", "residual_allowance")}
    restored = adapter_from_state(pack(header, state.tensors, state.blobs))
    assert restored.noise_scale == 1.0 and restored.hyperparameters.unit_rows is False
    assert torch.equal(restored.predict(train.features), old.predict(train.features))
