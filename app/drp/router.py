"""HTTP face of the Data Rights Protocol: the paths and shapes v0.9.x names, translated to
the DRP service. Signed bodies arrive as text/plain; errors are RFC 9457 problems that also
carry §3.06's ``code``, ``message`` and, where re-sending cannot help, ``fatal``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Request, status

from app.api.deps import AdminClient, SessionDep, get_current_client
from app.core.auth import ApiClient
from app.core.errors import UnlearndError
from app.core.problems import PROBLEM_MEDIA_TYPE
from app.drp import service
from app.drp.schemas import AgentCreate, AgentOut, ExerciseStatus, PairwiseToken
from app.requests.service import Provenance

router = APIRouter(tags=["data rights protocol"])
admin_router = APIRouter(prefix="/v1/drp", tags=["data rights protocol"])

EXERCISE_PATH = "/v1/data-rights-request"
AGENT_PATH = "/v1/agent/"
SIGNED_TEXT = {"requestBody": {"required": True, "content": {"text/plain": {"schema": {
    "type": "string", "description": "base64(Ed25519 signature || JSON document), libsodium combined mode (§3.07)"}}}}}
AgentId = Annotated[str, Path(max_length=64)]
RequestId = Annotated[str, Path(max_length=64)]


async def _signed_body(request: Request) -> bytes:
    return await request.body()


SignedBody = Annotated[bytes, Depends(_signed_body)]


@contextmanager
def _drp_errors() -> Iterator[None]:
    try:
        yield
    except UnlearndError as exc:
        exc.extensions.setdefault("code", str(exc.status))
        exc.extensions.setdefault("message", exc.detail)
        raise


async def _agent_client(
    request: Request, session: SessionDep, authorization: Annotated[str | None, Header()] = None
) -> ApiClient:
    """The usual bearer-key check, its refusals in the DRP error shape too."""
    with _drp_errors():
        return await get_current_client(request, session, authorization)


CurrentClient = Annotated[ApiClient, Depends(_agent_client)]


def _status(document: dict[str, Any]) -> ExerciseStatus:
    return ExerciseStatus(**document)


@admin_router.post("/agents", status_code=status.HTTP_201_CREATED, response_model=AgentOut)
def register_agent(body: AgentCreate, session: SessionDep, admin: AdminClient) -> AgentOut:
    """Enter an authorized agent from the DRP service directory (its id and verify key)."""
    agent = service.register_agent(session, agent_id=body.id, name=body.name, verify_key=body.verify_key,
                                   actor=admin.id, requires_approval=body.requires_approval)
    return AgentOut.model_validate(agent)


@admin_router.get("/agents", response_model=list[AgentOut])
def list_agents(session: SessionDep, _: AdminClient) -> list[AgentOut]:
    return [AgentOut.model_validate(a) for a in service.list_agents(session)]


@router.post(AGENT_PATH + "{agent_id}", response_model=PairwiseToken, response_model_by_alias=True,
             openapi_extra=SIGNED_TEXT, responses={403: {
                 "description": "Unknown agent, or the message's signature or claims do not hold (§2.05.1).",
                 "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}})
def pairwise_setup(agent_id: AgentId, session: SessionDep, signed: SignedBody) -> PairwiseToken:
    """§2.05 Pair-wise Key Setup: a message signed with the agent's directory key returns the
    bearer token for every other call (a new one each time; the previous one stops working)."""
    with _drp_errors():
        agent, token = service.pairwise_setup(session, agent_id, signed)
    return PairwiseToken(agent_id=agent.id, token=token)


@router.get(AGENT_PATH + "{agent_id}")
def agent_information(agent_id: AgentId, session: SessionDep, client: CurrentClient) -> dict[str, Any]:
    """§2.06 Agent Information: `{}` while the token is this agent's, 403 otherwise."""
    with _drp_errors():
        service.check_token(session, agent_id, client)
    return {}


@router.post(EXERCISE_PATH, response_model=ExerciseStatus, response_model_exclude_none=True,
             openapi_extra=SIGNED_TEXT)
@router.post(EXERCISE_PATH + "/", response_model=ExerciseStatus, response_model_exclude_none=True,
             openapi_extra=SIGNED_TEXT, include_in_schema=False)
def exercise(http: Request, session: SessionDep, client: CurrentClient, signed: SignedBody) -> ExerciseStatus:
    """§2.01 Data Rights Exercise: a signed deletion request becomes a deletion request of this
    service; the answer is its Exercise Status (§3.03)."""
    with _drp_errors():
        outcome = service.exercise(session, client, signed, Provenance(
            channel="drp", source_ip=http.client.host if http.client else None,
            user_agent=http.headers.get("user-agent")))
        return _status(service.exercise_status(session, outcome.request))


@router.get(EXERCISE_PATH + "/{request_id}", response_model=ExerciseStatus, response_model_exclude_none=True)
def exercise_status(request_id: RequestId, session: SessionDep, client: CurrentClient) -> ExerciseStatus:
    """§2.02 Data Rights Status."""
    with _drp_errors():
        return _status(service.status_of(session, client, request_id))


@router.delete(EXERCISE_PATH + "/{request_id}", response_model=ExerciseStatus, response_model_exclude_none=True,
               openapi_extra=SIGNED_TEXT)
def revoke(request_id: RequestId, session: SessionDep, client: CurrentClient, signed: SignedBody) -> ExerciseStatus:
    """§2.04 Data Rights Revoke: a signed `{"reason": ...}`; answers the new `revoked` status."""
    with _drp_errors():
        return _status(service.revoke(session, client, request_id, signed))
