"""The Celery application object, configured from settings, and the one owner of every task name.

It lives in core so that the outbox can hand tasks to the broker by name without
importing ``workers`` (tasks import services, never the other way round): services
enqueue ``TaskName.X``, ``workers/tasks`` register under the same constant, and the beat
schedule below names them too, so no task name is written twice.
Embedded mode uses kombu's SQLAlchemy transport on a SQLite file: a real queue
consumed by a real worker process, with no server to install.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Final

from app.core.config import Settings, get_settings

if TYPE_CHECKING:  # Celery loads on the first send (or in a worker), not with the task names
    from celery import Celery

EMBEDDED_POLL_SECONDS = 0.1
BROKER_CONNECT_TIMEOUT_SECONDS = 0.5
TASK_MODULES = ["workers.tasks.core", "workers.tasks.registry", "workers.tasks.audit", "workers.tasks.certificates", "workers.tasks.jobs", "workers.tasks.webhooks"]


class TaskName:
    RELAY_OUTBOX: Final = "unlearnd.relay_outbox"
    PING: Final = "unlearnd.ping"
    INGEST_DATASET: Final = "unlearnd.registry.ingest_dataset"
    ERASE_DATASET_ROWS: Final = "unlearnd.registry.erase_dataset_rows"
    RUN_JOB: Final = "unlearnd.run_job"
    QUALIFY_METHOD: Final = "unlearnd.jobs.qualify_method"
    SCHEDULE_BATCHES: Final = "unlearnd.schedule_batches"
    AUDIT_SEAL: Final = "unlearnd.audit.seal"
    AUDIT_SIGN_TREE_HEAD: Final = "unlearnd.audit.sign_tree_head"
    ISSUE_CERTIFICATE: Final = "unlearnd.certificates.issue"
    ISSUE_MISSING_CERTIFICATES: Final = "unlearnd.certificates.issue_missing"
    WEBHOOKS_DISPATCH: Final = "unlearnd.webhooks.dispatch"
    LINEAGE_SWEEP: Final = "unlearnd.lineage.sweep"


# Tasks whose outbox messages the relay may merge into one send: task name -> the list
# argument it concatenates (each item is handled on its own and idempotently).
MERGED_KWARG: Final[dict[str, str]] = {TaskName.ISSUE_CERTIFICATE: "request_ids"}


def beat_schedule(settings: Settings) -> dict[str, dict[str, object]]:
    """The periodic tasks (exactly one beat runs them), keyed by task name."""
    every = {
        TaskName.RELAY_OUTBOX: 5.0,
        TaskName.SCHEDULE_BATCHES: settings.scheduler_interval_seconds,
        TaskName.AUDIT_SEAL: 5.0,
        TaskName.AUDIT_SIGN_TREE_HEAD: 300.0,
        TaskName.ISSUE_MISSING_CERTIFICATES: 60.0,
        TaskName.LINEAGE_SWEEP: settings.lineage_sweep_interval_seconds,
        # Retries come due and a dead dispatcher's leases expire without any commit to wake one.
        TaskName.WEBHOOKS_DISPATCH: settings.webhook_sweep_interval_seconds,
    }
    return {name: {"task": name, "schedule": seconds} for name, seconds in every.items()}


def _result_backend(settings: Settings) -> str:
    if settings.broker_url.startswith("redis"):
        return settings.broker_url
    return f"db+sqlite:///{settings.data_dir / 'results.sqlite3'}"


def make_celery(settings: Settings) -> Celery:
    from celery import Celery
    from kombu.transport import sqlalchemy as kombu_sqlalchemy

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = Celery("unlearnd", broker=settings.broker_url, backend=_result_backend(settings), include=TASK_MODULES)
    app.conf.update(
        # A task is acknowledged only when it finished; a killed worker's task is delivered again.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_track_started=True,
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_expires=7 * 24 * 3600,
        broker_connection_retry_on_startup=True,
        # The API must answer even when the broker is down: the outbox keeps the message.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
        worker_hijack_root_logger=False,
        timezone="UTC",
        beat_schedule=beat_schedule(settings),
    )
    if settings.broker_url.startswith("redis"):
        # Redis redelivers a task a killed worker held once this many seconds have passed.
        # A broker that does not answer is given half a second: the outbox keeps the message.
        app.conf.broker_transport_options = {
            "visibility_timeout": settings.task_visibility_timeout_seconds,
            "socket_connect_timeout": BROKER_CONNECT_TIMEOUT_SECONDS,
        }
    else:
        # The SQLite queue is polled, and kombu's default of one poll a second caps the embedded
        # worker at one task a second. Its SQLAlchemy transport hands every transport option to
        # create_engine, so the interval can only be set on the transport class itself.
        kombu_sqlalchemy.Transport.polling_interval = EMBEDDED_POLL_SECONDS
    return app


@lru_cache
def get_celery() -> Celery:
    return make_celery(get_settings())
