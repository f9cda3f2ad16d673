"""OpenLineage RunEvents for training and unlearning runs, so lineage tools (Marquez, DataHub,
any OpenLineage consumer) see which dataset snapshot went into which model version, and what
an unlearning run forgot and purged.

The worker calls ``run_started`` once a claim has committed and ``run_finished`` once the
attempt's outcome has committed; both read the committed rows and never raise: a lineage
backend that is down or refuses an event is logged, and the job is unaffected. A run's id is
the job's id. Shard jobs of a sharded training run are parts of their parent's run and emit
nothing of their own.

Transport (``UNLEARND_OPENLINEAGE_TRANSPORT``): ``file`` (default, JSON lines under the data
dir), ``http`` (a Marquez-compatible URL) or ``none``. ``openlineage`` is imported here only,
on first use, by the worker.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from app.core.config import Settings, get_settings
from app.core.database import session_scope
from app.jobs.models import JobKind, JobStatus, UnlearningJob
from app.registry import service as registry
from app.registry.models import Dataset, ModelVersion

if TYPE_CHECKING:
    from openlineage.client import OpenLineageClient

log = logging.getLogger("unlearnd.openlineage")

PRODUCER = "https://github.com/unlearnd/unlearnd"
FACET_SCHEMA = "https://unlearnd.dev/spec/facets/1-0-0/UnlearningRunFacet.json"
FACET_SCHEMA_FILE = Path(__file__).with_name("schema") / "UnlearningRunFacet.json"
EMITTING_KINDS = (JobKind.TRAIN, JobKind.UNLEARN)


def events_file(settings: Settings) -> Path:
    return settings.openlineage_file or settings.data_dir / "openlineage" / "events.jsonl"


@lru_cache(maxsize=4)
def _client(transport: str, target: str, api_key: str, timeout: float) -> OpenLineageClient:
    from openlineage.client import OpenLineageClient
    from openlineage.client.transport.file import FileConfig, FileTransport
    from openlineage.client.transport.http import ApiKeyTokenProvider, HttpConfig, HttpTransport, TokenProvider

    if transport == "http":
        auth = ApiKeyTokenProvider({"apiKey": api_key}) if api_key else TokenProvider({})
        # Few, quick retries: the worker is waiting, and a missed event is logged, not fatal.
        retry = {"total": 2, "read": 2, "connect": 2, "backoff_factor": 0.2,
                 "status_forcelist": [500, 502, 503, 504], "allowed_methods": ["POST"]}
        return OpenLineageClient(transport=HttpTransport(HttpConfig(url=target, timeout=timeout, auth=auth,
                                                                     retry=retry)))
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    return OpenLineageClient(transport=FileTransport(FileConfig(log_file_path=target, append=True)))


def client(settings: Settings | None = None) -> OpenLineageClient | None:
    settings = settings or get_settings()
    if settings.openlineage_transport == "none":
        return None
    if settings.openlineage_transport == "http":
        if not settings.openlineage_url:
            log.warning("UNLEARND_OPENLINEAGE_TRANSPORT=http without UNLEARND_OPENLINEAGE_URL: nothing is sent")
            return None
        return _client("http", settings.openlineage_url, settings.openlineage_api_key,
                       settings.openlineage_timeout_seconds)
    return _client("file", str(events_file(settings)), "", 0.0)


# --- facets ----------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _facet_classes() -> dict[str, type]:
    """Unlearnd's custom facets, declared once openlineage is imported."""
    import attr
    from openlineage.client.facet_v2 import DatasetFacet, RunFacet

    @attr.define
    class UnlearningRunFacet(RunFacet):
        method: str | None
        methodUsed: str | None  # noqa: N815 - OpenLineage facets are camelCase
        guarantee: str | None
        forgottenCount: int  # noqa: N815
        requestCount: int  # noqa: N815
        verification: dict[str, Any]
        purgedVersions: list[str]  # noqa: N815

        @staticmethod
        def _get_schema() -> str:
            return FACET_SCHEMA + "#/$defs/UnlearningRunFacet"

    @attr.define
    class SnapshotDatasetFacet(DatasetFacet):
        snapshotId: str  # noqa: N815
        recordCount: int  # noqa: N815
        merkleRoot: str  # noqa: N815

        @staticmethod
        def _get_schema() -> str:
            return FACET_SCHEMA + "#/$defs/SnapshotDatasetFacet"

    @attr.define
    class ModelVersionDatasetFacet(DatasetFacet):
        versionId: str  # noqa: N815
        number: int
        origin: str
        state: str
        artifactSha256: str | None  # noqa: N815

        @staticmethod
        def _get_schema() -> str:
            return FACET_SCHEMA + "#/$defs/ModelVersionDatasetFacet"

    return {"unlearning": UnlearningRunFacet, "snapshot": SnapshotDatasetFacet, "model": ModelVersionDatasetFacet}


def _snapshot_dataset(session: Session, namespace: str, dataset: Dataset, snapshot_id: str | None) -> Any:
    from openlineage.client.event_v2 import InputDataset
    from openlineage.client.facet_v2 import dataset_version_dataset, input_statistics_input_dataset

    if snapshot_id is None:
        return InputDataset(namespace=namespace, name=f"datasets/{dataset.name}")
    snapshot = registry.get_snapshot(session, snapshot_id)
    return InputDataset(
        namespace=namespace, name=f"datasets/{dataset.name}",
        facets={
            "version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=snapshot.id),
            "unlearnd_snapshot": _facet_classes()["snapshot"](
                snapshotId=snapshot.id, recordCount=snapshot.record_count, merkleRoot=snapshot.merkle_root),
        },
        inputFacets={"inputStatistics": input_statistics_input_dataset.InputStatisticsInputDatasetFacet(
            rowCount=snapshot.record_count)},
    )


def _model_facets(version: ModelVersion) -> dict[str, Any]:
    from openlineage.client.facet_v2 import dataset_version_dataset

    return {
        "version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=str(version.number)),
        "unlearnd_modelVersion": _facet_classes()["model"](
            versionId=version.id, number=version.number, origin=version.origin, state=version.state,
            artifactSha256=version.artifact_sha256),
    }


def _unlearning_facet(job: UnlearningJob) -> Any:
    report = job.report or {}
    verification = report.get("verification") or {}
    reasons = verification.get("reasons") if isinstance(verification, dict) else None
    return _facet_classes()["unlearning"](
        method=job.method, methodUsed=job.method_used, guarantee=report.get("guarantee"),
        forgottenCount=job.forget_count, requestCount=len(report.get("records_by_request") or {}),
        verification={"verdict": report.get("verdict"), "fellBack": bool(report.get("fell_back")),
                      "attempts": len(report.get("attempts") or []),
                      "reasons": [str(reason) for reason in reasons or []]},
        purgedVersions=list(report.get("purge_version_ids") or []),
    )


def build_event(session: Session, job: UnlearningJob, state: str, settings: Settings | None = None) -> Any:
    """The RunEvent for ``job`` in ``state`` (START, RUNNING, COMPLETE, FAIL) as committed now."""
    from openlineage.client.event_v2 import Job, OutputDataset, Run, RunEvent, RunState
    from openlineage.client.facet_v2 import error_message_run, job_type_job

    settings = settings or get_settings()
    namespace = settings.openlineage_namespace
    model = registry.model_by_id(session, job.model_id)
    dataset = registry.dataset_by_id(session, model.dataset_id)
    training = job.kind == JobKind.TRAIN
    result = registry.version_by_id(session, job.result_version_id) if job.result_version_id else None
    inputs, outputs = [], []
    if training:
        inputs.append(_snapshot_dataset(session, namespace, dataset, result.snapshot_id if result else None))
    else:
        base = registry.version_by_id(session, job.base_version_id) if job.base_version_id else None
        if base is not None:
            inputs.append(_snapshot_dataset(session, namespace, dataset, base.snapshot_id))
            from openlineage.client.event_v2 import InputDataset

            inputs.append(InputDataset(namespace=namespace, name=f"models/{model.name}", facets=_model_facets(base)))
    if result is not None and state == "COMPLETE":
        outputs.append(OutputDataset(namespace=namespace, name=f"models/{model.name}", facets=_model_facets(result)))
    run_facets: dict[str, Any] = {}
    if not training and state in ("COMPLETE", "FAIL"):
        run_facets["unlearning"] = _unlearning_facet(job)
    if state == "FAIL":
        # The error's class only: its text can quote record keys.
        error_type = (job.error or "unknown error").split(":", 1)[0][:200]
        run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=error_type, programmingLanguage="python")
    job_facets = {"jobType": job_type_job.JobTypeJobFacet(
        processingType="BATCH", integration="UNLEARND", jobType="TRAINING" if training else "UNLEARNING")}
    when = job.finished_at if state in ("COMPLETE", "FAIL") and job.finished_at else datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return RunEvent(
        eventType=RunState(state), eventTime=when.isoformat(), producer=PRODUCER,
        run=Run(runId=job.id, facets=run_facets),
        job=Job(namespace=namespace, name=f"{model.name}.{'train' if training else 'unlearn'}", facets=job_facets),
        inputs=inputs, outputs=outputs,
    )


# --- emission (worker side, after commit) ---------------------------------------------------


def _emit(job_id: str, choose_state: Any) -> None:
    try:
        settings = get_settings()
        lineage_client = client(settings)
        if lineage_client is None:
            return
        with session_scope() as session:
            job = session.get(UnlearningJob, job_id)
            if job is None or job.kind not in EMITTING_KINDS:
                return
            state = choose_state(job)
            if state is None:
                return
            event = build_event(session, job, state, settings)
        lineage_client.emit(event)
    except Exception:  # lineage must never fail or delay a job beyond its own timeout
        log.warning("OpenLineage event not emitted", extra={"job_id": job_id}, exc_info=True)


def run_started(job_id: str) -> None:
    """After a claim committed: START on the first attempt, RUNNING on a later one."""
    _emit(job_id, lambda job: ("START" if job.attempts <= 1 else "RUNNING") if job.status == JobStatus.RUNNING
          else None)


def run_finished(job_id: str) -> None:
    """After an attempt's outcome committed: COMPLETE or FAIL once the job is over, else nothing
    (a retry is coming, or a sharded training waits for its shards)."""
    _emit(job_id, lambda job: {JobStatus.SUCCEEDED: "COMPLETE", JobStatus.FAILED: "FAIL"}.get(job.status))
