"""Method qualification studies: the only way an approximate method earns the right to run.

A study is per (model version, approximate method, forget-size band). It samples a forget
set of the band's size from the version's training records, and runs the engine's study
(``engine.qualify``): N originals unlearned by the method against N exact retrains, plus N
independent retrains for the ceiling, per-example. Its report is signed with the service
key and stored; jobs on that version (or versions unlearned from it) whose forget set
falls in the band may then try the method. The study's temporary models hold the training
data; they are trained in memory only, never written to the artifact store, and are gone
when the study ends. That fact is recorded, not just claimed: the study row keeps a
``temporary_models`` record (how many models of each kind, the training snapshot and its
Merkle root, that they were kept in worker memory only, when they were created and when
they were destroyed), and the destruction is an audit event of its own.

A passing study can be revoked: with ``sampling_audit_every = k`` in the model's policy,
every k-th job that keeps an approximate result under it also runs the exact method and
compares the two per record; a degraded comparison revokes the study (its jobs go back to
the exact method) and raises ``qualification.revoked`` for admins.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.audit.keys import ensure_current_key
from app.core.database import session_scope, utcnow
from app.core.errors import InvalidInput, NotFound
from app.core.hashing import canonical_json, sha256_hex
from app.core.outbox import enqueue
from app.core.queue import TaskName
from app.jobs import engine, storage
from app.jobs.models import MethodQualification, QualificationStatus
from app.registry import service as registry
from app.registry.models import ModelVersion

log = logging.getLogger("unlearnd.jobs")

DEFAULT_RUNS = 8
MAX_RUNS = 64
DEFAULT_FORGET_SETS = 2
MAX_FORGET_SETS = 8
TEMPORARY_MODELS = (
    "the study's originals, retrains and unlearned models were trained in this worker's memory only, never "
    "written to the artifact store or any file, and were destroyed when the study ended (recorded under "
    "temporary_models, with the snapshot they were trained on, and audited)"
)
STORAGE = "worker memory only (never written to the artifact store or any file)"
PURPOSE = "qualification"  # the temporary model sets' purpose in the registry (lineage lists them)


def start(session: Session, model_name: str, *, method: str, band_min: int, band_max: int, runs: int,
          actor: str, forget_sets: int = DEFAULT_FORGET_SETS) -> MethodQualification:
    """Queue a study of ``method`` on the model's active version (enqueued after commit)."""
    model = registry.get_model(session, model_name)
    if not engine.is_approximate(method):
        raise InvalidInput(f"'{method}' is not an approximate method; exact and certified methods need no "
                           "qualification", field="method")
    if not 1 <= band_min <= band_max:
        raise InvalidInput("the forget-size band needs 1 <= band_min <= band_max", field="band_min")
    if not 2 <= runs <= MAX_RUNS:
        raise InvalidInput(f"runs must be between 2 and {MAX_RUNS}", field="runs")
    if not 1 <= forget_sets <= MAX_FORGET_SETS:
        raise InvalidInput(f"forget_sets must be between 1 and {MAX_FORGET_SETS}", field="forget_sets")
    version = registry.active_version(session, model.id)
    if version is None or version.snapshot_id is None:
        raise InvalidInput(f"model '{model_name}' has no active trained version to qualify on", field="name")
    study = MethodQualification(model_id=model.id, version_id=version.id, method=method, band_min=band_min,
                                band_max=band_max, settings={"runs": runs, "forget_sets": forget_sets},
                                created_by=actor)
    session.add(study)
    session.flush()
    enqueue(session, TaskName.QUALIFY_METHOD, qualification_id=study.id)
    audit.record(session, actor=actor, action="qualification.requested", entity_type="method_qualification",
                 entity_id=study.id, payload={"model_id": model.id, "version_id": version.id, "method": method,
                                              "band": [band_min, band_max], "runs": runs,
                                              "forget_sets": forget_sets})
    return study


def list_for_model(session: Session, model_name: str) -> list[MethodQualification]:
    model = registry.get_model(session, model_name)
    return list(session.scalars(select(MethodQualification).where(MethodQualification.model_id == model.id)
                                .order_by(MethodQualification.created_at.desc())))


def get(session: Session, model_name: str, qualification_id: str) -> MethodQualification:
    model = registry.get_model(session, model_name)
    study = session.get(MethodQualification, qualification_id)
    if study is None or study.model_id != model.id:
        raise NotFound(f"no qualification {qualification_id} for model '{model_name}'")
    return study


def _ancestry(session: Session, version: ModelVersion) -> list[str]:
    """The version's id and those of the versions it was unlearned from, nearest first."""
    lineage_ids = []
    cursor: ModelVersion | None = version
    while cursor is not None:
        lineage_ids.append(cursor.id)
        cursor = registry.version_by_id(session, cursor.parent_id) if cursor.parent_id else None
    return lineage_ids


def covering(session: Session, version: ModelVersion, method: str, forget_size: int) -> dict[str, Any] | None:
    """The newest passing study of ``method`` whose band holds ``forget_size``, on this version
    or the version it was unlearned from (and so on up): its id and report hash."""
    lineage_ids = _ancestry(session, version)
    study = session.scalar(
        select(MethodQualification).where(
            MethodQualification.version_id.in_(lineage_ids), MethodQualification.method == method,
            MethodQualification.status == QualificationStatus.QUALIFIED,
            MethodQualification.revoked_at.is_(None),
            MethodQualification.band_min <= forget_size, MethodQualification.band_max >= forget_size,
        ).order_by(MethodQualification.finished_at.desc())
    )
    return None if study is None else {"id": study.id, "report_sha256": study.report_sha256}


def retrain_accuracy(session: Session, qualification_id: str) -> dict[str, Any] | None:
    """The study's exact retrains' held-out accuracy (mean, sd over seeds, models, rows), for
    the job's utility check to compare its result with, rather than with the original's seed
    luck. None for a study that did not measure it (reports from before it was recorded)."""
    study = session.get(MethodQualification, qualification_id)
    measured = (study.report or {}).get("study", {}).get("retrain_accuracy") if study is not None else None
    return {**measured, "source": f"qualification {qualification_id}"} if measured else None


@dataclass(frozen=True)
class Lapsed:
    """An approximate method that once qualified on a model but covers its active version no
    more (the model was retrained, or a version was imported): its jobs now run the exact
    method until a new study passes."""

    model: str
    method: str
    band_min: int
    band_max: int
    qualified_on_version: int
    active_version: int | None
    study_id: str


def lapsed(session: Session) -> list[Lapsed]:
    """Every (model, method, band) whose newest passing study no longer covers the active version."""
    found = []
    for model in registry.list_models(session):
        studies = list(session.scalars(select(MethodQualification).where(
            MethodQualification.model_id == model.id, MethodQualification.status == QualificationStatus.QUALIFIED,
        ).order_by(MethodQualification.finished_at.desc())))
        if not studies:
            continue
        active = registry.active_version(session, model.id)
        covered = set(_ancestry(session, active)) if active is not None else set()
        newest: dict[tuple[str, int, int], MethodQualification] = {}
        for study in studies:
            newest.setdefault((study.method, study.band_min, study.band_max), study)
        for (method, low, high), study in newest.items():
            if study.version_id not in covered and not any(
                    s.version_id in covered and s.method == method and s.band_min <= low and s.band_max >= high
                    for s in studies):
                version = registry.version_by_id(session, study.version_id)
                found.append(Lapsed(model=model.name, method=method, band_min=low, band_max=high,
                                    qualified_on_version=version.number,
                                    active_version=active.number if active is not None else None,
                                    study_id=study.id))
    return found


def _forget_sample(keys: list[str], size: int, seed: int) -> list[str]:
    return sorted(random.Random(seed).sample(sorted(keys), size))


def forget_set_sizes(band_min: int, band_max: int, count: int, available: int) -> list[int]:
    """``count`` sizes spread over the band's upper part, the largest at ``band_max``
    (capped at half the training rows): for 2 sets, the band's middle and its top."""
    top = max(1, min(band_max, available // 2))
    low = max(1, min(band_min, top))
    return [max(low, round(low + (top - low) * (i + 1) / count)) for i in range(count)]


def run(qualification_id: str) -> None:
    """The task body. A study that already finished is left alone (redelivery is harmless;
    a study interrupted midway starts over, since its models were never stored)."""
    with session_scope() as session:
        study = session.get(MethodQualification, qualification_id)
        if study is None or study.status != QualificationStatus.RUNNING:
            return
        model = registry.model_by_id(session, study.model_id)
        version = registry.version_by_id(session, study.version_id)
        dataset = registry.dataset_by_id(session, model.dataset_id)
        snapshot = registry.get_snapshot(session, version.snapshot_id)
        trained_keys = registry.snapshot_record_keys(session, snapshot)
        records = storage.dataset_records(session, dataset.id)
        source = (dataset.uri, dataset.format, dict(dataset.schema))
        recipe = (model.adapter, dict(model.hyperparameters))
        seed = int(version.metrics.get("seed", 0))
        fraction = float(version.metrics.get("heldout_fraction", engine.DEFAULT_HELDOUT_FRACTION))
        context = {"qualification_id": study.id, "model": model.name, "model_id": model.id, "version_id": version.id,
                   "version_number": version.number, "snapshot_merkle_root": snapshot.merkle_root,
                   "method": study.method, "band": [study.band_min, study.band_max]}
        runs = int(study.settings["runs"])
        sets = int(study.settings.get("forget_sets", 1))
        band = (study.band_min, study.band_max)
        temporary = {"storage": STORAGE, "snapshot_id": snapshot.id, "snapshot_merkle_root": snapshot.merkle_root,
                     "trained_on_records": len(trained_keys), "created_at": utcnow().isoformat(),
                     "models": None, "destroyed_at": None}
        study.temporary_models = temporary
        # Lineage lists them (as holding the snapshot's records) from now until destroyed.
        registry.open_temporary_models(session, model_id=model.id, snapshot_id=snapshot.id, purpose=PURPOSE,
                                       reference_id=study.id, storage=STORAGE)
    try:
        data = engine.load_dataset(*source)
        train = data.select(sorted(trained_keys))
        _, heldout = engine.training_split(data.select(records.active), fraction, seed)
        heldout = heldout.without(trained_keys)
        sizes = forget_set_sizes(*band, sets, len(train))
        forget_sets = [_forget_sample(list(train.keys), size, seed + i) for i, size in enumerate(sizes)]
        result = engine.qualify(*recipe, train, forget_sets, heldout, context["method"], runs=runs, seed=seed)
    except Exception as exc:
        log.exception("qualification study failed", extra={"qualification_id": qualification_id})
        # Whatever it had trained went with the exception's frames: destroyed all the same.
        _finish(qualification_id, None, error=f"{type(exc).__name__}: {exc}"[:500],
                temporary={**temporary, "destroyed_at": utcnow().isoformat()})
        return
    temporary = {**temporary, "models": result["models_trained"], "destroyed_at": utcnow().isoformat()}
    report = {**context, "forget_size": max(sizes), "forget_sizes": sizes,
              "forget_set_sha256": [sha256_hex(canonical_json(keys)) for keys in forget_sets],
              "study": result, "temporary_models": TEMPORARY_MODELS, "temporary_model_record": temporary}
    _finish(qualification_id, report, temporary=temporary)


def _finish(qualification_id: str, report: dict[str, Any] | None, *, temporary: dict[str, Any],
            error: str | None = None) -> None:
    with session_scope() as session:
        study = session.get(MethodQualification, qualification_id)
        if study.status != QualificationStatus.RUNNING:
            return
        study.finished_at = utcnow()
        study.temporary_models = temporary
        registry.close_temporary_models(session, PURPOSE, study.id, models=temporary["models"],
                                        destroyed_at=datetime.fromisoformat(temporary["destroyed_at"]))
        if report is None:
            study.status, study.error = QualificationStatus.FAILED, error
        else:
            signer = ensure_current_key(session, actor="worker")
            body = canonical_json(report)
            study.report, study.report_sha256 = report, sha256_hex(body)
            study.signature, study.key_id = signer.sign(body), signer.key_id
            study.status = QualificationStatus.QUALIFIED if report["study"]["qualified"] \
                else QualificationStatus.NOT_QUALIFIED
        audit.record(session, actor="worker", action="qualification.temporary_models_destroyed",
                     entity_type="method_qualification", entity_id=study.id, payload=temporary)
        audit.record(session, actor="worker", action=f"qualification.{study.status}",
                     entity_type="method_qualification", entity_id=study.id,
                     payload={"report_sha256": study.report_sha256, "method": study.method})


def audit_turn(session: Session, qualification_id: str, every: int | None) -> dict[str, Any] | None:
    """Count one more job that kept an approximate result under the study; on every
    ``every``-th, return the study's report for the sampling audit (else None). The row is
    locked so two jobs finishing together cannot take the same turn."""
    study = session.scalar(select(MethodQualification).where(MethodQualification.id == qualification_id)
                           .with_for_update())
    if study is None:
        return None
    study.approximate_jobs += 1
    if every is None or study.approximate_jobs % every or study.revoked_at is not None:
        return None
    return dict(study.report)


def revoke(session: Session, qualification_id: str, *, job_id: str, comparison: dict[str, Any], actor: str) -> None:
    """A sampling audit found a job's approximate result off its exact retrain: the study no
    longer covers any job, and admins hear of it (audit event, webhook)."""
    study = session.scalar(select(MethodQualification).where(MethodQualification.id == qualification_id)
                           .with_for_update())
    if study is None or study.revoked_at is not None:
        return
    study.status, study.revoked_at = QualificationStatus.REVOKED, utcnow()
    study.revocation = {"job_id": job_id, "comparison": comparison}
    log.warning("qualification revoked by a sampling audit",
                extra={"qualification_id": study.id, "job_id": job_id, "method": study.method})
    audit.record(session, actor=actor, action="qualification.revoked", entity_type="method_qualification",
                 entity_id=study.id, payload={
                     "model_id": study.model_id, "version_id": study.version_id, "method": study.method,
                     "band": [study.band_min, study.band_max], "job_id": job_id,
                     "records": comparison.get("records"), "flagged": comparison.get("flagged"),
                     "flag_rate": comparison.get("flag_rate"), "allowed_rate": comparison.get("allowed_rate"),
                     "p_value": comparison.get("p_value"), "report_sha256": study.report_sha256,
                     "notify": "admins"})
