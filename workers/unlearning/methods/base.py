"""Shared types for unlearning methods: reports, errors, config handling."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..options import from_mapping


class UnlearningError(Exception):
    """The method cannot produce an unlearned model from these inputs."""


class UnsupportedModel(UnlearningError):
    """The method does not apply to this adapter (e.g. ``newton`` on an MLP)."""


class CertifiedBudgetExceeded(UnlearningError):
    """The accumulated gradient-residual bound would exceed the model's budget.

    Raised before anything is changed; the caller should fall back to an exact
    method (``retrain``), which also resets the bound.
    """

    def __init__(self, bound: float, budget: float) -> None:
        super().__init__(
            f"certified removal refused: accumulated residual bound {bound:.4g} "
            f"exceeds budget {budget:.4g}; fall back to an exact method"
        )
        self.bound = bound
        self.budget = budget


@dataclass
class UnlearningReport:
    """What a method did, JSON-serialisable via :meth:`to_dict`."""

    method: str
    exact: bool
    seconds: float
    retain_size: int
    forget_size: int
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def make_config(config_type: type, config: Any) -> Any:
    if config is None:
        return config_type()
    if isinstance(config, config_type):
        return config
    if isinstance(config, Mapping):
        return from_mapping(config_type, config, UnlearningError, "option")
    raise UnlearningError(f"config must be a mapping or {config_type.__name__}, got {type(config)}")
