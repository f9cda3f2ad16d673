"""Deadline-aware batching: when to run a batch of deletions for one model, and what it saves.

Pure functions over plain values (no database), so the rules are testable on their own.
Cost is counted in *units* of work a method repeats per batch: for a SISA model a unit is
one shard retrained, and a batch costs one unit per distinct shard it touches; for every
other model a unit is one job (an exact retrain or an approximate pass over the model),
so a batch of K requests costs one unit where K jobs would cost K.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass(frozen=True)
class PendingDeletion:
    request_id: str
    received_at: datetime
    due_at: datetime
    # SISA shards holding the request's records; None for an unsharded model.
    shards: frozenset[int] | None = None


@dataclass(frozen=True)
class BatchPolicy:
    max_batch_size: int = 100
    window: timedelta = timedelta(hours=1)
    # Start early enough that `safety_factor` times the estimated duration, plus the
    # margin, still ends before the earliest deadline in the batch.
    safety_factor: float = 3.0
    risk_margin: timedelta = timedelta(hours=72)
    # Once the window has expired, still wait while requests keep arriving this close
    # together: a burst submitted at once then goes out as one batch, not split by a tick.
    settle: timedelta = timedelta(0)
    # How long a batch that costs a full retrain anyway (every shard touched, or an
    # unsharded model retrained) may keep collecting requests: more of them cost nothing
    # more. None: the ordinary window. Deadlines and a full batch still start it.
    full_retrain_window: timedelta | None = None


@dataclass(frozen=True)
class CostModel:
    """Seconds per unit of work, learned from a model's finished jobs."""

    seconds_per_unit: float = 60.0
    fixed_seconds: float = 30.0

    @classmethod
    def learn(cls, history: Sequence[tuple[float, int]], default: CostModel | None = None) -> CostModel:
        """From (seconds, units) of past jobs; the median resists one slow outlier."""
        default = default or cls()
        rates = [seconds / units for seconds, units in history if units > 0 and seconds > 0]
        if not rates:
            return default
        return cls(seconds_per_unit=statistics.median(rates), fixed_seconds=default.fixed_seconds)

    def seconds(self, units: int) -> float:
        return self.fixed_seconds + self.seconds_per_unit * units


def units_of(batch: Sequence[PendingDeletion]) -> int:
    if any(p.shards is None for p in batch):
        return 1 if batch else 0
    return len(frozenset().union(*(p.shards for p in batch))) if batch else 0


@dataclass(frozen=True)
class Decision:
    run: bool
    reason: str
    batch: list[PendingDeletion] = field(default_factory=list)
    units: int = 0
    units_if_alone: int = 0
    estimated_seconds: float = 0.0
    at_risk: list[PendingDeletion] = field(default_factory=list)
    full_retrain: bool = False

    @property
    def units_saved(self) -> int:
        return self.units_if_alone - self.units


def decide(
    pending: Sequence[PendingDeletion],
    policy: BatchPolicy,
    cost: CostModel,
    now: datetime,
    *,
    force: bool = False,
    full_units: int | None = None,
) -> Decision:
    """Whether to run a batch for one model now, and which requests it takes (earliest due first).

    ``full_units`` is what a full retrain costs in units (a SISA model's shard count; 1
    for an unsharded model whose method is an exact retrain; None when a batch is not a
    retrain, e.g. a Newton step). A batch that reaches it is planned as a full retrain.
    """
    if not pending:
        return Decision(run=False, reason="nothing pending")
    ordered = sorted(pending, key=lambda p: (p.due_at, p.received_at))
    batch = ordered[: policy.max_batch_size]
    units = units_of(batch)
    full_retrain = full_units is not None and units >= full_units
    window = policy.window
    if full_retrain and policy.full_retrain_window is not None:
        window = max(window, policy.full_retrain_window)
    alone = sum(units_of([p]) for p in batch)
    estimate = cost.seconds(units)
    needed = timedelta(seconds=estimate * policy.safety_factor) + policy.risk_margin
    at_risk = [p for p in batch if p.due_at - now <= needed]
    oldest = min(p.received_at for p in batch)
    newest = max(p.received_at for p in ordered)

    if force:
        reason = "forced"
    elif len(ordered) >= policy.max_batch_size:
        reason = "batch full"
    elif at_risk:
        reason = "deadline at risk"
    elif now - oldest >= window and now - newest >= policy.settle:
        reason = "window expired"
    else:
        return Decision(run=False, reason="waiting for more requests", batch=batch, units=units,
                        units_if_alone=alone, estimated_seconds=estimate, full_retrain=full_retrain)
    return Decision(run=True, reason=reason, batch=batch, units=units, units_if_alone=alone,
                    estimated_seconds=estimate, at_risk=at_risk, full_retrain=full_retrain)


def retrains_per_request(batches: Sequence[tuple[int, bool]]) -> dict[str, float | int]:
    """From (requests, was a full retrain) of past batches: what batching bought."""
    requests = sum(count for count, _ in batches)
    retrains = sum(1 for _, retrain in batches if retrain)
    return {"batches": len(batches), "requests": requests, "retrains": retrains,
            "retrains_per_request": retrains / requests if requests else 0.0}
