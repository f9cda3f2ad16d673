"""One way to build a settings dataclass (hyper-parameters, method config, thresholds) from a
mapping: unknown keys are named, with the known ones, instead of a bare TypeError."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


def from_mapping(settings_type: type, values: Mapping[str, Any], error: type[Exception], what: str) -> Any:
    known = {f.name for f in dataclasses.fields(settings_type)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise error(f"unknown {what}(s) {unknown} for {settings_type.__name__}; known: {sorted(known)}")
    return settings_type(**values)
