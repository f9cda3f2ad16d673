"""Entry point for ``celery -A workers.celery_app``."""

from __future__ import annotations

from celery.signals import setup_logging, worker_process_init

from app.core.config import get_settings
from app.core.logging import configure_logging
from app.core.queue import get_celery

app = celery = get_celery()


@setup_logging.connect
def _setup_logging(**_: object) -> None:
    # Celery's own records (task received/succeeded/failed) go through the same JSON handler.
    configure_logging(get_settings().log_level)


@worker_process_init.connect
def _init_worker_process(**_: object) -> None:
    # A forked child must not reuse the parent's pooled database connections.
    from app.core.database import get_engine

    get_engine().dispose(close=False)
    import torch

    torch.set_num_threads(get_settings().torch_threads)
