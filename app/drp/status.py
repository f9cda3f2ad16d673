"""A deletion request's DRP Exercise Status (§3.03), and the §2.03 status callbacks that
follow its changes. Kept apart from ``service`` (signed intake) so the webhook worker can
load it without the web framework."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from app.core.config import get_settings
from app.drp.models import DrpCallback
from app.drp.schemas import ExerciseStatus
from app.requests import service as requests
from app.requests.models import DeletionRequest, RequestOutcome, RequestStatus
from app.webhooks import dispatch as webhook_dispatch
from app.webhooks import service as webhooks

DENIAL_REASONS = ("suspected_fraud", "insuf_verification", "no_match", "claim_not_covered",
                  "outside_jurisdiction", "too_many_requests", "other")
# §3.02 states after which nothing changes: no callback follows them.
FINAL_STATES = ("fulfilled", "denied", "revoked", "expired")
CALLBACK_EVENT = "drp.status"
CALLBACK_BATCH = 500
S = RequestStatus


def _last_reason(session: Session, request: DeletionRequest) -> str | None:
    steps = [s for s in requests.history(session, request.id) if s.to_status == request.status]
    return steps[-1].reason if steps else None


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment else None


def exercise_status(session: Session, request: DeletionRequest) -> dict[str, Any]:
    """The §3.03 Exercise Status object of a deletion request, with §3.02's states:

    received, pending_approval → open · scheduled, unlearning, verifying, failed (an operator
    retries) → in_progress · completed forgotten / already_forgotten → fulfilled (results_url:
    the certificate) · completed no_data_found → denied / no_match (certificate with the
    non-inclusion proof) · rejected → denied with the reason the admin's text starts with
    (``suspected_fraud: ...``), else ``other`` · cancelled → revoked."""
    status: dict[str, Any] = {"request_id": request.id, "received_at": _iso(request.received_at)}
    if request.external_ref:
        status["agent_request_id"] = request.external_ref
    certificate_url = f"{get_settings().public_url.rstrip('/')}/v1/deletion-requests/{request.id}/certificate"
    current = RequestStatus(request.status)
    if current in (S.RECEIVED, S.PENDING_APPROVAL):
        status.update(status="open", expected_by=_iso(request.due_at))
        if current is S.PENDING_APPROVAL:
            status["processing_details"] = "awaiting the business's approval"
    elif current in (S.SCHEDULED, S.UNLEARNING, S.VERIFYING, S.FAILED):
        details = {S.SCHEDULED: "scheduled for the next unlearning batch", S.UNLEARNING: "models are unlearning",
                   S.VERIFYING: "verifying that the models forgot",
                   S.FAILED: "an unlearning job failed; the operator retries it"}[current]
        status.update(status="in_progress", expected_by=_iso(request.due_at), processing_details=details)
        if request.extension_reason:
            status["processing_details"] += f"; deadline extended: {request.extension_reason}"
    elif current is S.COMPLETED:
        if request.outcome == RequestOutcome.NO_DATA_FOUND:
            status.update(status="denied", reason="no_match", results_url=certificate_url,
                          processing_details="no data of this person was found; the certificate proves it")
        else:
            status.update(status="fulfilled", results_url=certificate_url,
                          processing_details="deleted, and every model trained on the data has forgotten it")
    elif current is S.REJECTED:
        text = _last_reason(session, request) or ""
        code = text.split(":", 1)[0].strip()
        status.update(status="denied", reason=code if code in DENIAL_REASONS else "other", processing_details=text)
    elif current is S.CANCELLED:
        status["status"] = "revoked"
    return status


def queue_status_callbacks(session: Session) -> int:
    """§2.03: for each request with a callback whose DRP status moved since the last one queued,
    queue its Exercise Status (the body §2.02 answers) as a webhooks-room delivery, POSTed to
    the agent's URL with that room's retries and log. Runs at the start of every webhook
    dispatch round (woken by the audit event every state change writes, and swept by beat);
    a status passed through between two rounds is not called back, the one after it is."""
    query = (select(DrpCallback)
             .where(or_(DrpCallback.last_status.is_(None), DrpCallback.last_status.not_in(FINAL_STATES)))
             .order_by(DrpCallback.created_at).limit(CALLBACK_BATCH))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    queued = 0
    for callback in session.scalars(query).all():
        status = exercise_status(session, requests.get_request(session, callback.request_id))
        if status["status"] == callback.last_status:
            continue
        body = ExerciseStatus.model_validate(status).model_dump(exclude_none=True)
        webhooks.enqueue_callback(session, callback.endpoint_id, body, event_type=CALLBACK_EVENT,
                                  order_key=callback.request_id)
        callback.last_status = status["status"]
        queued += 1
    session.flush()
    return queued


webhook_dispatch.add_producer(queue_status_callbacks)
