"""Method qualification: does an approximate method leave each forgotten record looking the
way it would under a model retrained without it?

A population test (``verify``) asks whether the forget set *as a group* looks like unseen
data; a model that generalises well passes it without forgetting anything. This study asks
the per-example question instead, from populations of models (Carlini et al. 2022, LiRA;
Hayes et al. 2024, U-LiRA; the NeurIPS 2023 unlearning challenge, Triantafillou et al. 2024):

* ``retrain_ref``: N exact retrains without the forget set (seeds vary): for every forget
  record, the distribution of its score under "never trained on it".
* ``retrain_ceiling``: N further, independent retrains: what an exact method scores against
  the reference, i.e. the best any method can do with this many models (the ceiling).
* ``unlearned``: N originals (trained with the forget set, seeds vary), each unlearned by
  the method under study.

The score of a record under a model is the logit-scaled confidence on its label,
``log p_y - log(1 - p_y)``, which is close to Gaussian across training seeds (LiRA).

(a) Per-example membership test, offline LiRA style: fit a Gaussian per record to the
reference population; a (model, record) pair is *flagged* when its score lies outside the
two-sided ``1 - alpha`` band. Over-forgetting (a record pushed far below where a retrain
puts it) is flagged as surely as remembering. The flag rate of unlearned models is compared
with that of the ceiling retrains, which the same test flags at its false-alarm rate.

(b) Forget score, challenge style: per record, the best threshold attack separating the
unlearned population's scores from the reference population's gives an empirical epsilon
``max(log((1 - delta - FPR) / FNR), log((1 - delta - FNR) / FPR))``; epsilons are binned
(width 0.5) and scored ``2 / 2**bin`` (capped at 1), averaged over records. The same score
computed for the ceiling retrains is the most a method can reach with N models.

(c) Utility: held-out accuracy of unlearned models against the reference retrains'.

Everything here is computed from scratch from the papers' definitions; nothing is copied.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .data import LabelledData
from .stats import Z_95

# Challenge binning: epsilon bins of this width; bin n scores 2 / 2**n.
EPSILON_BIN = 0.5
# The challenge's delta in the epsilon estimate.
EPSILON_DELTA = 0.01
# Per-record variance never below this share of the pooled variance: with a handful of
# reference models a record's own spread can come out near zero by chance.
VARIANCE_FLOOR = 0.1


@dataclass(frozen=True)
class QualificationPolicy:
    """What "qualified" means; the report states every number."""

    alpha: float = 0.05  # per-example test's two-sided level
    flag_margin: float = 0.05  # unlearned flag rate may exceed the retrains' by at most this
    forget_score_fraction: float = 0.8  # of the ceiling
    max_accuracy_drop: float = 0.03  # held-out accuracy vs the reference retrains' mean


def record_scores(model: Any, data: LabelledData) -> torch.Tensor:
    """log p_y - log(1 - p_y) per record: LiRA's logit-scaled confidence."""
    proba = model.predict_proba(data.features).double()
    p = proba.gather(1, data.labels.view(-1, 1)).squeeze(1).clamp(1e-12, 1 - 1e-12)
    return torch.log(p) - torch.log1p(-p)


def per_example_flags(reference: torch.Tensor, candidates: torch.Tensor, alpha: float) -> torch.Tensor:
    """reference: (R, n) scores of retrains; candidates: (M, n). True where a candidate's score
    on a record lies outside the reference Gaussian's two-sided 1 - alpha band."""
    mean = reference.mean(0)
    var = reference.var(0, unbiased=True) if reference.shape[0] > 1 else torch.zeros_like(mean)
    var = torch.maximum(var, VARIANCE_FLOOR * var.mean().clamp_min(1e-12))
    z = (candidates - mean) / var.sqrt()
    return z.abs() > _normal_quantile(1 - alpha / 2)


def _normal_quantile(p: float) -> float:
    return float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(p, dtype=torch.float64)))


def example_epsilon(a: Sequence[float], b: Sequence[float], delta: float = EPSILON_DELTA) -> float:
    """Empirical epsilon of the best single-threshold attack telling sample ``a`` from ``b``.

    Every threshold between pooled values is tried in both directions; error rates get a
    half-count floor so a perfect split of small samples gives a large, finite epsilon.
    """
    na, nb = len(a), len(b)
    floor_a, floor_b = 0.5 / na, 0.5 / nb
    best = 0.0
    for t in sorted(set(a) | set(b)):
        # Attack: "from a" when score >= t. FNR on a, FPR on b.
        fnr = max(sum(x < t for x in a) / na, floor_a)
        fpr = max(sum(x >= t for x in b) / nb, floor_b)
        for e1, e2 in ((fpr, fnr), (fnr, fpr)):
            if 1 - delta - e1 > 0:
                best = max(best, math.log((1 - delta - e1) / e2))
    return best


def epsilon_score(epsilon: float) -> float:
    """Challenge binning: bin n = ceil(eps / 0.5) scores 2 / 2**n, capped at 1."""
    n = math.ceil(epsilon / EPSILON_BIN)
    return min(1.0, 2.0 / 2**n)


def forget_score(candidates: torch.Tensor, reference: torch.Tensor) -> tuple[float, list[float]]:
    """Mean binned score over records (1: indistinguishable) and the per-record epsilons."""
    epsilons = [example_epsilon(candidates[:, j].tolist(), reference[:, j].tolist())
                for j in range(candidates.shape[1])]
    return statistics.fmean(epsilon_score(e) for e in epsilons), epsilons


@dataclass
class StudyResult:
    qualified: bool
    reasons: list[str]
    forget_size: int
    runs: int
    flag_rate_unlearned: float
    flag_rate_retrain: float
    forget_score: float
    forget_score_ceiling: float
    forget_score_original: float
    accuracy_unlearned: float
    accuracy_retrain: float
    accuracy_original: float
    seconds_method: float
    seconds_retrain: float
    seconds_total: float
    policy: dict[str, Any]
    # Pooled seed-to-seed spread of a record's score under the reference retrains: the noise
    # scale a sampling audit compares one job's result with one exact retrain against.
    reference_score_std: float = 0.0
    # Held-out accuracy of all 2N exact retrains (reference and ceiling): mean, std (over
    # seeds), models and rows. The noise a job's utility check allows for.
    retrain_accuracy: dict[str, float] = field(default_factory=dict)
    models_trained: dict[str, int] = field(default_factory=dict)
    epsilons_unlearned: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_study(
    fit: Callable[[LabelledData, int], Any],
    unlearn_fn: Callable[[Any, LabelledData, LabelledData, int], Any],
    train: LabelledData,
    forget_keys: Sequence[str],
    heldout: LabelledData,
    *,
    runs: int,
    seed: int,
    policy: QualificationPolicy | None = None,
) -> StudyResult:
    """Qualify ``unlearn_fn(original, retain, forget, seed) -> model`` on one forget set.

    ``fit(data, seed)`` is the model's own recipe. Models live only in memory and are
    dropped when this returns: the temporary retrains hold the training data and are never
    stored anywhere.
    """
    return run_studies(fit, {"method": unlearn_fn}, train, forget_keys, heldout, runs=runs, seed=seed,
                       policy=policy)["method"]


def run_studies(
    fit: Callable[[LabelledData, int], Any],
    unlearn_fns: Mapping[str, Callable[[Any, LabelledData, LabelledData, int], Any]],
    train: LabelledData,
    forget_keys: Sequence[str],
    heldout: LabelledData,
    *,
    runs: int,
    seed: int,
    policy: QualificationPolicy | None = None,
) -> dict[str, StudyResult]:
    """``run_study`` for several methods at once, sharing one set of reference retrains,
    ceiling retrains and originals (each method gets its own unlearned population); the
    result per method is what ``run_study`` would give with the same seeds."""
    policy = policy or QualificationPolicy()
    forget = train.select(list(forget_keys))
    retain = train.without(list(forget_keys))
    started = time.perf_counter()
    reference, ceiling, originals = [], [], []
    unlearned: dict[str, list[torch.Tensor]] = {name: [] for name in unlearn_fns}
    acc_unlearned: dict[str, list[float]] = {name: [] for name in unlearn_fns}
    seconds_method = dict.fromkeys(unlearn_fns, 0.0)
    acc_reference, acc_ceiling, acc_original = [], [], []
    seconds_retrain = 0.0
    for i in range(runs):
        t0 = time.perf_counter()
        retrained = fit(retain, seed + 1000 + i)
        seconds_retrain += time.perf_counter() - t0
        reference.append(record_scores(retrained, forget))
        acc_reference.append(retrained.accuracy(heldout))
        independent = fit(retain, seed + 2000 + i)
        ceiling.append(record_scores(independent, forget))
        acc_ceiling.append(independent.accuracy(heldout))
        original = fit(train, seed + 3000 + i)
        originals.append(record_scores(original, forget))
        acc_original.append(original.accuracy(heldout))
        for name, unlearn_fn in unlearn_fns.items():
            t0 = time.perf_counter()
            edited = unlearn_fn(original, retain, forget, seed + 4000 + i)
            seconds_method[name] += time.perf_counter() - t0
            unlearned[name].append(record_scores(edited, forget))
            acc_unlearned[name].append(edited.accuracy(heldout))
    ref, ceil, orig = (torch.stack(x) for x in (reference, ceiling, originals))
    spread = float(ref.var(0, unbiased=True).mean().sqrt()) if runs > 1 else 0.0
    flag_retrain = float(per_example_flags(ref, ceil, policy.alpha).double().mean())
    score_ceiling, _ = forget_score(ceil, ref)
    score_original, _ = forget_score(orig, ref)
    # Every exact retrain of the study (reference and ceiling: 2N seeds) scored on the same
    # held-out rows: the seed-to-seed spread of a retrain's accuracy, which a job's utility
    # check allows for (``verify(..., retrain_accuracy=...)``).
    retrain_accuracies = acc_reference + acc_ceiling
    retrain_accuracy = {
        "mean": statistics.fmean(retrain_accuracies),
        "std": statistics.stdev(retrain_accuracies) if len(retrain_accuracies) > 1 else 0.0,
        "models": len(retrain_accuracies), "rows": len(heldout),
    }
    results = {}
    for name in unlearn_fns:
        unl = torch.stack(unlearned[name])
        flag_unlearned = float(per_example_flags(ref, unl, policy.alpha).double().mean())
        score, epsilons = forget_score(unl, ref)
        reasons = []
        if flag_unlearned > flag_retrain + policy.flag_margin:
            reasons.append(f"per-example test flags unlearned models on {flag_unlearned:.3f} of records, retrains "
                           f"on {flag_retrain:.3f} (margin {policy.flag_margin})")
        if score < policy.forget_score_fraction * score_ceiling:
            reasons.append(f"forget score {score:.3f} is below {policy.forget_score_fraction} of the retrain "
                           f"ceiling {score_ceiling:.3f}")
        drop = statistics.fmean(acc_reference) - statistics.fmean(acc_unlearned[name])
        if drop > policy.max_accuracy_drop:
            reasons.append(f"held-out accuracy {drop:.3f} below the retrains' (limit {policy.max_accuracy_drop})")
        results[name] = StudyResult(
            qualified=not reasons, reasons=reasons, forget_size=len(forget), runs=runs,
            flag_rate_unlearned=flag_unlearned, flag_rate_retrain=flag_retrain,
            forget_score=score, forget_score_ceiling=score_ceiling, forget_score_original=score_original,
            accuracy_unlearned=statistics.fmean(acc_unlearned[name]),
            accuracy_retrain=statistics.fmean(acc_reference), accuracy_original=statistics.fmean(acc_original),
            seconds_method=seconds_method[name] / runs, seconds_retrain=seconds_retrain / runs,
            seconds_total=time.perf_counter() - started, policy=asdict(policy), reference_score_std=spread,
            retrain_accuracy=retrain_accuracy,
            models_trained={"retrain_reference": runs, "retrain_ceiling": runs, "original": runs,
                            "unlearned": runs},
            epsilons_unlearned=epsilons,
        )
    return results


def pooled_retrain_accuracy(results: Sequence[StudyResult]) -> dict[str, float]:
    """The retrains' held-out accuracy over several forget sets of one band: the mean over
    all of them and the pooled within-set standard deviation (seed noise, not the small
    differences between forget sets)."""
    parts = [r.retrain_accuracy for r in results if r.retrain_accuracy]
    if not parts:
        return {}
    models = sum(int(p["models"]) for p in parts)
    dof = sum(int(p["models"]) - 1 for p in parts)
    variance = sum((int(p["models"]) - 1) * p["std"] ** 2 for p in parts) / dof if dof > 0 else 0.0
    return {"mean": sum(p["mean"] * int(p["models"]) for p in parts) / models, "std": math.sqrt(variance),
            "models": models, "rows": int(parts[0]["rows"])}


def combine(results: Sequence[StudyResult]) -> dict[str, Any]:
    """Several forget sets of one band: qualified only if every set qualified; the figures
    are means over sets (and the worst set's forget score against its own ceiling)."""
    if not results:
        raise ValueError("a study needs at least one forget set")
    mean = lambda name: statistics.fmean(getattr(r, name) for r in results)  # noqa: E731
    reasons = [f"forget set {i + 1} ({r.forget_size} records): {reason}"
               for i, r in enumerate(results) for reason in r.reasons]
    figures = ("flag_rate_unlearned", "flag_rate_retrain", "forget_score", "forget_score_ceiling",
               "forget_score_original", "accuracy_unlearned", "accuracy_retrain", "accuracy_original",
               "seconds_method", "seconds_retrain", "reference_score_std")
    trained: dict[str, int] = {}
    for result in results:
        for kind, count in result.models_trained.items():
            trained[kind] = trained.get(kind, 0) + count
    return {
        "qualified": all(r.qualified for r in results), "reasons": reasons, "runs": results[0].runs,
        "forget_sets": len(results), "forget_sizes": [r.forget_size for r in results],
        **{name: mean(name) for name in figures},
        "worst_forget_score_share": min(r.forget_score / r.forget_score_ceiling if r.forget_score_ceiling else 0.0
                                        for r in results),
        "seconds_total": sum(r.seconds_total for r in results), "policy": results[0].policy,
        "models_trained": trained, "retrain_accuracy": pooled_retrain_accuracy(results),
        "per_set": [r.to_dict() for r in results],
    }


def audit_comparison(unlearned: Any, retrained: Any, forget: LabelledData, score_std: float, *,
                     alpha: float, flag_margin: float, level: float = 0.05) -> dict[str, Any]:
    """One job's approximate result against one exact retrain, per forgotten record.

    Under "the method behaves like a retrain" the two scores of a record are two draws from
    its retrain distribution, so their difference has spread ``sqrt(2) * score_std`` (the
    study's pooled reference spread). A record is flagged when the difference lies outside
    the two-sided ``1 - alpha`` band, in either direction (remembering or over-forgetting).
    The comparison is *degraded* when more records are flagged than ``alpha + flag_margin``
    allows, by a one-sided binomial test at ``level``: a handful of records cannot revoke a
    study by chance, and a clear excess always does.
    """
    if score_std <= 0:
        raise ValueError("the study measured no score spread; nothing to compare against")
    ours, exact = record_scores(unlearned, forget), record_scores(retrained, forget)
    z = (ours - exact) / (math.sqrt(2.0) * score_std)
    flags = z.abs() > _normal_quantile(1 - alpha / 2)
    n, flagged = len(forget), int(flags.sum())
    allowed = min(1.0, alpha + flag_margin)
    p_value = sum(math.comb(n, k) * allowed**k * (1 - allowed) ** (n - k) for k in range(flagged, n + 1))
    return {
        "records": n, "flagged": flagged, "flag_rate": flagged / n if n else 0.0, "allowed_rate": allowed,
        "p_value": p_value, "level": level, "degraded": bool(n) and p_value < level,
        "score_std": score_std, "mean_score_gap": float((ours - exact).mean()) if n else 0.0,
        "remembered": int((flags & (z > 0)).sum()), "over_forgotten": int((flags & (z < 0)).sum()),
    }


__all__ = ["Z_95", "QualificationPolicy", "StudyResult", "audit_comparison", "combine", "example_epsilon", "epsilon_score", "forget_score",
           "per_example_flags", "pooled_retrain_accuracy", "record_scores", "run_studies", "run_study"]
