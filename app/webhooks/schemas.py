from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from app.webhooks.models import WebhookDelivery, WebhookEndpoint

EVENTS_DESCRIPTION = "Event types to receive; empty means all the caller may see."


class EndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2000, examples=["https://compliance.example.com/hooks/unlearnd"])
    events: list[str] = Field(default_factory=list, max_length=50, description=EVENTS_DESCRIPTION)
    description: str | None = Field(default=None, max_length=500)
    enabled: bool = True


class EndpointUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, min_length=1, max_length=2000)
    events: list[str] | None = Field(default=None, max_length=50, description=EVENTS_DESCRIPTION)
    description: str | None = Field(default=None, max_length=500)
    enabled: bool | None = None


class RotateSecret(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_seconds: float | None = Field(
        default=None, description="How long the old secret keeps signing (default UNLEARND_WEBHOOK_ROTATION_GRACE_SECONDS)."
    )


class Recover(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: AwareDatetime


class EndpointOut(BaseModel):
    id: str
    client_id: str
    url: str
    events: list[str]
    description: str | None
    enabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    failing_since: datetime | None
    consecutive_failures: int
    consecutive_failed_deliveries: int
    paused_until: datetime | None
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, endpoint: WebhookEndpoint) -> EndpointOut:
        return cls(
            id=endpoint.id, client_id=endpoint.client_id, url=endpoint.url, events=list(endpoint.event_types or []),
            description=endpoint.description, enabled=endpoint.active, disabled_reason=endpoint.disabled_reason,
            disabled_at=endpoint.disabled_at, failing_since=endpoint.failing_since,
            consecutive_failures=endpoint.consecutive_failures,
            consecutive_failed_deliveries=endpoint.consecutive_failed_deliveries, paused_until=endpoint.paused_until,
            previous_secret_expires_at=endpoint.previous_secret_expires_at, created_at=endpoint.created_at,
            updated_at=endpoint.updated_at,
        )


class EndpointCreated(EndpointOut):
    secret: str = Field(description="Shown once: `whsec_` + base64. Verify deliveries with it.")


class AttemptOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    attempted_at: datetime
    status_code: int | None
    latency_ms: float
    response_excerpt: str | None
    error: str | None
    delivered: bool


class DeliveryOut(BaseModel):
    id: str = Field(description="The webhook-id header, the same on every attempt.")
    endpoint_id: str
    event_type: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any]

    @classmethod
    def of(cls, delivery: WebhookDelivery) -> DeliveryOut:
        return cls(
            id=delivery.id, endpoint_id=delivery.endpoint_id, event_type=delivery.event_type, status=delivery.status,
            attempts=delivery.attempts, next_attempt_at=delivery.next_attempt_at,
            last_status_code=delivery.last_status_code, last_error=delivery.last_error,
            created_at=delivery.created_at, delivered_at=delivery.delivered_at, payload=delivery.payload,
        )


class DeliveryDetail(DeliveryOut):
    attempt_log: list[AttemptOut]


class RecoverOut(BaseModel):
    deliveries: int = Field(description="Failed deliveries queued again.")
