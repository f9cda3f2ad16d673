"""Webhook delivery: woken after commits that sealed audit events, and swept by beat."""

from __future__ import annotations

# Its status callbacks are queued at the start of each dispatch round (dispatch.add_producer).
import app.drp.status  # noqa: F401

# Importing the service registers its after-commit wake-up: state changes this worker commits
# (jobs finishing, purges) are then delivered at once rather than at the next sweep.
import app.webhooks.service  # noqa: F401
from app.core.queue import TaskName, get_celery
from app.webhooks import dispatch as webhook_dispatch

celery = get_celery()


@celery.task(name=TaskName.WEBHOOKS_DISPATCH, ignore_result=True)
def dispatch() -> int:
    """Fan out new audit events and send what is due; safe to run many at once."""
    return webhook_dispatch.dispatch()
