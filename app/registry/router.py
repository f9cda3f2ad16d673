from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, status

from app.api.deps import AdminClient, AuditorClient, MLClient, ReaderClient, SessionDep
from app.core.fields import INT32_MAX
from app.registry import service
from app.registry.schemas import (
    ArtifactOut,
    ArtifactUploaded,
    DatasetCreate,
    DatasetOut,
    LiftSuppression,
    ModelCreate,
    ModelOut,
    SnapshotCreate,
    SnapshotOut,
    SuppressionOut,
    VersionOut,
)

router = APIRouter(prefix="/v1", tags=["registry"])
VersionNumber = Annotated[int, Path(ge=1, le=INT32_MAX)]
ARTIFACT_UPLOAD_PATH = "/v1/artifacts"


@router.post(
    "/artifacts", status_code=status.HTTP_201_CREATED, response_model=ArtifactUploaded,
    openapi_extra={"requestBody": {"content": {"application/octet-stream": {}}, "required": True}},
)
async def upload_artifact(request: Request, session: SessionDep, client: MLClient) -> ArtifactUploaded:
    """Stream model bytes into the content-addressed store; the returned `uri` and `sha256`
    (computed here) are what `POST /v1/models/{name}/versions` accepts."""
    received = await service.upload_artifact(session, request.stream(), actor=client.id)
    return ArtifactUploaded(uri=received.uri, sha256=received.sha256, size_bytes=received.size_bytes)


@router.post("/datasets", status_code=status.HTTP_202_ACCEPTED, response_model=DatasetOut)
def register_dataset(body: DatasetCreate, session: SessionDep, client: MLClient) -> DatasetOut:
    dataset = service.register_dataset(
        session, name=body.name, uri=body.uri, fmt=body.format,
        schema=body.columns.model_dump(mode="json"), actor=client.id,
    )
    return DatasetOut.model_validate(dataset)


@router.get("/datasets", response_model=list[DatasetOut])
def list_datasets(session: SessionDep, _: ReaderClient) -> list[DatasetOut]:
    return [DatasetOut.model_validate(d) for d in service.list_datasets(session)]


@router.get("/datasets/{name}", response_model=DatasetOut)
def get_dataset(name: str, session: SessionDep, _: ReaderClient) -> DatasetOut:
    return DatasetOut.model_validate(service.get_dataset(session, name))


@router.get("/suppressions", response_model=list[SuppressionOut])
def list_suppressions(session: SessionDep, _: AuditorClient, include_lifted: bool = False) -> list[SuppressionOut]:
    """The suppression list: forgotten subjects (keyed hashes) and record keys kept out of every ingestion."""
    return [SuppressionOut.model_validate(s) for s in service.list_suppressions(session, include_lifted=include_lifted)]


@router.post("/suppressions/{suppression_id}/lift", response_model=SuppressionOut)
def lift_suppression(suppression_id: str, body: LiftSuppression, session: SessionDep, admin: AdminClient) -> SuppressionOut:
    """Let later ingestions take matching rows again; admins only, with a reason (audited)."""
    return SuppressionOut.model_validate(
        service.lift_suppression(session, suppression_id, reason=body.reason, actor=admin.id))


@router.post("/datasets/{name}/snapshots", status_code=status.HTTP_201_CREATED, response_model=SnapshotOut)
def create_snapshot(name: str, body: SnapshotCreate, session: SessionDep, client: MLClient) -> SnapshotOut:
    dataset = service.get_dataset(session, name)
    excluded = service.record_ids_for_keys(session, dataset, body.exclude_record_keys)
    snapshot = service.create_snapshot(session, dataset.id, exclude_record_ids=excluded.values(), actor=client.id)
    return SnapshotOut.model_validate(snapshot)


@router.get("/snapshots/{snapshot_id}", response_model=SnapshotOut)
def get_snapshot(snapshot_id: str, session: SessionDep, _: ReaderClient) -> SnapshotOut:
    return SnapshotOut.model_validate(service.get_snapshot(session, snapshot_id))


@router.post("/models", status_code=status.HTTP_201_CREATED, response_model=ModelOut)
def register_model(body: ModelCreate, session: SessionDep, client: MLClient) -> ModelOut:
    model = service.register_model(
        session, name=body.name, adapter=body.adapter, hyperparameters=body.hyperparameters,
        dataset_name=body.dataset, policy=body.policy.stored(), actor=client.id,
    )
    return ModelOut.model_validate(model)


@router.get("/models", response_model=list[ModelOut])
def list_models(session: SessionDep, _: ReaderClient) -> list[ModelOut]:
    return [ModelOut.model_validate(m) for m in service.list_models(session)]


@router.get("/models/{name}", response_model=ModelOut)
def get_model(name: str, session: SessionDep, _: ReaderClient) -> ModelOut:
    return ModelOut.model_validate(service.get_model(session, name))


@router.get("/models/{name}/versions", response_model=list[VersionOut])
def list_versions(name: str, session: SessionDep, _: ReaderClient) -> list[VersionOut]:
    model = service.get_model(session, name)
    return [VersionOut.model_validate(v) for v in service.list_versions(session, model)]


@router.get("/models/{name}/versions/{number}", response_model=VersionOut)
def get_version(name: str, number: VersionNumber, session: SessionDep, _: ReaderClient) -> VersionOut:
    return VersionOut.model_validate(service.get_version(session, service.get_model(session, name), number))


@router.get("/models/{name}/versions/{number}/artifacts", response_model=list[ArtifactOut])
def list_artifacts(name: str, number: VersionNumber, session: SessionDep, _: ReaderClient) -> list[ArtifactOut]:
    version = service.get_version(session, service.get_model(session, name), number)
    return [ArtifactOut.model_validate(a) for a in service.version_artifacts(session, version)]
