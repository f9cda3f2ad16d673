"""HTTP face of jobs: translate, call the service, shape the answer."""

from __future__ import annotations

from fastapi import APIRouter, Query, status

from app.api.deps import AdminClient, MLClient, ReaderClient, SessionDep
from app.jobs import qualification, service
from app.jobs.models import JobKind, JobStatus, UnlearningJob
from app.jobs.schemas import BatchOut, JobDetail, JobOut, QualificationBody, QualificationOut, TrainBody
from app.registry.schemas import VersionImport, VersionOut

router = APIRouter(tags=["jobs"])


def _detail(session: SessionDep, job: UnlearningJob) -> JobDetail:
    return JobDetail(**JobOut.model_validate(job).model_dump(), report=job.report,
                     request_ids=service.job_requests(session, job.id))


@router.post("/v1/models/{name}/train", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut)
def train_model(name: str, session: SessionDep, client: MLClient, body: TrainBody | None = None) -> JobOut:
    config = service.TrainingConfig(**(body or TrainBody()).model_dump())
    return JobOut.model_validate(service.start_training(session, name, actor=client.id, config=config))


@router.post("/v1/models/{name}/versions", status_code=status.HTTP_201_CREATED, response_model=VersionOut,
             tags=["registry"])
def import_version(name: str, body: VersionImport, session: SessionDep, client: MLClient) -> VersionOut:
    """Served by the jobs room: an imported version is checked against the lineage invariant."""
    return VersionOut.model_validate(service.import_version(session, name, body, actor=client.id))


@router.post("/v1/models/{name}/unlearn-now", status_code=status.HTTP_202_ACCEPTED, response_model=BatchOut)
def unlearn_now(name: str, session: SessionDep, admin: AdminClient) -> BatchOut:
    outcome = service.unlearn_now(session, name, actor=admin.id)
    decision = outcome.decision
    return BatchOut(model=outcome.model, reason=decision.reason, requests=len(decision.batch), units=decision.units,
                    units_if_alone=decision.units_if_alone, units_saved=decision.units_saved,
                    estimated_seconds=decision.estimated_seconds, job=JobOut.model_validate(outcome.job))


@router.get("/v1/jobs", response_model=list[JobOut])
def list_jobs(
    session: SessionDep,
    _: ReaderClient,
    status_: JobStatus | None = Query(default=None, alias="status"),
    kind: JobKind | None = None,
    model: str | None = Query(default=None, max_length=200),
    request_id: str | None = Query(default=None, max_length=36),
    limit: int = Query(default=50, ge=1, le=service.MAX_PAGE),
) -> list[JobOut]:
    filters = service.JobFilters(status=status_, kind=kind, model=model, request_id=request_id)
    return [JobOut.model_validate(job) for job in service.list_jobs(session, filters, limit=limit)]


@router.get("/v1/jobs/{job_id}", response_model=JobDetail)
def get_job(job_id: str, session: SessionDep, _: ReaderClient) -> JobDetail:
    return _detail(session, service.get_job(session, job_id))


@router.post("/v1/jobs/{job_id}/retry", status_code=status.HTTP_202_ACCEPTED, response_model=JobDetail)
def retry_job(job_id: str, session: SessionDep, admin: AdminClient) -> JobDetail:
    return _detail(session, service.retry_job(session, job_id, actor=admin.id))


@router.post("/v1/jobs/{job_id}/cancel", response_model=JobDetail)
def cancel_job(job_id: str, session: SessionDep, admin: AdminClient) -> JobDetail:
    return _detail(session, service.cancel_job(session, job_id, actor=admin.id))


@router.post("/v1/models/{name}/qualifications", status_code=status.HTTP_202_ACCEPTED,
             response_model=QualificationOut)
def start_qualification(name: str, body: QualificationBody, session: SessionDep, client: MLClient) -> QualificationOut:
    study = qualification.start(session, name, method=body.method, band_min=body.band_min, band_max=body.band_max,
                                runs=body.runs, forget_sets=body.forget_sets, actor=client.id)
    return QualificationOut.model_validate(study)


@router.get("/v1/models/{name}/qualifications", response_model=list[QualificationOut])
def list_qualifications(name: str, session: SessionDep, _: ReaderClient) -> list[QualificationOut]:
    return [QualificationOut.model_validate(q) for q in qualification.list_for_model(session, name)]


@router.get("/v1/models/{name}/qualifications/{qualification_id}", response_model=QualificationOut)
def get_qualification(name: str, qualification_id: str, session: SessionDep, _: ReaderClient) -> QualificationOut:
    return QualificationOut.model_validate(qualification.get(session, name, qualification_id))
