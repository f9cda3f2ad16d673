"""The demo a newcomer sees on ``unlearnd run``: the scikit-learn digits written to a
dataset file with synthetic subjects, registered, ingested, and two models trained on it
(a sharded SISA model and a certifiable logistic regression) through the normal job path.

Subjects are ``demo-subject-0`` ... ``demo-subject-99`` (identifier type ``user_id``), each
owning every hundredth record, so a deletion request for one of them touches ~18 records.
Every row names its source: every tenth row came from the synthetic vendor feed ``feed-a``
(~10%), the rest from ``feed-b``, so the walk-through can remove a whole source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import select

from app.core.database import session_scope
from app.jobs import service as jobs
from app.registry import service as registry
from app.registry.models import Dataset, DatasetStatus, RegisteredModel

DATASET_NAME = "digits"
SUBJECT_COUNT = 100
SOURCES = ("feed-a", "feed-b")
FEATURES = [f"pixel_{i:02d}" for i in range(64)]


def subject_id(index: int) -> str:
    return f"demo-subject-{index}"


def source_of(index: int) -> str:
    """Row ``index``'s feed: ``feed-a`` for every tenth row, ``feed-b`` otherwise."""
    return SOURCES[0] if index % 10 == 3 else SOURCES[1]


@dataclass(frozen=True)
class DemoModel:
    name: str
    adapter: str
    hyperparameters: dict[str, Any]
    policy: dict[str, Any] = field(default_factory=dict)


DEMO_MODELS = (
    DemoModel("digits-sisa", "sisa",
              {"base": "mlp", "base_params": {"hidden": [64], "epochs": 20}, "shards": 4, "slices": 2},
              {"default_method": "sisa", "batching_window_hours": 0.0}),
    DemoModel("digits-logreg", "logreg", {"l2": 1e-3},
              {"default_method": "newton", "batching_window_hours": 0.0}),
)


def write_digits(path: Path, *, limit: int | None = None) -> Path:
    """The bundled digits as Parquet: record key, subject id, source, label, 64 pixel columns."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rows = len(digits.target) if limit is None else min(limit, len(digits.target))
    columns: dict[str, Any] = {
        "record_key": [f"digit-{i:04d}" for i in range(rows)],
        "user_id": [subject_id(i % SUBJECT_COUNT) for i in range(rows)],
        "source": [source_of(i) for i in range(rows)],
        "label": digits.target[:rows].astype("int64"),
    }
    for i, name in enumerate(FEATURES):
        columns[name] = digits.data[:rows, i].astype("float64")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


DIGITS_SCHEMA = {"record_key": "record_key", "subject_column": "user_id", "identifier_type": "user_id",
                 "label": "label", "features": FEATURES, "source_column": "source"}


def install(*, actor: str = "demo", models: tuple[DemoModel, ...] = DEMO_MODELS, limit: int | None = None) -> list[str]:
    """Register and ingest the dataset and models (skipping what exists), queue their training;
    return the ids of the training jobs queued."""
    path = registry.data_root() / "demo" / "digits.parquet"
    with session_scope() as session:
        dataset = session.scalar(select(Dataset).where(Dataset.name == DATASET_NAME))
        if dataset is None:
            # Written only for a new registration: once rows were erased from the dataset's
            # file, writing the bundled digits again would put forgotten rows back on disk.
            if not path.exists():
                write_digits(path, limit=limit)
            dataset = registry.register_dataset(session, name=DATASET_NAME, uri=str(path), fmt="parquet",
                                                schema=DIGITS_SCHEMA, actor=actor)
        dataset_id = dataset.id
    # Ingest here rather than wait for a worker: the models below need a ready dataset.
    if registry.ingest_dataset(dataset_id).status != DatasetStatus.READY:
        raise RuntimeError("the demo dataset failed to ingest")
    queued = []
    with session_scope() as session:
        for demo in models:
            if session.scalar(select(RegisteredModel.id).where(RegisteredModel.name == demo.name)):
                continue
            registry.register_model(session, name=demo.name, adapter=demo.adapter,
                                    hyperparameters=demo.hyperparameters, dataset_name=DATASET_NAME,
                                    policy=demo.policy, actor=actor)
            queued.append(jobs.start_training(session, demo.name, actor=actor).id)
    return queued
