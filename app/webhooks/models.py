"""Signed outbound callbacks: endpoints, one delivery per (endpoint, event), every attempt."""
from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.database import Base, new_id, utcnow


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # waiting for its first attempt, a retry, or an earlier event of its chain
    DELIVERED = "delivered"
    FAILED = "failed"  # every retry spent; `recover` or `replay` sends it again


class EndpointKind(StrEnum):
    WEBHOOK = "webhook"  # registered by a client; the audit fan-out feeds it
    # An authorized agent's DRP ``status_callback`` URL: the DRP room enqueues its deliveries
    # (``service.enqueue_callback``); it is not listed or managed through /v1/webhooks.
    DRP_CALLBACK = "drp_callback"


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(16), default=EndpointKind.WEBHOOK, server_default="webhook")
    client_id: Mapped[str] = mapped_column(ForeignKey("api_clients.id"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str | None] = mapped_column(String(500), default=None)
    # The signing secret must be usable to sign, so it is encrypted at rest, not hashed.
    secret_encrypted: Mapped[str] = mapped_column(String(512))
    # After a rotation the old secret also signs until it expires, so receivers can switch over.
    previous_secret_encrypted: Mapped[str | None] = mapped_column(String(512), default=None)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    event_types: Mapped[list[Any]] = mapped_column(default=list)
    active: Mapped[bool] = mapped_column(default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(200), default=None)
    disabled_at: Mapped[datetime | None] = mapped_column(default=None)
    # Health: the start of the current run of failed attempts, and its length.
    failing_since: Mapped[datetime | None] = mapped_column(default=None)
    consecutive_failures: Mapped[int] = mapped_column(default=0)
    consecutive_failed_deliveries: Mapped[int] = mapped_column(default=0)
    # Set by a 429/503 Retry-After: nothing is sent to the endpoint before then.
    paused_until: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)


class WebhookDelivery(Base):
    """One event for one endpoint. Its id is the ``webhook-id`` header, the same on every retry."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # The fan-out may run twice over the same audit events; the second run adds nothing.
        UniqueConstraint("endpoint_id", "event_seq", "event_index"),
        # The head of each (endpoint, order key) chain is found through this index.
        Index("ix_webhook_deliveries_chain", "endpoint_id", "order_key", "status", "event_seq"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id"), index=True)
    event_type: Mapped[str] = mapped_column(String(64))
    # The audit event it derives from, and its place among the webhook events that one yields.
    event_seq: Mapped[int] = mapped_column(BigInteger)
    event_index: Mapped[int] = mapped_column(default=0)
    # Deliveries with the same key (a request's id) reach one endpoint in event order.
    order_key: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING, index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=utcnow)
    # A dispatcher holds a delivery while sending it; one that died mid-send loses it when this passes.
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    last_status_code: Mapped[int | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)


class WebhookAttempt(Base):
    """One HTTP attempt, kept for the delivery log."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("webhook_deliveries.id"), index=True)
    attempted_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_code: Mapped[int | None] = mapped_column(default=None)
    latency_ms: Mapped[float] = mapped_column(default=0.0)
    # The first 2 KiB of the response body, decoded leniently.
    response_excerpt: Mapped[str | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(String(500), default=None)
    delivered: Mapped[bool] = mapped_column(default=False)


class WebhookCursor(Base):
    """How far along the audit chain the fan-out has turned events into deliveries."""

    __tablename__ = "webhook_cursor"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
