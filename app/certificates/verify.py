"""Offline verification of a certificate file: no database, no network unless asked for keys.

Every check must pass: the bytes are the one canonical spelling, the document matches
the shipped schema, every exact job's non-inclusion proofs lead to the snapshot roots it
states, the signature holds under the named key, the anchoring audit event
hashes to itself and commits to the certificate's content, the event is included in the
signed tree head, and that head's own signature holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator

from app.audit.proofs import verify_event_inclusion, verify_tree_head
from app.audit.service import chain_hash
from app.certificates.document import content_digest
from app.core.hashing import canonical_json
from app.core.merkle import ProofError
from app.core.signing import SignatureInvalid, jws_verify, looks_like_jws, verify_signature
from app.lineage.proofs import verify_proof

ANCHOR_EVENT_FIELDS = ("seq", "occurred_at", "actor", "action", "entity_type", "entity_id", "payload")


class CertificateInvalid(ValueError):
    """The certificate does not verify; the message says which check failed."""


@dataclass(frozen=True)
class VerifiedCertificate:
    certificate_id: str
    request_id: str
    key_id: str
    audit_seq: int
    tree_size: int
    document: dict[str, Any]
    lineage_proofs_checked: int = 0
    jws_key_id: str | None = None


@lru_cache
def certificate_schema() -> dict[str, Any]:
    return json.loads(resources.files("app.certificates").joinpath("schema/certificate-v1.json").read_text())


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        envelope = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CertificateInvalid(f"not JSON: {exc}") from None
    if not isinstance(envelope, dict):
        raise CertificateInvalid("not a certificate object")
    if canonical_json(envelope) != raw:
        raise CertificateInvalid("not in canonical form (sorted keys, no whitespace): the file was edited")
    errors = sorted(Draft202012Validator(certificate_schema()).iter_errors(envelope), key=lambda e: list(e.path))
    if errors:
        where = "/".join(str(p) for p in errors[0].path) or "(root)"
        raise CertificateInvalid(f"schema: {where}: {errors[0].message}")
    return envelope


def _check_anchor(document: dict[str, Any], keys: dict[str, bytes]) -> None:
    anchor = document["anchor"]
    event, proof, head = anchor["event"], anchor["inclusion_proof"], anchor["tree_head"]
    body = {field: event[field] for field in ANCHOR_EVENT_FIELDS}
    if chain_hash(event["prev_hash"], body) != event["hash"]:
        raise CertificateInvalid("anchor event does not hash to its recorded hash")
    payload = event["payload"]
    if payload["certificate_id"] != document["certificate_id"] or payload["request_id"] != document["request"]["id"]:
        raise CertificateInvalid("anchor event is about another certificate or request")
    if payload["content_sha256"] != content_digest(document):
        raise CertificateInvalid("certificate content differs from what the audit event committed to")
    if proof["leaf_index"] != event["seq"] - 1 or proof["tree_size"] != head["tree_size"]:
        raise CertificateInvalid("inclusion proof is for another leaf or tree size")
    try:
        verify_event_inclusion(event["hash"], proof["leaf_index"], proof["tree_size"], proof["audit_path"], head["root_hash"])
    except ProofError as exc:
        raise CertificateInvalid(f"anchor event is not in the signed tree head: {exc}") from None
    head_key = keys.get(head["key_id"])
    if head_key is None:
        raise CertificateInvalid(f"no public key {head['key_id']} to check the tree head with")
    try:
        verify_tree_head(head, head_key)
    except SignatureInvalid:
        raise CertificateInvalid("tree head signature does not verify") from None


def _check_lineage_proofs(document: dict[str, Any]) -> int:
    """Every exact job must carry, for the version it left live, a valid non-inclusion proof
    of each record key it was asked to forget, against the root it states. Returns how
    many proofs were checked."""
    checked = 0
    for model in document["models"]:
        for job in model["unlearning"]:
            if job.get("guarantee") != "exact":
                continue
            blocks = job.get("lineage_proofs") or []
            if not blocks:
                raise CertificateInvalid(f"job {job['job_id']} claims an exact guarantee without lineage proofs")
            counts = job.get("records")
            for block in blocks:
                if counts is not None and len(block["proofs"]) != sum(counts.values()):
                    raise CertificateInvalid(
                        f"job {job['job_id']}: {len(block['proofs'])} proofs for {sum(counts.values())} records")
                for proof in block["proofs"]:
                    full = {**proof, "merkle_root": block["merkle_root"], "tree_size": block["tree_size"]}
                    try:
                        verify_proof(full)
                    except ProofError as exc:
                        raise CertificateInvalid(
                            f"job {job['job_id']}: non-inclusion proof for '{proof['record_key']}' in snapshot "
                            f"{block['snapshot_id']} does not verify: {exc}") from None
                    checked += 1
    return checked


def verify_certificate(raw: bytes, keys: dict[str, bytes]) -> VerifiedCertificate:
    """``keys`` maps key id to raw Ed25519 public key. Raise CertificateInvalid with the reason."""
    envelope = _parse(raw)
    document, signature = envelope["certificate"], envelope["signature"]
    proofs_checked = _check_lineage_proofs(document)
    if signature["key_id"] != document["key_id"]:
        raise CertificateInvalid("signature key id differs from the certificate's key id")
    public_key = keys.get(signature["key_id"])
    if public_key is None:
        raise CertificateInvalid(f"no public key {signature['key_id']} among those given")
    try:
        verify_signature(public_key, canonical_json(document), signature["value"])
    except SignatureInvalid as exc:
        raise CertificateInvalid(f"signature: {exc}") from None
    _check_anchor(document, keys)
    return VerifiedCertificate(
        certificate_id=document["certificate_id"], request_id=document["request"]["id"], key_id=document["key_id"],
        audit_seq=document["anchor"]["event"]["seq"], tree_size=document["anchor"]["tree_head"]["tree_size"],
        document=document, lineage_proofs_checked=proofs_checked,
    )


def verify_certificate_file(raw: bytes, keys: dict[str, bytes]) -> VerifiedCertificate:
    """A certificate file in either form: the canonical JSON, or that JSON as the payload of a
    compact JWS (``certificate.jws``). For the JWS the envelope's signature is checked first
    (by the key its ``kid`` names), then everything the plain file is checked for."""
    if not looks_like_jws(raw.strip()):
        return verify_certificate(raw, keys)
    try:
        header, payload = jws_verify(raw.decode("ascii"), keys)
    except (SignatureInvalid, UnicodeDecodeError) as exc:
        raise CertificateInvalid(f"JWS: {exc}") from None
    verified = verify_certificate(payload, keys)
    return replace(verified, jws_key_id=header["kid"])
