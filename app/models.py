"""Imports every ORM model so ``Base.metadata`` is complete (Alembic, tests, ``db upgrade``)."""

from app.audit.models import AuditEvent, PendingAuditEvent, SigningKey, TreeHead
from app.certificates.models import Certificate
from app.core.auth import ApiClient
from app.core.database import Base
from app.core.outbox import OutboxMessage
from app.dashboard.models import DashboardSession
from app.drp.models import DrpAgent, DrpCallback
from app.jobs.models import JobRequest, UnlearningJob
from app.lineage.models import LineageChange
from app.registry.models import (
    DataRecord,
    Dataset,
    DatasetSnapshot,
    ModelArtifact,
    ModelVersion,
    RegisteredModel,
    TemporaryModelSet,
)
from app.requests.models import DeletionRequest, RequestModelVersion, RequestRecord, RequestTransition
from app.webhooks.models import WebhookAttempt, WebhookCursor, WebhookDelivery, WebhookEndpoint

__all__ = [
    "ApiClient", "AuditEvent", "Base", "Certificate", "DashboardSession", "DataRecord", "Dataset", "DatasetSnapshot", "DrpAgent", "DrpCallback",
    "DeletionRequest", "JobRequest", "LineageChange", "ModelArtifact", "ModelVersion", "OutboxMessage", "PendingAuditEvent",
    "RegisteredModel", "RequestModelVersion", "RequestRecord", "RequestTransition", "SigningKey", "TemporaryModelSet", "TreeHead",
    "UnlearningJob", "WebhookAttempt", "WebhookCursor", "WebhookDelivery", "WebhookEndpoint",
]
