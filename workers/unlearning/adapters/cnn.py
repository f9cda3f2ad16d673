"""Small convolutional network for image arrays (e.g. sklearn digits, 8x8)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..recipes import CNNParams
from .base import AdapterError, TorchClassifier


class CNNAdapter(TorchClassifier):
    """3x3 conv blocks with one 2x2 max-pool, then a small dense head."""

    name = "cnn"
    Params = CNNParams

    def _image_shape(self, feature_shape: tuple[int, ...]) -> tuple[int, int, int]:
        configured = self.hyperparameters.input_shape
        if configured is not None:
            if math.prod(configured) != math.prod(feature_shape):
                raise AdapterError(f"input_shape {configured} does not fit features {feature_shape}")
            return configured
        if len(feature_shape) == 3:
            return feature_shape
        if len(feature_shape) == 2:
            return (1, *feature_shape)
        side = math.isqrt(feature_shape[0]) if len(feature_shape) == 1 else 0
        if side * side == math.prod(feature_shape):
            return (1, side, side)
        raise AdapterError(f"cannot read features of shape {feature_shape} as an image; set input_shape")

    def _make_module(self, feature_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        channels, height, width = self._image_shape(feature_shape)
        layers: list[nn.Module] = []
        for out in self.hyperparameters.channels:
            layers += [nn.Conv2d(channels, out, kernel_size=3, padding=1), nn.ReLU()]
            channels = out
        layers += [nn.MaxPool2d(2), nn.Flatten()]
        flat = channels * (height // 2) * (width // 2)
        layers += [nn.Linear(flat, self.hyperparameters.hidden), nn.ReLU()]
        layers.append(nn.Linear(self.hyperparameters.hidden, num_classes))
        return nn.Sequential(*layers)

    def _inputs(self, features: torch.Tensor) -> torch.Tensor:
        return features.reshape(features.shape[0], *self._image_shape(self.feature_shape))
