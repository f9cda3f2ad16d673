from __future__ import annotations

import asyncio
from contextvars import Token
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, status
from fastapi.responses import PlainTextResponse, StreamingResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.api.deps import AuditorClient, CurrentClient, SessionDep
from app.audit import events, keys, tree
from app.audit import service as audit_service
from app.audit.models import TreeHead
from app.audit.schemas import (
    AuditEventOut,
    AuditEventPage,
    ConsistencyProofOut,
    InclusionProofOut,
    LogVerificationOut,
    TreeHeadOut,
)
from app.audit.verify import verify_log
from app.core.fields import INT64_MAX


class SealAfterResponse:
    """Seal the audit events a request committed after its response is sent, not before (see
    ``service.deferred_sealing``): the response waits only for its own commit. The HTTP edge's
    ``after_response`` hook (``app.api.edge``): ``begin`` when a request arrives, ``end`` once its
    response has been sent.

    While other requests are in flight in this process, the first request to end with events
    waiting (and no sealer running) waits ``GATHER_SECONDS`` on the event loop, holding no
    thread, and then seals; requests ending meanwhile leave their events to that pass (their
    commits precede their ends, so its read finds them). Under load a pass (a lock, two reads,
    a write, a commit) then seals many requests' events, where it sealed two or three. A lone
    request (nothing else in flight) is sealed at once, as before.
    """

    GATHER_SECONDS = 0.05

    def __init__(self) -> None:
        self.in_flight = 0
        self.gathering = False  # a request is waiting to seal; its pass will take the others' events

    def begin(self) -> tuple[list[bool], Token[list[bool] | None]]:
        self.in_flight += 1
        waiting = [False]
        return waiting, audit_service.deferred_sealing.set(waiting)

    async def end(self, pending: tuple[list[bool], Token[list[bool] | None]]) -> None:
        waiting, token = pending
        audit_service.deferred_sealing.reset(token)
        self.in_flight -= 1
        if not waiting[0] or self.gathering or audit_service.noted_to_sealer():
            return
        if self.in_flight:
            self.gathering = True
            try:
                await asyncio.sleep(self.GATHER_SECONDS)
            finally:
                self.gathering = False
            if audit_service.noted_to_sealer():
                return
        await run_in_threadpool(audit_service.seal_committed)


router = APIRouter(prefix="/v1/audit", tags=["audit"])
well_known_router = APIRouter(tags=["audit"])

JSON_LINES = "application/x-ndjson"


def _head_out(session: Session, head: TreeHead) -> TreeHeadOut:
    return TreeHeadOut(**tree.published_head(head), head_hash=tree.head_hash(session, head.tree_size))


@router.get("/tree-heads/latest", response_model=TreeHeadOut)
def latest_tree_head(session: SessionDep, _: CurrentClient) -> TreeHeadOut:
    return _head_out(session, tree.require_latest_tree_head(session))


@router.get(
    "/checkpoint",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}},
                     "description": "The latest signed tree head as a C2SP tlog-checkpoint signed note."}},
)
def checkpoint(session: SessionDep, _: CurrentClient) -> PlainTextResponse:
    """The latest signed tree head in the C2SP `tlog-checkpoint` signed-note format (origin,
    size, base64 root; one Ed25519 signature line). Its verifier keys are at
    `/.well-known/unlearnd-checkpoint-keys`; the proofs below are RFC 9162 proofs against it."""
    return PlainTextResponse(tree.latest_checkpoint(session))


@router.post("/tree-heads", status_code=status.HTTP_201_CREATED, response_model=TreeHeadOut)
def sign_tree_head(session: SessionDep, _: AuditorClient) -> TreeHeadOut:
    return _head_out(session, tree.sign_tree_head(session))


@router.get("/events", response_model=AuditEventPage, responses={200: {"content": {JSON_LINES: {}}}})
def list_events(
    session: SessionDep,
    _: AuditorClient,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=events.MAX_PAGE)] = 100,
    format: Annotated[str, Query(pattern="^(json|jsonl)$")] = "json",
) -> Any:
    after = events.parse_cursor(cursor)
    if format == "jsonl":
        return StreamingResponse(events.export_lines(after=after), media_type=JSON_LINES)
    page = events.events_page(session, after=after, limit=limit)
    return AuditEventPage(
        items=[AuditEventOut(**events.published_event(e)) for e in page],
        next_cursor=str(page[-1].seq) if len(page) == limit else None,
    )


@router.get("/events/{seq}/inclusion-proof", response_model=InclusionProofOut)
def inclusion_proof(
    seq: Annotated[int, Path(ge=1, le=INT64_MAX)],
    session: SessionDep,
    _: CurrentClient,
    tree_size: Annotated[int | None, Query(ge=1, le=INT64_MAX)] = None,
) -> InclusionProofOut:
    return InclusionProofOut(**asdict(tree.inclusion_proof(session, seq, tree_size)))


@router.get("/consistency-proof", response_model=ConsistencyProofOut)
def consistency_proof(
    session: SessionDep,
    _: CurrentClient,
    first: Annotated[int, Query(ge=1, le=INT64_MAX)],
    second: Annotated[int | None, Query(ge=1, le=INT64_MAX)] = None,
) -> ConsistencyProofOut:
    return ConsistencyProofOut(**asdict(tree.consistency_proof(session, first, second)))


@router.get("/verification", response_model=LogVerificationOut)
def verify(session: SessionDep, _: AuditorClient, expected_head: str | None = None) -> LogVerificationOut:
    return LogVerificationOut(**asdict(verify_log(session, expected_head=expected_head)))


@well_known_router.get("/.well-known/unlearnd-keys")
def published_keys(session: SessionDep) -> dict[str, Any]:
    """Every public key that ever signed a tree head or certificate (JWKS, OKP/Ed25519)."""
    return keys.key_set(session)


@well_known_router.get(
    "/.well-known/unlearnd-checkpoint-keys",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}, "description": "One note verifier key a line, current first."}},
)
def checkpoint_keys(session: SessionDep) -> PlainTextResponse:
    """The same keys as the JWKS, as signed-note verifier keys (`name+hash+base64(0x01||key)`)."""
    return PlainTextResponse("".join(f"{line}\n" for line in tree.checkpoint_verifier_keys(session)))
