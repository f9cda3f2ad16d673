"""Certificate tasks: issue on completion (enqueued through the outbox) and a sweep that
catches any completed request still without one."""

from __future__ import annotations

from app.certificates.service import issue_certificate, requests_missing_certificates, waits_for_erasure
from app.core.database import session_scope
from app.core.queue import TaskName, get_celery

celery = get_celery()


@celery.task(name=TaskName.ISSUE_CERTIFICATE, ignore_result=True)
def issue(request_id: str | None = None, request_ids: list[str] | None = None) -> list[str]:
    """Idempotent: a second delivery returns the certificate the first one issued. One message
    may carry many requests (a bulk intake's, or the outbox relay's merge of several); each is
    issued in a transaction of its own. A request whose dataset file is being rewritten waits:
    the erasure sends this task again when done."""
    issued = []
    for one in [*([request_id] if request_id else []), *(request_ids or [])]:
        with session_scope() as session:
            if waits_for_erasure(session, one):
                continue
            issued.append(issue_certificate(session, one).id)
    return issued


@celery.task(name=TaskName.ISSUE_MISSING_CERTIFICATES, ignore_result=True)
def issue_missing(limit: int = 100) -> int:
    with session_scope() as session:
        pending = requests_missing_certificates(session, limit=limit)
    for request_id in pending:
        with session_scope() as session:
            if not waits_for_erasure(session, request_id):
                issue_certificate(session, request_id)
    return len(pending)
