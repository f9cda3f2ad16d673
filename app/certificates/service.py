"""Issuing deletion certificates: one per completed request, signed, anchored in the log.

Issuing writes a ``certificate.issued`` audit event whose payload commits to the
certificate's content, signs a tree head that covers that event, and puts the event,
its inclusion proof and the head into the certificate before signing the whole. A
verifier holding only the file and the public key can then check every link.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import __version__
from app.audit import service as audit
from app.audit.events import published_event
from app.audit.keys import ensure_current_key
from app.audit.tree import inclusion_proofs, published_head, sign_tree_head
from app.certificates import evidence
from app.certificates.document import CERTIFICATE_TYPE, SCHEMA_VERSION, content_digest, envelope_bytes
from app.certificates.models import Certificate
from app.core.auth import ApiClient, Role
from app.core.database import new_id, utcnow
from app.core.errors import Conflict, Forbidden, NotFound
from app.core.hashing import canonical_json
from app.core.signing import jws_sign
from app.jobs import service as jobs
from app.requests import service as requests
from app.requests.models import DeletionRequest, RequestStatus


def certificate_file(certificate: Certificate) -> bytes:
    return envelope_bytes(certificate.document, key_id=certificate.key_id, signature=certificate.signature)


def certificate_jws(session: Session, certificate: Certificate) -> str:
    """The certificate file wrapped in a compact JWS (RFC 7515, EdDSA per RFC 8037) signed by
    the current key, so any JOSE library can check it against ``/.well-known/unlearnd-keys``.
    The payload is the canonical file itself, inner signature included: a verifier that
    unwraps it can still run every offline check. Ed25519 is deterministic, so the same key
    gives the same bytes on every download; nothing is written unless the key is unpublished."""
    return jws_sign(ensure_current_key(session), certificate_file(certificate))


def _content(session: Session, gathered: evidence.Gathered, request: DeletionRequest, certificate_id: str,
             key_id: str, *, batch: dict[str, str] | None = None) -> dict[str, Any]:
    records = evidence.forgotten_records(gathered, request.id)
    described = evidence.models(session, gathered, request.id)
    facts = evidence.request_facts(request)
    training_data = evidence.training_data(gathered, request)
    return {
        "type": CERTIFICATE_TYPE,
        "schema_version": SCHEMA_VERSION,
        "certificate_id": certificate_id,
        "issued_at": utcnow().isoformat(),
        "issuer": {"service": "unlearnd", "version": __version__},
        "key_id": key_id,
        "request": facts,
        "forgotten_records": records,
        "models": described,
        "non_inclusion": evidence.non_inclusion(session, gathered, request) if facts["outcome"] == "no_data_found" else None,
        "already_forgotten": evidence.already_forgotten(session, request, issuing=batch),
        "lineage_check": evidence.lineage_check(request),
        "claim": evidence.claim(request, records, described, training_data),
        **({"training_data": training_data} if training_data else {}),
    }


def issue_certificate(session: Session, request_id: str, *, actor: str = "system") -> Certificate:
    """The request's certificate, issued now if it has none. Idempotent, also across processes:
    the existence check runs under the audit chain's writer lock."""
    return issue_certificates(session, [request_id], actor=actor)[0]


def issue_certificates(session: Session, request_ids: Sequence[str], *, actor: str = "system") -> list[Certificate]:
    """The certificates of several requests (one per request, in the order first named),
    issuing those they lack in one go: each gets its own ``certificate.issued`` event and
    inclusion proof, and one tree head, signed after the last of these events, anchors them all. Every certificate
    states exactly what ``issue_certificate`` would have it state alone (an earlier request
    of the same batch is named with its certificate id, as it would be once issued).
    Idempotent like ``issue_certificate``; a request that cannot be certified (unknown, not
    completed) refuses the whole batch."""
    wanted = list(dict.fromkeys(request_ids))
    audit.lock_chain(session)
    existing = {c.request_id: c for c in session.scalars(select(Certificate).where(Certificate.request_id.in_(wanted)))}
    missing = [rid for rid in wanted if rid not in existing]
    if missing:
        found = requests.requests_by_id(session, missing)
        for request_id in missing:
            request = found.get(request_id)
            if request is None:
                raise NotFound(f"no deletion request {request_id}")
            if request.status != RequestStatus.COMPLETED:
                raise Conflict(
                    f"a certificate is issued when the request completes; it is '{request.status}'", field="status"
                )
        if requests.awaiting_erasure(session, missing):
            raise Conflict("a request's training rows are still being erased from their dataset file; its "
                           "certificate, which states that erasure, is issued once it is done", field="status")
        existing.update(_issue(session, [found[rid] for rid in missing], actor))
    return [existing[rid] for rid in wanted]


def _issue(session: Session, requests_: list[DeletionRequest], actor: str) -> dict[str, Certificate]:
    signer = ensure_current_key(session, actor=actor)
    certificate_ids = {request.id: new_id() for request in requests_}
    gathered = evidence.gather(session, list(certificate_ids))
    documents = [
        _content(session, gathered, request, certificate_ids[request.id], signer.key_id, batch=certificate_ids)
        for request in requests_
    ]
    events = audit.append_many(session, [
        {"actor": actor, "action": "certificate.issued", "entity_type": "certificate",
         "entity_id": certificate_ids[request.id],
         "payload": {"certificate_id": certificate_ids[request.id], "request_id": request.id,
                     "content_sha256": content_digest(document)}}
        for request, document in zip(requests_, documents, strict=True)
    ])
    head = sign_tree_head(session)
    published = published_head(head)
    proofs = inclusion_proofs(session, [event.seq for event in events], head.tree_size)
    issued, now = {}, utcnow()
    for request, document, event, proof in zip(requests_, documents, events, proofs, strict=True):
        document["anchor"] = {
            "event": published_event(event),
            "inclusion_proof": {"leaf_index": proof.leaf_index, "tree_size": proof.tree_size,
                                "audit_path": proof.audit_path},
            "tree_head": dict(published),
        }
        issued[request.id] = Certificate(
            id=certificate_ids[request.id], request_id=request.id, document=document,
            signature=signer.sign(canonical_json(document)), key_id=signer.key_id, issued_at=now,
        )
    session.add_all(issued.values())
    session.flush()
    requests.mark_certified(session, list(issued), now)
    return issued


def certificate_for(session: Session, request_id: str, viewer: ApiClient) -> Certificate | None:
    """A portal sees only its own requests' certificates (others' are simply not found);
    admins and auditors see all. Only reads: certificates are issued by the outbox task the
    completion enqueued, so ``None`` means a completed request's certificate is on its way."""
    if viewer.role_enum is Role.ML:
        raise Forbidden("certificates are for portals, auditors and admins")
    request = requests.get_request(session, request_id, viewer)
    if request.status != RequestStatus.COMPLETED:
        raise Conflict(
            f"a certificate is issued when the request completes; it is '{request.status}'", field="status"
        )
    return session.scalar(select(Certificate).where(Certificate.request_id == request.id))


def waits_for_erasure(session: Session, request_id: str) -> bool:
    """Some of the request's forgotten rows are still in a dataset file with no final word on
    them: the certificate states what became of them, so it is issued once the erasure is
    done (or has failed for good, or the file's external owner was asked). The erasure sends
    the order; the sweep catches any lost one."""
    return bool(requests.awaiting_erasure(session, [request_id]))


def requests_missing_certificates(session: Session, *, limit: int = 100) -> list[str]:
    """Completed requests still without a certificate and not waiting for an erasure, oldest
    completion first: what the sweep issues."""
    return requests.uncertified(session, limit=limit)


# Certificates issued in one transaction at most: the chain lock is held while their evidence
# is gathered, so this bounds how long an ``audit.append`` elsewhere can wait for it.
ISSUE_BATCH = 50


def certificate_ids_of(session: Session, request_ids: Sequence[str]) -> dict[str, str]:
    """Request id to certificate id, for those of the requests already certified (no lock: a
    certificate is never withdrawn)."""
    return dict(session.execute(
        select(Certificate.request_id, Certificate.id).where(Certificate.request_id.in_(list(request_ids)))
    ).tuples().all())


def ready_to_issue(session: Session, request_ids: Sequence[str]) -> list[str]:
    """Those of the requests whose certificate is not waiting for an erasure."""
    awaiting = requests.awaiting_erasure(session, request_ids)
    return [request_id for request_id in request_ids if request_id not in awaiting]


def issue_batch_for(session: Session, request_id: str, *, limit: int = ISSUE_BATCH) -> list[str]:
    """The request and the other completed requests that a succeeded job unlearned with it and
    that still lack a certificate: completed together, so certified together (their own
    certificate orders then find their certificates issued). Those waiting for an erasure
    are left out, the given request included."""
    unlearned_with = requests.uncertified_among(session, jobs.requests_unlearned_with(request_id), limit=limit)
    siblings = [one for one in unlearned_with if one != request_id][: limit - 1]
    return ready_to_issue(session, [request_id, *dict.fromkeys(siblings)])


# How far past the first named request's completion an order looks for requests to take along.
# A bound on both sides keeps the read to the requests completed in that span even when a stale
# row estimate turns the ordered walk into a bitmap scan and a sort (this server's autovacuum is
# off): unbounded, that read every completion after it, the whole backlog when issuance is behind.
TAKE_ALONG_SECONDS = 5.0


def awaiting_certificates(session: Session, request_ids: Sequence[str], *, limit: int) -> list[str]:
    """Completed requests without a certificate that completed no earlier than the first of
    ``request_ids`` did and at most ``TAKE_ALONG_SECONDS`` after, oldest completion first."""
    return requests.uncertified_completed_after(session, request_ids, within=timedelta(seconds=TAKE_ALONG_SECONDS),
                                                limit=limit)


def order_batch(session: Session, request_ids: Sequence[str], *, along: bool = True,
                limit: int = ISSUE_BATCH) -> list[str]:
    """What a certificate order for these requests (none certified when it was read) issues,
    chosen under the chain lock so two worker processes never pick the same requests: those
    of them not waiting for an erasure (a lone one with its job's siblings, ``issue_batch_for``)
    and, with ``along``, up to ``limit`` in all with the completed requests after them that
    still lack a certificate. Steady intake sends one order per commit or two, so an order
    names one or two requests; every batch pays the same fixed cost (lock, sealing, a signed
    head, the evidence reads) whatever its size, and taking the next ones along is what lets
    issuance keep up with intake. Their own orders then find them issued (one read)."""
    audit.lock_chain(session)
    own = issue_batch_for(session, request_ids[0], limit=limit) if len(request_ids) == 1 \
        else ready_to_issue(session, request_ids)
    if not own or not along or len(own) >= limit:
        return own
    taken = set(own)
    more = [one for one in awaiting_certificates(session, request_ids, limit=limit) if one not in taken]
    return own + ready_to_issue(session, more)[: limit - len(own)]
