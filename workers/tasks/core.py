"""Plumbing tasks: the outbox relay and a round-trip probe."""

from __future__ import annotations

import os

from app.core import outbox
from app.core.queue import TaskName, get_celery

celery = get_celery()


@celery.task(name=TaskName.RELAY_OUTBOX, ignore_result=True)
def relay_outbox() -> int:
    """Hand to the broker whatever a crash or a broker outage left in the outbox."""
    return outbox.relay()


@celery.task(name=TaskName.PING)
def ping(value: str) -> dict[str, object]:
    """Round-trip probe: proves a real worker process consumed the queue."""
    return {"echo": value, "worker_pid": os.getpid()}
