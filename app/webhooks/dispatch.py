"""From the sealed audit chain to signed HTTP deliveries.

1. **Fan-out**: under a lock on the one cursor row, sealed audit events after the cursor
   become deliveries (one per event and interested endpoint) and the cursor moves, in one
   transaction. The chain is the outbox: every state change already writes its audit
   event in its own transaction, so an event exists exactly when its change committed, and
   sealed events get their ``seq`` in commit order, so nothing is skipped behind the cursor.
2. **Claim**: due deliveries that head their (endpoint, order key) chain are leased, a few per
   endpoint at a time, and the lease commits before anything is sent.
3. **Send and record**: each is POSTed with its stable ``webhook-id``; the attempt, the
   delivery's new state and the endpoint's health commit together. A dispatcher that dies
   between send and record leaves the lease to expire; the delivery is then sent again with
   the same ``webhook-id``, so receivers de-duplicate (at-least-once delivery).
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from app.audit import events as audit_events
from app.audit import service as audit
from app.core.auth import ApiClient
from app.core.config import get_settings
from app.core.database import session_scope, utcnow
from app.core.hashing import canonical_json
from app.core.roles import Role, sees_every_client
from app.jobs import service as jobs
from app.requests import service as requests
from app.webhooks import endpoint_secrets, events, ssrf
from app.webhooks import http as webhook_http
from app.webhooks.models import (
    DeliveryStatus,
    EndpointKind,
    WebhookAttempt,
    WebhookCursor,
    WebhookDelivery,
    WebhookEndpoint,
)

log = logging.getLogger("unlearnd.webhooks")

CURSOR_NAME = "audit"
FAN_OUT_BATCH = 1000
CLAIM_BATCH = 200
MAX_PAYLOAD_BYTES = 20 * 1024
# Keep going while work keeps coming, but hand the worker back now and then; beat resumes.
ROUND_BUDGET_SECONDS = 60.0
JITTER = 0.2

_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    # Created on first use, so a forked worker child builds its own threads.
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="webhook-send")
    return _pool


def body_bytes(payload: dict[str, Any]) -> bytes:
    """The exact bytes signed and sent; the same on every attempt."""
    return canonical_json(payload)


# --- fan-out ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Subscriber:
    endpoint_id: str
    client_id: str
    role: str
    event_types: frozenset[str]
    created_at: datetime


def _subscribers(session: Session) -> list[_Subscriber]:
    rows = session.execute(
        select(WebhookEndpoint, ApiClient.role)
        .join(ApiClient, ApiClient.id == WebhookEndpoint.client_id)
        .where(WebhookEndpoint.active.is_(True), WebhookEndpoint.deleted_at.is_(None),
               WebhookEndpoint.kind == EndpointKind.WEBHOOK)
    ).all()
    return [
        _Subscriber(e.id, e.client_id, role, frozenset(e.event_types or ()), e.created_at) for e, role in rows
    ]


def _receives(subscriber: _Subscriber, event: events.WebhookEvent, owner: str | None) -> bool:
    if subscriber.event_types and event.type not in subscriber.event_types:
        return False
    if sees_every_client(subscriber.role) or (owner is not None and owner == subscriber.client_id):
        return True
    # ML clients follow jobs and versions; requests belong to the portal that sent them.
    return subscriber.role == Role.ML and event.request_id is None and event.client_id is None


class _Owners:
    """Request id -> submitting client and outcome, read in one query per fan-out batch."""

    def __init__(self, session: Session, request_ids: set[str]) -> None:
        self._known = requests.owners_and_outcomes(session, request_ids)

    def client_of(self, request_id: str) -> str | None:
        return self._known.get(request_id, (None, None))[0]

    def outcome_of(self, request_id: str) -> str | None:
        return self._known.get(request_id, (None, None))[1]


def _certificate_url(request_id: str) -> str:
    return f"{get_settings().public_url.rstrip('/')}/v1/deletion-requests/{request_id}/certificate"


def _enrich(session: Session, event: events.WebhookEvent, owners: _Owners) -> None:
    if "guarantee" in event.needs and event.request_id:
        outcome = event.data.get("outcome") or owners.outcome_of(event.request_id)
        # Nothing was unlearned for a request with no data found: no job to ask about.
        methods = [] if outcome == "no_data_found" else jobs.methods_used_for_request(session, event.request_id)
        event.data["guarantee_class"] = events.guarantee_class(outcome, methods)
        event.data["certificate_url"] = _certificate_url(event.request_id)
    if event.type == events.CERTIFICATE_ISSUED and event.request_id:
        event.data["certificate_url"] = _certificate_url(event.request_id)


def fan_out(session: Session) -> int:
    """Turn the next batch of sealed audit events into deliveries; return how many events were read."""
    cursor = session.scalar(select(WebhookCursor).where(WebhookCursor.name == CURSOR_NAME).with_for_update())
    page = audit_events.events_page(session, after=cursor.last_seq, limit=FAN_OUT_BATCH)
    if not page:
        return 0
    subscribers = _subscribers(session)
    mapped = [] if not subscribers else [
        (item, events.from_audit(
            events.AuditFact(item.seq, item.occurred_at.isoformat(), item.action, item.entity_id, item.payload)
        ))
        for item in page
    ]
    owners = _Owners(session, {e.request_id for _, found in mapped for e in found if e.request_id})
    for item, found in mapped:
        for index, event in enumerate(found):
            owner = owners.client_of(event.request_id) if event.request_id else event.client_id
            targets = [s for s in subscribers if s.created_at <= item.occurred_at and _receives(s, event, owner)]
            if not targets:
                continue
            _enrich(session, event, owners)
            payload = {"type": event.type, "timestamp": item.occurred_at.isoformat(), "data": event.data}
            if len(body_bytes(payload)) > MAX_PAYLOAD_BYTES:
                raise ValueError(f"{event.type} payload exceeds {MAX_PAYLOAD_BYTES} bytes")
            session.add_all(
                WebhookDelivery(
                    endpoint_id=s.endpoint_id, event_type=event.type, event_seq=item.seq, event_index=index,
                    order_key=event.order_key, payload=payload, next_attempt_at=item.occurred_at,
                )
                for s in targets
            )
    cursor.last_seq, cursor.updated_at = page[-1].seq, utcnow()
    session.flush()
    return len(page)


Producer = Callable[[Session], int]
_producers: list[Producer] = []


def add_producer(producer: Producer) -> None:
    """Let a room above this one queue deliveries of its own (``service.enqueue_callback``) at
    the start of every dispatch round, in the round's fan-out transaction; it returns how many
    it queued. The DRP room's status callbacks come this way (its module registers itself)."""
    if producer not in _producers:
        _producers.append(producer)


def produce(session: Session) -> int:
    return sum(producer(session) for producer in _producers)


# --- claim --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    delivery_id: str
    endpoint_id: str
    url: str
    body: bytes
    signing_keys: list[str]


def lease_seconds() -> float:
    """Long enough for one attempt to finish, short enough that a dead dispatcher's work resumes soon."""
    return 2 * get_settings().webhook_timeout_seconds + 1


def _is_head_of_chain() -> Any:
    earlier = aliased(WebhookDelivery)
    return ~exists().where(
        earlier.endpoint_id == WebhookDelivery.endpoint_id,
        earlier.order_key == WebhookDelivery.order_key,
        earlier.status == DeliveryStatus.PENDING,
        or_(
            earlier.event_seq < WebhookDelivery.event_seq,
            and_(earlier.event_seq == WebhookDelivery.event_seq, earlier.event_index < WebhookDelivery.event_index),
        ),
    )


def _signing_keys(endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    keys = [endpoint_secrets.open_sealed(endpoint.secret_encrypted)]
    if endpoint.previous_secret_encrypted and endpoint.previous_secret_expires_at and \
            endpoint.previous_secret_expires_at > now:
        keys.append(endpoint_secrets.open_sealed(endpoint.previous_secret_encrypted))
    return keys


def claim(session: Session, *, limit: int = CLAIM_BATCH) -> list[Claimed]:
    now = utcnow()
    settings = get_settings()
    live = and_(WebhookDelivery.lease_until.is_not(None), WebhookDelivery.lease_until >= now)
    in_flight = Counter(dict(session.execute(
        select(WebhookDelivery.endpoint_id, func.count())
        .where(WebhookDelivery.status == DeliveryStatus.PENDING, live)
        .group_by(WebhookDelivery.endpoint_id)
    ).tuples().all()))
    query = (
        select(WebhookDelivery)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(
            WebhookDelivery.status == DeliveryStatus.PENDING,
            WebhookDelivery.next_attempt_at <= now,
            ~live,
            WebhookEndpoint.active.is_(True),
            WebhookEndpoint.deleted_at.is_(None),
            or_(WebhookEndpoint.paused_until.is_(None), WebhookEndpoint.paused_until <= now),
            _is_head_of_chain(),
        )
        .order_by(WebhookDelivery.event_seq, WebhookDelivery.event_index)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=WebhookDelivery)
    claimed: list[Claimed] = []
    endpoints: dict[str, WebhookEndpoint] = {}
    keys: dict[str, list[str]] = {}
    lease_until = now + timedelta(seconds=lease_seconds())
    for delivery in session.scalars(query):
        if in_flight[delivery.endpoint_id] >= settings.webhook_max_in_flight_per_endpoint:
            continue
        in_flight[delivery.endpoint_id] += 1
        endpoint = endpoints.get(delivery.endpoint_id) or session.get(WebhookEndpoint, delivery.endpoint_id)
        endpoints[endpoint.id] = endpoint
        if endpoint.id not in keys:
            keys[endpoint.id] = _signing_keys(endpoint, now)
        delivery.lease_until = lease_until
        claimed.append(Claimed(delivery.id, endpoint.id, endpoint.url, body_bytes(delivery.payload), keys[endpoint.id]))
    session.flush()
    return claimed


# --- send and record ----------------------------------------------------------------------------


def send(item: Claimed) -> webhook_http.Response:
    timeout = get_settings().webhook_timeout_seconds
    try:
        destination = ssrf.check(item.url)  # again now: DNS may have changed since registration
    except ssrf.UnsafeDestination as exc:
        return webhook_http.Response(None, 0.0, None, f"refused: {exc.detail}"[:500], None)
    timestamp = utcnow().replace(microsecond=0)
    body = item.body.decode()
    headers = {
        "webhook-id": item.delivery_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": endpoint_secrets.signature_header(item.signing_keys, item.delivery_id, timestamp, body),
    }
    return webhook_http.post(destination, item.body, headers, timeout)


def _retry_delay(attempts: int) -> float | None:
    """Delay before the next try after ``attempts`` failed ones; None once the schedule is spent."""
    schedule = get_settings().webhook_retry_schedule_seconds
    if attempts > len(schedule):
        return None
    base = schedule[attempts - 1]
    return base * random.uniform(1 - JITTER, 1 + JITTER)


def record(session: Session, results: list[tuple[Claimed, webhook_http.Response]]) -> None:
    """Store a round's outcomes: the rows are locked in one statement per table (in id order,
    so concurrent dispatchers cannot deadlock), then updated in memory and flushed together."""
    now = utcnow()
    endpoint_ids = sorted({item.endpoint_id for item, _ in results})
    endpoints = {e.id: e for e in session.scalars(
        select(WebhookEndpoint).where(WebhookEndpoint.id.in_(endpoint_ids)).order_by(WebhookEndpoint.id)
        .with_for_update()
    )}
    delivery_ids = sorted(item.delivery_id for item, _ in results)
    deliveries = {d.id: d for d in session.scalars(
        select(WebhookDelivery).where(WebhookDelivery.id.in_(delivery_ids)).order_by(WebhookDelivery.id)
        .with_for_update()
    )}
    for item, response in results:
        _record_one(session, endpoints[item.endpoint_id], deliveries[item.delivery_id], response, now)


def _record_one(
    session: Session, endpoint: WebhookEndpoint, delivery: WebhookDelivery, response: webhook_http.Response,
    now: datetime,
) -> None:
    session.add(WebhookAttempt(
        delivery_id=delivery.id, attempted_at=now, status_code=response.status_code,
        latency_ms=round(response.latency_ms, 3), response_excerpt=response.excerpt, error=response.error,
        delivered=response.delivered,
    ))
    delivery.attempts += 1
    delivery.lease_until = None
    delivery.last_status_code, delivery.last_error = response.status_code, response.error
    if response.delivered:
        delivery.status, delivery.delivered_at = DeliveryStatus.DELIVERED, now
        if endpoint.failing_since is not None:
            _recovered(session, endpoint, now)
        endpoint.failing_since, endpoint.consecutive_failures, endpoint.consecutive_failed_deliveries = None, 0, 0
        return
    endpoint.failing_since = endpoint.failing_since or now
    endpoint.consecutive_failures += 1
    # A callback URL no client registered (nor can enable again) is never disabled: a 410 or
    # a spent schedule fails that one delivery, and the next one is tried afresh.
    registered = endpoint.kind == EndpointKind.WEBHOOK
    if response.status_code == 410:
        if registered:
            disable(session, endpoint, reason="the endpoint answered 410 Gone", actor="webhooks")
        else:
            delivery.status = DeliveryStatus.FAILED
        return
    delay = _retry_delay(delivery.attempts)
    if response.status_code in (429, 503) and response.retry_after_seconds is not None:
        # The receiver said when to come back: nothing goes to it before then.
        wait = min(response.retry_after_seconds, 24 * 3600.0)
        endpoint.paused_until = now + timedelta(seconds=wait)
        delay = max(delay, wait) if delay is not None else None
    if delay is None:
        delivery.status = DeliveryStatus.FAILED
        endpoint.consecutive_failed_deliveries += 1
    else:
        delivery.next_attempt_at = now + timedelta(seconds=delay)
    settings = get_settings()
    if not registered:
        return
    if (now - endpoint.failing_since).total_seconds() >= settings.webhook_disable_after_seconds:
        disable(session, endpoint, reason=f"every attempt failed since {endpoint.failing_since.isoformat()}",
                actor="webhooks")
    elif endpoint.consecutive_failed_deliveries >= settings.webhook_disable_after_failed_deliveries:
        disable(session, endpoint, reason=f"{endpoint.consecutive_failed_deliveries} deliveries in a row failed",
                actor="webhooks")


def _recovered(session: Session, endpoint: WebhookEndpoint, now: datetime) -> None:
    """The endpoint answers again: its waiting retries go now instead of hours later (the
    per-endpoint in-flight cap keeps the backlog from flooding it)."""
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.status == DeliveryStatus.PENDING,
               WebhookDelivery.next_attempt_at > now)
        .values(next_attempt_at=now)
    )


def disable(session: Session, endpoint: WebhookEndpoint, *, reason: str, actor: str) -> None:
    """Stop sending to an endpoint; its pending deliveries wait for it to be enabled again.
    The audit event becomes ``webhook_endpoint.disabled`` for its owner's other endpoints and admins'."""
    if not endpoint.active:
        return
    now = utcnow()
    endpoint.active, endpoint.disabled_reason, endpoint.disabled_at, endpoint.updated_at = False, reason[:200], now, now
    audit.record(session, actor=actor, action=events.ENDPOINT_DISABLED_ACTION, entity_type="webhook_endpoint",
                 entity_id=endpoint.id, payload={"client_id": endpoint.client_id, "reason": reason[:200]})
    log.warning("webhook endpoint disabled", extra={"endpoint_id": endpoint.id, "reason": reason})


# --- the dispatcher -----------------------------------------------------------------------------


def dispatch(*, budget_seconds: float = ROUND_BUDGET_SECONDS) -> int:
    """Fan out and deliver until nothing is due; return how many attempts were made."""
    started, attempts = time.monotonic(), 0
    while time.monotonic() - started < budget_seconds:
        with session_scope() as session:
            read = fan_out(session)
        with session_scope() as session:
            read += produce(session)
        with session_scope() as session:
            claimed = claim(session)
        if not claimed:
            if read:
                continue
            break
        futures = {_executor().submit(send, item): item for item in claimed}
        results = [(futures[future], future.result()) for future in as_completed(futures)]
        # One transaction for the round: a crash before it commits only means these are sent
        # again under the same webhook-ids, and per-delivery commits would cap throughput.
        with session_scope() as session:
            record(session, results)
        attempts += len(results)
    return attempts
