"""SISA sized to the data: how many shards and slices a recipe can afford.

A SISA ensemble of S shards is made of models that each saw n/S rows, so it inherits
the base recipe's learning curve: on data where accuracy still climbs steeply with n,
S = 10 loses 5-20 points (docs/unlearning.md). Before training, ``learning_curve``
fits the base recipe on nested subsamples of n, n/2, n/4, n/8, n/16 rows (about two
full fits in all) and scores each on held-out rows; ``choose_layout`` takes the largest
S whose shard-sized model stays within ``max_accuracy_loss`` of the full-data one, and
``size_sisa`` then keeps R slices only if a sliced shard still does.

The full-data point is measured, not extrapolated: with a fixed epoch count the curve
is not concave in log n (smaller sets also get fewer optimiser steps), and one doubling
extrapolated at the last slope underestimated the monolithic accuracy by 7 points on a
steep synthetic set. A shard model stands for the ensemble, which is pessimistic for
SISA (averaging S of them is usually a little better than one).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from . import runtime
from .data import LabelledData

SHARD_COUNTS = (1, 2, 4, 8, 16)  # the curve is measured at n/S rows; S = 1 is the monolithic model
MIN_SHARD_ROWS = 50  # a shard smaller than this is not a model worth averaging
MIN_SLICE_ROWS = 100
SLICE_COUNTS = (4, 2)  # tried in this order once S is chosen


@dataclass(frozen=True)
class CurvePoint:
    rows: int
    accuracy: float
    seconds: float


@dataclass(frozen=True)
class Layout:
    shards: int
    slices: int
    reason: str
    max_accuracy_loss: float
    train_rows: int
    monolithic_estimate: float
    predicted_loss: float  # monolithic estimate minus the chosen shard size's accuracy
    # expected share of a monolithic retrain one single-record deletion costs
    deletion_cost: float
    curve: list[CurvePoint] = field(default_factory=list)
    candidates: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def subsample_order(data: LabelledData, seed: int) -> list[int]:
    """A seeded permutation: every curve point is a prefix, so the subsamples are nested."""
    generator = runtime.generator(runtime.derive_seed(seed, "sisa-sizing"))
    return torch.randperm(len(data), generator=generator).tolist()


def learning_curve(fit: Any, train: LabelledData, heldout: LabelledData, seed: int,
                   shard_counts: tuple[int, ...] = SHARD_COUNTS) -> list[CurvePoint]:
    """Held-out accuracy of ``fit(subsample, seed)`` at n/S rows for each candidate S."""
    order = subsample_order(train, seed)
    points = []
    for shards in sorted(shard_counts):
        rows = len(train) // shards
        if shards > 1 and rows < MIN_SHARD_ROWS:
            continue
        started = time.process_time()
        model = fit(train.take(order[:rows]), seed)
        points.append(CurvePoint(rows, float(model.accuracy(heldout)), time.process_time() - started))
    return points


def slice_cost(slices: int) -> float:
    """Expected share of a shard's training a one-record deletion repeats with R slices.

    Stage r trains on slices 0..r for 2E/(R+1) epochs; a record in slice r (uniform)
    forces stages r..R-1 again. R = 1: 1.0, R = 2: 0.83, R = 4: 0.75.
    """
    stage = [(j + 1) / slices * 2 / (slices + 1) for j in range(slices)]
    return sum(sum(stage[r:]) for r in range(slices)) / slices


def choose_layout(curve: list[CurvePoint], train_rows: int, max_accuracy_loss: float) -> Layout:
    """The largest S whose shard-sized model is within the limit of the full-data model
    (R = 1; ``size_sisa`` adds slices when they fit too)."""
    points = sorted(curve, key=lambda p: p.rows, reverse=True)  # n first
    if len(points) < 2 or points[0].rows != train_rows:
        accuracy = points[0].accuracy if points else float("nan")
        return Layout(1, 1, f"too few rows ({train_rows}) for shards of {MIN_SHARD_ROWS}: monolithic",
                      max_accuracy_loss, train_rows, accuracy, 0.0, 1.0, curve, [])
    monolithic = points[0].accuracy
    candidates = []
    chosen = None
    floor = monolithic
    for point in points[1:]:
        # A noisy rise at fewer rows must not flatter a larger S: accuracy is taken as
        # non-increasing in S.
        floor = min(floor, point.accuracy)
        shards = round(train_rows / point.rows)
        loss = monolithic - floor
        meets = loss <= max_accuracy_loss + 1e-12
        candidates.append({"shards": shards, "shard_rows": point.rows, "shard_accuracy": point.accuracy,
                           "predicted_loss": loss, "meets_limit": meets, "deletion_cost": 1.0 / shards})
        if meets and (chosen is None or chosen["shards"] * 2 == shards):
            chosen = candidates[-1]
    if chosen is None:
        smallest = candidates[0]
        return Layout(
            1, 1, f"no S > 1 keeps the ensemble within {max_accuracy_loss * 100:.2f} points of the monolithic "
            f"model (S={smallest['shards']} is predicted to lose {smallest['predicted_loss'] * 100:.2f}): "
            "monolithic model, deletions batched into retrains",
            max_accuracy_loss, train_rows, monolithic, 0.0, 1.0, curve, candidates)
    return Layout(
        chosen["shards"], 1,
        f"largest S whose shards ({chosen['shard_rows']} rows) are within "
        f"{max_accuracy_loss * 100:.2f} points of the monolithic model",
        max_accuracy_loss, train_rows, monolithic, chosen["predicted_loss"], chosen["deletion_cost"],
        curve, candidates)


def size_sisa(base: str, base_params: dict[str, Any], train: LabelledData, heldout: LabelledData, seed: int,
              max_accuracy_loss: float) -> Layout:
    """Measure, choose S, then the most slices whose sliced shard model still meets the limit."""
    from .adapters import get_adapter

    def fit(data: LabelledData, fit_seed: int) -> Any:
        return get_adapter(base, **base_params).fit(data, fit_seed)

    layout = choose_layout(learning_curve(fit, train, heldout, seed), len(train), max_accuracy_loss)
    if layout.shards == 1:
        return layout
    shard = train.take(subsample_order(train, seed)[: len(train) // layout.shards])
    tried = []
    for slices in SLICE_COUNTS:
        if len(shard) // slices < MIN_SLICE_ROWS:
            continue
        sliced = get_adapter("sisa", base=base, base_params=base_params, shards=1, slices=slices).fit(shard, seed)
        accuracy = float(sliced.accuracy(heldout))
        loss = layout.monolithic_estimate - min(accuracy, layout.monolithic_estimate - layout.predicted_loss)
        tried.append({"slices": slices, "shard_accuracy": accuracy, "predicted_loss": loss})
        if loss <= max_accuracy_loss + 1e-12:
            return dataclasses.replace(
                layout, slices=slices, predicted_loss=loss, deletion_cost=slice_cost(slices) / layout.shards,
                reason=f"{layout.reason}; {slices} slices keep a shard within the limit",
                candidates=[*layout.candidates, *({"tried": t} for t in tried)])
    why = "sliced shards lose more" if tried else f"shards too small for slices of {MIN_SLICE_ROWS} rows"
    return dataclasses.replace(layout, reason=f"{layout.reason}; no slicing ({why})",
                               candidates=[*layout.candidates, *({"tried": t} for t in tried)])
