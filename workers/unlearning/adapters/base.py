"""The adapter protocol and the shared torch classifier machinery.

An adapter is a model recipe plus, once fitted, its parameters. The contract
follows scikit-learn's estimators: hyper-parameters are fixed at construction
(an explicit dataclass), ``fit`` learns from data, and nothing here touches
files, queues or databases; the caller moves bytes in and out.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from .. import runtime
from ..data import LabelledData
from ..options import from_mapping
from ..serialization import pack, unpack

EVAL_BATCH = 4096


class AdapterError(ValueError):
    """An adapter was misused: unknown hyper-parameter, unfitted model, wrong state."""


@runtime_checkable
class Adapter(Protocol):
    """What every model recipe offers to methods and to the verifier."""

    name: ClassVar[str]
    hyperparameters: Any

    def build(self, feature_shape: tuple[int, ...], num_classes: int, seed: int) -> Adapter:
        """Initialise untrained parameters for inputs of ``feature_shape``."""

    def fit(self, data: LabelledData, seed: int) -> Adapter:
        """Train from scratch; same data and seed give bit-identical state on CPU."""

    def predict_proba(self, features: torch.Tensor) -> torch.Tensor:
        """Class probabilities, shape (n, num_classes), float32 on CPU."""

    def per_sample_loss(self, data: LabelledData) -> torch.Tensor:
        """Cross-entropy of each row, shape (n,), float32 on CPU."""

    def state_bytes(self) -> bytes:
        """Deterministic serialisation: equal state, equal bytes, equal sha256."""

    def load_state_bytes(self, raw: bytes) -> Adapter:
        """Restore what :meth:`state_bytes` wrote; returns ``self``."""


def make_params(params_type: type, values: Mapping[str, Any]) -> Any:
    return from_mapping(params_type, values, AdapterError, "hyper-parameter")


def params_to_dict(params: Any) -> dict[str, Any]:
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in dataclasses.asdict(params).items()
    }


class BaseAdapter:
    """State handling shared by all built-in adapters.

    Subclasses define ``name``, ``Params`` and the tensor/blob state they carry.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type]

    def __init__(self, **hyperparameters: Any) -> None:
        self.hyperparameters = make_params(self.Params, hyperparameters)
        self.feature_shape: tuple[int, ...] | None = None
        self.num_classes: int | None = None
        self.seed: int | None = None

    # -- lifecycle ---------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return self.num_classes is not None

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise AdapterError(f"{self.name} adapter is not fitted")

    def resolve_num_classes(self, data: LabelledData) -> int:
        """Classes come from the hyper-parameters, else from the first fit.

        A retrain after forgetting a whole class must keep the same output
        layout, so once known the count is never re-inferred from data.
        """
        configured = getattr(self.hyperparameters, "num_classes", None)
        if configured is not None:
            return int(configured)
        if self.num_classes is not None:
            return self.num_classes
        if len(data) == 0:
            raise AdapterError("cannot infer the number of classes from empty data")
        return int(data.labels.max()) + 1

    def fresh(self) -> BaseAdapter:
        """An unfitted copy with the same recipe and the same output layout."""
        twin = type(self)(**params_to_dict(self.hyperparameters))
        twin.num_classes = self.num_classes
        twin.feature_shape = self.feature_shape
        return twin

    def fit_fresh(self, data: LabelledData, seed: int) -> BaseAdapter:
        """Train a new model of this recipe: what an exact retrain is."""
        return self.fresh().fit(data, seed)

    def clone(self) -> BaseAdapter:
        """An independent copy; methods unlearn on a clone so the original stays verifiable."""
        return copy.deepcopy(self)

    # -- inference ---------------------------------------------------------
    def predict(self, features: torch.Tensor) -> torch.Tensor:
        return self.predict_proba(features).argmax(dim=1)

    def accuracy(self, data: LabelledData) -> float:
        if len(data) == 0:
            return float("nan")
        return float((self.predict(data.features) == data.labels).double().mean())

    def per_sample_loss(self, data: LabelledData) -> torch.Tensor:
        proba = self.predict_proba(data.features).double()
        picked = proba.gather(1, data.labels.view(-1, 1)).squeeze(1)
        return (-picked.clamp_min(1e-12).log()).float()

    # -- state -------------------------------------------------------------
    def _header(self) -> dict[str, Any]:
        return {}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def _blobs(self) -> dict[str, bytes]:
        return {}

    def _restore(self, header: dict[str, Any], tensors: dict, blobs: dict) -> None:
        raise NotImplementedError

    def state_bytes(self) -> bytes:
        self._require_fitted()
        header = {
            "adapter": self.name,
            "hyperparameters": params_to_dict(self.hyperparameters),
            "feature_shape": list(self.feature_shape or ()),
            "num_classes": self.num_classes,
            "seed": self.seed,
            "extra": self._header(),
        }
        return pack(header, self._tensors(), self._blobs())

    def load_state_bytes(self, raw: bytes) -> BaseAdapter:
        state = unpack(raw)
        header = state.header
        if header.get("adapter") != self.name:
            raise AdapterError(f"state is for adapter {header.get('adapter')!r}, not {self.name!r}")
        self.hyperparameters = make_params(self.Params, header["hyperparameters"])
        self.feature_shape = tuple(header["feature_shape"])
        self.num_classes = header["num_classes"]
        self.seed = header["seed"]
        self._restore(header["extra"], state.tensors, state.blobs)
        return self


class TorchClassifier(BaseAdapter):
    """A classifier backed by an ``nn.Module`` and trained by minibatch Adam.

    Subclasses supply ``_make_module`` and ``_inputs`` (how raw features become
    module inputs); training, inference and state come from here. The approximate
    methods work on any adapter of this kind through ``module`` and ``logits``.
    """

    dtype: ClassVar[torch.dtype] = torch.float32

    def __init__(self, **hyperparameters: Any) -> None:
        super().__init__(**hyperparameters)
        self.module: nn.Module | None = None

    def _make_module(self, feature_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        raise NotImplementedError

    def _inputs(self, features: torch.Tensor) -> torch.Tensor:
        return features.reshape(features.shape[0], -1)

    # -- protocol ----------------------------------------------------------
    def build(self, feature_shape: tuple[int, ...], num_classes: int, seed: int) -> TorchClassifier:
        self.feature_shape = tuple(feature_shape)
        self.num_classes = int(num_classes)
        self.seed = int(seed)
        with runtime.seeded(runtime.derive_seed(seed, self.name, "init")):
            module = self._make_module(self.feature_shape, self.num_classes).to(self.dtype)
        self.module = module.to(runtime.current_device())
        return self

    def fit(self, data: LabelledData, seed: int) -> TorchClassifier:
        self.build(data.feature_shape, self.resolve_num_classes(data), seed)
        return self.partial_fit(data, seed, epochs=self.hyperparameters.epochs)

    def partial_fit(self, data: LabelledData, seed: int, epochs: int) -> TorchClassifier:
        """Continue training the current parameters for ``epochs`` passes over ``data``."""
        if self.module is None:
            raise AdapterError(f"{self.name}: build() or fit() before partial_fit()")
        if len(data) == 0 or epochs <= 0:
            return self
        hp = self.hyperparameters
        optimizer = torch.optim.Adam(self.module.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        train_minibatches(
            self, optimizer, data, epochs=epochs, batch_size=hp.batch_size,
            seed=runtime.derive_seed(seed, self.name, "train"),
        )
        return self

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Raw scores with autograd enabled; features may live on any device."""
        device = next(self.module.parameters()).device
        return self.module(self._inputs(features.to(device=device, dtype=self.dtype)))

    def predict_proba(self, features: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.softmax(chunk, dim=1) for chunk in self._eval_logits(features)]).float()

    def per_sample_loss(self, data: LabelledData) -> torch.Tensor:
        losses = [
            F.cross_entropy(chunk, labels, reduction="none")
            for chunk, labels in zip(
                self._eval_logits(data.features), data.labels.split(EVAL_BATCH), strict=True
            )
        ]
        return torch.cat(losses).float() if losses else torch.zeros(0)

    def _eval_logits(self, features: torch.Tensor) -> list[torch.Tensor]:
        self._require_fitted()
        was_training = self.module.training
        self.module.eval()
        with torch.no_grad():
            chunks = [self.logits(chunk).cpu() for chunk in features.split(EVAL_BATCH)]
        self.module.train(was_training)
        return chunks

    # -- state -------------------------------------------------------------
    def _tensors(self) -> dict[str, torch.Tensor]:
        return {f"module.{key}": value for key, value in self.module.state_dict().items()}

    def _restore(self, header: dict[str, Any], tensors: dict, blobs: dict) -> None:
        with runtime.seeded(0):  # values are overwritten below; seeding just avoids RNG drift
            module = self._make_module(self.feature_shape, self.num_classes).to(self.dtype)
        module.load_state_dict({key[len("module."):]: value for key, value in tensors.items()
                                if key.startswith("module.")})
        self.module = module.to(runtime.current_device())


def train_minibatches(
    model: TorchClassifier,
    optimizer: torch.optim.Optimizer,
    data: LabelledData,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
) -> None:
    """Plain shuffled-minibatch cross-entropy training, seeded by ``seed``."""
    device = next(model.module.parameters()).device
    features = data.features.to(device)
    labels = data.labels.to(device)
    shuffler = runtime.generator(seed)
    model.module.train()
    n = len(data)
    for _ in range(epochs):
        order = torch.randperm(n, generator=shuffler).to(device)
        for start in range(0, n, batch_size):
            batch = order[start : start + batch_size]
            loss = F.cross_entropy(model.logits(features[batch]), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.module.eval()
