"""Built-in adapters' hyper-parameters, without PyTorch: the API checks a recipe here when a
model is registered or trained, so it never loads the engine; the adapters (which need torch)
take their ``Params`` from this module. Also each method's guarantee, for the same reason."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .options import from_mapping
from .placement import SISA, SisaParams


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


@dataclass(frozen=True)
class LogRegParams:
    l2: float = 1e-3
    max_iter: int = 300
    tol: float = 1e-8
    # None: derived at the first fit from epsilon, delta and residual_allowance.
    noise_std: float | None = None
    epsilon: float = 1.0
    delta: float = 1e-4
    residual_allowance: float = 0.15
    unit_rows: bool = True
    # Replaces the certificate's budget (the result is then not certified; for tests).
    residual_budget: float | None = None
    removal_cache: bool = True
    # Used only when an approximate method fine-tunes this model by minibatches.
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-2
    weight_decay: float = 0.0
    num_classes: int | None = None

    def __post_init__(self) -> None:
        if self.l2 <= 0:
            raise ValueError("l2 must be > 0: removal needs a strongly convex objective")
        if (self.noise_std is not None and self.noise_std < 0) or self.epsilon <= 0 or not 0 < self.delta < 1:
            raise ValueError("noise_std >= 0, epsilon > 0 and 0 < delta < 1 are required")
        if self.residual_allowance <= 0:
            raise ValueError("residual_allowance must be > 0")


@dataclass(frozen=True)
class CNNParams:
    channels: tuple[int, ...] = (16, 32)
    hidden: int = 64
    input_shape: tuple[int, ...] | None = None  # (C, H, W); inferred when omitted
    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.0
    num_classes: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if self.input_shape is not None:
            object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
            if len(self.input_shape) != 3:
                raise ValueError("input_shape is (channels, height, width)")


BUILTIN_PARAMS: dict[str, type] = {"mlp": MLPParams, "logreg": LogRegParams, "cnn": CNNParams, SISA: SisaParams}

# What a result of each method can claim; ``methods.METHODS`` takes its guarantees from here.
METHOD_GUARANTEES: dict[str, str] = {
    "retrain": "exact", "sisa": "exact", "newton": "certified",
    "finetune": "approximate", "neggrad_plus": "approximate", "scrub": "approximate", "salun": "approximate",
}


def check(adapter_name: str, hyperparameters: dict[str, Any]) -> bool:
    """Check a built-in recipe's hyper-parameters (ValueError or TypeError when refused) and say
    True; False for a name that is not built in (only loading the plugin can check it)."""
    params_type = BUILTIN_PARAMS.get(adapter_name)
    if params_type is None:
        return False
    params = from_mapping(params_type, hyperparameters, ValueError, "hyper-parameter")
    if adapter_name == SISA:
        base_type = BUILTIN_PARAMS.get(params.base)
        if base_type is None:
            return False  # a plugin base: the adapter itself checks it
        from_mapping(base_type, params.base_params, ValueError, "hyper-parameter")
    return True
