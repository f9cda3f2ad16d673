"""The dashboard's pages: each handler signs the browser in, calls a room's service, renders.

Every action is a POST form carrying the session's CSRF token and goes through the same
service call as the API's endpoint for it.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Cookie, FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import AwareDatetime, BeforeValidator, Field

from app.api.deps import SessionDep
from app.audit import events as audit_events
from app.audit import tree as audit_tree
from app.audit.verify import verify_log
from app.core.config import get_settings
from app.core.errors import Unauthenticated, UnlearndError
from app.dashboard import service
from app.dashboard.service import SignedIn
from app.dashboard.svg import VersionNode, lineage_svg, loss_distribution_svgs
from app.jobs import qualification as qualifications
from app.jobs import service as jobs_service
from app.jobs.models import JobStatus
from app.registry import service as registry_service
from app.requests import service as requests_service
from app.requests.models import RequestStatus
from app.webhooks import service as webhooks_service

HERE = Path(__file__).parent
COOKIE = "unlearnd_dashboard"
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(prefix="/admin", include_in_schema=False)
REQUEST_ACTIONS = ("approve", "reject", "cancel", "retry", "extend")
AUDIT_PAGE = 50
# A filter form sends its empty fields as "": that means "any", not a malformed value.
Blank = BeforeValidator(lambda value: None if value == "" else value)
DueDays = Annotated[Annotated[int, Field(ge=0, le=3650)] | None, Blank]
Seq = Annotated[Annotated[int, Field(ge=1, le=2**62)] | None, Blank]


class SignInRequired(Exception):
    """Raised by page handlers; answered with a redirect to the sign-in page."""


def _viewer(request: Request, session: SessionDep, token: str | None) -> SignedIn:
    idle = timedelta(minutes=get_settings().dashboard_idle_minutes)
    try:
        return service.resolve(session, token, idle)
    except Unauthenticated as exc:
        raise SignInRequired from exc


Token = Annotated[str | None, Cookie(alias=COOKIE)]


def _page(request: Request, name: str, viewer: SignedIn | None, status_code: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(
        request, name, {"viewer": viewer, "now": datetime.now().astimezone(), "utc": UTC, **context}, status_code=status_code
    )


def _refused(request: Request, session: Any, viewer: SignedIn, exc: UnlearndError) -> HTMLResponse:
    session.rollback()
    return _page(request, "error.html", viewer, status_code=exc.status, error=exc)


# --- signing in -------------------------------------------------------------------------------


@router.get("/login")
def login_page(request: Request) -> HTMLResponse:
    return _page(request, "login.html", None)


@router.post("/login")
def login(request: Request, session: SessionDep, api_key: Annotated[str, Form(max_length=512)]) -> Response:
    try:
        token, _ = service.sign_in(session, api_key)
    except UnlearndError as exc:
        session.rollback()
        return _page(request, "login.html", None, status_code=exc.status, error=exc.detail)
    response = RedirectResponse("/admin", status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https",
                        path="/admin")
    return response


@router.post("/logout")
def logout(request: Request, session: SessionDep, token: Token = None,
           csrf: Annotated[str | None, Form()] = None) -> Response:
    service.check_csrf(_viewer(request, session, token), csrf)
    service.sign_out(session, token)
    response = RedirectResponse("/admin/login", status_code=303)
    response.delete_cookie(COOKIE, path="/admin")
    return response


# --- overview and requests --------------------------------------------------------------------


@router.get("")
def overview(request: Request, session: SessionDep, token: Token = None) -> Response:
    viewer = _viewer(request, session, token)
    if not viewer.is_admin:
        return RedirectResponse("/admin/audit", status_code=303)
    summary = service.overview(session, viewer.client)
    failed_jobs = jobs_service.list_jobs(session, jobs_service.JobFilters(status=JobStatus.FAILED), limit=20)
    failing_endpoints = [e for e in webhooks_service.list_endpoints(session, viewer.client)
                         if e.failing_since is not None or not e.active]
    return _page(request, "overview.html", viewer, summary=summary, failed_jobs=failed_jobs,
                 failing_endpoints=failing_endpoints, lapsed=qualifications.lapsed(session),
                 days_left=service.days_left, urgency=service.urgency)


def _request_filters(status: str | None, external_ref: str | None, due_days: int | None) -> Any:
    return requests_service.RequestFilters(
        status=RequestStatus(status) if status else None,
        external_ref=external_ref or None,
        due_before=datetime.now().astimezone() + timedelta(days=due_days) if due_days is not None else None,
    )


@router.get("/requests")
def requests_page(
    request: Request, session: SessionDep, token: Token = None,
    status: Annotated[RequestStatus | None, Blank, Query()] = None,
    external_ref: Annotated[str | None, Query(max_length=255)] = None,
    due_days: Annotated[DueDays, Query()] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> HTMLResponse:
    viewer = _viewer(request, session, token)
    service.require_admin(viewer)
    page = requests_service.list_requests(
        session, viewer=viewer.client, filters=_request_filters(status, external_ref, due_days), cursor=cursor, limit=50
    )
    return _page(request, "requests.html", viewer, page=page, statuses=list(RequestStatus),
                 filters={"status": status or "", "external_ref": external_ref or "", "due_days": due_days},
                 days_left=service.days_left, urgency=service.urgency)


@router.get("/requests.csv")
def requests_csv(
    request: Request, session: SessionDep, token: Token = None,
    status: Annotated[RequestStatus | None, Blank, Query()] = None,
    external_ref: Annotated[str | None, Query(max_length=255)] = None,
    due_days: Annotated[DueDays, Query()] = None,
) -> Response:
    """Every matching request; identifiers appear only as their keyed hashes."""
    viewer = _viewer(request, session, token)
    service.require_admin(viewer)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "external_ref", "status", "outcome", "legal_basis", "received_at", "due_at",
                     "completed_at", "subject_hashes"])
    cursor = None
    while True:
        page = requests_service.list_requests(session, viewer=viewer.client, cursor=cursor, limit=200,
                                              filters=_request_filters(status, external_ref, due_days))
        for r in page.items:
            writer.writerow([r.id, r.external_ref or "", r.status, r.outcome or "", r.legal_basis,
                             r.received_at.isoformat(), r.due_at.isoformat(),
                             r.completed_at.isoformat() if r.completed_at else "", " ".join(r.subject_hashes)])
        if not page.next_cursor:
            break
        cursor = page.next_cursor
    return Response(out.getvalue(), media_type="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="deletion-requests.csv"'})


@router.get("/requests/{request_id}")
def request_page(request_id: str, request: Request, session: SessionDep, token: Token = None) -> HTMLResponse:
    viewer = _viewer(request, session, token)
    service.require_admin(viewer)
    found = requests_service.get_request(session, request_id, viewer.client)
    jobs = jobs_service.list_jobs(session, jobs_service.JobFilters(request_id=request_id), limit=50)
    return _page(request, "request.html", viewer, item=found, history=requests_service.history(session, request_id),
                 jobs=jobs, days_left=service.days_left, urgency=service.urgency)


def _act(session: Any, viewer: SignedIn, request_id: str, action: str, reason: str | None,
         due_at: datetime | None) -> None:
    actor = viewer.client.id
    if action == "approve":
        requests_service.approve(session, request_id, actor=actor, reason=reason)
    elif action == "reject":
        requests_service.reject(session, request_id, actor=actor, reason=reason or "")
    elif action == "cancel":
        requests_service.cancel(session, request_id, viewer=viewer.client, reason=reason)
    elif action == "retry":
        requests_service.retry(session, request_id, actor=actor, reason=reason)
    else:
        requests_service.extend(session, request_id, actor=actor, reason=reason or "", until=due_at)


@router.post("/requests/{request_id}/{action}")
def request_action(
    request_id: str, action: str, request: Request, session: SessionDep, token: Token = None,
    csrf: Annotated[str | None, Form()] = None,
    reason: Annotated[str | None, Form(max_length=2000)] = None,
    due_at: Annotated[AwareDatetime | None, Form()] = None,
) -> Response:
    viewer = _viewer(request, session, token)
    service.check_csrf(viewer, csrf)
    service.require_admin(viewer)
    if action not in REQUEST_ACTIONS:
        return _page(request, "error.html", viewer, status_code=404,
                     error=UnlearndError(f"no action '{action}'"))
    try:
        _act(session, viewer, request_id, action, (reason or "").strip() or None, due_at)
    except UnlearndError as exc:
        return _refused(request, session, viewer, exc)
    return RedirectResponse(f"/admin/requests/{request_id}", status_code=303)


@router.post("/requests")
def bulk_action(
    request: Request, session: SessionDep, token: Token = None,
    csrf: Annotated[str | None, Form()] = None,
    action: Annotated[str, Form()] = "approve",
    ids: Annotated[list[str] | None, Form()] = None,
    reason: Annotated[str | None, Form(max_length=2000)] = None,
) -> Response:
    """One action on every ticked request, each in its own savepoint: one refusal never
    undoes the others, and the page says which were refused and why."""
    viewer = _viewer(request, session, token)
    service.check_csrf(viewer, csrf)
    service.require_admin(viewer)
    if action not in ("approve", "reject", "cancel", "retry"):
        return _page(request, "error.html", viewer, status_code=422, error=UnlearndError(f"no bulk '{action}'"))
    refused: list[tuple[str, str]] = []
    for request_id in ids or []:
        try:
            with session.begin_nested():
                _act(session, viewer, request_id, action, (reason or "").strip() or None, None)
        except UnlearndError as exc:
            refused.append((request_id, exc.detail))
    if refused:
        return _page(request, "bulk.html", viewer, status_code=207 if len(refused) < len(ids or []) else 409,
                     action=action, done=len(ids or []) - len(refused), refused=refused)
    return RedirectResponse("/admin/requests", status_code=303)


# --- jobs -------------------------------------------------------------------------------------


@router.get("/jobs")
def jobs_page(request: Request, session: SessionDep, token: Token = None) -> HTMLResponse:
    viewer = _viewer(request, session, token)
    return _page(request, "jobs.html", viewer, jobs=jobs_service.list_jobs(session, limit=100))


@router.get("/jobs/{job_id}")
def job_page(job_id: str, request: Request, session: SessionDep, token: Token = None) -> HTMLResponse:
    viewer = _viewer(request, session, token)
    job = jobs_service.get_job(session, job_id)
    mia = ((job.report or {}).get("verification") or {}).get("mia") or {}
    plot = loss_distribution_svgs(mia["loss_histogram"]) if mia.get("loss_histogram") else None
    return _page(request, "job.html", viewer, job=job, request_ids=jobs_service.job_requests(session, job_id),
                 mia=mia, plot=plot)


@router.get("/jobs/{job_id}/progress")
def job_progress(job_id: str, request: Request, session: SessionDep, token: Token = None) -> JSONResponse:
    """Polled by the job page while the job runs."""
    _viewer(request, session, token)
    job = jobs_service.get_job(session, job_id)
    return JSONResponse({"status": job.status, "stage": job.stage, "progress": job.progress,
                         "attempts": job.attempts})


@router.post("/jobs/{job_id}/{action}")
def job_action(job_id: str, action: str, request: Request, session: SessionDep, token: Token = None,
               csrf: Annotated[str | None, Form()] = None) -> Response:
    viewer = _viewer(request, session, token)
    service.check_csrf(viewer, csrf)
    service.require_admin(viewer)
    try:
        if action == "retry":
            jobs_service.retry_job(session, job_id, actor=viewer.client.id)
        elif action == "cancel":
            jobs_service.cancel_job(session, job_id, actor=viewer.client.id)
        else:
            raise UnlearndError(f"no job action '{action}'")
    except UnlearndError as exc:
        return _refused(request, session, viewer, exc)
    return RedirectResponse(f"/admin/jobs/{job_id}", status_code=303)


# --- models -----------------------------------------------------------------------------------


@router.get("/models")
def models_page(request: Request, session: SessionDep, token: Token = None) -> HTMLResponse:
    viewer = _viewer(request, session, token)
    return _page(request, "models.html", viewer, models=registry_service.list_models(session))


@router.get("/models/{name}")
def model_page(name: str, request: Request, session: SessionDep, token: Token = None) -> HTMLResponse:
    viewer = _viewer(request, session, token)
    model = registry_service.get_model(session, name)
    versions = registry_service.list_versions(session, model)
    nodes = [
        VersionNode(id=v.id, number=v.number, parent_id=v.parent_id, state=v.state, origin=v.origin,
                    parts=sum(1 for a in registry_service.version_artifacts(session, v) if a.kind == "shard"))
        for v in versions
    ]
    graph = lineage_svg(nodes, f"Version lineage of {model.name}")
    return _page(request, "model.html", viewer, model=model, versions=versions, graph=graph,
                 qualifications=qualifications.list_for_model(session, name),
                 numbers={v.id: v.number for v in versions})


@router.post("/models/{name}/{action}")
def model_action(name: str, action: str, request: Request, session: SessionDep, token: Token = None,
                 csrf: Annotated[str | None, Form()] = None) -> Response:
    """Train a new version, or unlearn now whatever waits for the model: the API's own calls."""
    viewer = _viewer(request, session, token)
    service.check_csrf(viewer, csrf)
    service.require_admin(viewer)
    try:
        if action == "train":
            job = jobs_service.start_training(session, name, actor=viewer.client.id)
        elif action == "unlearn-now":
            job = jobs_service.unlearn_now(session, name, actor=viewer.client.id).job
        else:
            raise UnlearndError(f"no model action '{action}'")
    except UnlearndError as exc:
        return _refused(request, session, viewer, exc)
    return RedirectResponse(f"/admin/jobs/{job.id}", status_code=303)


# --- audit ------------------------------------------------------------------------------------


def _as_utc(value: datetime | None) -> datetime | None:
    """A browser's datetime-local value has no zone: the page says it is UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _audit(request: Request, session: Any, viewer: SignedIn, verification: Any = None, *,
           filters: audit_events.EventFilters | None = None, before: int | None = None) -> HTMLResponse:
    filters = filters or audit_events.EventFilters()
    events = audit_events.browse(session, filters, before=before, limit=AUDIT_PAGE)
    actions, entity_types = audit_events.known_values(session)
    older = None
    if len(events) == AUDIT_PAGE:
        query = {k: v for k, v in request.query_params.items() if k != "before"}
        older = "/admin/audit?" + urlencode({**query, "before": events[-1].seq})
    return _page(request, "audit.html", viewer, head=audit_tree.latest_tree_head(session), events=events,
                 verification=verification, filters=filters, actions=actions, entity_types=entity_types,
                 older=older, filtered=filters != audit_events.EventFilters())


@router.get("/audit")
def audit_page(
    request: Request, session: SessionDep, token: Token = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    entity_type: Annotated[str | None, Query(max_length=40)] = None,
    entity_id: Annotated[str | None, Query(max_length=64)] = None,
    actor: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[datetime | None, Blank, Query()] = None,
    until: Annotated[datetime | None, Blank, Query()] = None,
    before: Annotated[Seq, Query()] = None,
) -> HTMLResponse:
    """The event browser: newest first, narrowed by event type, entity, actor and time window."""
    viewer = _viewer(request, session, token)
    filters = audit_events.EventFilters(action=action or None, entity_type=entity_type or None,
                                        entity_id=(entity_id or "").strip() or None,
                                        actor=(actor or "").strip() or None,
                                        since=_as_utc(since), until=_as_utc(until))
    return _audit(request, session, viewer, filters=filters, before=before)


@router.post("/audit/verify")
def audit_verify(request: Request, session: SessionDep, token: Token = None,
                 csrf: Annotated[str | None, Form()] = None) -> HTMLResponse:
    """The same check as `unlearnd audit verify`."""
    viewer = _viewer(request, session, token)
    service.check_csrf(viewer, csrf)
    return _audit(request, session, viewer, verify_log(session))


# --- webhooks ---------------------------------------------------------------------------------


@router.get("/webhooks")
def webhooks_page(request: Request, session: SessionDep, token: Token = None) -> HTMLResponse:
    viewer = _viewer(request, session, token)
    service.require_admin(viewer)
    endpoints = webhooks_service.list_endpoints(session, viewer.client)
    deliveries = {e.id: webhooks_service.list_deliveries(session, e.id, viewer.client, limit=20) for e in endpoints}
    attempts = {d.id: webhooks_service.delivery_attempts(session, d.id)[-1:]
                for batch in deliveries.values() for d in batch}
    return _page(request, "webhooks.html", viewer, endpoints=endpoints, deliveries=deliveries, attempts=attempts)


@router.post("/webhooks/deliveries/{delivery_id}/replay")
def webhook_replay(delivery_id: str, request: Request, session: SessionDep, token: Token = None,
                   csrf: Annotated[str | None, Form()] = None) -> Response:
    viewer = _viewer(request, session, token)
    service.check_csrf(viewer, csrf)
    service.require_admin(viewer)
    try:
        webhooks_service.replay(session, delivery_id, viewer.client)
    except UnlearndError as exc:
        return _refused(request, session, viewer, exc)
    return RedirectResponse("/admin/webhooks", status_code=303)


@router.post("/webhooks/endpoints/{endpoint_id}/recover")
def webhook_recover(endpoint_id: str, request: Request, session: SessionDep, token: Token = None,
                    csrf: Annotated[str | None, Form()] = None,
                    since: Annotated[AwareDatetime | None, Form()] = None) -> Response:
    """Re-send every failed delivery since ``since`` (default: the last 24 hours)."""
    viewer = _viewer(request, session, token)
    service.check_csrf(viewer, csrf)
    service.require_admin(viewer)
    try:
        webhooks_service.recover(session, endpoint_id, viewer.client,
                                 since=since or datetime.now().astimezone() - timedelta(days=1))
    except UnlearndError as exc:
        return _refused(request, session, viewer, exc)
    return RedirectResponse("/admin/webhooks", status_code=303)


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/admin/static", StaticFiles(directory=HERE / "static"), name="dashboard-static")

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, exc: SignInRequired) -> RedirectResponse:
        return RedirectResponse("/admin/login", status_code=303)
