"""One entry point for every unlearning method.

``unlearn(method_name, model, retain, forget, heldout, config)`` returns a new
model (the input is left untouched, so the caller can still verify against it)
and an :class:`UnlearningReport`. ``config`` is the method's config dataclass,
a plain mapping of its fields, or None for the defaults.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..data import LabelledData
from .approximate import (
    FinetuneConfig,
    NegGradPlusConfig,
    SalunConfig,
    ScrubConfig,
    finetune,
    neggrad_plus,
    salun,
    scrub,
)
from .base import (
    CertifiedBudgetExceeded,
    UnlearningError,
    UnlearningReport,
    UnsupportedModel,
    make_config,
)
from .exact import RetrainConfig, SisaConfig, retrain, sisa
from .newton import NewtonConfig, newton


@dataclass(frozen=True)
class MethodSpec:
    run: Callable[..., tuple[Any, dict[str, Any]]]
    config: type
    exact: bool
    # Whether forgetting a whole class brings accuracy on it to chance (tested).
    # newton does not claim it: removing a class moves the optimum too far for
    # one Newton step, and its residual bound refuses such requests anyway.
    forgets_classes: bool
    # What a result of this method can claim: "exact" (the retained data's own fit, proven by
    # lineage), "certified" (an (eps, delta) removal bound) or "approximate" (only as good as
    # the evidence gathered for it).
    guarantee: str = "approximate"


EXACT, CERTIFIED, APPROXIMATE = "exact", "certified", "approximate"
GUARANTEES = (EXACT, CERTIFIED, APPROXIMATE)  # strongest first

METHODS: dict[str, MethodSpec] = {
    "retrain": MethodSpec(retrain, RetrainConfig, exact=True, forgets_classes=True, guarantee=EXACT),
    "sisa": MethodSpec(sisa, SisaConfig, exact=True, forgets_classes=True, guarantee=EXACT),
    "newton": MethodSpec(newton, NewtonConfig, exact=False, forgets_classes=False, guarantee=CERTIFIED),
    "finetune": MethodSpec(finetune, FinetuneConfig, exact=False, forgets_classes=False),
    "neggrad_plus": MethodSpec(neggrad_plus, NegGradPlusConfig, exact=False, forgets_classes=True),
    "scrub": MethodSpec(scrub, ScrubConfig, exact=False, forgets_classes=True),
    "salun": MethodSpec(salun, SalunConfig, exact=False, forgets_classes=True),
}


def available_methods() -> list[str]:
    return sorted(METHODS)


def unlearn(
    method_name: str,
    model: Any,
    retain: LabelledData,
    forget: LabelledData,
    heldout: LabelledData,
    config: Any = None,
) -> tuple[Any, UnlearningReport]:
    """Make ``model`` forget ``forget``; ``retain`` is everything it keeps.

    ``heldout`` holds records the model never trained on; approximate methods
    calibrate on it, so give them a different held-out part than ``verify``.
    Raises :class:`UnsupportedModel` when the method does not fit the adapter and
    :class:`CertifiedBudgetExceeded` when ``newton`` must hand over to an exact method.
    """
    spec = METHODS.get(method_name)
    if spec is None:
        raise UnlearningError(f"unknown method {method_name!r}; available: {available_methods()}")
    settings = make_config(spec.config, config)
    overlap = set(retain.keys).intersection(forget.keys)
    if overlap:
        raise UnlearningError(f"{len(overlap)} record(s) are in both retain and forget")
    started = time.perf_counter()
    unlearned, details = spec.run(model, retain, forget, heldout, settings)
    seconds = time.perf_counter() - started
    return unlearned, UnlearningReport(
        method=method_name,
        exact=spec.exact,
        seconds=seconds,
        retain_size=len(retain),
        forget_size=len(forget),
        details=details,
    )


__all__ = [
    "APPROXIMATE", "CERTIFIED", "EXACT", "GUARANTEES", "METHODS", "CertifiedBudgetExceeded", "FinetuneConfig",
    "MethodSpec", "NegGradPlusConfig",
    "NewtonConfig", "RetrainConfig", "SalunConfig", "ScrubConfig", "SisaConfig",
    "UnlearningError", "UnlearningReport", "UnsupportedModel", "available_methods", "unlearn",
]
