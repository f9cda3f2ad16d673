"""Issuing deletion certificates: one per completed request, signed, anchored in the log.

Issuing writes a ``certificate.issued`` audit event whose payload commits to the
certificate's content, signs a tree head that covers that event, and puts the event,
its inclusion proof and the head into the certificate before signing the whole. A
verifier holding only the file and the public key can then check every link.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import __version__
from app.audit import service as audit
from app.audit.events import published_event
from app.audit.keys import ensure_current_key
from app.audit.tree import inclusion_proof, published_head, sign_tree_head
from app.certificates import evidence
from app.certificates.document import CERTIFICATE_TYPE, SCHEMA_VERSION, content_digest, envelope_bytes
from app.certificates.models import Certificate
from app.core.auth import ApiClient, Role
from app.core.database import new_id, utcnow
from app.core.errors import Conflict, Forbidden, NotFound
from app.core.hashing import canonical_json
from app.core.signing import jws_sign
from app.registry import service as registry
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


def _content(session: Session, request: DeletionRequest, certificate_id: str, key_id: str) -> dict[str, Any]:
    records = evidence.forgotten_records(session, request.id)
    described = evidence.models(session, request.id)
    facts = evidence.request_facts(request)
    training_data = evidence.training_data(session, request)
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
        "non_inclusion": evidence.non_inclusion(session, request) if facts["outcome"] == "no_data_found" else None,
        "already_forgotten": evidence.already_forgotten(session, request),
        "lineage_check": evidence.lineage_check(request),
        "claim": evidence.claim(request, records, described, training_data),
        **({"training_data": training_data} if training_data else {}),
    }


def issue_certificate(session: Session, request_id: str, *, actor: str = "system") -> Certificate:
    """The request's certificate, issued now if it has none. Idempotent, also across processes:
    the existence check runs under the audit chain's writer lock."""
    audit.lock_chain(session)
    existing = session.scalar(select(Certificate).where(Certificate.request_id == request_id))
    if existing is not None:
        return existing
    request = session.get(DeletionRequest, request_id)
    if request is None:
        raise NotFound(f"no deletion request {request_id}")
    if request.status != RequestStatus.COMPLETED:
        raise Conflict(
            f"a certificate is issued when the request completes; it is '{request.status}'", field="status"
        )
    signer = ensure_current_key(session, actor=actor)
    certificate_id = new_id()
    document = _content(session, request, certificate_id, signer.key_id)
    event = audit.append(
        session, actor=actor, action="certificate.issued", entity_type="certificate", entity_id=certificate_id,
        payload={"certificate_id": certificate_id, "request_id": request.id, "content_sha256": content_digest(document)},
    )
    head = sign_tree_head(session)
    proof = inclusion_proof(session, event.seq, head.tree_size)
    document["anchor"] = {
        "event": published_event(event),
        "inclusion_proof": {"leaf_index": proof.leaf_index, "tree_size": proof.tree_size, "audit_path": proof.audit_path},
        "tree_head": published_head(head),
    }
    certificate = Certificate(
        id=certificate_id, request_id=request.id, document=document,
        signature=signer.sign(canonical_json(document)), key_id=signer.key_id, issued_at=utcnow(),
    )
    session.add(certificate)
    session.flush()
    return certificate


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
    """The request's dataset file is being rewritten without its rows: its certificate, which
    states that erasure, is issued once it is done (the erasure task sends the order)."""
    return registry.erasure_pending(session, request_id)


def requests_missing_certificates(session: Session, *, limit: int = 100) -> list[str]:
    return requests.completed_excluding(session, select(Certificate.request_id), limit=limit)
