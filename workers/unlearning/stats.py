"""Small statistics for verification: AUC with confidence intervals, attacks, divergences."""

from __future__ import annotations

import math

import torch

from . import runtime
from .data import LabelledData

Z_95 = 1.959963984540054


def matched_reference(forget: LabelledData, heldout: LabelledData) -> LabelledData:
    """Held-out rows of the classes present in the forget set.

    Loss depends strongly on the class; comparing a one-class forget set with
    all held-out rows would measure class difficulty, not membership.
    """
    classes = set(forget.labels.tolist())
    return heldout.take(torch.tensor([int(y) in classes for y in heldout.labels.tolist()],
                                     dtype=torch.bool))


def _midranks(values: torch.Tensor) -> torch.Tensor:
    order = torch.argsort(values, stable=True)
    ranks = torch.empty(len(values), dtype=torch.float64)
    sorted_values = values[order]
    _, inverse, counts = torch.unique_consecutive(sorted_values, return_inverse=True,
                                                  return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    starts = ends - counts.double() + 1.0
    ranks[order] = ((starts + ends) / 2.0)[inverse]
    return ranks


def auc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """P(score of a positive > score of a negative), ties counted half (Mann-Whitney)."""
    m, n = len(positive), len(negative)
    if m == 0 or n == 0:
        return float("nan")
    ranks = _midranks(torch.cat([positive, negative]).double())
    return float((ranks[:m].sum() - m * (m + 1) / 2.0) / (m * n))


def auc_confidence_interval(positive: torch.Tensor, negative: torch.Tensor,
                            z: float = Z_95) -> tuple[float, float, float]:
    """AUC with DeLong's variance: (auc, low, high), clipped to [0, 1]."""
    m, n = len(positive), len(negative)
    point = auc(positive, negative)
    if m < 2 or n < 2:
        return point, 0.0, 1.0
    pos, neg = positive.double(), negative.double()
    all_ranks = _midranks(torch.cat([pos, neg]))
    # Structural components: each positive's share of negatives below it, and vice versa.
    v10 = (all_ranks[:m] - _midranks(pos)) / n
    v01 = 1.0 - (all_ranks[m:] - _midranks(neg)) / m
    variance = float(v10.var() / m + v01.var() / n)
    half = z * math.sqrt(max(variance, 0.0))
    return point, max(0.0, point - half), min(1.0, point + half)


def loss_auc(member_losses: torch.Tensor, nonmember_losses: torch.Tensor) -> float:
    """Loss-threshold attack AUC: P(a member has lower loss than a non-member)."""
    return auc(-member_losses, -nonmember_losses)


def null_auc_halfwidth(m: int, n: int, z: float = Z_95) -> float:
    """Half-width of the AUC's interval when nothing separates the groups.

    Under no separation the Mann-Whitney AUC has variance (m + n + 1) / (12 m n),
    which is what decides how small a forget set can still be tested.
    """
    if m == 0 or n == 0:
        return math.inf
    return z * math.sqrt((m + n + 1) / (12.0 * m * n))


def min_group_size(margin: float, n: int, z: float = Z_95) -> int:
    """Smallest m with null_auc_halfwidth(m, n) <= margin, or a huge number if none."""
    for m in range(2, 1_000_000):
        if null_auc_halfwidth(m, n, z) <= margin:
            return m
    return 1_000_000


def normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def auc_power(alternative: float, limit: float, m: int, n: int) -> float:
    """Probability that an estimated AUC lands above ``limit`` when the true AUC is
    ``alternative`` (m positives, n negatives; the null variance stands in for the
    alternative's, which is close to it for the modest AUCs that matter here)."""
    if m == 0 or n == 0 or alternative != alternative:
        return 0.0
    se = math.sqrt((m + n + 1) / (12.0 * m * n))
    return normal_cdf((alternative - limit) / se)


def mean_gap(first: torch.Tensor, second: torch.Tensor) -> tuple[float, float]:
    """(mean(first) - mean(second), its standard error), Welch style."""
    a, b = first.double(), second.double()
    if len(a) < 2 or len(b) < 2:
        return float(a.mean() - b.mean()) if len(a) and len(b) else math.nan, math.inf
    se = math.sqrt(float(a.var() / len(a) + b.var() / len(b)))
    return float(a.mean() - b.mean()), se


def attack_features(proba: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-row features an attacker sees: loss, confidence, margin, entropy."""
    proba = proba.double().clamp_min(1e-12)
    true = proba.gather(1, labels.view(-1, 1)).squeeze(1)
    others = proba.scatter(1, labels.view(-1, 1), 0.0).max(dim=1).values
    return torch.stack([
        -true.log(),
        proba.max(dim=1).values,
        true - others,
        -(proba * proba.log()).sum(dim=1),
    ], dim=1)


def logistic_attack_auc(member: torch.Tensor, nonmember: torch.Tensor, *, folds: int = 5,
                        seed: int = 0, l2: float = 1e-2) -> float:
    """Cross-validated AUC of a logistic-regression membership attack.

    Members and non-members are weighted to equal total mass so a forget set
    much smaller than the held-out set still shapes the decision rule. Scores
    come from models that did not see the scored row (k-fold), so the AUC is an
    honest out-of-sample figure.
    """
    m, n = len(member), len(nonmember)
    if m < folds or n < folds:
        return float("nan")
    x = torch.cat([member, nonmember]).double()
    y = torch.cat([torch.ones(m), torch.zeros(n)]).double()
    weight = torch.cat([torch.full((m,), 0.5 / m), torch.full((n,), 0.5 / n)]).double()
    shuffler = runtime.generator(seed)
    fold_of = torch.empty(m + n, dtype=torch.long)
    fold_of[:m] = torch.randperm(m, generator=shuffler) % folds  # stratified folds
    fold_of[m:] = torch.randperm(n, generator=shuffler) % folds
    scores = torch.empty(m + n, dtype=torch.float64)
    for fold in range(folds):
        test = fold_of == fold
        mean, std, w = _fit_logistic(x[~test], y[~test], weight[~test], l2)
        scores[test] = ((x[test] - mean) / std) @ w[:-1] + w[-1]
    return auc(scores[:m], scores[m:])


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, l2: float
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weighted, L2-penalised logistic regression on standardised features."""
    mean = x.mean(dim=0)
    std = x.std(dim=0).clamp_min(1e-9)
    standard = (x - mean) / std
    weight = weight / weight.sum()
    w = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w], max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = standard @ w[:-1] + w[-1]
        loss = (weight * torch.nn.functional.binary_cross_entropy_with_logits(
            logits, y, reduction="none")).sum() + 0.5 * l2 * w[:-1].pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return mean, std, w.detach()


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per-row Jensen-Shannon divergence (natural log, in [0, ln 2])."""
    p, q = p.double().clamp_min(1e-12), q.double().clamp_min(1e-12)
    mid = 0.5 * (p + q)
    return 0.5 * ((p * (p / mid).log()).sum(dim=1) + (q * (q / mid).log()).sum(dim=1))


LOSS_BINS = 20


def loss_histogram(groups: dict[str, torch.Tensor], bins: int = LOSS_BINS) -> dict[str, object]:
    """Per-record losses of several groups binned on one shared scale, for plotting.

    Only counts leave: no record, key or single loss value. The scale runs from the
    smallest loss to the 99th percentile of all the losses together; larger losses fall into
    the last bin and are counted again under ``clipped``, so one outlier cannot squash the rest
    into a bin.
    """
    nonempty = [values.double().flatten() for values in groups.values() if len(values)]
    pooled = torch.cat(nonempty) if nonempty else torch.zeros(0, dtype=torch.float64)
    pooled = pooled[torch.isfinite(pooled)]
    low = max(float(pooled.min()), 0.0) if len(pooled) else 0.0
    top = float(torch.quantile(pooled, 0.99)) if len(pooled) else low
    if top <= low:  # (nearly) one value: any scale above it shows that
        top = float(pooled.max()) if len(pooled) and float(pooled.max()) > low else low + 1.0
    edges = torch.linspace(low, top, bins + 1, dtype=torch.float64)
    counts: dict[str, list[int]] = {}
    clipped: dict[str, int] = {}
    for name, values in groups.items():
        values = values.double().flatten()
        values = torch.where(torch.isfinite(values), values, torch.full_like(values, top * 2))
        index = torch.bucketize(values.clamp(low, top), edges[1:-1], right=True)
        counts[name] = torch.bincount(index, minlength=bins).tolist()
        clipped[name] = int((values > top).sum())
    return {"edges": [round(float(e), 6) for e in edges], "counts": counts, "clipped": clipped}
