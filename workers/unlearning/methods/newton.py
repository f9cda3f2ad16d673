"""Certified removal for logistic regression: one Newton step on the retain objective.

Following Guo et al. (ICML 2020), the removal update is

    W- = W - H_{D'}(W)^{-1} grad L_{D'}(W)

where D' is the retained data. The model caches the gradient of L_D at W and
the inverse of its Hessian H_D. The gradient for D' is the cached one minus
the forgotten rows' terms; H_{D'} = H_D - Delta with Delta the forgotten rows'
Hessians plus m * l2 * I, so the step solves H_{D'} d = -g by the fixed point
d <- H_D^{-1} (Delta d - g), which contracts at rate ~ m / n: a few O((pK)^2)
products instead of an O((pK)^3) factorisation. The linear-solve residual
Delta (d_k - d_{k+1}) is computed exactly and added to the bound.

Residual bound: the step zeroes the linear part of the gradient, so what is
left is the Taylor remainder. For softmax cross-entropy each row contributes
at most (M3 / 2) * ||x_i|| * ||d^T x_i||^2 with d = W- - W and M3 the
log-sum-exp third-derivative bound, hence

    ||grad L_{D'}(W-)|| <= (M3 / 2) * sum_i ||x_i|| ||d^T x_i||^2.

Bounds add up over successive removals; past the model's budget the step is
refused with :class:`CertifiedBudgetExceeded` so the caller retrains instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..adapters.logreg import (
    SOFTMAX_THIRD_DERIVATIVE_BOUND,
    LogRegAdapter,
    sum_loss_gradient,
    sum_loss_hessian,
    sum_loss_hessian_product,
)
from ..data import LabelledData
from .base import CertifiedBudgetExceeded, UnlearningError, UnsupportedModel


@dataclass(frozen=True)
class NewtonConfig:
    # What is held against the budget. "bound": the accumulated worst-case bound
    # above (Guo et al.'s rule; needs no trust in float arithmetic on the full
    # data). "measured": the exact gradient norm at the new weights, computed in
    # the same O(n pK) pass; valid because each step starts from the exact
    # gradient, so residuals do not carry over. It is far tighter (x100-x1000
    # here, see docs/unlearning.md) and lets a small noise_std certify more.
    criterion: str = "bound"
    # Recompute Hessian and gradient at the new weights so the next removal is
    # cheap again. Off, the next removal pays O(n (pK)^2) itself; the cache is
    # never left pointing at the pre-removal weights, which encode the forgotten rows.
    refresh_cache: bool = True


def newton(
    model: Any, retain: LabelledData, forget: LabelledData, heldout: LabelledData,
    config: NewtonConfig,
) -> tuple[LogRegAdapter, dict[str, Any]]:
    if not isinstance(model, LogRegAdapter):
        raise UnsupportedModel(f"newton applies to logreg models, not {getattr(model, 'name', model)!r}")
    model._require_fitted()
    hp = model.hyperparameters
    if model.n_train != len(retain) + len(forget):
        raise UnlearningError(
            f"model was trained on {model.n_train} rows but retain + forget holds "
            f"{len(retain) + len(forget)}: pass the data the model was trained on"
        )
    started = time.perf_counter()
    weights = model.weights()
    removed = len(forget)
    n_after = len(retain)
    x_forget = model.design(forget.features)
    x_retain = model.design(retain.features)
    gradient = (
        model.gradient - sum_loss_gradient(x_forget, forget.labels, weights)
        - removed * hp.l2 * weights
    ) if model.gradient is not None else None
    solve_residual = 0.0
    step = None
    if model.hessian_inverse is not None:
        proba_forget = torch.softmax(x_forget @ weights, dim=1)
        step, solve_residual = _preconditioned_solve(
            model.hessian_inverse, gradient,
            lambda v: sum_loss_hessian_product(x_forget, proba_forget, v) + removed * hp.l2 * v)
        cache = "preconditioned"
    if step is None:  # no cache, or a removal too large for the fixed point to contract
        gradient = (
            sum_loss_gradient(x_retain, retain.labels, weights) + model.objective_noise()
            + n_after * hp.l2 * weights
        )
        hessian = sum_loss_hessian(x_retain, weights)
        hessian.diagonal().add_(n_after * hp.l2)
        factor = torch.linalg.cholesky(hessian)
        step = -torch.cholesky_solve(gradient.reshape(-1, 1), factor).reshape(weights.shape)
        cache = "recomputed"
    new_weights = weights + step
    row_norms = x_retain.norm(dim=1)
    logit_shift = (x_retain @ step).pow(2).sum(dim=1)
    step_bound = float(0.5 * SOFTMAX_THIRD_DERIVATIVE_BOUND * (row_norms * logit_shift).sum())
    step_bound += solve_residual
    residual = float((
        sum_loss_gradient(x_retain, retain.labels, new_weights) + model.objective_noise()
        + n_after * hp.l2 * new_weights
    ).norm())
    if config.criterion == "bound":
        tracked = model.residual_bound + step_bound
    elif config.criterion == "measured":
        tracked = residual
    else:
        raise UnlearningError(f"newton criterion must be 'bound' or 'measured', not {config.criterion!r}")
    budget = model.removal_budget()
    step_seconds = time.perf_counter() - started
    if tracked > budget:
        raise CertifiedBudgetExceeded(tracked, budget)

    unlearned = model.clone()
    unlearned.set_weights(new_weights)
    unlearned.n_train = n_after
    unlearned.residual_bound = tracked
    unlearned.hessian_inverse = unlearned.gradient = None
    details: dict[str, Any] = {
        "criterion": config.criterion,
        "residual_bound": model.residual_bound + step_bound,
        "step_residual_bound": step_bound,
        "gradient_residual_norm": residual,
        "budget": budget,
        "step_norm": float(step.norm()),
        "step_seconds": step_seconds,
        "hessian": cache,
        "solve_residual": solve_residual,
        "certified": hp.noise_std > 0 and hp.residual_budget is None,
        "epsilon": hp.epsilon,
        "delta": hp.delta,
    }
    if config.refresh_cache and hp.removal_cache:
        refreshed = time.perf_counter()
        unlearned.refresh_removal_cache(retain)
        details["cache_seconds"] = time.perf_counter() - refreshed
    return unlearned, details


def _preconditioned_solve(
    hessian_inverse: torch.Tensor, gradient: torch.Tensor, delta: Callable[[torch.Tensor], torch.Tensor],
    tolerance: float = 1e-10, max_iterations: int = 100,
) -> tuple[torch.Tensor | None, float]:
    """Solve (H - Delta) d = -g given H^{-1}; None when the iteration does not contract."""
    shape = gradient.shape

    def apply_inverse(v: torch.Tensor) -> torch.Tensor:
        return (hessian_inverse @ v.reshape(-1)).reshape(shape)

    step = apply_inverse(-gradient)
    previous_change = float("inf")
    for _ in range(max_iterations):
        following = apply_inverse(delta(step) - gradient)
        difference = step - following
        change = float(difference.norm())
        step = following
        if change <= tolerance * max(float(step.norm()), 1e-30):
            # (H - Delta) d_{k+1} + g = Delta (d_k - d_{k+1}): the exact solve residual.
            return step, float(delta(difference).norm())
        if change >= previous_change:
            return None, 0.0
        previous_change = change
    return None, 0.0
