"""Unlearnd's unlearning engine: data in, model and report out.

A plain library (no Celery, HTTP or database): load labelled data, fit a
model recipe ("adapter"), make it forget records with an exact, certified or
approximate method, and verify the result. See docs/unlearning.md.
"""

from .adapters import adapter_from_state, available_adapters, get_adapter
from .data import LabelledData, load_table, split
from .methods import CertifiedBudgetExceeded, UnlearningReport, available_methods, unlearn
from .runtime import configure
from .verify import Thresholds, VerificationReport, verify

__all__ = [
    "CertifiedBudgetExceeded", "LabelledData", "Thresholds", "UnlearningReport",
    "VerificationReport", "adapter_from_state", "available_adapters", "available_methods",
    "configure", "get_adapter", "load_table", "split", "unlearn", "verify",
]
