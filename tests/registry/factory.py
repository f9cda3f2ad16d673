"""Builders for registry tests: dataset files under the data root, ingested datasets, versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

SCHEMA = {
    "record_key": "id",
    "subject_column": "email",
    "identifier_type": "email",
    "label": "label",
    "features": ["f1", "f2"],
}


def rows(n: int, *, subjects: int | None = None) -> dict[str, list[Any]]:
    subjects = subjects or n
    return {
        "id": [f"r{i:05d}" for i in range(n)],
        "email": [f"Person{i % subjects}@Example.org" for i in range(n)],
        "label": [i % 2 for i in range(n)],
        "f1": [float(i) / 7 for i in range(n)],
        "f2": [i * 3 for i in range(n)],
    }


def data_root() -> Path:
    from app.registry.service import data_root as root

    path = root()
    path.mkdir(parents=True, exist_ok=True)
    return path


def write(columns: dict[str, list[Any]], fmt: str, name: str = "data") -> Path:
    target = data_root() / f"{name}.{fmt}"
    table = pa.table(columns)
    if fmt == "parquet":
        pq.write_table(table, target, row_group_size=max(1, table.num_rows // 3 or 1))
    elif fmt == "csv":
        pacsv.write_csv(table, target)
    else:
        np.savez(target, **{k: np.asarray(v) for k, v in columns.items()})
    return target


def ingested(name: str, columns: dict[str, list[Any]], fmt: str = "parquet", schema: dict | None = None):
    """Register and ingest a dataset synchronously (the Celery task calls the same function)."""
    from app.core.database import session_scope
    from app.registry import service

    path = write(columns, fmt, name)
    with session_scope() as session:
        dataset = service.register_dataset(
            session, name=name, uri=path.name, fmt=fmt, schema=schema or SCHEMA, actor="test"
        )
        dataset_id = dataset.id
    return service.ingest_dataset(dataset_id)


def model_with_versions(dataset_name: str, model_name: str, excluded_keys: list[list[str]]):
    """One model; version i trains on the dataset less ``excluded_keys[i]``, parent = version i-1."""
    from app.core.database import session_scope
    from app.registry import artifacts, service
    from app.registry.schemas import ArtifactSpec

    with session_scope() as session:
        dataset = service.get_dataset(session, dataset_name)
        model = service.register_model(
            session, name=model_name, adapter="logreg", hyperparameters={"c": 1.0},
            dataset_name=dataset_name, policy={"default_method": "retrain"}, actor="test",
        )
        parent = None
        for i, excluded in enumerate(excluded_keys):
            ids = service.record_ids_for_keys(session, dataset, excluded).values()
            snapshot = service.create_snapshot(session, dataset.id, exclude_record_ids=ids)
            uri, digest = artifacts.put_bytes(f"{model_name}-weights-{i}".encode())
            parent = service.add_version(
                session, model=model, snapshot=snapshot, parent=parent,
                artifacts=[ArtifactSpec(uri=uri, sha256=digest)], actor="test",
            )
        return model.id
