"""Adapter registry: built-ins plus third-party recipes from entry points.

A third-party package registers a class (or factory) taking the adapter's
hyper-parameters as keyword arguments:

    [project.entry-points."unlearnd.adapters"]
    gbm = "my_package.unlearnd:GBMAdapter"

It must implement :class:`~workers.unlearning.adapters.base.Adapter`; adding
``partial_fit`` and ``Params`` lets ``sisa`` wrap it, and subclassing
:class:`TorchClassifier` opens the approximate methods to it.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from ..serialization import unpack
from .base import Adapter, AdapterError, BaseAdapter, TorchClassifier
from .cnn import CNNAdapter, CNNParams
from .logreg import LogRegAdapter, LogRegParams
from .mlp import MLPAdapter, MLPParams
from .sisa import SisaAdapter, SisaParams

ENTRY_POINT_GROUP = "unlearnd.adapters"

BUILTINS: dict[str, type] = {
    adapter.name: adapter for adapter in (MLPAdapter, LogRegAdapter, CNNAdapter, SisaAdapter)
}


def _plugins() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in BUILTINS}


def available_adapters() -> list[str]:
    return sorted({*BUILTINS, *_plugins()})


def adapter_type(name: str) -> Any:
    """The class (or factory) registered under ``name``; built-ins win over plugins."""
    if name in BUILTINS:
        return BUILTINS[name]
    plugin = _plugins().get(name)
    if plugin is None:
        raise AdapterError(f"unknown adapter {name!r}; available: {available_adapters()}")
    return plugin.load()


def get_adapter(name: str, **hyperparameters: Any) -> Adapter:
    """A new, unfitted adapter of the named recipe."""
    return adapter_type(name)(**hyperparameters)


def adapter_from_state(raw: bytes) -> Adapter:
    """Rebuild a fitted adapter from :meth:`Adapter.state_bytes` output."""
    header = unpack(raw).header
    adapter = get_adapter(header["adapter"], **header["hyperparameters"])
    return adapter.load_state_bytes(raw)


__all__ = [
    "Adapter", "AdapterError", "BaseAdapter", "TorchClassifier", "ENTRY_POINT_GROUP",
    "CNNAdapter", "CNNParams", "LogRegAdapter", "LogRegParams", "MLPAdapter", "MLPParams",
    "SisaAdapter", "SisaParams", "adapter_from_state", "adapter_type", "available_adapters",
    "get_adapter",
]
