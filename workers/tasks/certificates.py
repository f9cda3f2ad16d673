"""Certificate tasks: issue on completion (enqueued through the outbox) and a sweep that
catches any completed request still without one. Both issue in batches
(``issue_certificates``): one tree head and one chain append for many certificates."""

from __future__ import annotations

import logging

from app.certificates.service import (
    ISSUE_BATCH,
    certificate_ids_of,
    issue_certificates,
    order_batch,
    requests_missing_certificates,
)
from app.core.database import session_scope
from app.core.queue import TaskName, get_celery

celery = get_celery()
log = logging.getLogger("unlearnd.certificates")


@celery.task(name=TaskName.ISSUE_CERTIFICATE, ignore_result=True)
def issue(request_id: str | None = None, request_ids: list[str] | None = None) -> list[str]:
    """Idempotent: a second delivery returns the certificate the first one issued. One message
    may carry many requests (a bulk intake's, or the outbox relay's merge of several); they are
    issued in batches of ``ISSUE_BATCH``, each filled up with the completed requests after them
    that still lack one (``order_batch``: the requests the same job completed, then the next
    completions), whose own orders then find them issued. A request whose dataset file is
    being rewritten waits: the erasure sends this task again when done. Returns the named
    requests' certificate ids (those waiting left out)."""
    named = list(dict.fromkeys([*([request_id] if request_id else []), *(request_ids or [])]))
    issued: list[str] = []
    for start in range(0, len(named), ISSUE_BATCH):
        chunk = named[start : start + ISSUE_BATCH]
        try:
            known = _issue_chunk(chunk, along=True)
        except Exception:
            # A request taken along that cannot be certified must not hold back this order's
            # own: they are issued alone, and the failure stays the sweep's to meet again.
            log.warning("certificate batch failed; issuing the order's own requests alone", exc_info=True,
                        extra={"requests": len(chunk)})
            known = _issue_chunk(chunk, along=False)
        issued += [known[one] for one in chunk if one in known]
    return issued


def _issue_chunk(chunk: list[str], *, along: bool) -> dict[str, str]:
    with session_scope() as session:
        known = certificate_ids_of(session, chunk)  # usually: issued with an earlier order's batch
        todo = [one for one in chunk if one not in known]
        batch = order_batch(session, todo, along=along) if todo else []
        if batch:
            known.update({c.request_id: c.id for c in issue_certificates(session, batch)})
    return known


@celery.task(name=TaskName.ISSUE_MISSING_CERTIFICATES, ignore_result=True)
def issue_missing(limit: int = 100) -> int:
    with session_scope() as session:
        pending = requests_missing_certificates(session, limit=limit)
    for start in range(0, len(pending), ISSUE_BATCH):
        with session_scope() as session:
            issue_certificates(session, pending[start : start + ISSUE_BATCH])
    return len(pending)
