"""The one settings object. Every knob is an ``UNLEARND_*`` environment variable."""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Callable
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, IPvAnyNetwork, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Mode(StrEnum):
    EMBEDDED = "embedded"
    PRODUCTION = "production"


class MissingSecretError(RuntimeError):
    """Production refuses to start with generated secrets: they would not survive a restart
    or be shared by a second machine, and every stored subject hash would become unmatchable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="UNLEARND_", env_file=".env", extra="ignore")

    mode: Mode = Mode.EMBEDDED
    data_dir: Path = Path("./var")
    # Empty means "derive from data_dir" (embedded SQLite database / SQLite-backed queue).
    database_url: str = ""
    broker_url: str = ""

    # Empty: artifacts live in data_dir/artifacts. Otherwise an fsspec URL (s3://bucket/prefix).
    artifact_store_url: str = ""
    # The only places outside the data dir a client may name (JSON lists of URL prefixes, e.g.
    # ["s3://training-data/curated/"]): datasets read from them, imported artifacts live in them.
    # Nothing else is accepted; local dataset files must be under data_dir/datasets.
    dataset_remote_prefixes: list[str] = Field(default_factory=list)
    artifact_remote_prefixes: list[str] = Field(default_factory=list)
    max_uri_length: int = 1024
    # Uploads through POST /v1/artifacts stream past max_body_bytes up to this size.
    max_artifact_bytes: int = 4 * 1024**3
    # ISO 3166 region for phone numbers written without a country code (e.g. "GB"); empty:
    # such numbers are refused rather than guessed.
    phone_default_region: str = ""
    # Raw-identifier lineage lookups (admin only) per admin key per minute.
    subject_lookups_per_minute: int = 30

    # Secret material. In embedded mode missing values are generated once under data_dir.
    subject_pepper: str = ""
    signing_key_path: Path | None = None

    log_level: str = "INFO"
    # How long an API process trusts a client row it looked up (revocation delay elsewhere).
    auth_cache_seconds: float = 5.0
    max_body_bytes: int = 64 * 1024
    # POST /v1/deletion-requests/batch: up to 1,000 requests in one body.
    max_batch_body_bytes: int = 4 * 1024 * 1024
    # Days granted per legal basis when the law gives no calendar rule of its own.
    default_deadline_days: dict[str, int] = Field(
        default_factory=lambda: {
            "lgpd_art18": 15,
            "pipeda": 30,
            "contract": 30,
            "internal_policy": 30,
        }
    )
    deadline_risk_margin_hours: float = 72.0
    scheduler_interval_seconds: float = 30.0
    # The lineage reconciliation sweep (no live version holds a forgotten record unnoticed).
    lineage_sweep_interval_seconds: float = 60.0
    # Training-data erasure: how long a managed dataset file's previous bytes are kept after
    # a rewrite without its forgotten rows (0: destroyed at once; otherwise by the scheduler).
    erased_file_retention_hours: float = 0.0
    # A failed rewrite is retried by the scheduler's tick after 30 s, 60 s, 120 s, ... (at most an
    # hour) up to this many runs; then the certificates state the failure and admins are told.
    erasure_max_attempts: int = 5
    erasure_retry_base_seconds: float = 30.0
    # A run that started this long ago without finishing is taken to be lost and run again.
    erasure_stale_seconds: float = 3600.0
    # Forgotten rows wait for the dataset's other open requests (one rewrite for a batch), but
    # no longer than this; the certificates of the completed requests wait for their erasure.
    erasure_max_wait_hours: float = 24.0
    torch_threads: int = 1
    # Redis redelivers an unacknowledged task after this long; jobs also keep a heartbeat lease.
    task_visibility_timeout_seconds: int = 3600

    # Addresses that may read /metrics without an admin key (comma-separated CIDRs, e.g. the
    # Prometheus server's network); empty: an admin key is always needed.
    metrics_allow_cidrs: Annotated[list[IPvAnyNetwork], NoDecode] = Field(default_factory=list)

    @field_validator("metrics_allow_cidrs", mode="before")
    @classmethod
    def _split_cidrs(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    # Webhooks. Fernet key(s) encrypting endpoint signing secrets at rest, comma-separated,
    # newest first (older ones still decrypt). Embedded mode generates one under data_dir;
    # production must set it (checked wherever a secret is sealed or opened).
    webhook_secret_key: str = ""
    # Hosts (exact names or IP literals) that may be private/loopback and may use http.
    # `unlearnd run` and the tests allow loopback; production allow-lists nothing by default.
    webhook_allowed_hosts: list[str] = Field(default_factory=list)
    # Delay before each retry; a delivery fails for good after the last one.
    webhook_retry_schedule_seconds: list[float] = Field(
        default_factory=lambda: [5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]
    )
    webhook_timeout_seconds: float = 15.0
    # An endpoint is disabled once every attempt has failed for this long, or after this many
    # deliveries in a row failed for good (all retries spent).
    webhook_disable_after_seconds: float = 5 * 24 * 3600.0
    webhook_disable_after_failed_deliveries: int = 50
    webhook_rotation_grace_seconds: float = 24 * 3600.0
    # Requests in flight to one endpoint at a time, so a backlog after an outage cannot flood it.
    webhook_max_in_flight_per_endpoint: int = 16
    webhook_sweep_interval_seconds: float = 5.0
    # Base of the certificate URL in payloads; empty means a path relative to the API.
    public_url: str = ""
    # The audit log's name in C2SP checkpoints (the note's origin line and key name); empty
    # means the public URL's host and path plus /audit-log, or unlearnd/audit-log.
    # This service's id as a Covered Business in the Data Rights Protocol directory; signed
    # DRP requests must name it in `business-id`.
    drp_business_id: str = Field(default="UNLEARND", min_length=1, max_length=64)
    checkpoint_origin: str = Field(default="", pattern=r"^[^\s+]*$")
    # OpenLineage RunEvents for every training and unlearning run, sent by the worker after the
    # job's outcome is committed. "file": JSON lines in openlineage_file (default
    # data_dir/openlineage/events.jsonl); "http": POSTed to openlineage_url (a Marquez-compatible
    # server; the client adds /api/v1/lineage); "none": nothing is emitted.
    openlineage_transport: Literal["file", "http", "none"] = "file"
    openlineage_file: Path | None = None
    openlineage_url: str = ""
    openlineage_api_key: str = ""
    openlineage_timeout_seconds: float = 5.0
    openlineage_namespace: str = "unlearnd"
    # A dashboard session ends after this long without a page load.
    dashboard_idle_minutes: float = Field(default=30.0, gt=0, le=24 * 60)

    @model_validator(mode="after")
    def _derive_defaults(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'unlearnd.sqlite3'}"
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{self.data_dir / 'queue.sqlite3'}"
        if self.mode is Mode.PRODUCTION:
            missing = [
                name
                for name, value in (
                    ("UNLEARND_SUBJECT_PEPPER", self.subject_pepper),
                    ("UNLEARND_SIGNING_KEY_PATH", self.signing_key_path),
                )
                if not value
            ]
            if missing:
                raise MissingSecretError(
                    f"production mode needs {', '.join(missing)}; refusing to generate secrets"
                )
        return self

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def secrets_dir(self) -> Path:
        return self.data_dir / "secrets"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def pepper_bytes(self) -> bytes:
        if self.subject_pepper:
            return self.subject_pepper.encode()
        return _read_or_create_secret(self.secrets_dir / "subject_pepper").encode()

    def webhook_secret_keys(self) -> list[str]:
        """Fernet keys, newest first. Production never generates one: a generated key would
        not be shared by the other machines, which could then not sign any delivery."""
        if self.webhook_secret_key:
            return [key.strip() for key in self.webhook_secret_key.split(",") if key.strip()]
        if self.mode is Mode.PRODUCTION:
            raise MissingSecretError("production mode needs UNLEARND_WEBHOOK_SECRET_KEY (a Fernet key)")
        return [_read_or_create_secret(self.secrets_dir / "webhook_secret_key", _fernet_key)]

    def resolved_signing_key_path(self) -> Path:
        return self.signing_key_path or self.secrets_dir / "signing_key.pem"


def _fernet_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def _read_or_create_secret(path: Path, generate: Callable[[], str] = lambda: secrets.token_urlsafe(32)) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = generate()
    # O_EXCL: two processes starting together must agree on one pepper.
    try:
        with path.open("x") as handle:
            handle.write(value)
        path.chmod(0o600)
    except FileExistsError:
        return path.read_text().strip()
    return value


# A folder of file secrets (Docker/Kubernetes secrets): a file named ``unlearnd_<setting>``
# (``unlearnd_subject_pepper``, ``unlearnd_database_url``) sets that setting unless an
# environment variable does. Read before the settings, so it is an environment variable only.
SECRET_FILES_DIR_VARIABLE = "UNLEARND_SECRET_FILES_DIR"


@lru_cache
def get_settings() -> Settings:
    return Settings(_secrets_dir=os.environ.get(SECRET_FILES_DIR_VARIABLE) or None)
