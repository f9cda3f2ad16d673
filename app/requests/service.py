"""Deletion-request intake and lifecycle: the rules live here, routers and the CLI only call in.

Intake is one transaction: identifiers are hashed first, the request is resolved against
lineage, and the request, its history, its resolved records and its audit events are
written together or not at all. ``transition`` is the one place a status changes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType, SimpleNamespace
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Select, func, or_, select, tuple_, update
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.core.auth import ApiClient
from app.core.config import get_settings
from app.core.database import insert_linked, new_id, not_among, one_of, utcnow
from app.core.errors import (
    Conflict,
    Forbidden,
    IllegalTransition,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    UnlearndError,
)
from app.core.hashing import canonical_json, sha256_hex
from app.core.outbox import enqueue, enqueue_now
from app.core.queue import TaskName
from app.core.roles import Role
from app.lineage import service as lineage
from app.registry import subjects
from app.registry.models import DataRecord, Dataset, RecordState, RegisteredModel
from app.requests import deadlines
from app.requests.models import (
    DeletionRequest,
    LegalBasis,
    RequestModelVersion,
    RequestOutcome,
    RequestRecord,
    RequestStatus,
    RequestTransition,
    weakest,
)
from app.requests.reads import RequestFilters, RequestPage, get_request, history, list_requests, visible
from app.requests.schemas import DeletionRequestBatchItem, DeletionRequestCreate

__all__ = ["RequestFilters", "RequestPage", "get_request", "history", "list_requests"]  # reads, re-exported
log = logging.getLogger("unlearnd.requests")

S = RequestStatus
ALLOWED_TRANSITIONS: dict[RequestStatus, frozenset[RequestStatus]] = {
    S.RECEIVED: frozenset({S.PENDING_APPROVAL, S.SCHEDULED, S.COMPLETED, S.CANCELLED, S.FAILED}),
    S.PENDING_APPROVAL: frozenset({S.SCHEDULED, S.REJECTED, S.CANCELLED}),
    # scheduled -> completed: another request's job already forgot every record.
    S.SCHEDULED: frozenset({S.UNLEARNING, S.COMPLETED, S.CANCELLED, S.FAILED}),
    S.UNLEARNING: frozenset({S.VERIFYING, S.FAILED}),
    # verifying -> unlearning: an approximate result failed verification; fall back to exact.
    S.VERIFYING: frozenset({S.COMPLETED, S.UNLEARNING, S.FAILED}),
    S.FAILED: frozenset({S.SCHEDULED}),
    S.COMPLETED: frozenset(),
    S.REJECTED: frozenset(),
    S.CANCELLED: frozenset(),
}
TERMINAL = frozenset(s for s, targets in ALLOWED_TRANSITIONS.items() if not targets)
# Requests whose records must stay out of new training and may sit in a live version only
# while the request is attached to it: every status but the terminal ones.
AT_STAKE = tuple(s.value for s in S if s not in TERMINAL)
# A portal's clock may run a little ahead of ours; beyond this, requested_at is refused.
CLOCK_SKEW = timedelta(minutes=2)
MAX_IDEMPOTENCY_KEY = 255
# Each member's value, found by the member or by the value itself (a StrEnum member hashes and
# compares as its value): a dict lookup where ``RequestStatus(x).value`` is two enum calls, a
# dozen times per submission.
_STATUS_VALUE: dict[str, str] = {s: s.value for s in RequestStatus}
_OUTCOME_VALUE: dict[str, str] = {o: o.value for o in RequestOutcome}
_RECEIVED = S.RECEIVED.value
# What a submission planned with no written request to compare against reads (never written to).
_NONE_WRITTEN: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class Provenance:
    channel: str  # "api" or "cli"
    source_ip: str | None = None
    user_agent: str | None = None


@dataclass(slots=True)
class Submission:
    request: DeletionRequest  # or, when created here, the _NewRequest written as that row
    replayed: bool  # True when an earlier identical submission was returned


@dataclass(frozen=True)
class ScheduledRequest:
    """What the jobs room needs to batch a scheduled request."""

    request_id: str
    due_at: datetime
    record_ids: list[int]
    version_ids: list[str]


# --- intake -----------------------------------------------------------------------------------


@dataclass
class _Planned:
    """A submission that passed every check, built in memory and not yet written."""

    request: _NewRequest
    steps: list[_Step]
    record_ids: list[int]
    versions: list[lineage.AffectedVersion]
    # The submission answered as a replay of another one planned in the same batch.
    replays: list[int] = field(default_factory=list)
    call_id: str | None = None  # Intake.call_id


@dataclass
class _Prepared:
    """A submission checked on its own and hashed; not yet compared with earlier requests."""

    submission: DeletionRequestCreate
    idempotency_key: str | None
    provenance: Provenance
    call_id: str | None
    identifiers: list[subjects.SubjectHashes]
    lookup: list[str]
    requested_at: datetime
    received_at: datetime
    request_hash: str
    record_refs: list[tuple[str, str]]
    scope_models: list[str] | None


def submit(
    session: Session,
    *,
    client: ApiClient,
    submission: DeletionRequestCreate,
    provenance: Provenance,
    idempotency_key: str | None = None,
) -> Submission:
    """Record a deletion request, resolve it, and move it as far as intake may.

    Optimistic about replays: nearly every submission is new, so no earlier request is read
    first; the write's ON CONFLICT finds a repeat, and only then is the earlier request read
    (a replay, or a 409). The request costs three statements and one commit."""
    (outcome,) = submit_together(session, client=client, intakes=[Intake(submission, idempotency_key, provenance)])
    if isinstance(outcome, UnlearndError):
        raise outcome
    return outcome


@dataclass(slots=True)
class Intake:
    """One submission as it arrived: its body, its Idempotency-Key header, where it came from,
    and when (None: now, when it is checked)."""

    submission: DeletionRequestCreate
    idempotency_key: str | None
    provenance: Provenance
    received_at: datetime | None = None
    # The id of the HTTP call that carried it, for its log line: submissions written together
    # are logged from one thread, whose own context names only the first call.
    call_id: str | None = None


def submit_together(session: Session, *, client: ApiClient, intakes: Sequence[Intake]) -> list[Submission | UnlearndError]:
    """Submissions of one client that arrived together (group commit of single intakes), in one
    transaction; each answered as ``submit`` would answer it alone (a refusal is returned, not
    raised). A later one that repeats an earlier one's key is that one's replay, as it would be
    had they come one after the other."""
    return _submit_all(session, client, intakes, entities=True)


def _submit_all(session: Session, client: ApiClient, entries: Sequence[Intake | UnlearndError], *,
                entities: bool, chain_now: bool = False) -> list[Submission | UnlearndError]:
    """Plan every entry, write the planned ones, and answer each (a replay of an entry planned
    before it in ``entries`` is answered as that one was). Waits first while this process's
    audit sealer works through a backlog, so sustained intake never outruns the chain."""
    audit.wait_while_sealing_behind()
    answers = _plan_all(session, client, entries, entities=entities)
    planned = [a for a in answers if isinstance(a, _Planned)]
    written = dict(zip(map(id, planned), _write(session, client, planned, entities=entities, chain_now=chain_now),
                       strict=True))
    outcomes: list[Submission | UnlearndError] = []
    for answer in answers:
        if isinstance(answer, _Planned):
            answer = written[id(answer)]
        elif isinstance(answer, Submission) and isinstance(answer.request, _PlannedRef):
            first = written[id(answer.request.planned)]
            answer = Submission(request=first.request, replayed=True) if isinstance(first, Submission) else first
        outcomes.append(answer)
    return outcomes


def _plan_all(
    session: Session,
    client: ApiClient,
    entries: Sequence[Intake | UnlearndError],
    *,
    entities: bool = True,
) -> list[Submission | _Planned | UnlearndError]:
    """Every check and every read of the submissions, in order; no write. What it returns is
    written by ``_write``, so a submission is written whole or not at all without a savepoint.
    The reads are set-based: one statement reads the scope models, one the datasets, and
    ``lineage.resolve_many`` resolves them together, so a batch of a thousand costs the round
    trips of one. Later items see earlier planned ones as if written (a repeat is a replay of
    it, or a 409).

    Optimistic about replays: nearly every submission is new, so earlier requests are not read
    up front; ``_write`` answers one that loses on its key as a replay. The submissions refused
    by a check do have their earlier requests read (one statement for all), so a replay is
    answered as one whatever the checks say now. ``entities``: those are read as ORM objects
    (a single intake answers with the whole request), else as the few columns a batch's answer
    reads."""
    answers: list[Any] = list(entries)
    prepared: dict[int, _Prepared] = {}
    schemes: list[subjects.HashScheme] | None = None
    role = client.role_enum  # once: per item it was an ORM read and an enum call, 1.7% of a batch
    for index, entry in enumerate(entries):
        if isinstance(entry, UnlearndError):
            continue
        submission, key = entry.submission, entry.idempotency_key
        try:
            _check_idempotency_key(key)
            _check_kind(role, submission)
            if submission.subject and schemes is None:
                # The shared lineage lock (see ``_lock_lineage``) is taken in the same statement:
                # resolution, a later statement, reads under it. One round trip for both.
                schemes = subjects.schemes_in_use(session, first=lineage.lock_clause(session, exclusive=False))
            prepared[index] = _prepare(entry, schemes or [])
        except UnlearndError as error:
            answers[index] = error
    if not prepared:
        return answers
    known_models = _known(session, RegisteredModel.name, {m for p in prepared.values() for m in p.scope_models or ()})
    known_datasets = _known(session, Dataset.name, {d for p in prepared.values() for d in _datasets_named(p.submission)})
    planned: dict[tuple[str, str], _Planned] = {}
    fresh: list[tuple[int, _Prepared]] = []
    refused: list[tuple[int, _Prepared]] = []
    for index, p in prepared.items():
        try:
            earlier = _earlier(p.idempotency_key, p.submission.external_ref, _NONE_WRITTEN, _NONE_WRITTEN, planned)
            if earlier is not None:
                answers[index] = _replay(earlier, p.request_hash, p.idempotency_key)
                continue
            _check_scope_models(p.scope_models, known_models)
            _check_known_datasets(p.submission, known_datasets)
        except UnlearndError as error:
            answers[index] = error
            refused.append((index, p))
            continue
        answers[index] = plan = _Planned(request=_new_request(client, p), steps=[], record_ids=[], call_id=p.call_id,
                                         versions=[])
        if p.idempotency_key is not None:
            planned.setdefault(("key", p.idempotency_key), plan)
        if p.submission.external_ref is not None:
            planned.setdefault(("ref", p.submission.external_ref), plan)
        fresh.append((index, p))
    if refused:
        # A refused submission that repeats a written request is that request's replay, whatever
        # the checks say now: one read for all of them.
        by_key, by_ref = _earlier_requests(session, client.id, [p for _, p in refused], entities=entities)
        for index, p in refused:
            earlier = _earlier(p.idempotency_key, p.submission.external_ref, by_key, by_ref, {})
            if earlier is None:
                continue
            try:
                answers[index] = _replay(earlier, p.request_hash, p.idempotency_key)
            except UnlearndError as conflict:
                answers[index] = conflict
    if not fresh:
        return answers
    # Resolution runs under the shared lineage lock (see ``_lock_lineage``), taken once: with the
    # schemes read when a submission names a subject.
    if schemes is None:
        _lock_lineage(session)
    resolutions = lineage.resolve_many(session, [
        lineage.ResolveQuery(subject_hashes=p.lookup, record_refs=p.record_refs, scope_models=p.scope_models,
                             selection=_selection(p.submission))
        for _, p in fresh
    ])
    for (index, p), resolution in zip(fresh, resolutions, strict=True):
        _settle(session, client, answers[index], p, resolution)
    return answers


def _prepare(intake: Intake, schemes: list[subjects.HashScheme]) -> _Prepared:
    submission = intake.submission
    identifiers = _hash_identifiers(submission, schemes)
    hashes = [identifier.current for identifier in identifiers]
    received_at = intake.received_at or utcnow()
    requested_at = submission.requested_at or received_at
    if requested_at > received_at + CLOCK_SKEW:
        raise InvalidInput("requested_at is in the future", field="requested_at")
    return _Prepared(
        submission=submission, idempotency_key=intake.idempotency_key, provenance=intake.provenance,
        call_id=intake.call_id,
        identifiers=identifiers,
        lookup=sorted({h for identifier in identifiers for h in identifier.lookup}),
        requested_at=requested_at, received_at=received_at, request_hash=_request_hash(submission, hashes),
        record_refs=[(ref.dataset, ref.record_key) for ref in submission.records],
        scope_models=submission.scope.models if submission.scope else None,
    )


class _NewRequest(SimpleNamespace):
    """A request built in memory and not yet written: the ``deletion_requests`` columns as plain
    attributes, read like the row it becomes (the API's response, the DRP status), without the
    ORM's per-attribute instrumentation (a batch builds a thousand)."""

    __table__ = DeletionRequest.__table__
    # Its attributes are exactly the table's columns (``_new_request`` sets every one), so
    # ``vars`` of it is the row ``_write`` inserts.


def _new_request(client: ApiClient, p: _Prepared) -> _NewRequest:
    """The request row, built in memory and written with Core statements: no identity-map
    work on the hot path. ``_settle`` fills in what resolution found."""
    submission, scope_models = p.submission, p.scope_models
    return _NewRequest(
        id=new_id(),
        client_id=client.id,
        external_ref=submission.external_ref,
        idempotency_key=p.idempotency_key,
        request_hash=p.request_hash,
        subject_hashes=p.lookup,
        record_refs=[{"dataset": d, "record_key": k} for d, k in p.record_refs],
        selector=submission.selector.model_dump(mode="json", exclude_none=True) if submission.selector else None,
        reason=submission.reason,
        legal_basis=submission.legal_basis.value,
        jurisdiction=submission.jurisdiction,
        scope={"models": scope_models} if scope_models else {},
        requested_at=p.requested_at,
        received_at=p.received_at,
        due_at=deadlines.due_at(submission.legal_basis, p.requested_at, get_settings().default_deadline_days),
        status=_RECEIVED,
        outcome=None,
        guarantee=None,
        extended_at=None,
        extension_reason=None,
        completed_at=None,
        certified_at=None,
        updated_at=p.received_at,
        provenance=_provenance_document(client, p.provenance, submission),
        affected={},
    )


def _settle(session: Session, client: ApiClient, planned: _Planned, p: _Prepared,
            resolution: lineage.Resolution) -> None:
    """Move a planned request as far as intake may, from what resolution found."""
    request = planned.request
    planned.steps.append(_Step(request_id=request.id, from_status=None, to_status=_RECEIVED,
                               actor=client.id, reason=None, at=p.received_at))
    planned.record_ids, planned.versions = _describe_resolution(session, request, resolution)
    request.affected["identifiers_checked"] = _identifiers_checked(p.submission, p.identifiers)
    if not planned.record_ids and not planned.versions:
        # Records found but all forgotten already: that is not "no data found", it is done, and
        # the earlier request's certificate holds the proof.
        outcome = RequestOutcome.ALREADY_FORGOTTEN if "already_forgotten" in request.affected \
            else RequestOutcome.NO_DATA_FOUND
        planned.steps.append(_apply(request, S.COMPLETED, actor="system", outcome=outcome,
                                    guarantee=_earlier_guarantee(session, request)))
    elif client.requires_approval:
        planned.steps.append(_apply(request, S.PENDING_APPROVAL, actor="system",
                                    reason="client policy requires approval"))
    else:
        planned.steps.append(_apply(request, S.SCHEDULED, actor="system"))


def _write(session: Session, client: ApiClient, planned: list[_Planned], *,
           entities: bool = True, chain_now: bool = False) -> list[Submission | UnlearndError]:
    """Write planned submissions (on PostgreSQL one statement for every table, elsewhere one per
    table). The request rows go in with ON CONFLICT DO NOTHING: one that lost a race to a
    concurrent submission with the same key or external_ref writes nothing more and is answered
    with the winner's request."""
    if not planned:
        return []
    # One statement writes every request row that wins its key (ON CONFLICT DO NOTHING) with its
    # history, resolved records and versions, and its audit event (one per request, naming
    # every status it passed through) as a pending row for the sealer; a row that lost a race
    # writes nothing more. ``chain_now`` (a batch): the winners' events are chained instead, by
    # this transaction, just before it commits (``audit.append_events``).
    events = [
        audit.Event(
            actor=client.id, action="request.received", entity_type="deletion_request", entity_id=p.request.id,
            payload={
                "client_id": client.id, "legal_basis": p.request.legal_basis, "request_hash": p.request.request_hash,
                "due_at": p.request.due_at.isoformat(), "subject_hashes": p.request.subject_hashes,
                **({"selector": p.request.selector} if p.request.selector else {}),
                "record_count": p.request.affected["record_count"], "model_versions": [v.id for v in p.versions],
                "transitions": [[step.from_status, step.to_status] for step in p.steps],
                "status": p.request.status, "outcome": p.request.outcome,
            },
        )
        for p in planned
    ]
    pending = [] if chain_now else [(*audit.pending_rows(session, events), "entity_id")]
    inserted = set(insert_linked(
        session, DeletionRequest.__table__, [vars(p.request) for p in planned], key="id", children=[
            (RequestTransition.__table__, [step.row() for p in planned for step in p.steps],
             "request_id"),
            (RequestRecord.__table__, [{"request_id": p.request.id, "record_id": rid}
                                       for p in planned for rid in p.record_ids], "request_id"),
            (RequestModelVersion.__table__, [{"request_id": p.request.id, "version_id": v.id, "model_id": v.model_id}
                                             for p in planned for v in p.versions], "request_id"),
            *pending,
        ]))
    outcomes: dict[int, Submission | UnlearndError] = {}
    winners = [p for p in planned if p.request.id in inserted]
    losers = [p for p in planned if p.request.id not in inserted]
    for p in winners:
        outcomes[id(p)] = Submission(request=p.request, replayed=False)
    if losers:
        by_key, by_ref = _earlier_requests(
            session, client.id, [(p.request.idempotency_key, p.request.external_ref) for p in losers],
            entities=entities)
    for p in losers:
        request = p.request
        earlier = _earlier(request.idempotency_key, request.external_ref, by_key, by_ref, {})
        if earlier is None:  # the other transaction rolled back after all: a transient state
            outcomes[id(p)] = ServiceUnavailable("a concurrent submission with this key is still settling; retry")
            continue
        try:
            outcomes[id(p)] = _replay(earlier, request.request_hash, request.idempotency_key)
        except Conflict as conflict:
            outcomes[id(p)] = conflict
    # Every completed request's certificate order goes in one outbox message: a batch of a
    # thousand is one hand-off to the broker after commit, not a thousand.
    completed = [p.request.id for p in winners if p.request.status == S.COMPLETED]
    if completed:
        enqueue_now(session, TaskName.ISSUE_CERTIFICATE, request_ids=completed, background=True)
    if winners and log.isEnabledFor(logging.INFO):
        for p in winners:
            log.info("deletion request received", extra={"deletion_request": p.request.id, "status": p.request.status,
                                                         **({"request_id": p.call_id} if p.call_id else {})})
    if chain_now:  # last: from here the chain lock is held until commit
        audit.append_events(session, [e for e in events if e.entity_id in inserted])
    return [outcomes[id(p)] for p in planned]


# --- bulk intake ------------------------------------------------------------------------------

MAX_BATCH = 1000
# Batches a process plans and writes at once; the others wait their turn. A batch is a quarter
# second of Python per thousand items, and one process has one core for Python: batches running
# together only slowed each other, and the one holding the chain lock (``audit.append_events``,
# until its commit) waited its turn for the interpreter behind thirty others, which all then
# waited for that lock. Two keep the database busy with one while the other computes; measured
# against three and unlimited in benchmarks/results/intake.md.
BATCHES_AT_ONCE = 2
BATCH_TURN_SECONDS = 60.0
_batch_turns = threading.BoundedSemaphore(BATCHES_AT_ONCE)


@dataclass(slots=True)
class BatchResult:
    """One item's answer: its submission, or the error that refused it (nothing written)."""

    index: int
    submission: Submission | None = None
    error: UnlearndError | None = None


def submit_batch(
    session: Session, *, client: ApiClient, items: Sequence[Any], provenance: Provenance
) -> list[BatchResult]:
    """Many submissions in one transaction, each judged on its own: an item refused by a check
    writes nothing and does not stop the others. Each item names itself with an
    ``idempotency_key`` or an ``external_ref``, so sending the whole batch again is safe: what
    was written is answered as a replay. Every item is checked first, then all are written
    with one statement per table; a database failure rolls back the whole batch."""
    if len(items) > MAX_BATCH:
        raise PayloadTooLarge(f"at most {MAX_BATCH} requests per batch; this one has {len(items)}",
                              field="requests", max_items=MAX_BATCH)
    entries: list[Intake | UnlearndError] = []
    received_at = utcnow()
    for raw in items:
        try:
            item = _parse_batch_item(raw)
            entries.append(Intake(item, item.idempotency_key, provenance, received_at))
        except UnlearndError as error:
            entries.append(error)
    if not _batch_turns.acquire(timeout=BATCH_TURN_SECONDS):
        raise ServiceUnavailable(f"more batches are waiting than this process writes in {BATCH_TURN_SECONDS:.0f} s; "
                                 "retry")
    try:
        answers = _submit_all(session, client, entries, entities=False, chain_now=True)
    finally:
        _batch_turns.release()
    return [BatchResult(index=index, error=answer) if isinstance(answer, UnlearndError)
            else BatchResult(index=index, submission=answer)
            for index, answer in enumerate(answers)]


def _parse_batch_item(raw: Any) -> DeletionRequestBatchItem:
    item = raw if isinstance(raw, DeletionRequestBatchItem) else _validate_batch_item(raw)
    if item.idempotency_key is None and item.external_ref is None:
        raise InvalidInput("each request in a batch needs an idempotency_key or an external_ref, so that "
                           "sending the batch again is safe", field="idempotency_key")
    return item


def _validate_batch_item(raw: Any) -> DeletionRequestBatchItem:
    try:
        return DeletionRequestBatchItem.model_validate(raw)
    except ValidationError as invalid:
        errors = [
            {"field": ".".join(str(p) for p in err.get("loc", ())), "message": err.get("msg", ""),
             "type": err.get("type", "")}
            for err in invalid.errors()
        ]
        first = errors[0] if errors else {"field": "", "message": "invalid request"}
        raise InvalidInput(f"{first['field']}: {first['message']}" if first["field"] else first["message"],
                           field=first["field"], errors=errors) from None


def _check_kind(role: Role, submission: DeletionRequestCreate) -> None:
    """Portals name subjects or records; a selector (a whole dataset or source) is an
    operator's decision, so only admin and ml keys may send one, and must say why."""
    if submission.selector is not None:
        if role not in (Role.ADMIN, Role.ML):
            raise Forbidden(f"role '{role.value}' may not remove data by selector; needs admin or ml")
        if submission.subject or submission.records:
            raise InvalidInput("a selector request names no subject or records", field="selector")
        if submission.reason is None:
            raise InvalidInput("a removal by selector needs a reason", field="reason")
        return
    if role is Role.ML:
        raise Forbidden("role 'ml' may only submit removals by selector")
    if not submission.subject and not submission.records:
        raise InvalidInput("give the subject's identifiers and/or explicit records", field="subject")


def _selection(submission: DeletionRequestCreate) -> lineage.RecordSelection | None:
    selector = submission.selector
    if selector is None:
        return None
    return lineage.RecordSelection(dataset=selector.dataset, source=selector.source,
                                   ingested_before=selector.ingested_before)


def _check_idempotency_key(key: str | None) -> None:
    if key is None:
        return
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isascii() or not key.isprintable():
        raise InvalidInput(
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} printable ASCII characters", field="Idempotency-Key"
        )


def _hash_identifiers(submission: DeletionRequestCreate, schemes: list[subjects.HashScheme]) -> list[subjects.SubjectHashes]:
    """Each identifier's hash under every canonicaliser some dataset was ingested with."""
    return [
        subjects.hashes_for(identifier.type, identifier.value, schemes, field=f"subject.{index}.value")
        for index, identifier in enumerate(submission.subject)
    ]


def _identifiers_checked(
    submission: DeletionRequestCreate, identifiers: list[subjects.SubjectHashes]
) -> dict[str, list[Any]]:
    """What the subject lookup covered: a no_data_found certificate states exactly this."""
    return {
        "types": sorted({identifier.type.value for identifier in submission.subject}),
        "canonicaliser_versions": sorted({v for identifier in identifiers for v in identifier.versions}),
    }


def _request_hash(submission: DeletionRequestCreate, hashes: list[str]) -> str:
    """sha256 of the request as received, with every identifier already replaced by its hash."""
    # A batch item's idempotency key identifies it, as the header does; it is not the request.
    document = submission.model_dump(mode="json", exclude_unset=True, exclude={"idempotency_key"})
    if "subject" in document:
        document["subject"] = [
            {"type": identifier.type.value, "hash": hashed}
            for identifier, hashed in zip(submission.subject, hashes, strict=True)
        ]
    return sha256_hex(canonical_json(document))


@dataclass(frozen=True)
class _PlannedRef:
    """An earlier submission of the same batch, planned but not yet written."""

    planned: _Planned

    @property
    def id(self) -> str:
        return self.planned.request.id

    @property
    def request_hash(self) -> str:
        return self.planned.request.request_hash

    @property
    def idempotency_key(self) -> str | None:
        return self.planned.request.idempotency_key


_REPLAY_COLUMNS = (DeletionRequest.id, DeletionRequest.idempotency_key, DeletionRequest.external_ref,
                   DeletionRequest.request_hash, DeletionRequest.status)


def _earlier_requests(
    session: Session, client_id: str, named: Iterable[_Prepared | tuple[str | None, str | None]], *,
    entities: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The client's written requests with any of these keys or external_refs, in one statement:
    (by idempotency key, by external_ref). ``entities=False``: rows of the few columns a batch's
    answer and replay check read (``_REPLAY_COLUMNS``), without an ORM object each."""
    keys: set[str] = set()
    refs: set[str] = set()
    for item in named:
        key, ref = (item.idempotency_key, item.submission.external_ref) if isinstance(item, _Prepared) else item
        if key is not None:
            keys.add(key)
        if ref is not None:
            refs.add(ref)
    matches = []
    if keys:
        matches.append(one_of(session, DeletionRequest.idempotency_key, sorted(keys)))
    if refs:
        matches.append(one_of(session, DeletionRequest.external_ref, sorted(refs)))
    if not matches:
        return {}, {}
    where = (DeletionRequest.client_id == client_id, or_(*matches))
    found: list[Any] = list(session.scalars(select(DeletionRequest).where(*where))) if entities \
        else list(session.connection().execute(select(*_REPLAY_COLUMNS).where(*where)))
    return ({r.idempotency_key: r for r in found if r.idempotency_key in keys},
            {r.external_ref: r for r in found if r.external_ref in refs})


def _earlier(
    idempotency_key: str | None, external_ref: str | None, by_key: Mapping[str, Any],
    by_ref: Mapping[str, Any], planned: dict[tuple[str, str], _Planned],
) -> Any:
    """The earlier request a submission repeats: by its key (planned earlier in this batch, or
    written), else by its external_ref (when it has a key, one planned in this batch first)."""
    if idempotency_key is not None:
        if ("key", idempotency_key) in planned:
            return _PlannedRef(planned[("key", idempotency_key)])
        if idempotency_key in by_key:
            return by_key[idempotency_key]
    if external_ref is None:
        return None
    if idempotency_key is not None and ("ref", external_ref) in planned:
        return _PlannedRef(planned[("ref", external_ref)])
    if external_ref in by_ref:
        return by_ref[external_ref]
    if ("ref", external_ref) in planned:
        return _PlannedRef(planned[("ref", external_ref)])
    return None


def _known(session: Session, column: Any, names: set[str]) -> set[str]:
    """Which of the names a row has in ``column`` (model or dataset names), in one statement."""
    if not names:
        return set()
    return set(session.scalars(select(column).where(column.in_(sorted(names)))))


def _datasets_named(submission: DeletionRequestCreate) -> set[str]:
    named = {ref.dataset for ref in submission.records}
    if submission.selector is not None:
        named.add(submission.selector.dataset)
    return named


def _replay(earlier: Any, request_hash: str, idempotency_key: str | None) -> Submission:
    if earlier.request_hash != request_hash:
        same_key = idempotency_key is not None and earlier.idempotency_key == idempotency_key
        raise Conflict(
            "this Idempotency-Key was used with a different request body" if same_key
            else "this external_ref was used with a different request body",
            field="Idempotency-Key" if same_key else "external_ref",
            existing_request=earlier.id,
        )
    return Submission(request=earlier, replayed=True)


def _check_scope_models(names: list[str] | None, known: set[str]) -> None:
    for index, name in enumerate(names or ()):
        if name not in known:
            raise InvalidInput(f"no registered model named '{name}'", field=f"scope.models.{index}")


def _check_known_datasets(submission: DeletionRequestCreate, known: set[str]) -> None:
    if submission.selector is not None and submission.selector.dataset not in known:
        raise InvalidInput(f"no dataset named '{submission.selector.dataset}'", field="selector.dataset")
    for index, ref in enumerate(submission.records):
        if ref.dataset not in known:
            raise InvalidInput(f"no dataset named '{ref.dataset}'", field=f"records.{index}.dataset")


def _lock_lineage(session: Session) -> None:
    """Resolution runs under the shared lineage lock, so a version registering meanwhile either
    is seen here or sees this request when it checks its snapshot (see ``lineage.lock_lineage``)."""
    lineage.lock_lineage(session, exclusive=False)


def _describe_resolution(
    session: Session, request: DeletionRequest, resolution: lineage.Resolution
) -> tuple[list[int], list[lineage.AffectedVersion]]:
    """Fill ``request.affected``; return the record ids still to forget and the affected
    versions. Records already forgotten by an earlier request need nothing more."""
    record_ids = sorted({r.id for r in resolution.records if r.state == RecordState.ACTIVE})
    forgotten_ids = sorted({r.id for r in resolution.records if r.state != RecordState.ACTIVE})
    versions = sorted(resolution.model_versions, key=lambda v: v.id)
    affected: dict[str, Any] = {
        "record_count": len(record_ids),
        "unknown_record_count": len(resolution.unknown_records),
        "model_versions": [
            {"id": v.id, "model_id": v.model_id, "model": v.model, "number": v.number, "record_count": len(v.record_ids)}
            for v in versions
        ],
    }
    if forgotten_ids:
        affected["already_forgotten"] = {
            "record_count": len(forgotten_ids), "earlier_request_ids": _requests_that_forgot(session, forgotten_ids),
        }
    request.affected = affected
    return record_ids, versions


def _earlier_guarantee(session: Session, request: DeletionRequest) -> str | None:
    earlier = request.affected.get("already_forgotten", {}).get("earlier_request_ids", [])
    if not earlier:
        return None
    return weakest(list(session.scalars(select(DeletionRequest.guarantee).where(DeletionRequest.id.in_(earlier)))))


def _requests_that_forgot(session: Session, record_ids: list[int]) -> list[str]:
    """Completed requests that named any of these records, oldest first."""
    found: dict[str, Any] = {}
    for start in range(0, len(record_ids), 1000):
        for request_id, completed_at in session.execute(
            select(DeletionRequest.id, DeletionRequest.completed_at)
            .join(RequestRecord, RequestRecord.request_id == DeletionRequest.id)
            .where(RequestRecord.record_id.in_(record_ids[start : start + 1000]),
                   DeletionRequest.status == S.COMPLETED.value)
        ).tuples():
            found[request_id] = completed_at
    return sorted(found, key=lambda rid: (found[rid], rid))


def _provenance_document(
    client: ApiClient, provenance: Provenance, submission: DeletionRequestCreate
) -> dict[str, Any]:
    verification = submission.identity_verification
    return {
        "channel": provenance.channel,
        "client_id": client.id,
        "client_name": client.name,
        "source_ip": provenance.source_ip,
        "user_agent": (provenance.user_agent or "")[:512] or None,
        "source_system": submission.source_system,
        "identity_verification": verification.model_dump(mode="json") if verification else None,
    }


def get_submitting_client(session: Session, reference: str) -> ApiClient:
    """The active client a CLI submission is made as, by id or name."""
    query = select(ApiClient).where(or_(ApiClient.id == reference, ApiClient.name == reference))
    matches = [c for c in session.scalars(query) if c.revoked_at is None]
    if len(matches) != 1:
        raise NotFound(f"no single active API client '{reference}'", field="client")
    return matches[0]


# --- lifecycle --------------------------------------------------------------------------------


def transition(
    session: Session,
    request: DeletionRequest,
    to_status: RequestStatus | str,
    *,
    actor: str,
    reason: str | None = None,
    outcome: RequestOutcome | str | None = None,
    guarantee: str | None = None,
) -> RequestTransition:
    """Move a request to ``to_status``: checks the lifecycle, writes history and an audit event.

    Completing without an outcome means the records were forgotten; ``guarantee`` (exact,
    certified, approximate) is what that claim rests on. Lock the row first
    (``get_for_update``) when another process may move the same request.
    """
    step = RequestTransition(**_apply(request, RequestStatus(to_status), actor=actor, reason=reason,
                                      outcome=outcome, guarantee=guarantee).row())
    session.add(step)
    session.flush()
    _audit_transition(session, request, step)
    _issue_certificate_when_completed(session, request)
    return step


def _issue_certificate_when_completed(session: Session, request: DeletionRequest) -> None:
    """Completion and the order to certify it commit together (outbox), so every completed
    request gets its certificate without anyone having to read it first."""
    if request.status == S.COMPLETED:
        enqueue(session, TaskName.ISSUE_CERTIFICATE, request_ids=[request.id])


def _apply(
    request: DeletionRequest,
    to_status: RequestStatus,
    *,
    actor: str,
    reason: str | None = None,
    outcome: RequestOutcome | str | None = None,
    guarantee: str | None = None,
) -> _Step:
    """Change the status in memory and return the history row's values; the caller writes the
    row and the audit event."""
    current, target = _STATUS_VALUE.get(request.status), _STATUS_VALUE[to_status]
    if current is None:
        raise ValueError(f"unknown request status {request.status!r}")
    if to_status not in ALLOWED_TRANSITIONS[current]:  # keyed by members, found by their values
        raise IllegalTransition(
            f"a {current} request cannot become {target}",
            field="status", current_status=current, requested_status=target,
        )
    now = utcnow()
    request.status = target
    request.updated_at = now
    if to_status is S.COMPLETED:
        request.outcome = _OUTCOME_VALUE.get(outcome) or RequestOutcome(outcome or RequestOutcome.FORGOTTEN).value
        request.guarantee = guarantee
        request.completed_at = now
    elif to_status is S.SCHEDULED:
        request.outcome, request.guarantee = None, None
    return _Step(request_id=request.id, from_status=current, to_status=target, actor=actor, reason=reason, at=now)


@dataclass(slots=True)
class _Step:
    """A ``deletion_request_history`` row's values: intake writes thousands with one statement,
    without an ORM object each. (Intake's per-item records are not frozen: a frozen dataclass
    sets each field through ``object.__setattr__``, twice the cost of building one.)"""

    request_id: str
    from_status: str | None
    to_status: str
    actor: str
    reason: str | None
    at: datetime

    def row(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies every value (a datetime by way of pickling),
        # a fifth of a 100-item batch's time.
        return {"request_id": self.request_id, "from_status": self.from_status, "to_status": self.to_status,
                "actor": self.actor, "reason": self.reason, "at": self.at}


def _audit_transition(session: Session, request: DeletionRequest, step: RequestTransition) -> None:
    # The reason is free text an operator typed, so it stays in the history table, not the chain.
    payload: dict[str, Any] = {"from": step.from_status, "to": step.to_status, "has_reason": step.reason is not None}
    if step.to_status == S.COMPLETED:
        payload["outcome"], payload["guarantee"] = request.outcome, request.guarantee
    audit.record(
        session, actor=step.actor, action=f"request.{step.to_status}", entity_type="deletion_request",
        entity_id=request.id, payload=payload,
    )


def get_for_update(session: Session, request_id: str, viewer: ApiClient | None = None) -> DeletionRequest:
    """Load a request and lock its row until commit (PostgreSQL; SQLite writers are serialised)."""
    query = visible(select(DeletionRequest).where(DeletionRequest.id == request_id), viewer).with_for_update()
    request = session.scalar(query)
    if request is None:
        raise NotFound(f"no deletion request {request_id}")
    return request


def approve(session: Session, request_id: str, *, actor: str, reason: str | None = None) -> DeletionRequest:
    request = get_for_update(session, request_id)
    if request.status != S.PENDING_APPROVAL:
        raise IllegalTransition(
            f"only a pending_approval request can be approved; this one is {request.status}",
            field="status", current_status=request.status, requested_status=S.SCHEDULED.value,
        )
    transition(session, request, S.SCHEDULED, actor=actor, reason=reason or "approved")
    return request


def reject(session: Session, request_id: str, *, actor: str, reason: str) -> DeletionRequest:
    if not reason.strip():
        raise InvalidInput("a rejection needs a reason", field="reason")
    request = get_for_update(session, request_id)
    transition(session, request, S.REJECTED, actor=actor, reason=reason)
    return request


def cancel(session: Session, request_id: str, *, viewer: ApiClient, reason: str | None = None) -> DeletionRequest:
    """The submitting portal or an admin withdraws a request before unlearning starts."""
    request = get_for_update(session, request_id, viewer)
    transition(session, request, S.CANCELLED, actor=viewer.id, reason=reason)
    return request


def retry(session: Session, request_id: str, *, actor: str, reason: str | None = None) -> DeletionRequest:
    request = get_for_update(session, request_id)
    transition(session, request, S.SCHEDULED, actor=actor, reason=reason or "retry")
    return request


def extend(
    session: Session, request_id: str, *, actor: str, reason: str, until: datetime | None = None
) -> DeletionRequest:
    """Move the deadline once, as far as the legal basis allows (GDPR +2 months, CCPA +45 days)."""
    if not reason.strip():
        raise InvalidInput("an extension needs a reason", field="reason")
    request = get_for_update(session, request_id)
    if RequestStatus(request.status) in TERMINAL:
        raise Conflict(f"a {request.status} request has no deadline to extend", field="status")
    if request.extended_at is not None:
        raise Conflict("the deadline was already extended once", field="due_at")
    latest = deadlines.latest_extension(LegalBasis(request.legal_basis), request.due_at)
    if latest is None:
        raise Conflict(f"{request.legal_basis} allows no extension of the deadline", field="legal_basis")
    new_due = until or latest
    if not request.due_at < new_due <= latest:
        raise InvalidInput(
            f"due_at must be after {request.due_at.isoformat()} and no later than {latest.isoformat()}",
            field="due_at",
        )
    previous = request.due_at
    request.due_at, request.extended_at, request.extension_reason = new_due, utcnow(), reason
    session.flush()
    audit.record(
        session, actor=actor, action="request.extended", entity_type="deletion_request", entity_id=request.id,
        payload={"from_due_at": previous.isoformat(), "to_due_at": new_due.isoformat()},
    )
    return request


# --- reads ------------------------------------------------------------------------------------


def owners_and_outcomes(session: Session, request_ids: Iterable[str]) -> dict[str, tuple[str, str | None]]:
    """Request id -> (submitting client, outcome), for many requests in one query."""
    ids = sorted(set(request_ids))
    if not ids:
        return {}
    query = select(DeletionRequest.id, DeletionRequest.client_id, DeletionRequest.outcome).where(
        DeletionRequest.id.in_(ids)
    )
    return {rid: (client_id, outcome) for rid, client_id, outcome in session.execute(query)}


# --- for the jobs room ------------------------------------------------------------------------


def records_at_stake() -> Select[Any]:
    """(request id, record id) of every request not yet terminal: the records a live version
    may hold only while attached to that request."""
    return (
        select(RequestRecord.request_id, RequestRecord.record_id)
        .join(DeletionRequest, DeletionRequest.id == RequestRecord.request_id)
        .where(DeletionRequest.status.in_(AT_STAKE))
    )


def record_ids_at_stake(session: Session, dataset_id: str) -> set[int]:
    """The dataset's records an open request names: new training must leave them out."""
    query = records_at_stake().join(DataRecord, DataRecord.id == RequestRecord.record_id).where(
        DataRecord.dataset_id == dataset_id)
    return {record_id for _, record_id in session.execute(query)}


def attach_version(session: Session, request_id: str, *, version_id: str, model_id: str, model: str,
                   number: int, record_count: int) -> bool:
    """Attach a version found holding the request's records after intake (trained or
    imported meanwhile): the request cannot complete while it does, and its certificate
    lists it. Returns False when it was attached already."""
    if session.get(RequestModelVersion, (request_id, version_id)) is not None:
        return False
    session.add(RequestModelVersion(request_id=request_id, version_id=version_id, model_id=model_id))
    request = session.get(DeletionRequest, request_id)
    affected = dict(request.affected)
    affected["model_versions"] = [*affected.get("model_versions", []), {
        "id": version_id, "model_id": model_id, "model": model, "number": number, "record_count": record_count,
        "attached_after_intake": True,
    }]
    request.affected = affected
    session.flush()
    audit.record(session, actor="lineage", action="request.version_attached", entity_type="deletion_request",
                 entity_id=request_id, payload={"version_id": version_id, "model_id": model_id})
    return True


def note_completion_check(request: DeletionRequest, check: dict[str, Any]) -> None:
    """Keep the lineage check made at completion, for the certificate to state."""
    request.affected = {**request.affected, "completion_check": check}


def list_scheduled_without_models(session: Session, *, limit: int | None = None) -> list[ScheduledRequest]:
    """Scheduled requests whose records no model version saw: only the records need forgetting."""
    has_versions = select(RequestModelVersion.request_id).where(RequestModelVersion.request_id == DeletionRequest.id)
    requests = (
        select(DeletionRequest.id, DeletionRequest.due_at)
        .where(DeletionRequest.status == S.SCHEDULED.value, ~has_versions.exists())
        .order_by(DeletionRequest.due_at, DeletionRequest.id)
        .limit(limit)
    )
    return _with_resolution(session, session.execute(requests).tuples().all(), model_id=None)


# Requests some model may still have to forget: one touching two models can be unlearning
# for one while the other's job has not started.
AWAITING_UNLEARNING = (S.SCHEDULED, S.UNLEARNING, S.VERIFYING)


def awaiting_for_model(
    session: Session, model_id: str, *, excluding: Select[Any] | None = None, limit: int | None = None
) -> list[DeletionRequest]:
    """Requests awaiting unlearning whose resolved versions include one of ``model_id``, less
    the request ids ``excluding`` selects (the jobs room's: those a live job already holds)."""
    touches = select(RequestModelVersion.request_id).where(
        RequestModelVersion.request_id == DeletionRequest.id, RequestModelVersion.model_id == model_id
    )
    query = select(DeletionRequest).where(DeletionRequest.status.in_(AWAITING_UNLEARNING), touches.exists())
    if excluding is not None:
        query = query.where(not_among(DeletionRequest.id, excluding))
    return list(session.scalars(query.limit(limit)))


def awaiting_among(
    session: Session, among: Select[Any], *, excluding: Select[Any] | None = None, limit: int | None = None
) -> list[str]:
    """Ids of requests awaiting unlearning that ``among`` selects and ``excluding`` does not
    (both the jobs room's selects of request ids), deadline first."""
    query = select(DeletionRequest.id).where(DeletionRequest.status.in_(AWAITING_UNLEARNING),
                                             DeletionRequest.id.in_(among))
    if excluding is not None:
        query = query.where(not_among(DeletionRequest.id, excluding))
    return list(session.scalars(query.order_by(DeletionRequest.due_at, DeletionRequest.id).limit(limit)))


def statuses(session: Session, request_ids: Iterable[str]) -> dict[str, str]:
    """Each request's status, by id (unknown ids are left out)."""
    ids = list(request_ids)
    if not ids:
        return {}
    return dict(session.execute(
        select(DeletionRequest.id, DeletionRequest.status).where(DeletionRequest.id.in_(ids))).tuples().all())


def attached_versions(session: Session, version_ids: Iterable[str]) -> set[tuple[str, str]]:
    """(request id, version id) for every request attached to one of the versions."""
    ids = list(version_ids)
    if not ids:
        return set()
    return set(session.execute(select(RequestModelVersion.request_id, RequestModelVersion.version_id).where(
        RequestModelVersion.version_id.in_(ids))).tuples().all())


# Not yet unlearning: a deadline at risk can still be met by starting now.
NOT_YET_UNLEARNING = (S.RECEIVED, S.PENDING_APPROVAL, S.SCHEDULED)


def flag_deadlines_at_risk(session: Session, now: datetime, *, actor: str) -> list[str]:
    """One ``deadline.at_risk`` event per request within the margin of its due date and not
    yet being unlearned."""
    margin = timedelta(hours=get_settings().deadline_risk_margin_hours)
    warned = audit.recorded(action="deadline.at_risk", entity_id=DeletionRequest.id)
    rows = session.execute(
        select(DeletionRequest.id, DeletionRequest.due_at, DeletionRequest.status)
        .where(DeletionRequest.status.in_(NOT_YET_UNLEARNING), DeletionRequest.due_at <= now + margin, ~warned)
        .order_by(DeletionRequest.due_at).limit(500)
    ).tuples().all()
    for request_id, due_at, status in rows:
        audit.record(session, actor=actor, action="deadline.at_risk", entity_type="deletion_request",
                     entity_id=request_id, payload={"due_at": due_at.isoformat(), "status": status,
                                                    "hours_left": round((due_at - now).total_seconds() / 3600, 2)})
    return [request_id for request_id, _, _ in rows]


def models_of(session: Session, request_id: str) -> set[str]:
    """The models whose versions the request resolved to at intake."""
    return set(session.scalars(
        select(RequestModelVersion.model_id).where(RequestModelVersion.request_id == request_id)
    ))


def records_in_dataset(session: Session, request_ids: Iterable[str], dataset_id: str) -> list[tuple[str, int, str]]:
    """(request id, record id, record key) of every record the requests resolved to in one dataset."""
    return list(session.execute(
        select(RequestRecord.request_id, DataRecord.id, DataRecord.record_key)
        .join(DataRecord, DataRecord.id == RequestRecord.record_id)
        .where(RequestRecord.request_id.in_(list(request_ids)), DataRecord.dataset_id == dataset_id)
        .order_by(RequestRecord.request_id, DataRecord.id)
    ).tuples())


def dataset_has_open_requests(session: Session, dataset_id: str) -> bool:
    """Some request not yet finished (completed, rejected, cancelled) names a record of the dataset."""
    return session.scalar(
        select(RequestRecord.request_id)
        .join(DeletionRequest, DeletionRequest.id == RequestRecord.request_id)
        .join(DataRecord, DataRecord.id == RequestRecord.record_id)
        .where(DataRecord.dataset_id == dataset_id, DeletionRequest.status.in_(AT_STAKE)).limit(1)
    ) is not None


def records_of_each(session: Session, request_ids: Sequence[str]) -> dict[str, list[tuple[int, str, str]]]:
    """(record id, record key, content hash) of every record each request resolved to."""
    found: dict[str, list[tuple[int, str, str]]] = {request_id: [] for request_id in request_ids}
    for start in range(0, len(request_ids), 1000):
        for request_id, record_id, key, content in session.execute(
            select(RequestRecord.request_id, DataRecord.id, DataRecord.record_key, DataRecord.content_hash)
            .join(DataRecord, DataRecord.id == RequestRecord.record_id)
            .where(RequestRecord.request_id.in_(list(request_ids[start : start + 1000])))
        ).tuples():
            found[request_id].append((record_id, key, content))
    return found


def awaiting_erasure(session: Session, request_ids: Sequence[str]) -> set[str]:
    """Those of the completed requests that forgot records still in their dataset file with no
    final word on them (erased, left to an external owner, or an erasure failed for good):
    their certificates, which state what became of those rows, wait."""
    ids = list(dict.fromkeys(request_ids))
    waiting: set[str] = set()
    for start in range(0, len(ids), 1000):
        waiting |= set(session.scalars(
            select(RequestRecord.request_id).distinct()
            .join(DeletionRequest, DeletionRequest.id == RequestRecord.request_id)
            .join(DataRecord, DataRecord.id == RequestRecord.record_id)
            # The ids twice (also on the requests' key): the plan starts from the list, whatever
            # the table statistics say about how many requests are completed.
            .where(RequestRecord.request_id.in_(ids[start : start + 1000]),
                   DeletionRequest.id.in_(ids[start : start + 1000]), DeletionRequest.status == S.COMPLETED,
                   or_(DeletionRequest.outcome.is_(None), DeletionRequest.outcome == RequestOutcome.FORGOTTEN),
                   DataRecord.state != RecordState.ACTIVE, DataRecord.erasure_id.is_(None))))
    return waiting


def completed_with_unerased_records(session: Session, dataset_id: str) -> list[str]:
    """Completed requests with a forgotten record of the dataset still in its file: the
    certificates an erasure of that file must release."""
    return list(session.scalars(
        select(RequestRecord.request_id).distinct()
        .join(DeletionRequest, DeletionRequest.id == RequestRecord.request_id)
        .join(DataRecord, DataRecord.id == RequestRecord.record_id)
        .where(DataRecord.dataset_id == dataset_id, DataRecord.state != RecordState.ACTIVE,
               DataRecord.erasure_id.is_(None), DeletionRequest.status == S.COMPLETED)
        .order_by(RequestRecord.request_id)))


def version_ids_of_each(session: Session, request_ids: Sequence[str]) -> dict[str, list[str]]:
    """The model versions each request is attached to (resolved at intake or found later)."""
    found: dict[str, list[str]] = {request_id: [] for request_id in request_ids}
    for request_id, version_id in session.execute(
        select(RequestModelVersion.request_id, RequestModelVersion.version_id)
        .where(RequestModelVersion.request_id.in_(list(request_ids)))
    ).tuples():
        found[request_id].append(version_id)
    return found


def requests_by_id(session: Session, request_ids: Sequence[str]) -> dict[str, DeletionRequest]:
    """The requests with these ids (those that exist), by id."""
    ids = list(dict.fromkeys(request_ids))
    found: dict[str, DeletionRequest] = {}
    for start in range(0, len(ids), 1000):
        found.update((r.id, r) for r in session.scalars(
            select(DeletionRequest).where(DeletionRequest.id.in_(ids[start : start + 1000]))))
    return found


def mark_certified(session: Session, request_ids: Sequence[str], at: datetime) -> None:
    """Stamp the requests' certificates as issued at ``at``, in the certificates' transaction, so
    those still waiting for one are read off ``ix_deletion_requests_uncertified``. Not a change
    of the request itself: ``updated_at`` stays."""
    ids = list(dict.fromkeys(request_ids))
    for start in range(0, len(ids), 1000):
        session.execute(
            update(DeletionRequest)
            .where(DeletionRequest.id.in_(ids[start : start + 1000]), DeletionRequest.certified_at.is_(None))
            .values(certified_at=at, updated_at=DeletionRequest.updated_at)
        )


# Rows of the uncertified index read per statement by ``uncertified``.
_UNCERTIFIED_PAGE = 500


def _uncertified() -> Select[Any]:
    # Both conditions as the partial index states them, so the planner reads that index.
    return select(DeletionRequest.id, DeletionRequest.completed_at).where(
        DeletionRequest.status == S.COMPLETED, DeletionRequest.certified_at.is_(None))


def uncertified(session: Session, *, limit: int) -> list[str]:
    """Completed requests still without a certificate and not waiting for an erasure
    (``awaiting_erasure``), oldest completion first, at most ``limit``. Read page by page off
    the uncertified index: many requests held back by erasures do not hide those after them,
    and certified requests, however many, are never read."""
    found: list[str] = []
    after: tuple[datetime, str] | None = None
    while len(found) < limit:
        query = _uncertified()
        if after is not None:
            query = query.where(tuple_(DeletionRequest.completed_at, DeletionRequest.id) > tuple_(*after))
        page = session.execute(query.order_by(DeletionRequest.completed_at, DeletionRequest.id)
                               .limit(_UNCERTIFIED_PAGE)).all()
        waiting = awaiting_erasure(session, [row.id for row in page])
        found += [row.id for row in page if row.id not in waiting]
        if len(page) < _UNCERTIFIED_PAGE:
            break
        after = (page[-1].completed_at, page[-1].id)
    return found[:limit]


def uncertified_among(session: Session, among: Select[Any], *, limit: int) -> list[str]:
    """Completed requests without a certificate among those ``among`` selects (another room's
    select of request ids), oldest completion first."""
    return list(session.scalars(
        _uncertified().where(DeletionRequest.id.in_(among))
        .order_by(DeletionRequest.completed_at, DeletionRequest.id).limit(limit)
    ))


def uncertified_completed_after(session: Session, request_ids: Sequence[str], *, within: timedelta,
                                limit: int) -> list[str]:
    """Completed requests without a certificate that completed no earlier than the first of
    ``request_ids`` did and at most ``within`` after it, oldest completion first (read off the
    uncertified index: a bound on both sides keeps the read to that span whatever the table's
    statistics say)."""
    since = session.scalar(select(func.min(DeletionRequest.completed_at))
                           .where(DeletionRequest.id.in_(list(request_ids))))
    if since is None:
        return []
    return list(session.scalars(
        _uncertified().where(DeletionRequest.completed_at >= since, DeletionRequest.completed_at <= since + within)
        .order_by(DeletionRequest.completed_at, DeletionRequest.id).limit(limit)
    ))


def record_ids_of(session: Session, request_id: str) -> list[int]:
    """Every record the request resolved to."""
    return list(session.scalars(select(RequestRecord.record_id).where(RequestRecord.request_id == request_id)))


def _with_resolution(
    session: Session, heads: Sequence[tuple[str, datetime]], *, model_id: str | None
) -> list[ScheduledRequest]:
    ids = [request_id for request_id, _ in heads]
    if not ids:
        return []
    records: dict[str, list[int]] = {request_id: [] for request_id in ids}
    for request_id, record_id in session.execute(
        select(RequestRecord.request_id, RequestRecord.record_id)
        .where(RequestRecord.request_id.in_(ids))
        .order_by(RequestRecord.record_id)
    ):
        records[request_id].append(record_id)
    versions: dict[str, list[str]] = {request_id: [] for request_id in ids}
    version_query = select(RequestModelVersion.request_id, RequestModelVersion.version_id).where(
        RequestModelVersion.request_id.in_(ids)
    )
    if model_id is not None:
        version_query = version_query.where(RequestModelVersion.model_id == model_id)
    for request_id, version_id in session.execute(version_query.order_by(RequestModelVersion.version_id)):
        versions[request_id].append(version_id)
    return [
        ScheduledRequest(request_id=rid, due_at=due, record_ids=records[rid], version_ids=versions[rid])
        for rid, due in heads
    ]
