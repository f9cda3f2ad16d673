"""Labelled training data as tensors, loaded from Parquet, CSV or NPZ.

Everything downstream (adapters, methods, verification) speaks
:class:`LabelledData`: a float32 feature tensor, int64 labels and the caller's
record keys, row-aligned. Record keys are what deletion requests name, so every
selection here is by key, never by row position.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import torch

from .placement import is_held_out

FORMATS = ("parquet", "csv", "npz")


class DataError(ValueError):
    """The table cannot be turned into labelled training data."""


@dataclass(frozen=True, eq=False)
class LabelledData:
    features: torch.Tensor  # float32, shape (n, *feature_shape)
    labels: torch.Tensor  # int64, shape (n,)
    keys: tuple[str, ...]
    _fingerprint: list[str] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", tuple(str(key) for key in self.keys))
        if self.features.dtype != torch.float32:
            raise DataError(f"features must be float32, got {self.features.dtype}")
        if self.labels.dtype != torch.int64 or self.labels.ndim != 1:
            raise DataError("labels must be a 1-D int64 tensor")
        n = len(self.keys)
        if self.features.shape[0] != n or self.labels.shape[0] != n:
            raise DataError(
                f"row counts disagree: {self.features.shape[0]} feature rows, "
                f"{self.labels.shape[0]} labels, {n} keys"
            )

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.features.shape[1:])

    def take(self, index: torch.Tensor | Sequence[int]) -> LabelledData:
        """Rows by position (bool mask or integer index), keeping their order."""
        index = torch.as_tensor(index)
        if index.dtype == torch.bool:
            index = index.nonzero().flatten()
        positions = index.tolist()
        return LabelledData(
            self.features[index], self.labels[index], tuple(self.keys[i] for i in positions)
        )

    def mask(self, keys: Iterable[str]) -> torch.Tensor:
        wanted = {str(key) for key in keys}
        return torch.tensor([key in wanted for key in self.keys], dtype=torch.bool)

    def select(self, keys: Iterable[str]) -> LabelledData:
        return self.take(self.mask(keys))

    def without(self, keys: Iterable[str]) -> LabelledData:
        return self.take(~self.mask(keys))

    def fingerprint(self) -> str:
        """sha256 over keys, labels and feature bytes: identifies the exact inputs."""
        if not self._fingerprint:
            digest = hashlib.sha256()
            digest.update(json.dumps(self.keys).encode())
            digest.update(self.labels.numpy().astype("<i8").tobytes())
            digest.update(self.features.contiguous().numpy().astype("<f4").tobytes())
            digest.update(json.dumps(self.feature_shape).encode())
            self._fingerprint.append(digest.hexdigest())
        return self._fingerprint[0]


def from_arrays(features, labels, keys: Sequence[object] | None = None) -> LabelledData:
    """Wrap in-memory arrays; keys default to the row number as text."""
    features = np.asarray(features)
    labels = np.asarray(labels)
    keys = [str(i) for i in range(len(labels))] if keys is None else [str(k) for k in keys]
    return _build(features, labels, keys, source="arrays")


def load_table(
    source: str | Path | IO[bytes],
    fmt: str,
    *,
    key_column: str,
    label_column: str,
    feature_columns: Sequence[str] | None = None,
    array_field: str | None = None,
) -> LabelledData:
    """Read a registered training file into :class:`LabelledData`.

    ``source`` is a path or an open binary file (the registry opens object-store URLs with
    fsspec and hands the handle here). ``fmt`` is ``parquet``, ``csv`` or ``npz``. Features come from
    ``array_field`` (one column, or NPZ array, holding a fixed-shape array per
    row, e.g. an 8x8 image) or from ``feature_columns`` (scalar columns, in the
    given order); when both are omitted every column other than the key and
    label is used, in sorted-name order so the result does not depend on how
    the file happened to order its columns. Labels must already be integer
    class ids: mapping strings to ids would renumber classes whenever one class
    is deleted, silently changing what a model's outputs mean.
    """
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    if feature_columns is not None and array_field is not None:
        raise DataError("give feature_columns or array_field, not both")
    if isinstance(source, str | Path):
        source = Path(source)
        if not source.exists():
            raise DataError(f"no such file: {source}")
        name = source.name
    else:
        name = Path(str(getattr(source, "path", None) or getattr(source, "name", None) or "dataset")).name
    columns = _read_npz(source) if fmt == "npz" else _read_frame(source, fmt, key_column)
    for required in (key_column, label_column):
        if required not in columns:
            raise DataError(f"{name}: missing column {required!r}")
    keys = [str(key) for key in np.asarray(columns[key_column]).tolist()]
    labels = np.asarray(columns[label_column])
    if array_field is not None:
        if array_field not in columns:
            raise DataError(f"{name}: missing array field {array_field!r}")
        features = _stack_cells(columns[array_field], array_field)
    else:
        names = list(feature_columns) if feature_columns is not None else sorted(
            name for name in columns if name not in (key_column, label_column)
        )
        missing = [name for name in names if name not in columns]
        if missing:
            raise DataError(f"{name}: missing feature columns {missing}")
        if not names:
            raise DataError(f"{name}: no feature columns")
        if feature_columns is None and len(names) == 1 and np.asarray(columns[names[0]]).ndim > 1:
            features = np.asarray(columns[names[0]])  # an NPZ holding one feature array
        else:
            features = np.stack([_numeric(columns[name], name) for name in names], axis=1)
    return _build(features, labels, keys, source=name)


def split(
    data: LabelledData,
    forget_keys: Iterable[str],
    heldout_fraction: float,
    seed: int,
    *,
    strict: bool = True,
) -> tuple[LabelledData, LabelledData, LabelledData]:
    """Split into (retain, forget, heldout).

    A record is held out when a keyed hash of (seed, record key) falls below
    ``heldout_fraction``. The decision depends on the key alone, not on which
    other rows exist, so the held-out set chosen when a model was first trained
    is the same one chosen at every later deletion: held-out rows were never
    trained on, which is what makes them valid non-members for the
    membership-inference test. Forgotten keys are never held out. Row order
    within each part follows ``data``. With ``strict``, forget keys absent from
    ``data`` are an error (a lineage mismatch the caller must hear about).
    """
    if not 0.0 <= heldout_fraction < 1.0:
        raise DataError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    forget_keys = {str(key) for key in forget_keys}
    if strict:
        unknown = forget_keys.difference(data.keys)
        if unknown:
            raise DataError(f"{len(unknown)} forget key(s) not in the data, e.g. {min(unknown)!r}")
    forget_mask = data.mask(forget_keys)
    heldout_mask = torch.tensor(
        [is_held_out(key, heldout_fraction, seed) for key in data.keys], dtype=torch.bool
    )
    heldout_mask &= ~forget_mask
    retain_mask = ~(forget_mask | heldout_mask)
    return data.take(retain_mask), data.take(forget_mask), data.take(heldout_mask)


def _build(features: np.ndarray, labels: np.ndarray, keys: list[str], source: str) -> LabelledData:
    if features.dtype == object:
        raise DataError(f"{source}: features are not numeric")
    features = np.asarray(features, dtype=np.float64)
    if not np.isfinite(features).all():
        raise DataError(f"{source}: features contain NaN or infinity")
    if labels.dtype.kind == "f":
        if not np.isfinite(labels).all() or not np.all(labels == np.round(labels)):
            raise DataError(f"{source}: labels must be integer class ids")
        labels = labels.astype(np.int64)
    elif labels.dtype.kind not in "iu":
        raise DataError(f"{source}: labels must be integer class ids, got {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise DataError(f"{source}: labels must be >= 0")
    if len(set(keys)) != len(keys):
        raise DataError(f"{source}: record keys are not unique")
    return LabelledData(
        torch.from_numpy(np.array(features, dtype=np.float32, order="C")),
        torch.from_numpy(np.array(labels, dtype=np.int64, order="C")),
        tuple(keys),
    )


def _numeric(column, name: str) -> np.ndarray:
    array = np.asarray(column)
    if array.ndim != 1 or array.dtype.kind not in "biuf":
        raise DataError(f"feature column {name!r} is not a numeric scalar column")
    return array.astype(np.float64)


def _stack_cells(column, name: str) -> np.ndarray:
    array = np.asarray(column)
    if array.dtype != object and array.ndim >= 2:
        return array
    cells = []
    for cell in array.tolist() if isinstance(array, np.ndarray) else list(column):
        if isinstance(cell, str):
            cell = json.loads(cell)  # CSV stores an array cell as JSON text
        cells.append(np.asarray(cell, dtype=np.float64))
    shapes = {cell.shape for cell in cells}
    if len(shapes) > 1:
        raise DataError(f"array field {name!r} has rows of different shapes: {sorted(shapes)[:3]}")
    return np.stack(cells) if cells else np.zeros((0,), dtype=np.float64)


def _read_npz(source: Path | IO[bytes]) -> dict[str, np.ndarray]:
    with np.load(source, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def _read_frame(source: Path | IO[bytes], fmt: str, key_column: str) -> dict[str, object]:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(source)
        return {name: _arrow_column(table.column(name)) for name in table.column_names}
    import pandas as pd

    # Keys stay text: "007" must not become the integer 7.
    frame = pd.read_csv(source, dtype={key_column: str}, keep_default_na=False, na_values=[""])
    return {name: frame[name].to_numpy() for name in frame.columns}


def _arrow_column(column):
    import pyarrow as pa

    kind = column.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return column.to_pylist()
    return column.to_numpy()
