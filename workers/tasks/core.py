"""Plumbing tasks: the outbox relay and a round-trip probe."""

from __future__ import annotations

import os
import sys

from app.core import outbox
from app.core.queue import TaskName, get_celery

celery = get_celery()


@celery.task(name=TaskName.RELAY_OUTBOX, ignore_result=True)
def relay_outbox() -> int:
    """Hand to the broker whatever a crash or a broker outage left in the outbox."""
    return outbox.relay()


@celery.task(name=TaskName.PING)
def ping(value: str) -> dict[str, object]:
    """Round-trip probe: proves a real worker process consumed the queue, and reports the
    PyTorch thread count the worker process set up (None where torch is not loaded)."""
    # Only the engine wing imports torch; the worker process loaded it at start-up.
    torch = sys.modules.get("torch")
    return {"echo": value, "worker_pid": os.getpid(), "torch_threads": torch.get_num_threads() if torch else None}
