"""Which audit events become which webhook events, and what their thin payloads hold.

Pure functions over the audit chain's public fields. A payload carries ids, hashes, enums,
counts and timestamps only: the chain itself holds no personal data, and only named fields
are copied out of it (never a whole audit payload), so a field added to the chain later
cannot leak into a webhook by accident.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

REQUEST_RECEIVED = "deletion_request.received"
REQUEST_SCHEDULED = "deletion_request.scheduled"
REQUEST_COMPLETED = "deletion_request.completed"
REQUEST_FAILED = "deletion_request.failed"
REQUEST_REJECTED = "deletion_request.rejected"
REQUEST_CANCELLED = "deletion_request.cancelled"
REQUEST_DEADLINE_AT_RISK = "deletion_request.deadline_at_risk"
JOB_SUCCEEDED = "unlearning_job.succeeded"
JOB_FAILED = "unlearning_job.failed"
VERSION_PURGED = "model_version.purged"
CERTIFICATE_ISSUED = "certificate.issued"
ENDPOINT_DISABLED = "webhook_endpoint.disabled"
LINEAGE_VIOLATION = "lineage.violation"
QUALIFICATION_REVOKED = "method_qualification.revoked"
DATASET_REDACTION_REQUIRED = "dataset.redaction_required"
DATASET_ERASURE_FAILED = "dataset.erasure_failed"

EVENT_TYPES = (
    REQUEST_RECEIVED, REQUEST_SCHEDULED, REQUEST_COMPLETED, REQUEST_FAILED, REQUEST_REJECTED, REQUEST_CANCELLED,
    REQUEST_DEADLINE_AT_RISK, JOB_SUCCEEDED, JOB_FAILED, VERSION_PURGED, CERTIFICATE_ISSUED, ENDPOINT_DISABLED,
    LINEAGE_VIOLATION, QUALIFICATION_REVOKED, DATASET_REDACTION_REQUIRED, DATASET_ERASURE_FAILED,
)

# The audit action this room writes when it disables an endpoint.
ENDPOINT_DISABLED_ACTION = "webhook.endpoint_disabled"

# Request statuses that have a webhook event of their own (others, like `unlearning`, do not).
_STATUS_EVENTS = {
    "scheduled": REQUEST_SCHEDULED,
    "completed": REQUEST_COMPLETED,
    "failed": REQUEST_FAILED,
    "rejected": REQUEST_REJECTED,
    "cancelled": REQUEST_CANCELLED,
}
MAX_HASHES = 64  # a purge of a many-shard version lists at most this many sha256 values


@dataclass(frozen=True)
class AuditFact:
    """The fields of one sealed audit event that the mapping reads."""

    seq: int
    occurred_at: str
    action: str
    entity_id: str
    payload: dict[str, Any]


@dataclass
class WebhookEvent:
    type: str
    data: dict[str, Any]
    order_key: str
    # Whose endpoints may receive it besides admins' and auditors': the request's portal,
    # or the client named here. None: admins and auditors only.
    request_id: str | None = None
    client_id: str | None = None
    needs: list[str] = field(default_factory=list)  # enrichment the fan-out adds ("guarantee")


def _request_event(kind: str, request_id: str, **data: Any) -> WebhookEvent:
    needs = ["guarantee"] if kind == REQUEST_COMPLETED else []
    return WebhookEvent(kind, {"request_id": request_id, **data}, request_id, request_id=request_id, needs=needs)


def from_audit(fact: AuditFact) -> list[WebhookEvent]:
    payload, entity = fact.payload, fact.entity_id
    action = fact.action
    if action == "request.received":
        events = [_request_event(REQUEST_RECEIVED, entity, status="received", legal_basis=payload.get("legal_basis"),
                                 due_at=payload.get("due_at"), request_hash=payload.get("request_hash"))]
        # Intake can pass through several statuses in one transaction (no data found: completed).
        for _, to_status in payload.get("transitions", [])[1:]:
            if to_status in _STATUS_EVENTS:
                extra = {"outcome": payload.get("outcome")} if to_status == "completed" else {}
                events.append(_request_event(_STATUS_EVENTS[to_status], entity, status=to_status,
                                             from_status="received", **extra))
        return events
    if action.startswith("request."):
        status = action.removeprefix("request.")
        if status not in _STATUS_EVENTS:
            return []
        extra = {"outcome": payload.get("outcome")} if status == "completed" else {}
        return [_request_event(_STATUS_EVENTS[status], entity, status=status, from_status=payload.get("from"), **extra)]
    if action == "deadline.at_risk":
        return [_request_event(REQUEST_DEADLINE_AT_RISK, entity, status=payload.get("status"),
                               due_at=payload.get("due_at"), hours_left=payload.get("hours_left"))]
    if action in ("job.succeeded", "job.failed"):
        if payload.get("kind") == "train_shard":  # one shard of a training run: internal detail
            return []
        data: dict[str, Any] = {"job_id": entity, "kind": payload.get("kind"), "model_id": payload.get("model_id"),
                                "attempts": payload.get("attempts")}
        if action == "job.succeeded":
            data |= {"result_version_id": payload.get("result_version_id"), "method_used": payload.get("method_used")}
            return [WebhookEvent(JOB_SUCCEEDED, data, entity)]
        return [WebhookEvent(JOB_FAILED, data | {"error_type": payload.get("error_type")}, entity)]
    if action == "model_version.purged":
        hashes = list(payload.get("sha256", []))
        return [WebhookEvent(VERSION_PURGED, {"model_version_id": entity, "artifact_count": len(hashes),
                                              "artifact_sha256": hashes[:MAX_HASHES]}, entity)]
    if action == "certificate.issued":
        request_id = payload.get("request_id", "")
        return [WebhookEvent(CERTIFICATE_ISSUED, {"certificate_id": entity, "request_id": request_id,
                                                  "content_sha256": payload.get("content_sha256")},
                             request_id, request_id=request_id)]
    if action == "lineage.violation":  # the sweep found a live version holding what it must not: a bug
        return [WebhookEvent(LINEAGE_VIOLATION, {
            "model_version_id": entity, "model_id": payload.get("model_id"), "number": payload.get("number"),
            "state": payload.get("state"), "forgotten_records": payload.get("forgotten_records"),
            "unattached_requests": len(payload.get("unattached_requests", [])),
            "uncarried_requests": len(payload.get("uncarried_requests", [])), "found_at": fact.occurred_at,
        }, entity)]
    if action == "qualification.revoked":  # a sampling audit caught an approximate method: admins must know
        return [WebhookEvent(QUALIFICATION_REVOKED, {
            "qualification_id": entity, "model_id": payload.get("model_id"), "version_id": payload.get("version_id"),
            "method": payload.get("method"), "band": payload.get("band"), "job_id": payload.get("job_id"),
            "records": payload.get("records"), "flagged": payload.get("flagged"), "p_value": payload.get("p_value"),
            "revoked_at": fact.occurred_at,
        }, entity)]
    if action == DATASET_REDACTION_REQUIRED:  # forgotten rows sit in a file Unlearnd does not manage
        return [WebhookEvent(DATASET_REDACTION_REQUIRED, {
            "dataset_id": entity, "erasure_id": payload.get("erasure_id"), "rows": payload.get("rows"),
            "found_at": fact.occurred_at,
        }, entity, client_id=payload.get("owner_client_id"))]
    if action == DATASET_ERASURE_FAILED and payload.get("final"):  # the rows stay in the file: admins must act
        return [WebhookEvent(DATASET_ERASURE_FAILED, {
            "dataset_id": entity, "erasure_id": payload.get("erasure_id"), "attempts": payload.get("attempt"),
            "error_type": str(payload.get("error") or "").split(":", 1)[0][:100], "failed_at": fact.occurred_at,
        }, entity)]
    if action == ENDPOINT_DISABLED_ACTION:
        return [WebhookEvent(ENDPOINT_DISABLED, {"endpoint_id": entity, "reason": payload.get("reason"),
                                                 "disabled_at": fact.occurred_at}, entity,
                             client_id=payload.get("client_id"))]
    return []


# Guarantee classes, as the brief defines them: exact methods are proven by lineage,
# Newton removal is certified, everything else is approximate.
_METHOD_CLASS = {"retrain": "exact", "sisa": "exact", "newton": "certified"}
_CLASS_STRENGTH = {"exact": 0, "certified": 1, "approximate": 2}


def guarantee_class(outcome: str | None, methods_used: list[str]) -> str:
    """The weakest class among the methods that unlearned the request's models. A request
    with no data found rests on lineage alone (non-inclusion), which is the exact class's proof."""
    if outcome == "no_data_found" or not methods_used:
        return "exact"
    classes = [_METHOD_CLASS.get(method, "approximate") for method in methods_used]
    return max(classes, key=_CLASS_STRENGTH.__getitem__)
