"""Exact unlearning: the result is what training without the forget set gives."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..adapters.sisa import SisaAdapter
from ..data import LabelledData
from .base import UnlearningError, UnsupportedModel


@dataclass(frozen=True)
class RetrainConfig:
    seed: int | None = None  # None: the seed the model was trained with


@dataclass(frozen=True)
class SisaConfig:
    pass


def retrain(
    model: Any, retain: LabelledData, forget: LabelledData, heldout: LabelledData,
    config: RetrainConfig,
) -> tuple[Any, dict[str, Any]]:
    """Train the model's recipe from scratch on ``retain`` with the model's seed."""
    seed = model.seed if config.seed is None else config.seed
    if seed is None:
        raise UnlearningError("retrain needs a seed: the model records none and the config gives none")
    return model.fit_fresh(retain, seed), {"seed": seed}


def sisa(
    model: Any, retain: LabelledData, forget: LabelledData, heldout: LabelledData,
    config: SisaConfig,
) -> tuple[SisaAdapter, dict[str, Any]]:
    """Retrain only the shards holding forgotten records, from their last clean checkpoint."""
    if not isinstance(model, SisaAdapter):
        raise UnsupportedModel(f"sisa unlearning needs a sisa model, not {getattr(model, 'name', model)!r}")
    unlearned = model.clone()
    held = unlearned.shards_holding(forget.keys)
    updates = unlearned.remove(forget.keys, retain)
    stages = unlearned.hyperparameters.slices
    return unlearned, {
        "shards": unlearned.hyperparameters.shards,
        "slices": stages,
        "shards_touched": sorted(held),
        "slices_retrained": sum(update.stages_retrained for update in updates),
        "slices_total": unlearned.hyperparameters.shards * stages,
        "forget_keys_not_in_model": len(set(forget.keys)) - sum(len(keys) for keys in held.values()),
        "updates": [asdict(update) for update in updates],
    }
