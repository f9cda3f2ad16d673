"""Certificates: issued once per completed request, verifiable offline from the file and a
public key, broken by any one-byte change, still valid after key rotation, and visible
through the API only to the request's own portal (and admins/auditors)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from pyroaring import BitMap

from app.certificates.verify import CertificateInvalid, verify_certificate
from app.core.database import session_scope, utcnow
from app.core.hashing import sha256_hex

ONE_BYTE_FLIPS = (0x01, 0x20)


def _keys(api) -> dict[str, bytes]:
    from app.core.signing import public_key_from_jwk

    published = api.get("/.well-known/unlearnd-keys")
    assert published.status_code == 200
    return {jwk["kid"]: public_key_from_jwk(jwk) for jwk in published.json()["keys"]}


@pytest.fixture
def completed_request(env) -> Callable[..., str]:
    """A completed request written straight through the ORM: two forgotten records of one
    dataset, the version trained on them (now purged, with a shard), and the job whose
    result version replaced it. ``found=False`` gives a no-data-found request instead."""
    from app.clients.service import create_client
    from app.jobs.models import JobRequest, UnlearningJob
    from app.registry.models import (
        DataRecord,
        Dataset,
        DatasetSnapshot,
        ModelArtifact,
        ModelVersion,
        RegisteredModel,
    )
    from app.requests.models import DeletionRequest, RequestModelVersion, RequestRecord

    def factory(*, client_id: str | None = None, found: bool = True, status: str = "completed") -> str:
        suffix = uuid.uuid4().hex[:6]
        with session_scope() as session:
            if client_id is None:
                client_id = create_client(session, name=f"portal-{suffix}", role="portal").client.id
            dataset = Dataset(name=f"ds-{suffix}", uri="/data/x.csv", format="csv", schema={}, status="ready")
            session.add(dataset)
            session.flush()
            records = [
                DataRecord(dataset_id=dataset.id, row_index=i, record_key=f"r{i}", subject_hash=sha256_hex(f"s{i % 2}".encode()),
                           content_hash=sha256_hex(f"content-{i}".encode()))
                for i in range(4)
            ]
            session.add_all(records)
            session.add(DatasetSnapshot(dataset_id=dataset.id, record_count=4, members=BitMap(range(4)).serialize(),
                                        merkle_root=sha256_hex(b"snapshot-root")))
            model = RegisteredModel(name=f"m-{suffix}", adapter="logreg", hyperparameters={}, dataset_id=dataset.id, policy={})
            session.add(model)
            session.flush()
            base = ModelVersion(model_id=model.id, number=1, artifact_sha256=sha256_hex(b"v1"), state="purged", purged_at=utcnow())
            session.add(base)
            session.flush()
            result = ModelVersion(model_id=model.id, number=2, parent_id=base.id, artifact_sha256=sha256_hex(b"v2"),
                                  state="active", origin="unlearned")
            session.add(result)
            session.add(ModelArtifact(version_id=base.id, kind="shard", shard=0, uri="/a/s0", sha256=sha256_hex(b"s0"),
                                      state="purged", purged_at=utcnow()))
            now = utcnow()
            request = DeletionRequest(
                client_id=client_id, external_ref=f"ext-{suffix}", request_hash=sha256_hex(suffix.encode()),
                subject_hashes=[sha256_hex(b"s0")], legal_basis="gdpr_art17", jurisdiction="EU",
                requested_at=now - timedelta(days=2), received_at=now - timedelta(days=2), due_at=now + timedelta(days=28),
                status=status, outcome=("forgotten" if found else "no_data_found") if status == "completed" else None,
                completed_at=now if status == "completed" else None,
            )
            session.add(request)
            session.flush()
            if found:
                session.add_all(RequestRecord(request_id=request.id, record_id=r.id) for r in records[::2])
                session.add(RequestModelVersion(request_id=request.id, version_id=base.id, model_id=model.id))
                job = UnlearningJob(
                    model_id=model.id, base_version_id=base.id, result_version_id=result.id, method="scrub",
                    method_used="retrain", status="succeeded", forget_count=2,
                    report={"verification": {"verdict": "pass", "mia_auc": 0.51,
                                             "thresholds": {"max_mia_auc": 0.6}}},
                )
                session.add(job)
                session.flush()
                session.add(JobRequest(job_id=job.id, request_id=request.id))
            return request.id

    return factory


def _issue(request_id: str) -> bytes:
    from app.certificates.service import certificate_file, issue_certificate

    with session_scope() as session:
        return certificate_file(issue_certificate(session, request_id))


def test_certificate_states_what_was_forgotten_and_verifies_offline(api, completed_request, backend):
    request_id = completed_request()
    raw = _issue(request_id)
    verified = verify_certificate(raw, _keys(api))
    document = verified.document
    assert document["request"]["id"] == request_id and document["request"]["outcome"] == "forgotten"
    assert document["forgotten_records"]["count"] == 2
    (model,) = document["models"]
    (affected,) = model["affected_versions"]
    assert affected["version"]["state"] == "purged"
    assert {a["sha256"] for a in affected["purged_artifacts"]} == {sha256_hex(b"v1"), sha256_hex(b"s0")}
    (job,) = model["unlearning"]
    assert job["result_version"]["artifact_sha256"] == sha256_hex(b"v2")
    assert job["fallback"] is True and job["method_used"] == "retrain"
    assert job["verification"]["mia_auc"] == 0.51 and job["verification"]["thresholds"] == {"max_mia_auc": 0.6}
    assert document["non_inclusion"] is None
    assert "backups" in document["claim"]
    # Record keys appear only inside a Merkle root. Searched as whole tokens in every string of
    # the document: a signature or key id may hold the letters "r0" by chance.
    key_token = re.compile(r"(?<![A-Za-z0-9_-])r[0-2](?![A-Za-z0-9_-])")
    assert not [s for s in _strings(json.loads(raw)) if key_token.search(s)], "a record key leaked"


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_metrics_json_cannot_carry_are_stated_as_null():
    from app.core.hashing import json_safe

    assert json_safe({"auc": float("nan"), "bound": [float("inf"), 1.5], "n": 3}) == {"auc": None, "bound": [None, 1.5], "n": 3}


def test_issuing_is_idempotent(env, completed_request):
    from sqlalchemy import func, select

    from app.audit.models import AuditEvent

    request_id = completed_request()
    first = _issue(request_id)
    with session_scope() as session:
        issued = select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "certificate.issued")
        before = session.scalar(issued)
    assert _issue(request_id) == first
    with session_scope() as session:
        assert session.scalar(issued) == before == 1


def test_no_data_found_certificate_carries_non_inclusion_evidence(api, completed_request):
    request_id = completed_request(found=False)
    document = verify_certificate(_issue(request_id), _keys(api)).document
    assert document["request"]["outcome"] == "no_data_found"
    assert document["forgotten_records"]["count"] == 0 and document["models"] == []
    snapshots = document["non_inclusion"]["snapshots"]
    assert snapshots and snapshots[0]["merkle_root"] == sha256_hex(b"snapshot-root")
    assert "no training record" in document["claim"]


@pytest.mark.slow  # verifies every one-byte mutation of a certificate
def test_every_one_byte_change_fails_verification(api, completed_request):
    raw = _issue(completed_request())
    keys = _keys(api)
    verify_certificate(raw, keys)
    for position in range(len(raw)):
        for flip in ONE_BYTE_FLIPS:
            edited = bytearray(raw)
            edited[position] ^= flip
            with pytest.raises(CertificateInvalid):
                verify_certificate(bytes(edited), keys)
    with pytest.raises(CertificateInvalid):
        verify_certificate(raw[:-1], keys)


def test_key_rotation_keeps_old_certificates_valid(api, completed_request, make_client):
    from app.audit.keys import rotate_signing_key

    old_raw = _issue(completed_request())
    old_key = json.loads(old_raw)["signature"]["key_id"]
    with session_scope() as session:
        new_key = rotate_signing_key(session, actor="test").key_id
    assert new_key != old_key
    new_raw = _issue(completed_request())
    assert json.loads(new_raw)["signature"]["key_id"] == new_key
    keys = _keys(api)
    assert set(keys) == {old_key, new_key}
    verify_certificate(old_raw, keys)
    verify_certificate(new_raw, keys)
    with pytest.raises(CertificateInvalid, match="no public key"):
        verify_certificate(old_raw, {new_key: keys[new_key]})
    statuses = {k["kid"]: k["status"] for k in api.get("/.well-known/unlearnd-keys").json()["keys"]}
    assert statuses == {old_key: "retired", new_key: "active"}
    auditor = make_client("auditor")
    verification = api.get("/v1/audit/verification", headers=auditor.headers).json()
    assert verification["ok"] and verification["tree_heads_checked"] >= 2


def test_portal_sees_only_its_own_certificates(api, make_client, completed_request):
    owner, other, ml, auditor = make_client("portal"), make_client("portal"), make_client("ml"), make_client("auditor")
    request_id = completed_request(client_id=owner.id)
    _issue(request_id)
    url = f"/v1/deletion-requests/{request_id}/certificate"
    mine = api.get(url, headers=owner.headers)
    assert mine.status_code == 200, mine.text
    verify_certificate(mine.content, _keys(api))
    assert api.get(url, headers=other.headers).status_code == 404
    assert api.get(url, headers=ml.headers).status_code == 403
    assert api.get(url, headers=auditor.headers).content == mine.content
    assert api.get(f"/v1/deletion-requests/{uuid.uuid4()}/certificate", headers=owner.headers).status_code == 404


def test_unfinished_request_has_no_certificate_yet(api, make_client, completed_request):
    owner = make_client("portal")
    request_id = completed_request(client_id=owner.id, status="unlearning")
    response = api.get(f"/v1/deletion-requests/{request_id}/certificate", headers=owner.headers)
    assert response.status_code == 409 and response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["field"] == "status"


def _row_counts() -> dict[str, int]:
    from sqlalchemy import func, select

    from app.audit.models import AuditEvent, PendingAuditEvent, TreeHead
    from app.certificates.models import Certificate
    from app.core.outbox import OutboxMessage

    with session_scope() as session:
        return {model.__tablename__: session.scalar(select(func.count()).select_from(model))
                for model in (Certificate, AuditEvent, PendingAuditEvent, TreeHead, OutboxMessage)}


def test_get_of_a_certificate_never_writes(api, make_client, completed_request, backend):
    """A completed request whose certificate the outbox task has not issued yet answers 202
    with Retry-After; neither that read nor the read of an issued one writes a row."""
    owner = make_client("portal")
    request_id = completed_request(client_id=owner.id)
    url = f"/v1/deletion-requests/{request_id}/certificate"
    before = _row_counts()
    for _ in range(2):
        waiting = api.get(url, headers=owner.headers)
        assert waiting.status_code == 202 and int(waiting.headers["Retry-After"]) >= 1
        assert waiting.json()["status"] == "issuing"
    assert _row_counts() == before
    _issue(request_id)
    issued = _row_counts()
    assert issued["certificates"] == before["certificates"] + 1
    first = api.get(url, headers=owner.headers)
    assert first.status_code == 200 and api.get(url, headers=owner.headers).content == first.content
    assert _row_counts() == issued


def test_completion_enqueues_the_certificate_in_the_same_transaction(env, make_client, backend):
    """A request completing at intake (no data found) writes the issuing task to the outbox
    with its status; the end-to-end test covers completion by a job."""
    from sqlalchemy import select

    from app.core.auth import ApiClient
    from app.core.outbox import OutboxMessage
    from app.core.queue import TaskName
    from app.requests import service as requests
    from app.requests.schemas import DeletionRequestCreate

    portal = make_client("portal")
    with session_scope() as session:
        submitted = requests.submit(
            session, client=session.get(ApiClient, portal.id), provenance=requests.Provenance(channel="api"),
            submission=DeletionRequestCreate.model_validate(
                {"subject": [{"type": "user_id", "value": "nobody-here"}], "legal_basis": "gdpr_art17"}),
        ).request
        assert submitted.status == "completed" and submitted.outcome == "no_data_found"
        request_id = submitted.id
    with session_scope() as session:
        messages = session.scalars(select(OutboxMessage).where(OutboxMessage.task_name == TaskName.ISSUE_CERTIFICATE))
        assert [m.kwargs for m in messages] == [{"request_ids": [request_id]}]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # No database and no data dir: verification must need neither.
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNLEARND_")}
    env["UNLEARND_DATABASE_URL"] = "postgresql+psycopg://nobody@127.0.0.1:1/nothing"
    env["UNLEARND_DATA_DIR"] = str(cwd / "no-such-dir")
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


@pytest.mark.slow  # three CLI processes
def test_cli_verifies_a_fetched_certificate_and_rejects_a_hand_edited_copy(api, make_client, completed_request, tmp_path):
    owner = make_client("portal")
    request_id = completed_request(client_id=owner.id)
    _issue(request_id)
    certificate = tmp_path / "certificate.json"
    certificate.write_bytes(api.get(f"/v1/deletion-requests/{request_id}/certificate", headers=owner.headers).content)
    jwks = tmp_path / "keys.json"
    jwks.write_text(api.get("/.well-known/unlearnd-keys").text)
    (kid,) = [k["kid"] for k in json.loads(jwks.read_text())["keys"]]
    single = json.dumps(next(k for k in json.loads(jwks.read_text())["keys"] if k["kid"] == kid))

    for key_argument in (str(jwks), single):
        ok = _cli("certificate", "verify", str(certificate), "--public-key", key_argument, cwd=tmp_path)
        assert ok.returncode == 0, ok.stderr
        assert f"request {request_id}" in ok.stdout

    edited = tmp_path / "edited.json"
    edited.write_bytes(certificate.read_bytes().replace(b'"count":2', b'"count":1'))
    bad = _cli("certificate", "verify", str(edited), "--public-key", str(jwks), cwd=tmp_path)
    assert bad.returncode == 1 and "INVALID" in bad.stderr


def test_jws_download_verifies_with_a_jose_library_and_never_writes(api, make_client, completed_request):
    """The `.jws` form is the canonical file under a compact JWS (EdDSA); a JOSE library checks
    it against the published JWKS, the payload is the file byte for byte, downloads are
    stable, nothing is written, and after a rotation the new key wraps it (old key still listed)."""
    from joserfc import jws
    from joserfc.jwk import KeySet

    from app.audit.keys import rotate_signing_key

    owner = make_client("portal")
    request_id = completed_request(client_id=owner.id)
    raw = _issue(request_id)
    url = f"/v1/deletion-requests/{request_id}/certificate.jws"
    before = _row_counts()
    first = api.get(url, headers=owner.headers)
    assert first.status_code == 200 and first.headers["content-type"] == "application/jose"
    assert api.get(url, headers=owner.headers).content == first.content and _row_counts() == before
    key_set = KeySet.import_key_set(api.get("/.well-known/unlearnd-keys").json())
    verified = jws.deserialize_compact(first.text, key_set, algorithms=["EdDSA"])
    assert verified.payload == raw and verified.headers()["kid"] == json.loads(raw)["signature"]["key_id"]
    assert api.get(url, headers=make_client("portal").headers).status_code == 404

    with session_scope() as session:
        new_key = rotate_signing_key(session, actor="test").key_id
    rewrapped = api.get(url, headers=owner.headers).text
    key_set = KeySet.import_key_set(api.get("/.well-known/unlearnd-keys").json())
    assert jws.deserialize_compact(rewrapped, key_set, algorithms=["EdDSA"]).headers()["kid"] == new_key
    # The first download, by the now retired key, still verifies.
    assert jws.deserialize_compact(first.text, key_set, algorithms=["EdDSA"]).payload == raw


def _verified(api, request_id: str) -> dict:
    from sqlalchemy import select

    from app.certificates.models import Certificate
    from app.certificates.service import certificate_file

    with session_scope() as session:
        certificate = session.scalar(select(Certificate).where(Certificate.request_id == request_id))
        raw = certificate_file(certificate)
    return verify_certificate(raw, _keys(api)).document


def test_a_batch_states_for_each_request_what_it_would_state_alone(api, completed_request):
    """Certificates issued together each verify offline, each carry their own event and
    inclusion proof under one shared tree head, and state for their request exactly the
    evidence that request's own reads give (no request's evidence leaks into another's)."""
    from app.certificates import evidence
    from app.certificates.service import _content, issue_certificates
    from app.requests.models import DeletionRequest

    ids = [completed_request(), completed_request(found=False), completed_request()]
    with session_scope() as session:
        issued = issue_certificates(session, [*ids, ids[0]])
        assert [c.request_id for c in issued] == ids  # one per request, a repeat named once
        alone = {}
        for certificate in issued[:3]:
            request = session.get(DeletionRequest, certificate.request_id)
            alone[request.id] = _content(session, evidence.gather(session, [request.id]), request,
                                         certificate.id, certificate.key_id)
    documents = [_verified(api, request_id) for request_id in ids]
    heads = {json.dumps(d["anchor"]["tree_head"], sort_keys=True) for d in documents}
    assert len(heads) == 1, "one tree head anchors the batch"
    assert len({d["anchor"]["event"]["seq"] for d in documents}) == 3
    for document in documents:
        own = alone[document["request"]["id"]]
        for field in ("request", "forgotten_records", "models", "non_inclusion", "already_forgotten",
                      "lineage_check", "claim"):
            assert json.loads(json.dumps(document[field])) == json.loads(json.dumps(own[field])), field
    assert documents[1]["non_inclusion"] is not None and documents[0]["forgotten_records"]["count"] == 2


def test_the_certificate_order_certifies_the_requests_its_job_completed_together(api, completed_request):
    """The worker's order for one request issues, in the same batch, the other requests the
    same job completed that still lack one; one waiting for its dataset's erasure waits."""
    from sqlalchemy import func, select, update

    from app.audit.models import AuditEvent
    from app.jobs.models import JobRequest
    from app.registry.models import DataRecord, DatasetErasure
    from workers.tasks.certificates import issue

    first, second, waiting = completed_request(), completed_request(), completed_request()
    with session_scope() as session:
        (job_id,) = session.scalars(select(JobRequest.job_id).where(JobRequest.request_id == first))
        session.add_all([JobRequest(job_id=job_id, request_id=second), JobRequest(job_id=job_id, request_id=waiting)])
        # Its records are forgotten and still in their dataset file, an erasure queued for them.
        from app.requests.models import RequestRecord

        waiting_records = select(RequestRecord.record_id).where(RequestRecord.request_id == waiting)
        session.execute(update(DataRecord).where(DataRecord.id.in_(waiting_records)).values(state="forgotten"))
        dataset_id = session.scalar(select(DataRecord.dataset_id).where(DataRecord.id.in_(waiting_records)).limit(1))
        session.add(DatasetErasure(dataset_id=dataset_id, status="queued", request_ids=[waiting], old_uri="/data/x.csv"))
    (issued,) = issue(first)
    documents = [_verified(api, request_id) for request_id in (first, second)]
    assert documents[0]["certificate_id"] == issued
    assert documents[0]["anchor"]["tree_head"] == documents[1]["anchor"]["tree_head"]
    with session_scope() as session:
        events = select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "certificate.issued")
        assert session.scalar(events) == 2, "the waiting request was left for its erasure"
    assert issue(second) == [documents[1]["certificate_id"]]
    assert issue(request_ids=[waiting, second]) == [documents[1]["certificate_id"]]
    with session_scope() as session:
        assert session.scalar(events) == 2


def test_an_order_takes_along_the_completions_after_its_own(api, completed_request):
    """Steady intake sends an order per completion or two; each takes along the completed
    requests after its own that still lack a certificate (one head for all), so issuance keeps
    up. An earlier completion is not its to take, and a later order finds its request issued."""
    from sqlalchemy import func, select, update

    from app.audit.models import AuditEvent, TreeHead
    from app.requests.models import DeletionRequest
    from workers.tasks.certificates import issue

    earlier = completed_request(found=False)
    own, *after = [completed_request(found=False) for _ in range(4)]
    later = completed_request(found=False)  # beyond the span an order looks through
    with session_scope() as session:
        session.execute(update(DeletionRequest).where(DeletionRequest.id == later)
                        .values(completed_at=utcnow() + timedelta(minutes=1)))
    (issued,) = issue(own)
    documents = {request_id: _verified(api, request_id) for request_id in (own, *after)}
    assert documents[own]["certificate_id"] == issued
    assert len({json.dumps(d["anchor"]["tree_head"], sort_keys=True) for d in documents.values()}) == 1
    assert all(d["non_inclusion"] is not None for d in documents.values())
    with session_scope() as session:
        events = select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "certificate.issued")
        heads = select(func.count()).select_from(TreeHead)
        assert (session.scalar(events), session.scalar(heads)) == (4, 1), "the earlier and the later were left"
    assert issue(request_ids=after[1:]) == [documents[one]["certificate_id"] for one in after[1:]]
    with session_scope() as session:
        assert (session.scalar(events), session.scalar(heads)) == (4, 1), "their own orders issue nothing"
    assert issue(earlier)
    with session_scope() as session:
        assert session.scalar(events) == 5
    assert issue(later)  # left by both: it completed after the span their orders look through
    with session_scope() as session:
        assert session.scalar(events) == 6


def test_a_request_taken_along_that_cannot_be_certified_does_not_hold_back_the_order(api, completed_request):
    """A completed request whose certificate cannot be built (here: a damaged ``affected``
    document) fails the batch it was taken into; the order then issues its own request alone."""
    from sqlalchemy import func, select, update

    from app.audit.models import AuditEvent
    from app.requests.models import DeletionRequest
    from workers.tasks.certificates import issue

    own, damaged = completed_request(found=False), completed_request(found=False)
    with session_scope() as session:
        session.execute(update(DeletionRequest).where(DeletionRequest.id == damaged)
                        .values(affected={"already_forgotten": {"earlier_request_ids": []}}))
    (issued,) = issue(own)
    assert _verified(api, own)["certificate_id"] == issued
    with session_scope() as session:
        events = select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "certificate.issued")
        assert session.scalar(events) == 1
    with pytest.raises(KeyError):
        issue(damaged)


def test_the_sweep_reads_only_the_requests_still_waiting_for_a_certificate(env, completed_request, backend, monkeypatch):
    """The sweep walks the uncertified requests oldest first, page by page: certified ones are
    never read (issuance stamps ``certified_at``, leaving ``updated_at`` alone), and requests
    held back by an erasure, more than a page of them, do not hide those after them."""
    from sqlalchemy import select, update

    from app.certificates.models import Certificate
    from app.certificates.service import issue_certificates, requests_missing_certificates
    from app.registry.models import DataRecord
    from app.requests import service as requests_service
    from app.requests.models import DeletionRequest, RequestRecord
    from workers.tasks.certificates import issue_missing

    monkeypatch.setattr(requests_service, "_UNCERTIFIED_PAGE", 2)
    waiting = [completed_request() for _ in range(3)]
    with session_scope() as session:  # their forgotten rows are still in the dataset file
        session.execute(update(DataRecord).where(DataRecord.id.in_(
            select(RequestRecord.record_id).where(RequestRecord.request_id.in_(waiting)))).values(state="forgotten"))
    ready = [completed_request(found=False) for _ in range(5)]
    with session_scope() as session:
        assert requests_missing_certificates(session, limit=10) == ready
        before = dict(session.execute(select(DeletionRequest.id, DeletionRequest.updated_at)).tuples().all())
        issue_certificates(session, [ready[1], ready[3]])
    with session_scope() as session:
        assert requests_missing_certificates(session, limit=10) == [ready[0], ready[2], ready[4]]
        assert requests_missing_certificates(session, limit=2) == [ready[0], ready[2]]
        stamped = dict(session.execute(select(DeletionRequest.id, DeletionRequest.certified_at)
                                       .where(DeletionRequest.certified_at.is_not(None))).tuples().all())
        issued = dict(session.execute(select(Certificate.request_id, Certificate.issued_at)).tuples().all())
        assert stamped == issued and set(stamped) == {ready[1], ready[3]}
        assert dict(session.execute(select(DeletionRequest.id, DeletionRequest.updated_at)).tuples().all()) == before
    assert issue_missing(limit=2) == 2
    assert issue_missing(limit=100) == 1
    with session_scope() as session:
        assert requests_missing_certificates(session, limit=10) == []
        assert set(session.scalars(select(DeletionRequest.id).where(DeletionRequest.certified_at.is_(None)))) == set(waiting)
