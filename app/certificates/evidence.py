"""What a certificate states, read from what the other rooms recorded: the request, the
records it resolved to, the model versions it touched, the jobs that unlearned them and
the artifacts that were purged. Hashes and ids only; no record key or subject leaves here."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.certificates.models import Certificate
from app.core import merkle
from app.core.errors import Conflict
from app.core.hashing import json_safe
from app.jobs import service as unlearning_jobs
from app.jobs.models import UnlearningJob
from app.lineage import proofs
from app.lineage import service as lineage
from app.registry import service as registry
from app.registry.leaves import leaf_hash
from app.registry.models import ModelArtifact, ModelVersion, RegisteredModel, VersionState
from app.requests import service as requests
from app.requests.models import DeletionRequest, RequestOutcome

LEAF_ENCODING = (
    "RFC 6962 tree; leaf = canonical JSON [record_key, content_hash], the snapshot leaf form, "
    "ordered by record key then content hash"
)
NON_INCLUSION_METHOD = (
    "the request's subject hashes and record keys were looked up in every dataset; no record "
    "matched, so no snapshot listed here (by its Merkle root) contains one. Subject identifiers "
    "of the types in identifiers_checked were hashed under each identifier canonicaliser version "
    "listed there (every version any dataset was ingested with)"
)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


@dataclass
class Gathered:
    """What the certificates of several requests state about them, read in a few set-based
    reads (``gather``) instead of a dozen reads per request. Holding the loaded rows here also
    keeps them in the session's identity map, so ``session.get`` of them costs no read."""

    records: dict[str, list[tuple[int, str, str]]]  # request: (record id, key, content hash)
    version_ids: dict[str, list[str]]
    jobs: dict[str, list[UnlearningJob]]  # request: its succeeded jobs
    versions: dict[str, ModelVersion]
    models: dict[str, RegisteredModel]
    purged: dict[str, list[ModelArtifact]]  # version: its purged artifacts
    erasures: dict[str, tuple[list[Any], list[str]]]  # request: erasures_of its records
    # Every dataset snapshot, as no-data-found certificates list them: read once for the batch
    # (by the first such request) instead of once per request, and without the member bitmaps.
    snapshots: list[dict[str, Any]] | None = None


def gather(session: Session, request_ids: Sequence[str]) -> Gathered:
    ids = list(request_ids)
    records = requests.records_of_each(session, ids)
    version_ids = requests.version_ids_of_each(session, ids)
    jobs = unlearning_jobs.succeeded_jobs_of_each(session, ids)
    wanted = {v for found in version_ids.values() for v in found}
    for found in jobs.values():
        wanted |= {v for job in found for v in (job.base_version_id, job.result_version_id) if v}
    versions = registry.versions_by_id(session, wanted)
    model_ids = {v.model_id for v in versions.values()} | {job.model_id for found in jobs.values() for job in found}
    models_ = registry.models_by_id(session, model_ids)
    purged = registry.purged_artifacts_of(session, {v for found in version_ids.values() for v in found})
    erasures = registry.erasures_of_each(
        session, {request_id: [record_id for record_id, _, _ in found] for request_id, found in records.items()}
    )
    return Gathered(records=records, version_ids=version_ids, jobs=jobs, versions=versions, models=models_,
                    purged=purged, erasures=erasures)


def request_facts(request: DeletionRequest) -> dict[str, Any]:
    return {
        "id": request.id,
        "external_ref": request.external_ref,
        "subject_hashes": sorted(request.subject_hashes),
        "record_ref_count": len(request.record_refs),
        "legal_basis": request.legal_basis,
        "jurisdiction": request.jurisdiction,
        "received_at": _iso(request.received_at),
        "due_at": _iso(request.due_at),
        "completed_at": _iso(request.completed_at or request.updated_at),
        "outcome": request.outcome or RequestOutcome.FORGOTTEN.value,
        "guarantee": request.guarantee,
        "request_hash": request.request_hash,
        # Only a removal by selector has one; older certificates keep their exact shape.
        **({"selector": dict(request.selector)} if request.selector else {}),
    }


def forgotten_records(gathered: Gathered, request_id: str) -> dict[str, Any]:
    rows = sorted((key, content) for _, key, content in gathered.records[request_id])
    return {
        "count": len(rows),
        "merkle_root": merkle.root([leaf_hash(key, content) for key, content in rows]).hex(),
        "leaf_encoding": LEAF_ENCODING,
    }


def _version_ref(version: ModelVersion | None) -> dict[str, Any] | None:
    if version is None:
        return None
    return {"id": version.id, "number": version.number, "state": version.state, "artifact_sha256": version.artifact_sha256}


def _purged_artifacts(gathered: Gathered, version: ModelVersion) -> list[dict[str, Any]]:
    purged = [
        {"kind": a.kind, "shard": a.shard, "slice": a.slice, "sha256": a.sha256}
        for a in gathered.purged.get(version.id, [])
    ]
    whole = version.artifact_sha256
    if version.state == VersionState.PURGED and whole and all(a["sha256"] != whole for a in purged):
        purged.append({"kind": "model", "shard": None, "slice": None, "sha256": whole})
    return sorted(purged, key=lambda a: (a["kind"], a["shard"] or 0, a["slice"] or 0, a["sha256"]))


GUARANTEE_BASIS = {
    "exact": (
        "lineage: the result version (and every retrained part) was trained on a snapshot whose Merkle "
        "root provably excludes each of the request's record keys (lineage_proofs); the membership "
        "figures under verification are information, not the basis of this claim"
    ),
    "certified": (
        "a certified-removal bound: the (epsilon, delta), noise scale and residual bound stated under certification"
    ),
    "approximate": (
        "a qualified approximate method: the signed qualification study cited under qualification (per-example "
        "tests of many unlearned models against many retrains), plus this job's own checks, which passed with "
        "the power stated under verification"
    ),
}


def _request_keys(session: Session, request_id: str, dataset_id: str) -> list[str]:
    return sorted(key for _, _, key in requests.records_in_dataset(session, [request_id], dataset_id))


def _proof_block(session: Session, snapshot_id: str, part: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """Non-inclusion of every key in one snapshot, compacted: the shared root and size once."""
    found = lineage.membership_proofs(session, snapshot_id, keys) if keys else []
    if any(p["kind"] != proofs.NON_INCLUSION for p in found):
        raise Conflict(f"snapshot {snapshot_id} still includes a record of this request: no certificate")
    snapshot = registry.get_snapshot(session, snapshot_id)
    return {
        "part": part, "snapshot_id": snapshot_id, "merkle_root": snapshot.merkle_root,
        "tree_size": found[0]["tree_size"] if found else snapshot.record_count,
        "proofs": [{"record_key": p["record_key"], "kind": p["kind"], "left": p["left"], "right": p["right"]}
                   for p in found],
    }


def lineage_proofs(session: Session, request_id: str, base: ModelVersion | None,
                   result: ModelVersion | None) -> list[dict[str, Any]]:
    """For the version a job left live (its result, or the untouched base) and for every part
    of it that was retrained (its snapshot is not one of the base's parts'), a non-inclusion
    proof of each of the request's record keys in that dataset."""
    live = result or base
    if live is None or live.snapshot_id is None:
        return []
    dataset_id = registry.get_snapshot(session, live.snapshot_id).dataset_id
    keys = _request_keys(session, request_id, dataset_id)
    blocks = [_proof_block(session, live.snapshot_id, {"kind": "version", "number": live.number}, keys)]
    if result is None or base is None:
        return blocks
    inherited = {part.snapshot_id for part in registry.version_artifacts(session, base)}
    seen = {live.snapshot_id}
    # Shard, then slice (a whole-model part, with neither, last), then kind: on either database.
    parts = sorted(registry.version_artifacts(session, result), key=lambda part: (
        part.shard is None, part.shard or 0, part.slice is None, part.slice or 0, part.kind))
    for part in parts:
        if part.snapshot_id is None or part.snapshot_id in inherited or part.snapshot_id in seen:
            continue
        seen.add(part.snapshot_id)
        blocks.append(_proof_block(session, part.snapshot_id,
                                   {"kind": part.kind, "shard": part.shard, "slice": part.slice}, keys))
    return blocks


def _unlearning(session: Session, gathered: Gathered, job: UnlearningJob, request_id: str) -> dict[str, Any]:
    base = gathered.versions.get(job.base_version_id) if job.base_version_id else None
    result = gathered.versions.get(job.result_version_id) if job.result_version_id else None
    report = job.report or {}
    guarantee = report.get("guarantee") or "approximate"
    described = {
        "job_id": job.id,
        "base_version": _version_ref(base),
        "result_version": _version_ref(result),
        "method": job.method,
        "method_used": job.method_used,
        "fallback": job.method_used is not None and job.method_used != job.method,
        "verification": json_safe(report.get("verification", report)),
        "guarantee": guarantee,
        "guarantee_basis": GUARANTEE_BASIS[guarantee],
        # Deterministic fits could be re-run and compared by sha256; Unlearnd does not do that
        # yet, and says so rather than leaving it to be assumed.
        "result_refit_checked": False,
    }
    if guarantee == "approximate" and report.get("qualification"):
        described["qualification"] = report["qualification"]
    if report.get("certification"):
        described["certification"] = json_safe(report["certification"])
    counts = (report.get("records_by_request") or {}).get(request_id)
    if counts is not None:
        described["records"] = counts
    if guarantee == "exact":
        described["lineage_proofs"] = lineage_proofs(session, request_id, base, result)
    return described


def models(session: Session, gathered: Gathered, request_id: str) -> list[dict[str, Any]]:
    """Per model: the versions the request resolved to (with what was purged of them) and
    the succeeded jobs that unlearned it."""
    affected: dict[str, list[ModelVersion]] = defaultdict(list)
    for version_id in dict.fromkeys(gathered.version_ids[request_id]):
        version = gathered.versions.get(version_id)
        if version is not None:
            affected[version.model_id].append(version)
    jobs: dict[str, list[UnlearningJob]] = defaultdict(list)
    for job in gathered.jobs[request_id]:
        jobs[job.model_id].append(job)
    described = []
    for model_id in sorted(set(affected) | set(jobs)):
        model = gathered.models.get(model_id)
        described.append(
            {
                "model_id": model_id,
                "model_name": model.name if model else "",
                "affected_versions": [
                    {"version": _version_ref(v), "purged_artifacts": _purged_artifacts(gathered, v)}
                    for v in sorted(affected[model_id], key=lambda v: v.number)
                ],
                "unlearning": [_unlearning(session, gathered, j, request_id)
                               for j in sorted(jobs[model_id], key=lambda j: j.created_at)],
            }
        )
    return described


def lineage_check(request: DeletionRequest) -> dict[str, Any] | None:
    """The check made when the request completed: no live version held its records, and no
    training run that might have read them was under way (None for requests completed
    before the check existed)."""
    check = (request.affected or {}).get("completion_check")
    if check is None:
        return None
    return {"checked_at": check["checked_at"], "method": check["method"], "records": check["records"],
            "live_versions_holding": len(check["live_versions_holding"]),
            "training_jobs_in_flight": len(check["training_jobs_in_flight"]), "passed": check["passed"]}


def non_inclusion(session: Session, gathered: Gathered, request: DeletionRequest) -> dict[str, Any]:
    if gathered.snapshots is None:
        gathered.snapshots = [
            {"snapshot_id": id_, "dataset_id": dataset_id, "record_count": count, "merkle_root": root}
            for id_, dataset_id, count, root in registry.snapshot_summaries(session)
        ]
    # Requests received before identifiers_checked was recorded checked version 1 only.
    checked = request.affected.get("identifiers_checked") or {"types": [], "canonicaliser_versions": [1]}
    return {
        "method": NON_INCLUSION_METHOD,
        "identifiers_checked": {
            "types": list(checked["types"]),
            "canonicaliser_versions": list(checked["canonicaliser_versions"]),
            "record_ref_count": len(request.record_refs or []),
        },
        "snapshots": [dict(snapshot) for snapshot in gathered.snapshots],
    }


def already_forgotten(session: Session, request: DeletionRequest,
                      issuing: dict[str, str] | None = None) -> dict[str, Any] | None:
    """Records the request named that an earlier request had already forgotten, and where
    that was proven (its certificate, once issued; ``issuing``: request id to certificate id
    of certificates being issued in the same transaction)."""
    earlier = (request.affected or {}).get("already_forgotten")
    if not earlier:
        return None
    certificates = dict(session.execute(
        select(Certificate.request_id, Certificate.id).where(Certificate.request_id.in_(earlier["earlier_request_ids"]))
    ).tuples().all())
    for request_id in earlier["earlier_request_ids"]:
        if request_id != request.id and request_id in (issuing or {}):
            certificates.setdefault(request_id, issuing[request_id])
    return {
        "record_count": earlier["record_count"],
        "earlier": [{"request_id": rid, "certificate_id": certificates.get(rid)} for rid in earlier["earlier_request_ids"]],
    }


def _held(described: list[dict[str, Any]]) -> str:
    parts = []
    for model in described:
        for job in model["unlearning"]:
            counts = job.get("records")
            if counts:
                parts.append(
                    f"model '{model['model_name']}' was trained on {counts['trained_on']} of them "
                    f"({counts['held_out']} held out, never trained on; {counts['not_in_snapshot']} not in its "
                    f"training snapshot) and holds none now, guarantee {job['guarantee']}"
                )
    return "; ".join(parts)


def _selection(selector: dict[str, Any]) -> str:
    words = [f"dataset '{selector['dataset']}'"]
    if selector.get("source") is not None:
        words.append(f"source '{selector['source']}'")
    if selector.get("ingested_before") is not None:
        words.append(f"ingested before {selector['ingested_before']}")
    return ", ".join(words)


def training_data(gathered: Gathered, request: DeletionRequest) -> list[dict[str, Any]] | None:
    """Per dataset, what became of the request's rows in the dataset file itself: rewritten out
    of a managed file (old and new file sha256), left to an external owner to redact, or a
    rewrite that failed on every attempt. A certificate is never issued while a row still
    waits (``waits_for_erasure``), so nothing here is pending. None when no record was forgotten."""
    if not gathered.records[request.id] or request.outcome not in (None, RequestOutcome.FORGOTTEN.value):
        return None
    erasures, waiting = gathered.erasures[request.id]
    if waiting:
        raise Conflict("the request's training rows still wait for their dataset erasure", field="status")
    described: list[dict[str, Any]] = []
    for erasure in erasures:
        if erasure.status == "external":
            described.append({"dataset_id": erasure.dataset_id, "managed": False, "status": "redaction_required",
                              "statement": ERASURE_NOT_MANAGED})
        elif erasure.status == "failed":
            described.append({"dataset_id": erasure.dataset_id, "managed": True, "status": "erasure_failed",
                              "erasure_id": erasure.id, "attempts": erasure.attempts,
                              "statement": ERASURE_FAILED.format(attempts=erasure.attempts)})
        else:
            described.append({
                "dataset_id": erasure.dataset_id, "managed": True, "status": "erased",
                "erasure_id": erasure.id, "old_file_sha256": erasure.old_sha256,
                "new_file_sha256": erasure.new_sha256, "rows_erased": erasure.rows_erased,
                "erased_at": _iso(erasure.finished_at), "old_bytes_destroyed": erasure.old_destroyed_at is not None,
                "old_bytes_destroy_after": None if erasure.old_destroyed_at else _iso(erasure.destroy_after),
            })
    return sorted(described, key=lambda d: (d["dataset_id"], d["status"]))


ERASURE_FAILED = (
    "Unlearnd could not rewrite the dataset file without the rows ({attempts} attempts); the rows are "
    "still in the file, marked forgotten and kept out of every training snapshot; admins were told "
    "(audit event dataset.erasure_failed, final)"
)
ERASURE_NOT_MANAGED = (
    "the dataset file lies at an external location that Unlearnd does not manage; Unlearnd did not "
    "rewrite it and asked its owner to redact the forgotten rows (event dataset.redaction_required)"
)


def _erased(data: list[dict[str, Any]] | None) -> str:
    if not data:
        return ""
    erased = [d for d in data if d["status"] == "erased"]
    external = [d for d in data if d["status"] == "redaction_required"]
    words = []
    if erased:
        words.append(" The training rows were erased from the managed dataset store: " + "; ".join(
            f"{d['rows_erased']} rows left dataset {d['dataset_id']}'s file (sha256 {d['old_file_sha256']} "
            f"rewritten as {d['new_file_sha256']}"
            + (", the old bytes destroyed)" if d["old_bytes_destroyed"] else
               f", the old bytes kept until {d['old_bytes_destroy_after']} and destroyed then by the scheduler, "
               "or once no running job still reads them)")
            for d in erased) + ".")
    failed = [d for d in data if d["status"] == "erasure_failed"]
    if failed:
        words.append(" The training rows could NOT be erased from the file of dataset(s) "
                     + ", ".join(d["dataset_id"] for d in failed) + ": the rewrite failed on every attempt.")
    if external:
        words.append(" Source data of dataset(s) " + ", ".join(d["dataset_id"] for d in external)
                     + " is not managed by Unlearnd; its owner was asked to redact it.")
    return "".join(words)


def claim(request: DeletionRequest, records: dict[str, Any], described: list[dict[str, Any]],
          data: list[dict[str, Any]] | None = None) -> str:
    if request.outcome == RequestOutcome.NO_DATA_FOUND:
        return (
            f"Unlearnd asserts that no training record matching deletion request {request.id} was found "
            "in any dataset it manages, so none of the listed snapshots, and no model version trained on "
            "them, contains one. It asserts nothing about data held outside Unlearnd's registry."
        )
    if request.outcome == RequestOutcome.ALREADY_FORGOTTEN:
        return (
            f"Unlearnd asserts that every training record matching deletion request {request.id} had already "
            "been forgotten for the earlier request(s) listed under already_forgotten, whose certificates carry "
            "the proofs; no live model version was trained on them. It asserts nothing about data held outside "
            "Unlearnd's registry."
        )
    versions = sum(len(m["affected_versions"]) for m in described)
    held = _held(described)
    selected = f" (selected by {_selection(request.selector)})" if request.selector else ""
    return (
        f"Unlearnd asserts that the {records['count']} training records resolved for deletion request "
        f"{request.id}{selected} (committed to by forgotten_records.merkle_root) are in none of the "
        f"{len(described)} models listed" + (f" ({held})" if held else "") + ": each listed job produced its "
        f"result version without them, under the guarantee it states, and each of the {versions} affected "
        "versions' artifacts listed as purged was deleted from the Unlearnd artifact store."
        + (f" At {request.affected['completion_check']['checked_at']} (lineage_check) no part of any live "
           "model version held one of these records and no training run on their datasets was under way."
           if (request.affected or {}).get("completion_check") else "")
        + _erased(data)
        + " It asserts nothing about copies outside that store, such as backups, exports, caches or models "
        "trained elsewhere."
    )
