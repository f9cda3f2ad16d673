"""Webhook delivery: woken after commits that sealed audit events, and swept by beat."""

from __future__ import annotations

from app.core.queue import TaskName, get_celery
from app.webhooks import dispatch as webhook_dispatch

celery = get_celery()


@celery.task(name=TaskName.WEBHOOKS_DISPATCH, ignore_result=True)
def dispatch() -> int:
    """Fan out new audit events and send what is due; safe to run many at once."""
    return webhook_dispatch.dispatch()
