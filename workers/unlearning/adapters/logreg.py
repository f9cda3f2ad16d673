"""L2-regularised multinomial logistic regression, ready for certified removal.

The training objective (sum scale, as in Guo et al., "Certified Data Removal
from Machine Learning Models", ICML 2020) is

    L_D(W) = sum_i CE(W; x_i, y_i) + (n * l2 / 2) * ||W||^2 + <b, W>

with the bias folded into W (shape (d + 1, K)) and regularised too, so L is
strongly convex and the Newton removal step is well defined. ``b`` is Gaussian
objective perturbation drawn from the seed; it is what turns a small gradient
residual after removal into an (epsilon, delta) guarantee (Guo et al., Theorem 3:
a residual of at most eps' is absorbed by b ~ N(0, sigma^2) with
sigma = c * eps' / epsilon, c = sqrt(2 ln(1.5 / delta))). Unless ``noise_std`` is
given, sigma is derived that way at the first fit from the certificate's epsilon
and delta and an allowance eps' = residual_allowance * n * l2 (the allowed
residual of the mean-scale objective, as a fraction of the regulariser, so the
noise's effect on accuracy does not depend on n); retrains of the same model keep
that sigma, so every version of a lineage draws its noise from one distribution.

Rows are scaled to unit L2 norm before the bias is appended (``unit_rows``), as
in the paper: the residual of a removal grows with ||x||^3, and raw pixel values
(digits: ||x|| ~ 50) made every certificate impossible. Fitting is full-batch
L-BFGS in float64: the Newton step is judged against this optimum, so the optimum
has to be found precisely.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import runtime
from ..data import LabelledData
from ..recipes import LogRegParams
from .base import AdapterError, TorchClassifier

# Bound on the third derivative of log-sum-exp (operator norm of the symmetric
# trilinear form): for a unit direction v it is the third central moment of the
# components of v under the softmax weights. The components span at most
# sqrt(2), and a variable of range r has |third central moment| <= r^3 / (6 sqrt 3)
# (attained by a two-point law), giving sqrt(6) / 9 ~ 0.272; a numerical search
# over K <= 10 reaches the same value. It makes each row's loss Hessian
# M3 * ||x||^3 Lipschitz in W.
SOFTMAX_THIRD_DERIVATIVE_BOUND = math.sqrt(6.0) / 9.0


def certificate_constant(delta: float) -> float:
    """c = sqrt(2 ln(1.5 / delta)) of Guo et al., Theorem 3."""
    return math.sqrt(2.0 * math.log(1.5 / delta))


class LogRegAdapter(TorchClassifier):
    name = "logreg"
    Params = LogRegParams
    dtype = torch.float64

    def __init__(self, **hyperparameters: Any) -> None:
        super().__init__(**hyperparameters)
        self.n_train = 0
        # Inverse Hessian (sum scale, (pK, pK)) and gradient at the current W over D.
        self.hessian_inverse: torch.Tensor | None = None
        self.gradient: torch.Tensor | None = None  # sum-scale, (p, K), at current W over D
        self.residual_bound = 0.0  # accumulated over Newton removals since the last fit
        self.noise_scale: float | None = None  # sigma of the objective perturbation, fixed per lineage

    def _make_module(self, feature_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(feature_shape), num_classes))

    def _inputs(self, features: torch.Tensor) -> torch.Tensor:
        flat = features.reshape(features.shape[0], -1)
        if not self.hyperparameters.unit_rows:
            return flat
        return flat / flat.norm(dim=1, keepdim=True).clamp_min(torch.finfo(flat.dtype).tiny)

    # -- parameters as one (d + 1, K) matrix -----------------------------------
    def weights(self) -> torch.Tensor:
        linear = self.module[1]
        return torch.cat([linear.weight.detach().T, linear.bias.detach()[None]]).cpu().clone()

    def set_weights(self, weights: torch.Tensor) -> None:
        linear = self.module[1]
        with torch.no_grad():
            linear.weight.copy_(weights[:-1].T)
            linear.bias.copy_(weights[-1])

    def design(self, features: torch.Tensor) -> torch.Tensor:
        """Rows as the linear layer sees them (unit norm if ``unit_rows``), bias column appended."""
        flat = self._inputs(features.to(torch.float64))
        return torch.cat([flat, torch.ones(flat.shape[0], 1, dtype=torch.float64)], dim=1)

    def resolve_noise_scale(self, n: int) -> float:
        """sigma = c * eps' / epsilon with eps' = residual_allowance * n * l2 (sum scale)."""
        hp = self.hyperparameters
        if hp.noise_std is not None:
            return float(hp.noise_std)
        return certificate_constant(hp.delta) * hp.residual_allowance * n * hp.l2 / hp.epsilon

    def objective_noise(self) -> torch.Tensor:
        p = math.prod(self.feature_shape) + 1
        draw = torch.randn(p, self.num_classes, generator=runtime.generator(
            runtime.derive_seed(self.seed, self.name, "objective-noise")), dtype=torch.float64)
        return draw * (self.noise_scale or 0.0)

    @property
    def certified(self) -> bool:
        """Whether a removal within budget is an (epsilon, delta) certified removal."""
        return bool(self.noise_scale) and self.hyperparameters.residual_budget is None

    def removal_budget(self) -> float:
        """Largest gradient residual (sum scale) the certificate tolerates.

        Guo et al., Theorem 3: with b ~ N(0, sigma^2), a residual below
        sigma * epsilon / c, c = sqrt(2 log(1.5 / delta)), gives (epsilon, delta)
        certified removal. Without noise no certificate exists, so the budget is 0
        unless the policy sets ``residual_budget`` explicitly.
        """
        hp = self.hyperparameters
        if hp.residual_budget is not None:
            return float(hp.residual_budget)
        sigma = self.noise_scale if self.noise_scale is not None else (hp.noise_std or 0.0)
        return sigma * hp.epsilon / certificate_constant(hp.delta)

    def fresh(self) -> LogRegAdapter:
        # A retrain keeps the lineage's sigma: the certificate compares the unlearned model
        # with a retrain under the same noise distribution.
        twin = super().fresh()
        twin.noise_scale = self.noise_scale
        return twin

    # -- training ----------------------------------------------------------
    def fit(self, data: LabelledData, seed: int) -> LogRegAdapter:
        self.build(data.feature_shape, self.resolve_num_classes(data), seed)
        self.set_weights(torch.zeros(math.prod(self.feature_shape) + 1, self.num_classes,
                                     dtype=torch.float64))
        self.residual_bound = 0.0
        if self.noise_scale is None:
            self.noise_scale = self.resolve_noise_scale(len(data))
        return self.partial_fit(data, seed, epochs=1)

    def partial_fit(self, data: LabelledData, seed: int, epochs: int) -> LogRegAdapter:
        """Minimise the objective on ``data`` by L-BFGS from the current weights."""
        if self.module is None:
            raise AdapterError("logreg: build() or fit() before partial_fit()")
        hp = self.hyperparameters
        x = self.design(data.features)
        y = data.labels
        n = len(data)
        if self.noise_scale is None:
            self.noise_scale = self.resolve_noise_scale(n)
        noise = self.objective_noise()
        weights = self.weights().requires_grad_(True)
        optimizer = torch.optim.LBFGS(
            [weights], lr=1.0, max_iter=hp.max_iter, tolerance_grad=hp.tol,
            tolerance_change=1e-14, history_size=20, line_search_fn="strong_wolfe",
        )

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            # mean scale for well-scaled line searches; same minimiser as the sum form
            loss = (F.cross_entropy(x @ weights, y, reduction="sum") + (noise * weights).sum()) / n
            loss = loss + 0.5 * hp.l2 * weights.pow(2).sum()
            loss.backward()
            return loss

        if n:
            optimizer.step(closure)
        self.set_weights(weights.detach())
        self.n_train = n
        self.residual_bound = 0.0
        if hp.removal_cache and n:
            self.refresh_removal_cache(data)
        else:
            self.hessian_inverse = self.gradient = None
        return self

    def refresh_removal_cache(self, data: LabelledData) -> None:
        """Inverse Hessian and gradient of the training objective at the current weights.

        O(n (pK)^2 + (pK)^3) once per fit, so that a later Newton removal of m
        rows costs a few O((pK)^2) products plus O((m + n) pK) passes: the
        inverse of the full-data Hessian preconditions the retain-data solve.
        """
        x = self.design(data.features)
        weights = self.weights()
        n = len(data)
        self.n_train = n
        self.gradient = (
            sum_loss_gradient(x, data.labels, weights) + self.objective_noise()
            + n * self.hyperparameters.l2 * weights
        )
        hessian = sum_loss_hessian(x, weights)
        hessian.diagonal().add_(n * self.hyperparameters.l2)
        self.hessian_inverse = torch.cholesky_inverse(torch.linalg.cholesky(hessian))

    def clone(self) -> LogRegAdapter:
        # The removal cache is read-only once built: share it rather than copy megabytes.
        cache = self.hessian_inverse, self.gradient
        self.hessian_inverse = self.gradient = None
        try:
            twin = super().clone()
        finally:
            self.hessian_inverse, self.gradient = cache
        twin.hessian_inverse, twin.gradient = cache
        return twin

    # -- state -------------------------------------------------------------
    def _header(self) -> dict[str, Any]:
        return {"n_train": self.n_train, "residual_bound": self.residual_bound, "noise_scale": self.noise_scale}

    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = super()._tensors()
        if self.hessian_inverse is not None:
            tensors["cache.hessian_inverse"] = self.hessian_inverse
            tensors["cache.gradient"] = self.gradient
        return tensors

    def _restore(self, header: dict[str, Any], tensors: dict, blobs: dict) -> None:
        super()._restore(header, tensors, blobs)
        self.n_train = int(header["n_train"])
        self.residual_bound = float(header["residual_bound"])
        if "noise_scale" in header:
            self.noise_scale = header["noise_scale"]
        else:  # saved before sigma was derived and rows scaled: raw rows, the recipe's sigma
            self.noise_scale = self.hyperparameters.noise_std
            self.hyperparameters = dataclasses.replace(self.hyperparameters, unit_rows=False)
        self.hessian_inverse = tensors.get("cache.hessian_inverse")
        self.gradient = tensors.get("cache.gradient")


def sum_loss_gradient(x: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_i x_i (softmax(x_i W) - onehot(y_i))^T, shape (p, K)."""
    residual = torch.softmax(x @ weights, dim=1)
    residual[torch.arange(len(labels)), labels] -= 1.0
    return x.T @ residual


def sum_loss_hessian_product(x: torch.Tensor, proba: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """(sum_i Hessian_i) applied to ``vector`` (p, K), given proba = softmax(x W), unformed."""
    shift = x @ vector
    return x.T @ (proba * (shift - (proba * shift).sum(dim=1, keepdim=True)))


def sum_loss_hessian(x: torch.Tensor, weights: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """sum_i (diag(p_i) - p_i p_i^T) kron x_i x_i^T, flattened row-major as (p*K, p*K)."""
    p, k = weights.shape
    hessian = torch.zeros(p, k, p, k, dtype=torch.float64)
    for rows in x.split(chunk):
        proba = torch.softmax(rows @ weights, dim=1)
        outer = (rows[:, :, None] * proba[:, None, :]).reshape(len(rows), p * k)
        hessian -= (outer.T @ outer).view(p, k, p, k)
        diagonal = torch.einsum("nk,na,nb->kab", proba, rows, rows)
        for cls in range(k):
            hessian[:, cls, :, cls] += diagonal[cls]
    return hessian.reshape(p * k, p * k)
