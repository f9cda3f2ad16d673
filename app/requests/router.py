"""HTTP face of deletion requests: translate, call the service, shape the answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status
from pydantic_core import to_json
from sqlalchemy.orm import Session

from app.api.deps import (
    PORTAL_ROLES,
    SUBMITTER_ROLES,
    AdminClient,
    PortalClient,
    RequestSubmitter,
    RequestViewer,
    SessionDep,
    commit_now,
)
from app.api.direct import DirectCall, direct_route
from app.core.auth import ApiClient
from app.core.errors import UnlearndError
from app.core.fields import BoundedDatetime
from app.core.problems import problem_document
from app.requests import service
from app.requests.models import DeletionRequest, LegalBasis, RequestStatus
from app.requests.schemas import (
    DeletionRequestBatch,
    DeletionRequestBatchResult,
    DeletionRequestCreate,
    DeletionRequestDetail,
    DeletionRequestOut,
    DeletionRequestPage,
    ExtensionBody,
    OptionalReasonBody,
    ReasonBody,
)

router = APIRouter(prefix="/v1/deletion-requests", tags=["deletion requests"])

BATCH_PATH = f"{router.prefix}/batch"
IDEMPOTENCY_KEY = "idempotency-key"
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=service.MAX_IDEMPOTENCY_KEY)]


def _detail(session: SessionDep, request: DeletionRequest) -> DeletionRequestDetail:
    return DeletionRequestDetail.of(request, service.history(session, request.id))


def submit_request(
    body: DeletionRequestCreate,
    http: Request,
    session: SessionDep,
    client: RequestSubmitter,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """A subject's request (portals, admins) or a removal by selector (admins and ml keys only)."""
    return _submit(session, client, body, http, {IDEMPOTENCY_KEY: idempotency_key})


def _submit(session: Session, client: ApiClient, body: DeletionRequestCreate, http: Request,
            headers: dict[str, str | None]) -> Response:
    outcome = service.submit(
        session,
        client=client,
        submission=body,
        idempotency_key=headers[IDEMPOTENCY_KEY],
        provenance=_provenance(http),
    )
    commit_now(session)
    return _submitted(outcome)


def _submit_together(session: Session, client: ApiClient, calls: Sequence[DirectCall]) -> list[Response | UnlearndError]:
    """Single submissions of one client that arrived together, written in one transaction (group
    commit, app/core/coalesce.py); each answered as ``_submit`` answers it alone."""
    outcomes = service.submit_together(session, client=client, intakes=[
        service.Intake(call.body, call.headers[IDEMPOTENCY_KEY], _provenance(call.request), call.received_at,
                       getattr(call.request.state, "request_id", None))
        for call in calls])
    commit_now(session)
    return [outcome if isinstance(outcome, UnlearndError) else _submitted(outcome) for outcome in outcomes]


def _submitted(outcome: service.Submission) -> Response:
    response_headers = {"Location": f"{router.prefix}/{outcome.request.id}"}
    if outcome.replayed:
        response_headers["Idempotent-Replayed"] = "true"
    # Serialised here, in the worker thread the submission ran in: returned as a model, it
    # would be validated again in one more thread-pool hop (a wait for the GIL under load).
    return Response(DeletionRequestOut.model_validate(outcome.request).model_dump_json(by_alias=True),
                    status_code=status.HTTP_200_OK if outcome.replayed else status.HTTP_202_ACCEPTED,
                    headers=response_headers, media_type="application/json")


# The hot path: answered at the edge when the key is cached and the body valid, by
# ``_submit_together`` with whatever else that client sent meanwhile (group commit), or by
# ``_submit`` when the key's client is not cached yet; by FastAPI's handler of
# ``submit_request`` otherwise (see app/api/direct.py).
router.add_api_route(
    "", submit_request, methods=["POST"], status_code=status.HTTP_202_ACCEPTED, response_model=DeletionRequestOut,
    responses={200: {"description": "an identical earlier submission, returned again"}},
    route_class_override=direct_route(body=DeletionRequestCreate, roles=SUBMITTER_ROLES, serve=_submit,
                                      together=_submit_together,
                                      headers={IDEMPOTENCY_KEY: service.MAX_IDEMPOTENCY_KEY}),
)


def _provenance(http: Request) -> service.Provenance:
    return service.Provenance(
        channel="api", source_ip=http.client.host if http.client else None, user_agent=http.headers.get("user-agent"),
    )


def submit_batch(
    body: DeletionRequestBatch, http: Request, session: SessionDep, client: PortalClient
) -> Response:
    return _submit_batch(session, client, body, http, {})


def _submit_batch(session: Session, client: ApiClient, body: DeletionRequestBatch, http: Request,
                  headers: dict[str, str | None]) -> Response:
    results = service.submit_batch(session, client=client, items=body.requests, provenance=_provenance(http))
    commit_now(session)
    # Plain dicts of BatchItemResult's fields, encoded at once: a model per item, validated and
    # then serialised, cost as much as some of the service's own work per item. Same JSON.
    items = []
    for result in results:
        if result.error is not None:
            items.append({"index": result.index, "outcome": "refused", "id": None, "status": None,
                          "problem": problem_document(result.error, instance=f"{BATCH_PATH}#{result.index}")})
        else:
            request = result.submission.request
            items.append({"index": result.index, "outcome": "replayed" if result.submission.replayed else "created",
                          "id": request.id, "status": RequestStatus(request.status).value, "problem": None})
    counts = {outcome: sum(1 for item in items if item["outcome"] == outcome)
              for outcome in ("created", "replayed", "refused")}
    # Serialised in this worker thread (see _submit).
    return Response(to_json({**counts, "results": items}), media_type="application/json")


# Like the single submission: a cached portal or admin key and a body that validates as a batch
# (items that are not requests stay plain values and are refused one by one by the service) are
# answered by ``_submit_batch`` directly, with one parse of the body in Rust instead of FastAPI's
# parse and validation of the parsed objects; anything else goes through the declared endpoint.
router.add_api_route(
    "/batch", submit_batch, methods=["POST"], response_model=DeletionRequestBatchResult,
    openapi_extra={"x-item-schema": "DeletionRequestBatchItem"},
    responses={200: {"description": "Every item judged on its own: created, replayed, or refused with a problem"}},
    route_class_override=direct_route(body=DeletionRequestBatch, roles=PORTAL_ROLES, serve=_submit_batch),
)


@router.get("", response_model=DeletionRequestPage)
def list_requests(
    session: SessionDep,
    viewer: RequestViewer,
    status_: Annotated[RequestStatus | None, Query(alias="status")] = None,
    legal_basis: LegalBasis | None = None,
    due_before: BoundedDatetime | None = None,
    external_ref: Annotated[str | None, Query(max_length=255)] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> DeletionRequestPage:
    filters = service.RequestFilters(
        status=status_, legal_basis=legal_basis, due_before=due_before, external_ref=external_ref
    )
    page = service.list_requests(session, viewer=viewer, filters=filters, cursor=cursor, limit=limit)
    return DeletionRequestPage(
        items=[DeletionRequestOut.model_validate(r) for r in page.items], next_cursor=page.next_cursor
    )


@router.get("/{request_id}", response_model=DeletionRequestDetail)
def show_request(request_id: str, session: SessionDep, viewer: RequestViewer) -> DeletionRequestDetail:
    return _detail(session, service.get_request(session, request_id, viewer))


@router.post("/{request_id}/approve", response_model=DeletionRequestDetail)
def approve_request(
    request_id: str, session: SessionDep, admin: AdminClient, body: OptionalReasonBody | None = None
) -> DeletionRequestDetail:
    reason = body.reason if body else None
    return _detail(session, service.approve(session, request_id, actor=admin.id, reason=reason))


@router.post("/{request_id}/reject", response_model=DeletionRequestDetail)
def reject_request(request_id: str, body: ReasonBody, session: SessionDep, admin: AdminClient) -> DeletionRequestDetail:
    return _detail(session, service.reject(session, request_id, actor=admin.id, reason=body.reason))


@router.post("/{request_id}/cancel", response_model=DeletionRequestDetail)
def cancel_request(
    request_id: str, session: SessionDep, caller: PortalClient, body: OptionalReasonBody | None = None
) -> DeletionRequestDetail:
    reason = body.reason if body else None
    return _detail(session, service.cancel(session, request_id, viewer=caller, reason=reason))


@router.post("/{request_id}/retry", response_model=DeletionRequestDetail)
def retry_request(
    request_id: str, session: SessionDep, admin: AdminClient, body: OptionalReasonBody | None = None
) -> DeletionRequestDetail:
    reason = body.reason if body else None
    return _detail(session, service.retry(session, request_id, actor=admin.id, reason=reason))


@router.post("/{request_id}/extend", response_model=DeletionRequestDetail)
def extend_deadline(
    request_id: str, body: ExtensionBody, session: SessionDep, admin: AdminClient
) -> DeletionRequestDetail:
    request = service.extend(session, request_id, actor=admin.id, reason=body.reason, until=body.due_at)
    return _detail(session, request)
