"""Unlearnd's unlearning engine: data in, model and report out.

A plain library (no Celery, HTTP or database): load labelled data, fit a
model recipe ("adapter"), make it forget records with an exact, certified or
approximate method, and verify the result. See docs/unlearning.md.

The names below are loaded on first use (PEP 562), not at import: importing a torch-free
submodule (``placement``, ``options``) must not pull in PyTorch, so the API and the CLI can
use them without paying for it.
"""

from __future__ import annotations

import sys
from importlib import import_module
from types import ModuleType
from typing import Any

_HOMES = {
    "adapter_from_state": ".adapters", "available_adapters": ".adapters", "get_adapter": ".adapters",
    "LabelledData": ".data", "load_table": ".data", "split": ".data",
    "CertifiedBudgetExceeded": ".methods", "UnlearningReport": ".methods", "available_methods": ".methods",
    "unlearn": ".methods",
    "configure": ".runtime",
    "Thresholds": ".verify", "VerificationReport": ".verify", "verify": ".verify",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(home, __name__), name)
    globals()[name] = value
    return value


class _Package(ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        # Importing the submodule ``verify`` binds it on the package, over the public function
        # of the same name; the eager imports this replaces re-bound the function afterwards.
        if name == "verify" and isinstance(value, ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
