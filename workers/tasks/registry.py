"""Registry tasks: dataset ingestion, and erasing forgotten rows from dataset files."""

from __future__ import annotations

from app.core.queue import TaskName, get_celery
from app.jobs.lifecycle import dataset_files_in_use
from app.registry import service
from app.registry.erasure import ErasureBusy

celery = get_celery()


@celery.task(name=TaskName.INGEST_DATASET, ignore_result=True)
def ingest_dataset(dataset_id: str) -> None:
    """Idempotent: a ready dataset is left alone, a half-done one starts over."""
    service.ingest_dataset(dataset_id)


@celery.task(name=TaskName.ERASE_DATASET_ROWS, ignore_result=True, bind=True, max_retries=None)
def erase_dataset_rows(self, erasure_id: str) -> None:  # noqa: ANN001 - the bound task
    """Idempotent: the new file is content-addressed and the swap checks what it replaces."""
    try:
        service.erase_dataset_rows(erasure_id, dataset_files_in_use)
    except ErasureBusy as exc:
        raise self.retry(countdown=5) from exc
