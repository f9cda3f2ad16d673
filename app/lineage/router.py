from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from sqlalchemy.orm import Session

from app.api.deps import READER_ROLES, AdminClient, ReaderClient, SessionDep
from app.api.direct import direct_read
from app.core.auth import ApiClient
from app.core.fields import INT32_MAX
from app.lineage import service
from app.lineage.schemas import RecordLineage, SourceLineage, SubjectLineage, SubjectQuery, VersionLineage

router = APIRouter(prefix="/v1", tags=["lineage"])


async def record_lineage(dataset: str, record_key: str, session: SessionDep, _: ReaderClient) -> Response:
    # Async: on PostgreSQL the query runs on the event loop, no worker thread, so under intake load
    # a record query waits for the GIL twice (request in, answer back from the database) where a
    # thread-pool hop made it four times. Serialised here: returning the model would validate it again.
    # The request's session holds nothing unless authentication missed its cache (then the
    # dependency commits it); on SQLite the query runs in a thread, in that session.
    return await _record_lineage(dataset, record_key, session)


async def _record_lineage(dataset: str, record_key: str, session: Session | None = None) -> Response:
    body = (await service.read_record_lineage_async(dataset, record_key, session)).model_dump_json()
    return Response(body, media_type="application/json")


async def _read_record_lineage(_: ApiClient, params: dict[str, Any]) -> Response:
    # Answered at the edge for a cached reader key (app/api/direct.py): no dependencies, no
    # request session (on SQLite the service opens its own, in a thread).
    return await _record_lineage(params["dataset"], params["record_key"])


router.add_api_route(
    "/lineage/records/{dataset}/{record_key:path}", record_lineage, methods=["GET"], response_model=RecordLineage,
    route_class_override=direct_read(roles=READER_ROLES, read=_read_record_lineage),
)


@router.get("/lineage/datasets/{dataset}/sources/{source:path}", response_model=SourceLineage)
def source_lineage(dataset: str, source: str, session: SessionDep, _: ReaderClient) -> SourceLineage:
    """Which model versions contain records of the dataset that came from ``source``."""
    return service.source_lineage(session, dataset, source)


@router.post("/lineage/subjects", response_model=SubjectLineage)
def subject_lineage(body: SubjectQuery, session: SessionDep, admin: AdminClient) -> SubjectLineage:
    return service.lookup_subject(session, body.identifier_type, body.identifier, actor=admin.id)


@router.get("/lineage/snapshots/{snapshot_id}/proofs/{record_key:path}")
def membership_proof(snapshot_id: str, record_key: str, session: SessionDep, _: ReaderClient) -> dict[str, Any]:
    return service.membership_proof(session, snapshot_id, record_key)


@router.get("/models/{name}/versions/{number}/lineage", response_model=VersionLineage)
def version_lineage(name: str, number: Annotated[int, Path(ge=1, le=INT32_MAX)], session: SessionDep, _: ReaderClient) -> VersionLineage:
    return service.version_lineage(session, name, number)
