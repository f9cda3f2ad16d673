"""Registry tasks: dataset ingestion."""

from __future__ import annotations

from app.core.queue import TaskName, get_celery
from app.registry import service

celery = get_celery()


@celery.task(name=TaskName.INGEST_DATASET, ignore_result=True)
def ingest_dataset(dataset_id: str) -> None:
    """Idempotent: a ready dataset is left alone, a half-done one starts over."""
    service.ingest_dataset(dataset_id)
