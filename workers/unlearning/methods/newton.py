"""Certified removal for logistic regression: one Newton step on the retain objective.

Following Guo et al. (ICML 2020), the removal update is

    W- = W - H_{D'}(W)^{-1} grad L_{D'}(W)

where D' is the retained data. Because the model caches the Hessian and the
gradient of L_D at W, both are obtained for D' by subtracting the forgotten
rows' contributions, so the step costs O(m (pK)^2 + (pK)^3) plus one O(n pK)
pass for the residual bound, instead of a full retrain.

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
from dataclasses import dataclass
from typing import Any

import torch

from ..adapters.logreg import (
    SOFTMAX_THIRD_DERIVATIVE_BOUND,
    LogRegAdapter,
    sum_loss_gradient,
    sum_loss_hessian,
)
from ..data import LabelledData
from .base import CertifiedBudgetExceeded, UnlearningError, UnsupportedModel


@dataclass(frozen=True)
class NewtonConfig:
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
    if model.hessian is not None:
        gradient = (
            model.gradient - sum_loss_gradient(x_forget, forget.labels, weights)
            - removed * hp.l2 * weights
        )
        hessian = model.hessian - sum_loss_hessian(x_forget, weights)
        hessian.diagonal().sub_(removed * hp.l2)
        cache = "downdated"
    else:
        gradient = (
            sum_loss_gradient(x_retain, retain.labels, weights) + model.objective_noise()
            + n_after * hp.l2 * weights
        )
        hessian = sum_loss_hessian(x_retain, weights)
        hessian.diagonal().add_(n_after * hp.l2)
        cache = "recomputed"
    factor = torch.linalg.cholesky(hessian)
    step = -torch.cholesky_solve(gradient.reshape(-1, 1), factor).reshape(weights.shape)
    row_norms = x_retain.norm(dim=1)
    logit_shift = (x_retain @ step).pow(2).sum(dim=1)
    step_bound = float(0.5 * SOFTMAX_THIRD_DERIVATIVE_BOUND * (row_norms * logit_shift).sum())
    accumulated = model.residual_bound + step_bound
    budget = model.removal_budget()
    step_seconds = time.perf_counter() - started
    if accumulated > budget:
        raise CertifiedBudgetExceeded(accumulated, budget)

    unlearned = model.clone()
    unlearned.set_weights(weights + step)
    unlearned.n_train = n_after
    unlearned.residual_bound = accumulated
    unlearned.hessian = unlearned.gradient = None
    details: dict[str, Any] = {
        "residual_bound": accumulated,
        "step_residual_bound": step_bound,
        "budget": budget,
        "step_norm": float(step.norm()),
        "step_seconds": step_seconds,
        "hessian": cache,
        "certified": hp.noise_std > 0 and hp.residual_budget is None,
        "epsilon": hp.epsilon,
        "delta": hp.delta,
    }
    if config.refresh_cache and hp.removal_cache:
        refreshed = time.perf_counter()
        unlearned.refresh_removal_cache(retain)
        details["cache_seconds"] = time.perf_counter() - refreshed
        # The refreshed gradient is the exact residual the bound is about.
        details["gradient_residual_norm"] = float(unlearned.gradient.norm())
    return unlearned, details
