"""Audit tasks: sealing pending events into the chain, and the periodic signed tree head."""

from __future__ import annotations

from app.audit.service import seal_if_free
from app.audit.tree import sign_tree_head_if_grown
from app.core.database import session_scope
from app.core.queue import TaskName, get_celery

celery = get_celery()


@celery.task(name=TaskName.AUDIT_SIGN_TREE_HEAD, ignore_result=True)
def sign_tree_head() -> int | None:
    """Publish a signed head when the log grew; returns the size signed (None: nothing new)."""
    with session_scope() as session:
        head = sign_tree_head_if_grown(session)
        return head.tree_size if head else None


@celery.task(name=TaskName.AUDIT_SEAL, ignore_result=True)
def seal() -> int:
    """Chain what no after-commit sealer got to (its process died, or the lock was busy)."""
    return seal_if_free()
