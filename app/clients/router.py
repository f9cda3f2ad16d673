from __future__ import annotations

from fastapi import APIRouter, status

from app.api.deps import AdminClient, SessionDep
from app.clients import service
from app.clients.schemas import ClientCreate, ClientCreated, ClientOut

router = APIRouter(prefix="/v1/clients", tags=["clients"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ClientCreated)
def create_client(body: ClientCreate, session: SessionDep, admin: AdminClient) -> ClientCreated:
    issued = service.create_client(
        session, name=body.name, role=body.role, requires_approval=body.requires_approval, actor=admin.id
    )
    return ClientCreated(**ClientOut.model_validate(issued.client).model_dump(), api_key=issued.api_key)


@router.get("", response_model=list[ClientOut])
def list_clients(session: SessionDep, _: AdminClient) -> list[ClientOut]:
    return [ClientOut.model_validate(c) for c in service.list_clients(session)]


@router.post("/{client_id}/revoke", response_model=ClientOut)
def revoke_client(client_id: str, session: SessionDep, admin: AdminClient) -> ClientOut:
    return ClientOut.model_validate(service.revoke_client(session, client_id, actor=admin.id))
