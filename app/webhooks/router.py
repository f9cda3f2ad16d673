"""HTTP face of webhooks: translate, call the service, shape the answer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from app.api.deps import CurrentClient, SessionDep
from app.webhooks import service
from app.webhooks.schemas import (
    AttemptOut,
    DeliveryDetail,
    DeliveryOut,
    EndpointCreate,
    EndpointCreated,
    EndpointOut,
    EndpointUpdate,
    Recover,
    RecoverOut,
    RotateSecret,
)

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


def _created(created: service.CreatedEndpoint) -> EndpointCreated:
    return EndpointCreated(**EndpointOut.of(created.endpoint).model_dump(), secret=created.secret)


@router.post("/endpoints", status_code=status.HTTP_201_CREATED, response_model=EndpointCreated)
def create_endpoint(body: EndpointCreate, session: SessionDep, client: CurrentClient) -> EndpointCreated:
    return _created(service.create_endpoint(
        session, client, url=body.url, event_types=body.events, description=body.description, enabled=body.enabled,
    ))


@router.get("/endpoints", response_model=list[EndpointOut])
def list_endpoints(session: SessionDep, client: CurrentClient) -> list[EndpointOut]:
    return [EndpointOut.of(e) for e in service.list_endpoints(session, client)]


@router.get("/endpoints/{endpoint_id}", response_model=EndpointOut)
def get_endpoint(endpoint_id: str, session: SessionDep, client: CurrentClient) -> EndpointOut:
    return EndpointOut.of(service.get_endpoint(session, endpoint_id, client))


@router.patch("/endpoints/{endpoint_id}", response_model=EndpointOut)
def update_endpoint(endpoint_id: str, body: EndpointUpdate, session: SessionDep, client: CurrentClient) -> EndpointOut:
    return EndpointOut.of(service.update_endpoint(
        session, endpoint_id, client, url=body.url, event_types=body.events, description=body.description,
        enabled=body.enabled,
    ))


@router.delete("/endpoints/{endpoint_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_endpoint(endpoint_id: str, session: SessionDep, client: CurrentClient) -> Response:
    service.delete_endpoint(session, endpoint_id, client)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/endpoints/{endpoint_id}/rotate-secret", response_model=EndpointCreated)
def rotate_secret(
    endpoint_id: str, session: SessionDep, client: CurrentClient, body: RotateSecret | None = None
) -> EndpointCreated:
    grace = body.grace_seconds if body else None
    return _created(service.rotate_secret(session, endpoint_id, client, grace_seconds=grace))


@router.post("/endpoints/{endpoint_id}/recover", response_model=RecoverOut)
def recover(endpoint_id: str, body: Recover, session: SessionDep, client: CurrentClient) -> RecoverOut:
    return RecoverOut(deliveries=service.recover(session, endpoint_id, client, since=body.since))


@router.get("/endpoints/{endpoint_id}/deliveries", response_model=list[DeliveryOut])
def list_deliveries(
    endpoint_id: str, session: SessionDep, client: CurrentClient,
    status_filter: Annotated[str | None, Query(alias="status")] = None,
    limit: Annotated[int, Query()] = 100,
) -> list[DeliveryOut]:
    found = service.list_deliveries(session, endpoint_id, client, status=status_filter, limit=limit)
    return [DeliveryOut.of(d) for d in found]


@router.get("/deliveries/{delivery_id}", response_model=DeliveryDetail)
def get_delivery(delivery_id: str, session: SessionDep, client: CurrentClient) -> DeliveryDetail:
    delivery = service.get_delivery(session, delivery_id, client)
    attempts = [AttemptOut.model_validate(a) for a in service.delivery_attempts(session, delivery.id)]
    return DeliveryDetail(**DeliveryOut.of(delivery).model_dump(), attempt_log=attempts)


@router.post("/deliveries/{delivery_id}/replay", status_code=status.HTTP_202_ACCEPTED, response_model=DeliveryOut)
def replay(delivery_id: str, session: SessionDep, client: CurrentClient) -> DeliveryOut:
    return DeliveryOut.of(service.replay(session, delivery_id, client))
