"""Tabular multi-layer perceptron."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from .base import TorchClassifier


@dataclass(frozen=True)
class MLPParams:
    hidden: tuple[int, ...] = (256, 256)
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    dropout: float = 0.0
    num_classes: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(width) for width in self.hidden))
        if any(width < 1 for width in self.hidden):
            raise ValueError("hidden widths must be positive")
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs >= 0, batch_size >= 1 and lr > 0 are required")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")


class MLPAdapter(TorchClassifier):
    """ReLU MLP on flattened features (optional dropout after each hidden layer), softmax output."""

    name = "mlp"
    Params = MLPParams

    def _make_module(self, feature_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        layers: list[nn.Module] = []
        width = math.prod(feature_shape)
        for hidden in self.hyperparameters.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            if self.hyperparameters.dropout:
                layers.append(nn.Dropout(self.hyperparameters.dropout))
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        return nn.Sequential(*layers)
