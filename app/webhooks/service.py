"""Webhook endpoints and their delivery log: the room's rules for the router and the tasks.

A client owns the endpoints it registers and sees only those (others' are not found);
admins see and manage every endpoint. What an endpoint receives is decided at fan-out
(``dispatch._receives``): admins' and auditors' endpoints everything, a portal's only
events about its own requests, an ML client's job and model-version events.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.core.auth import ApiClient, Role
from app.core.config import get_settings
from app.core.database import utcnow
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.queue import TaskName, get_celery
from app.webhooks import dispatch, endpoint_secrets, events, ssrf
from app.webhooks.models import DeliveryStatus, EndpointKind, WebhookAttempt, WebhookDelivery, WebhookEndpoint

log = logging.getLogger("unlearnd.webhooks")

MAX_PAGE = 500


@dataclass(frozen=True)
class CreatedEndpoint:
    endpoint: WebhookEndpoint
    secret: str  # shown once


def _check_event_types(types: list[str]) -> list[str]:
    unknown = sorted(set(types) - set(events.EVENT_TYPES))
    if unknown:
        raise InvalidInput(f"unknown event types {unknown}; known: {list(events.EVENT_TYPES)}", field="events")
    return sorted(set(types))


def create_endpoint(
    session: Session, client: ApiClient, *, url: str, event_types: list[str], description: str | None,
    enabled: bool = True,
) -> CreatedEndpoint:
    ssrf.check(url)
    secret = endpoint_secrets.new_secret()
    endpoint = WebhookEndpoint(
        client_id=client.id, url=url, description=description, event_types=_check_event_types(event_types),
        secret_encrypted=endpoint_secrets.seal(secret), active=enabled,
    )
    session.add(endpoint)
    session.flush()
    audit.record(session, actor=client.id, action="webhook.endpoint_created", entity_type="webhook_endpoint",
                 entity_id=endpoint.id, payload={"client_id": client.id, "events": endpoint.event_types})
    _endpoints_exist.forget()
    return CreatedEndpoint(endpoint, secret)


def callback_endpoint(session: Session, client_id: str, url: str, *, kind: EndpointKind) -> str:
    """The id of ``client_id``'s enabled endpoint of ``kind`` for ``url``, made if there is none:
    a callback URL a client named in a request rather than registered. It passes the same SSRF
    check as a registered endpoint (``ssrf.UnsafeDestination``, a 422, otherwise) and gets
    retries, health, signing and the delivery log like one. The URL is never logged."""
    ssrf.check(url)
    found = session.scalar(select(WebhookEndpoint.id).where(
        WebhookEndpoint.client_id == client_id, WebhookEndpoint.url == url, WebhookEndpoint.kind == kind,
        WebhookEndpoint.active.is_(True), WebhookEndpoint.deleted_at.is_(None)).limit(1))
    if found is not None:
        return found
    endpoint = WebhookEndpoint(client_id=client_id, url=url, kind=kind, event_types=[],
                               secret_encrypted=endpoint_secrets.seal(endpoint_secrets.new_secret()))
    session.add(endpoint)
    session.flush()
    _endpoints_exist.forget()
    return endpoint.id


def enqueue_callback(session: Session, endpoint_id: str, payload: dict[str, Any], *, event_type: str,
                     order_key: str) -> None:
    """Queue ``payload`` (sent as is, as the body) for a callback endpoint, in the caller's
    transaction: it exists exactly when the caller's change commits (the outbox). Deliveries
    with one ``order_key`` reach the endpoint in the order they were queued."""
    if len(dispatch.body_bytes(payload)) > dispatch.MAX_PAYLOAD_BYTES:
        raise ValueError(f"{event_type} payload exceeds {dispatch.MAX_PAYLOAD_BYTES} bytes")
    now = utcnow()
    # Not from the audit chain: a microsecond clock orders them (event_index keeps one instant's apart).
    seq = time.time_ns() // 1000
    index = session.scalar(select(func.count()).select_from(WebhookDelivery).where(
        WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.event_seq == seq)) or 0
    session.add(WebhookDelivery(endpoint_id=endpoint_id, event_type=event_type, event_seq=seq, event_index=index,
                                order_key=order_key, payload=payload, next_attempt_at=now))
    session.flush()


def _visible(session: Session, endpoint_id: str, viewer: ApiClient) -> WebhookEndpoint:
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None or endpoint.deleted_at is not None or endpoint.kind != EndpointKind.WEBHOOK or (
        viewer.role_enum is not Role.ADMIN and endpoint.client_id != viewer.id
    ):
        raise NotFound(f"no webhook endpoint {endpoint_id}")
    return endpoint


def get_endpoint(session: Session, endpoint_id: str, viewer: ApiClient) -> WebhookEndpoint:
    return _visible(session, endpoint_id, viewer)


def list_endpoints(session: Session, viewer: ApiClient) -> list[WebhookEndpoint]:
    query = select(WebhookEndpoint).where(
        WebhookEndpoint.deleted_at.is_(None), WebhookEndpoint.kind == EndpointKind.WEBHOOK
    ).order_by(WebhookEndpoint.created_at)
    if viewer.role_enum is not Role.ADMIN:
        query = query.where(WebhookEndpoint.client_id == viewer.id)
    return list(session.scalars(query))


def update_endpoint(
    session: Session, endpoint_id: str, viewer: ApiClient, *, url: str | None = None,
    event_types: list[str] | None = None, description: str | None = None, enabled: bool | None = None,
) -> WebhookEndpoint:
    endpoint = _visible(session, endpoint_id, viewer)
    if url is not None:
        ssrf.check(url)
        endpoint.url = url
    if event_types is not None:
        endpoint.event_types = _check_event_types(event_types)
    if description is not None:
        endpoint.description = description
    if enabled is True and not endpoint.active:
        # A fresh start: the failure streak that disabled it is forgiven, its waiting deliveries resume.
        endpoint.active, endpoint.disabled_reason, endpoint.disabled_at = True, None, None
        endpoint.failing_since, endpoint.consecutive_failures, endpoint.consecutive_failed_deliveries = None, 0, 0
        endpoint.paused_until = None
        audit.record(session, actor=viewer.id, action="webhook.endpoint_enabled", entity_type="webhook_endpoint",
                     entity_id=endpoint.id, payload={"client_id": endpoint.client_id})
    elif enabled is False and endpoint.active:
        dispatch.disable(session, endpoint, reason="disabled by its owner or an admin", actor=viewer.id)
    endpoint.updated_at = utcnow()
    session.flush()
    _endpoints_exist.forget()
    return endpoint


def delete_endpoint(session: Session, endpoint_id: str, viewer: ApiClient) -> None:
    """Soft delete: the delivery log stays for audit; nothing more is sent."""
    endpoint = _visible(session, endpoint_id, viewer)
    endpoint.deleted_at = endpoint.updated_at = utcnow()
    endpoint.active = False
    audit.record(session, actor=viewer.id, action="webhook.endpoint_deleted", entity_type="webhook_endpoint",
                 entity_id=endpoint.id, payload={"client_id": endpoint.client_id})
    _endpoints_exist.forget()


def rotate_secret(
    session: Session, endpoint_id: str, viewer: ApiClient, *, grace_seconds: float | None = None
) -> CreatedEndpoint:
    """A new secret signs from now on; the old one also signs until the grace period ends."""
    endpoint = _visible(session, endpoint_id, viewer)
    grace = get_settings().webhook_rotation_grace_seconds if grace_seconds is None else grace_seconds
    if not 0 <= grace <= 7 * 24 * 3600:
        raise InvalidInput("grace_seconds must be between 0 and 604800 (7 days)", field="grace_seconds")
    secret = endpoint_secrets.new_secret()
    now = utcnow()
    endpoint.previous_secret_encrypted = endpoint.secret_encrypted
    endpoint.previous_secret_expires_at = now + timedelta(seconds=grace)
    endpoint.secret_encrypted = endpoint_secrets.seal(secret)
    endpoint.updated_at = now
    audit.record(session, actor=viewer.id, action="webhook.secret_rotated", entity_type="webhook_endpoint",
                 entity_id=endpoint.id, payload={"client_id": endpoint.client_id, "grace_seconds": grace})
    return CreatedEndpoint(endpoint, secret)


# --- the delivery log -----------------------------------------------------------------------------


def list_deliveries(
    session: Session, endpoint_id: str, viewer: ApiClient, *, status: str | None = None, limit: int = 100
) -> list[WebhookDelivery]:
    _visible(session, endpoint_id, viewer)
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", field="limit")
    query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
    if status is not None:
        if status not in set(DeliveryStatus):
            raise InvalidInput(f"status must be one of {[s.value for s in DeliveryStatus]}", field="status")
        query = query.where(WebhookDelivery.status == status)
    query = query.order_by(WebhookDelivery.event_seq.desc(), WebhookDelivery.event_index.desc()).limit(limit)
    return list(session.scalars(query))


def get_delivery(session: Session, delivery_id: str, viewer: ApiClient) -> WebhookDelivery:
    delivery = session.get(WebhookDelivery, delivery_id)
    if delivery is None:
        raise NotFound(f"no webhook delivery {delivery_id}")
    try:
        _visible(session, delivery.endpoint_id, viewer)
    except NotFound:
        raise NotFound(f"no webhook delivery {delivery_id}") from None
    return delivery


def delivery_attempts(session: Session, delivery_id: str) -> list[WebhookAttempt]:
    query = select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery_id).order_by(WebhookAttempt.id)
    return list(session.scalars(query))


def _require_enabled(endpoint: WebhookEndpoint) -> None:
    if not endpoint.active:
        raise Conflict("the endpoint is disabled; enable it (PATCH enabled=true) first", field="enabled")


def replay(session: Session, delivery_id: str, viewer: ApiClient) -> WebhookDelivery:
    """Send one delivery again, with the same ``webhook-id`` and a fresh retry schedule."""
    delivery = get_delivery(session, delivery_id, viewer)
    _require_enabled(session.get(WebhookEndpoint, delivery.endpoint_id))
    delivery.status, delivery.attempts, delivery.next_attempt_at = DeliveryStatus.PENDING, 0, utcnow()
    delivery.lease_until = None
    audit.record(session, actor=viewer.id, action="webhook.delivery_replayed", entity_type="webhook_delivery",
                 entity_id=delivery.id, payload={"endpoint_id": delivery.endpoint_id})
    return delivery


def recover(session: Session, endpoint_id: str, viewer: ApiClient, *, since: datetime) -> int:
    """Send again every delivery to this endpoint that failed for good since ``since``."""
    endpoint = _visible(session, endpoint_id, viewer)
    _require_enabled(endpoint)
    result = session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.status == DeliveryStatus.FAILED,
               WebhookDelivery.created_at >= since)
        .values(status=DeliveryStatus.PENDING, attempts=0, next_attempt_at=utcnow(), lease_until=None)
    )
    audit.record(session, actor=viewer.id, action="webhook.endpoint_recovered", entity_type="webhook_endpoint",
                 entity_id=endpoint.id, payload={"since": since.isoformat(), "deliveries": result.rowcount})
    return result.rowcount


# --- waking the dispatcher ------------------------------------------------------------------------


class _EndpointsExist:
    """Whether any endpoint is enabled, re-read every few seconds: with none, a commit does not
    cost a broker round trip (the periodic sweep still moves the cursor)."""

    TTL = 2.0

    def __init__(self) -> None:
        self._value: bool | None = None
        self._read_at = 0.0

    def __call__(self) -> bool:
        if self._value is None or time.monotonic() - self._read_at > self.TTL:
            from app.core.database import get_sessionmaker

            with get_sessionmaker()() as session:
                self._value = session.scalar(
                    select(WebhookEndpoint.id).where(WebhookEndpoint.active.is_(True)).limit(1)
                ) is not None
            self._read_at = time.monotonic()
        return self._value

    def forget(self) -> None:
        self._value = None


_endpoints_exist = _EndpointsExist()


class _Waker:
    """Sends the dispatch task at most once per ``INTERVAL`` from this process, with a trailing
    send for commits that fell inside the window, so a burst of commits wakes the worker a few
    times (each wake-up delivers everything due) instead of queueing a task per commit."""

    INTERVAL = 0.05

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0.0
        self._scheduled = False
        self.timer: threading.Timer | None = None

    def __call__(self) -> None:
        with self._lock:
            if self._scheduled:
                return
            wait = self._last + self.INTERVAL - time.monotonic()
            if wait > 0:
                self._scheduled = True
                # Kept, so that a test can wait for it before swapping the database under it.
                self.timer = threading.Timer(wait, self._fire)
                self.timer.daemon = True
                self.timer.start()
                return
            self._last = time.monotonic()
        _send_dispatch()

    def _fire(self) -> None:
        with self._lock:
            self._scheduled, self._last = False, time.monotonic()
        _send_dispatch()


def _send_dispatch() -> None:
    try:
        if _endpoints_exist():
            get_celery().send_task(TaskName.WEBHOOKS_DISPATCH)
    except Exception as exc:  # broker or database down: the sweep catches up
        log.warning("could not wake the webhook dispatcher", extra={"error": f"{type(exc).__name__}: {exc}"})


request_dispatch = _Waker()
"""Ask a worker to deliver now. Best effort: the beat sweep delivers anyway."""

audit.on_sealed(request_dispatch)
