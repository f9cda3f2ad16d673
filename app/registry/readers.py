"""Streaming readers for dataset files: Parquet, CSV and NPZ, one bounded batch at a time.

Each reader checks the declared columns against the file before yielding any row and
turns every format into the same ``RowBatch`` so that content hashes do not depend on
the file format: features are always float64, keys always strings.
"""

from __future__ import annotations

import csv
import hashlib
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from app.registry.schemas import DatasetColumns, DatasetFormat

BATCH_ROWS = 50_000


class DatasetFileError(ValueError):
    """The file cannot be ingested as declared; the message is stored on the dataset."""


@dataclass
class RowBatch:
    keys: list[Any]
    subjects: list[Any] | None
    labels: list[Any] | None
    features: list[list[float]] | None
    images: list[dict[str, Any]] | None
    # Fraction of the file consumed once this batch is written.
    progress: float

    # The source column's values (None when the dataset has no source column).
    sources: list[Any] | None = None

    def __len__(self) -> int:
        return len(self.keys)


def read_batches(handle: IO[bytes], fmt: DatasetFormat, columns: DatasetColumns, size: int) -> Iterator[RowBatch]:
    if fmt is DatasetFormat.PARQUET:
        return _parquet(handle, columns)
    if fmt is DatasetFormat.CSV:
        return _csv(handle, columns, size)
    return _npz(handle, columns)


def _require(present: list[str], wanted: list[str]) -> None:
    missing = [c for c in wanted if c not in present]
    if missing:
        raise DatasetFileError(f"missing column(s): {', '.join(missing)}")


def _check_numeric(table_schema: pa.Schema, columns: DatasetColumns) -> None:
    for name in columns.features:
        kind = table_schema.field(name).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
            raise DatasetFileError(f"feature column '{name}' is not numeric ({kind})")


def _from_arrow(batch: pa.RecordBatch, columns: DatasetColumns, progress: float) -> RowBatch:
    key_column = batch.column(columns.record_key)
    if key_column.null_count:
        raise DatasetFileError(f"record key column '{columns.record_key}' has empty values")
    keys = pc.cast(key_column, pa.string()).to_pylist()
    subjects = None
    if columns.subject_column:
        subjects = pc.cast(batch.column(columns.subject_column), pa.string()).to_pylist()
    labels = batch.column(columns.label).to_pylist() if columns.label else None
    features = None
    if columns.features:
        matrix = np.column_stack(
            [
                pc.cast(batch.column(name), pa.float64()).to_numpy(zero_copy_only=False)
                for name in columns.features
            ]
        )
        features = matrix.tolist()
    sources = pc.cast(batch.column(columns.source_column), pa.string()).to_pylist() if columns.source_column else None
    return RowBatch(keys, subjects, labels, features, None, progress, sources)


def _parquet(handle: IO[bytes], columns: DatasetColumns) -> Iterator[RowBatch]:
    try:
        parquet = pq.ParquetFile(handle)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetFileError(f"unreadable Parquet file: {exc}") from None
    schema = parquet.schema_arrow
    _require(schema.names, columns.columns())
    if columns.image:
        raise DatasetFileError("an image array is only supported in NPZ datasets")
    _check_numeric(schema, columns)
    total = max(parquet.metadata.num_rows, 1)
    done = 0
    try:
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns.columns()):
            done += batch.num_rows
            yield _from_arrow(batch, columns, done / total)
    except pa.ArrowException as exc:
        raise DatasetFileError(f"unreadable Parquet file: {exc}") from None


def _csv(handle: IO[bytes], columns: DatasetColumns, size: int) -> Iterator[RowBatch]:
    head = handle.read(64 * 1024)
    handle.seek(0)
    try:
        header = next(csv.reader(io.StringIO(head.decode("utf-8").splitlines()[0] if head else "")))
    except (UnicodeDecodeError, StopIteration, IndexError, csv.Error):
        raise DatasetFileError("unreadable CSV file: no UTF-8 header line") from None
    _require(header, columns.columns())
    if columns.image:
        raise DatasetFileError("an image array is only supported in NPZ datasets")
    types: dict[str, pa.DataType] = {columns.record_key: pa.string()}
    if columns.subject_column:
        types[columns.subject_column] = pa.string()
    if columns.source_column:
        types[columns.source_column] = pa.string()
    types.update({name: pa.float64() for name in columns.features})
    try:
        reader = pacsv.open_csv(
            handle,
            read_options=pacsv.ReadOptions(block_size=4 << 20),
            convert_options=pacsv.ConvertOptions(
                include_columns=columns.columns(), column_types=types, strings_can_be_null=True
            ),
        )
        for batch in reader:
            yield _from_arrow(batch, columns, min(handle.tell() / max(size, 1), 1.0))
    except pa.ArrowInvalid as exc:
        message = str(exc)
        bad = next((n for n in columns.features if f"'{n}'" in message or f"column #{header.index(n)}" in message), None)
        if bad is not None or "conversion error to double" in message:
            raise DatasetFileError(f"feature column '{bad or '?'}' is not numeric: {message}") from None
        raise DatasetFileError(f"unreadable CSV file: {message}") from None


class _NpyStream:
    """One array inside an NPZ, read row block by row block without loading it whole."""

    def __init__(self, archive: zipfile.ZipFile, name: str) -> None:
        self.name = name
        self.handle = archive.open(f"{name}.npy")
        try:
            version = np.lib.format.read_magic(self.handle)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(self.handle)
        except ValueError as exc:
            raise DatasetFileError(f"array '{name}' is not a valid .npy member: {exc}") from None
        if dtype.hasobject:
            raise DatasetFileError(f"array '{name}' holds Python objects; only plain arrays are read")
        if fortran and len(shape) > 1:
            raise DatasetFileError(f"array '{name}' is Fortran-ordered; save it C-ordered")
        if not shape:
            raise DatasetFileError(f"array '{name}' is a scalar, not one value per record")
        self.shape, self.dtype = shape, dtype
        self.row_shape = shape[1:]
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * dtype.itemsize

    def take(self, rows: int) -> np.ndarray:
        data = self.handle.read(rows * self.row_bytes)
        if len(data) != rows * self.row_bytes:
            raise DatasetFileError(f"array '{self.name}' is truncated")
        return np.frombuffer(data, dtype=self.dtype).reshape((rows, *self.row_shape))


def _npz(handle: IO[bytes], columns: DatasetColumns) -> Iterator[RowBatch]:
    try:
        archive = zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetFileError(f"unreadable NPZ file: {exc}") from None
    with archive:
        present = [n.removesuffix(".npy") for n in archive.namelist()]
        _require(present, columns.columns())
        streams = {name: _NpyStream(archive, name) for name in columns.columns()}
        lengths = {s.shape[0] for s in streams.values()}
        if len(lengths) != 1:
            raise DatasetFileError("arrays disagree on the number of records")
        for name in columns.features:
            stream = streams[name]
            if stream.row_shape or stream.dtype.kind not in "iufb":
                raise DatasetFileError(f"feature array '{name}' is not a numeric 1-D array")
        if columns.image and streams[columns.image].dtype.kind not in "iufb":
            raise DatasetFileError(f"image array '{columns.image}' is not numeric")
        total = lengths.pop()
        done = 0
        try:
            while done < total:
                rows = min(BATCH_ROWS, total - done)
                block = {name: stream.take(rows) for name, stream in streams.items()}
                done += rows
                yield _npz_batch(block, columns, done / max(total, 1))
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise DatasetFileError(f"unreadable NPZ file: {exc}") from None


def _npz_batch(block: dict[str, np.ndarray], columns: DatasetColumns, progress: float) -> RowBatch:
    keys = block[columns.record_key].astype(str).tolist()
    subjects = block[columns.subject_column].astype(str).tolist() if columns.subject_column else None
    labels = block[columns.label].tolist() if columns.label else None
    features = None
    if columns.features:
        features = np.column_stack([block[n].astype(np.float64) for n in columns.features]).tolist()
    images = None
    if columns.image:
        pixels = np.ascontiguousarray(block[columns.image])
        shape, dtype = list(pixels.shape[1:]), pixels.dtype.str
        images = [
            {"dtype": dtype, "shape": shape, "sha256": hashlib.sha256(row.tobytes()).hexdigest()}
            for row in pixels
        ]
    sources = block[columns.source_column].astype(str).tolist() if columns.source_column else None
    return RowBatch(keys, subjects, labels, features, images, progress, sources)
