"""Tabular multi-layer perceptron."""

from __future__ import annotations

import math

from torch import nn

from ..recipes import MLPParams
from .base import TorchClassifier


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
