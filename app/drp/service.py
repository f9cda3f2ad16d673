"""Data Rights Protocol v0.9.x (consumer-reports-innovation-lab/data-rights-protocol) for
authorized agents exercising the deletion right, on top of the requests room.

* An admin enters an agent from the DRP service directory (its id and Ed25519 verify key);
  the agent gets its own portal client. ``POST /v1/agent/{id}`` ("pair-wise key setup",
  §2.05), signed by the agent, answers a fresh token: that client's API key.
* Signed messages (§3.07) are libsodium "combined mode": the 64-byte Ed25519 signature
  prepended to the JSON document, base64-encoded, sent as ``text/plain``. They are checked
  in the spec's order: base64, signature by the agent's key, ``agent-id``, ``business-id``,
  ``issued-at`` not in the future, ``expires-at`` not passed.
* An exercise (§2.01) becomes a deletion request through ``requests.service.submit``: same
  hashing of identifiers, idempotency (``agent-request-id`` is the external reference, an
  exact re-send of the signed message replays), isolation (an agent sees only its own
  requests; §2.02's 403 for anyone else's, or none), deadlines and certificates.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.clients import service as clients
from app.core.auth import ApiClient, Role
from app.core.config import get_settings
from app.core.database import utcnow
from app.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from app.core.inputs import NotJson, check_json
from app.drp.models import DrpAgent, DrpCallback
from app.drp.status import exercise_status
from app.requests import service as requests
from app.requests.models import DeletionRequest, LegalBasis
from app.requests.schemas import DeletionRequestCreate
from app.webhooks import service as webhooks
from app.webhooks.models import EndpointKind
from app.webhooks.ssrf import UnsafeDestination

SIGNATURE_BYTES = 64
SUPPORTED_VERSION = re.compile(r"^0\.9(\.\d+)?$")
CLOCK_SKEW = requests.CLOCK_SKEW
# §3.01: ccpa, or a voluntary request when no regime is given.
REGIMES = {"ccpa": (LegalBasis.CCPA_1798_105, "US-CA"), None: (LegalBasis.INTERNAL_POLICY, None)}
# §3.04 identity claims Unlearnd can match records by; others (name, address) are not used.
CLAIMS = {"email": "email", "phone_number": "phone", "user_id": "user_id"}


class DrpError(Forbidden):
    """A signed message that does not hold (§3.07); fatal when re-sending cannot help (§3.06)."""


@dataclass(frozen=True)
class Exercise:
    request: DeletionRequest
    replayed: bool


# --- agents -----------------------------------------------------------------------------------


def register_agent(session: Session, *, agent_id: str, name: str, verify_key: str, actor: str,
                   requires_approval: bool = False) -> DrpAgent:
    """Enter an agent from the service directory. ``verify_key`` is base64 (§3.05.1, since
    0.9.1) or, as before 0.9.1, hex of the 32-byte Ed25519 public key."""
    if session.get(DrpAgent, agent_id) is not None:
        raise Conflict(f"agent {agent_id} is registered already", field="id")
    key = _decode_verify_key(verify_key)
    client = clients.create_client(session, name=f"drp:{agent_id}", role=Role.PORTAL,
                                   requires_approval=requires_approval, actor=actor).client
    agent = DrpAgent(id=agent_id, name=name, verify_key=key, client_id=client.id)
    session.add(agent)
    session.flush()
    return agent


def list_agents(session: Session) -> list[DrpAgent]:
    return list(session.scalars(select(DrpAgent).order_by(DrpAgent.created_at)))


def _decode_verify_key(text: str) -> bytes:
    text = text.strip()
    try:
        raw = bytes.fromhex(text) if re.fullmatch(r"[0-9a-fA-F]{64}", text) else base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        raise InvalidInput("verify_key is neither base64 nor hex", field="verify_key") from None
    if len(raw) != 32:
        raise InvalidInput("an Ed25519 verify key is 32 bytes", field="verify_key")
    return raw


def _agent(session: Session, agent_id: str) -> DrpAgent:
    agent = session.get(DrpAgent, agent_id)
    if agent is None:
        raise DrpError(f"no agent {agent_id} in this service's directory")
    return agent


def agent_of(session: Session, client: ApiClient) -> DrpAgent:
    """The agent whose pairwise token authenticated this call; any other key is refused."""
    agent = session.scalar(select(DrpAgent).where(DrpAgent.client_id == client.id))
    if agent is None:
        raise Forbidden("this token is not a DRP agent's pairwise token")
    return agent


def pairwise_setup(session: Session, agent_id: str, signed: bytes) -> tuple[DrpAgent, str]:
    """§2.05: a message signed by the agent's directory key gets a new token (the old one stops)."""
    agent = _agent(session, agent_id)
    _open(signed, agent, require_claims=True)
    issued = clients.rotate_key(session, agent.client_id, actor=f"drp:{agent.id}")
    agent.token_issued_at = utcnow()
    return agent, issued.api_key


def check_token(session: Session, agent_id: str, client: ApiClient) -> None:
    """§2.06: the token must be this agent's."""
    if agent_of(session, client).id != agent_id:
        raise Forbidden("the token belongs to another agent")


# --- signed messages ---------------------------------------------------------------------------


def _timestamp(message: dict[str, Any], claim: str) -> datetime:
    value = message.get(claim)
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None:
        raise DrpError(f"'{claim}' must be an ISO 8601 timestamp", fatal=True)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _open(signed: bytes, agent: DrpAgent, *, require_claims: bool) -> dict[str, Any]:
    """Verify a combined-mode signed message in §3.07's order and return its JSON document."""
    try:
        blob = base64.b64decode(signed.strip(), validate=True)
    except (ValueError, binascii.Error):
        raise DrpError("the body is not base64 (send the signed message as text/plain)", fatal=True) from None
    if len(blob) <= SIGNATURE_BYTES:
        raise DrpError("the message is shorter than its signature", fatal=True)
    signature, document = blob[:SIGNATURE_BYTES], blob[SIGNATURE_BYTES:]
    try:
        Ed25519PublicKey.from_public_bytes(bytes(agent.verify_key)).verify(signature, document)
    except InvalidSignature:
        raise DrpError(f"the signature does not verify under agent {agent.id}'s key", fatal=True) from None
    try:
        check_json(document)  # NaN, Infinity, NUL: refused as everywhere else
        message = json.loads(document)
    except (NotJson, UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(f"the signed document is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise InvalidInput("the signed document must be a JSON object")
    if not require_claims:
        return message
    if message.get("agent-id") != agent.id:
        raise DrpError("'agent-id' is not the agent this token or URL names", fatal=True)
    if message.get("business-id") != get_settings().drp_business_id:
        raise DrpError(f"'business-id' is not this business ({get_settings().drp_business_id})", fatal=True)
    now = utcnow()
    if _timestamp(message, "issued-at") > now + CLOCK_SKEW:
        raise DrpError("'issued-at' is in the future: check the agent's clock", fatal=True)
    expires_at = _timestamp(message, "expires-at")
    if expires_at <= now:
        raise DrpError(f"the request expired at {expires_at.isoformat()}; sign a new one", fatal=True,
                       state="expired")
    version = message.get("drp.version")
    if not isinstance(version, str) or not SUPPORTED_VERSION.match(version):
        raise DrpError(f"'drp.version' {version!r} is not a 0.9.x version this service speaks", fatal=True)
    return message


# --- exercise, status, revoke ------------------------------------------------------------------


def _submission(message: dict[str, Any]) -> DeletionRequestCreate:
    if message.get("exercise") != "deletion":
        raise InvalidInput("Unsupported rights actions submitted: this service honours 'deletion' only",
                           field="exercise", fatal=True)
    regime = message.get("regime")
    if regime not in REGIMES:
        raise InvalidInput(f"regime {regime!r} is not supported: 'ccpa', or none for a voluntary request",
                           field="regime", fatal=True)
    legal_basis, jurisdiction = REGIMES[regime]
    subject = [{"type": kind, "value": message[claim]} for claim, kind in CLAIMS.items()
               if isinstance(message.get(claim), str) and message[claim].strip()]
    if not subject:
        raise InvalidInput("no identity claim this service can match: give email, phone_number or user_id",
                           field="email", fatal=True)
    verified = sorted(claim for claim in CLAIMS if message.get(f"{claim}_verified") is True)
    body: dict[str, Any] = {
        "subject": subject, "legal_basis": legal_basis.value, "jurisdiction": jurisdiction,
        "source_system": f"drp:{message['agent-id']}",
    }
    if verified:
        body["identity_verification"] = {"method": "drp-agent-verified:" + ",".join(verified)}
    if isinstance(message.get("agent-request-id"), str):
        body["external_ref"] = message["agent-request-id"]
    try:
        return DeletionRequestCreate.model_validate(body)
    except ValueError as exc:
        raise InvalidInput(f"the request does not fit a deletion request: {exc}", fatal=True) from None


def exercise(session: Session, client: ApiClient, signed: bytes, provenance: requests.Provenance) -> Exercise:
    """§2.01: verify, then submit through the requests room as the agent's client. With an
    ``agent-request-id`` that id is the idempotency handle; without one, the exact signed
    message is (its SHA-256 as Idempotency-Key), so a network retry never makes two requests."""
    agent = agent_of(session, client)
    message = _open(signed, agent, require_claims=True)
    submission = _submission(message)
    key = None if submission.external_ref else "drp-" + hashlib.sha256(signed.strip()).hexdigest()
    callback = _callback_url(message)
    endpoint_id = _callback_endpoint(session, client, callback) if callback else None
    outcome = requests.submit(session, client=client, submission=submission, provenance=provenance,
                              idempotency_key=key)
    if endpoint_id and session.get(DrpCallback, outcome.request.id) is None:
        # The agent was told the current status in the answer; callbacks follow its changes.
        session.add(DrpCallback(request_id=outcome.request.id, endpoint_id=endpoint_id,
                                last_status=exercise_status(session, outcome.request)["status"]))
        session.flush()
    return Exercise(request=outcome.request, replayed=outcome.replayed)


# --- status callbacks (§2.03) ---------------------------------------------------------------------


def _callback_url(message: dict[str, Any]) -> str | None:
    url = message.get("status_callback")
    if url is None or url == "":
        return None
    if not isinstance(url, str) or len(url) > 2000:
        raise InvalidInput("'status_callback' must be a URL of at most 2000 characters", field="status_callback",
                           fatal=True)
    return url


def _callback_endpoint(session: Session, client: ApiClient, url: str) -> str:
    """The webhooks room's endpoint for this agent's callback URL: the same SSRF rules as a
    registered webhook (https, public addresses unless the host is allow-listed)."""
    try:
        return webhooks.callback_endpoint(session, client.id, url, kind=EndpointKind.DRP_CALLBACK)
    except UnsafeDestination as exc:
        raise InvalidInput(f"status_callback refused: {exc.detail}", field="status_callback",
                           fatal=True) from None


def _own(session: Session, client: ApiClient, request_id: str) -> DeletionRequest:
    agent_of(session, client)
    try:
        return requests.get_request(session, request_id, client)
    except NotFound:
        # §2.02: another agent's request (or none) is a 403, the same for both.
        raise Forbidden("this agent does not manage that request") from None


def status_of(session: Session, client: ApiClient, request_id: str) -> dict[str, Any]:
    return exercise_status(session, _own(session, client, request_id))


def revoke(session: Session, client: ApiClient, request_id: str, signed: bytes) -> dict[str, Any]:
    """§2.04: the agent's signed ``{"reason": ...}`` cancels an open or in-progress request
    (until unlearning starts; after that 409, the request completes)."""
    agent = agent_of(session, client)
    request = _own(session, client, request_id)
    message = _open(signed, agent, require_claims=False)
    reason = message.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise InvalidInput("'reason' must be a string", field="reason")
    requests.cancel(session, request.id, viewer=client, reason=(reason or "revoked by the agent")[:2000])
    return exercise_status(session, request)
