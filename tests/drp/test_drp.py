"""The Data Rights Protocol v0.9.4 face, replayed with requests shaped as the spec's examples
(§2.01, §2.04, §2.05) and signed the way an agent does it: PyNaCl (libsodium) combined mode,
base64, text/plain. Verification, states, idempotency, isolation, deadlines, certificates."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from nacl.signing import SigningKey

from app.core.database import session_scope

AGENT, BUSINESS = "aa-id", "cb-id"  # the ids the spec's examples use
TEXT = {"Content-Type": "text/plain"}


@pytest.fixture
def drp(env, api, make_client, monkeypatch):
    from app.core.config import get_settings

    monkeypatch.setenv("UNLEARND_DRP_BUSINESS_ID", BUSINESS)
    get_settings.cache_clear()
    admin = make_client("admin")
    key = SigningKey.generate()
    registered = api.post("/v1/drp/agents", headers=admin.headers, json={
        "id": AGENT, "name": "Consumer Legible Agent App Name",
        "verify_key": base64.b64encode(bytes(key.verify_key)).decode(), "web_url": "https://agent.example.com"})
    assert registered.status_code == 201, registered.text
    return admin, key


def _now(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


def sign(key: SigningKey, document: dict) -> bytes:
    return base64.b64encode(key.sign(json.dumps(document).encode()))  # signature || message


def pairwise(agent: str = AGENT, business: str = BUSINESS, **overrides: object) -> dict:
    # §2.05, as in the spec.
    return {"agent-id": agent, "business-id": business, "issued-at": _now(), "expires-at": _now(minutes=10),
            "drp.version": "0.9.4", **overrides}


def exercise(email: str, **overrides: object) -> dict:
    # §2.01, as in the spec, with the deletion right and schema.org/Person claims (§3.04).
    return {"agent-id": AGENT, "business-id": BUSINESS, "issued-at": _now(), "expires-at": _now(minutes=10),
            "agent-request-id": "foo", "drp.version": "0.9.4", "exercise": "deletion", "regime": "ccpa",
            "relationships": ["customer", "marketing"],  # status_callback: tests/drp/test_callbacks.py
            "name": "Test User", "email": email, "email_verified": True, **overrides}


def _token(api, key: SigningKey) -> dict[str, str]:
    answer = api.post(f"/v1/agent/{AGENT}", content=sign(key, pairwise()), headers=TEXT)
    assert answer.status_code == 200, answer.text
    assert set(answer.json()) == {"agent-id", "token"} and answer.json()["agent-id"] == AGENT
    return {"Authorization": f"Bearer {answer.json()['token']}"}


def test_agent_pairs_exercises_deletion_reads_status_and_revokes(backend, api, drp, seed_model):
    admin, key = drp
    seed_model({"r1": ("email", "user@example.com"), "r2": ("email", "other@example.com")})
    auth = _token(api, key)
    assert api.get(f"/v1/agent/{AGENT}", headers=auth).json() == {}
    # A new pairwise setup replaces the token.
    again = _token(api, key)
    assert api.get(f"/v1/agent/{AGENT}", headers=auth).status_code == 401
    auth = again

    signed = sign(key, exercise("user@example.com"))
    created = api.post("/v1/data-rights-request", content=signed, headers={**auth, **TEXT})
    assert created.status_code == 200, created.text
    status = created.json()
    assert status["status"] == "in_progress" and status["agent_request_id"] == "foo"
    received, expected = datetime.fromisoformat(status["received_at"]), datetime.fromisoformat(status["expected_by"])
    assert expected - received == timedelta(days=45)  # CCPA
    request_id = status["request_id"]

    # Idempotent: the same signed message, or the same agent-request-id and claims re-signed later.
    assert api.post("/v1/data-rights-request", content=signed, headers={**auth, **TEXT}).json() == status
    resent = api.post("/v1/data-rights-request/", content=sign(key, exercise("user@example.com")),
                      headers={**auth, **TEXT})
    assert resent.json()["request_id"] == request_id
    clash = api.post("/v1/data-rights-request", content=sign(key, exercise("other@example.com")),
                     headers={**auth, **TEXT})
    assert clash.status_code == 409 and clash.json()["code"] == "409" and clash.json()["message"]

    # It is an ordinary deletion request of the agent's own portal client, raw identifier never stored.
    detail = api.get(f"/v1/deletion-requests/{request_id}", headers=admin.headers).json()
    assert detail["legal_basis"] == "ccpa_1798_105" and detail["status"] == "scheduled"
    assert "user@example.com" not in json.dumps(detail)
    assert api.get(f"/v1/data-rights-request/{request_id}", headers=auth).json() == status

    revoked = api.request("DELETE", f"/v1/data-rights-request/{request_id}",
                          content=sign(key, {"reason": "I don't want my account deleted"}), headers={**auth, **TEXT})
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["status"] == "revoked"
    assert api.get(f"/v1/data-rights-request/{request_id}", headers=auth).json()["status"] == "revoked"
    history = api.get(f"/v1/deletion-requests/{request_id}", headers=admin.headers).json()["history"]
    assert history[-1]["to_status"] == "cancelled" and history[-1]["reason"] == "I don't want my account deleted"


def test_signed_messages_are_checked_in_the_specs_order(api, drp, make_client):
    _, key = drp
    auth = {**_token(api, key), **TEXT}
    url = "/v1/data-rights-request"

    def refused(body: bytes, headers: dict = auth, status: int = 403) -> dict:
        answer = api.post(url, content=body, headers=headers)
        assert answer.status_code == status, answer.text
        problem = answer.json()
        assert problem["code"] == str(status) and problem["message"] == problem["detail"]
        return problem

    assert "base64" in refused(b"not base64 at all!")["message"]
    assert "Bearer" in refused(sign(key, exercise("a@example.com")), headers=TEXT, status=401)["message"]
    assert "signature" in refused(sign(SigningKey.generate(), exercise("a@example.com")))["message"]
    assert "agent-id" in refused(sign(key, exercise("a@example.com", **{"agent-id": "another"})))["message"]
    assert "business-id" in refused(sign(key, exercise("a@example.com", **{"business-id": "elsewhere"})))["message"]
    assert "future" in refused(sign(key, exercise("a@example.com", **{"issued-at": _now(hours=1)})))["message"]
    expired = refused(sign(key, exercise("a@example.com", **{"expires-at": _now(seconds=-1)})))
    assert expired["fatal"] is True and expired["state"] == "expired"
    assert "drp.version" in refused(sign(key, exercise("a@example.com", **{"drp.version": "0.5"})))["message"]
    unsupported = refused(sign(key, exercise("a@example.com", exercise="sale:opt-out")), status=422)
    assert unsupported["message"].startswith("Unsupported rights actions submitted") and unsupported["fatal"] is True
    assert "regime" in refused(sign(key, exercise("a@example.com", regime="pipl")), status=422)["message"]
    assert "identity claim" in refused(sign(key, {**exercise("x"), "email": None}), status=422)["message"]
    # Only an agent's pairwise token may submit; a portal's own key is not one.
    portal = make_client("portal")
    assert api.post(url, content=sign(key, exercise("a@example.com")),
                    headers={**portal.headers, **TEXT}).status_code == 403
    # Pairwise setup is refused for an unknown agent, a mismatched agent-id or another key.
    assert api.post("/v1/agent/NOBODY", content=sign(key, pairwise("NOBODY")), headers=TEXT).status_code == 403
    assert api.post(f"/v1/agent/{AGENT}", content=sign(key, pairwise("NOBODY")), headers=TEXT).status_code == 403
    assert api.post(f"/v1/agent/{AGENT}", content=sign(SigningKey.generate(), pairwise()),
                    headers=TEXT).status_code == 403


def test_agents_see_only_their_own_requests(api, drp, seed_model):
    admin, key = drp
    other_key = SigningKey.generate()
    assert api.post("/v1/drp/agents", headers=admin.headers, json={
        "id": "OTHER_AGENT", "name": "Other", "verify_key": bytes(other_key.verify_key).hex()}).status_code == 201
    assert api.post("/v1/drp/agents", headers=admin.headers, json={
        "id": AGENT, "name": "again", "verify_key": bytes(other_key.verify_key).hex()}).status_code == 409
    mine = _token(api, key)
    other = api.post("/v1/agent/OTHER_AGENT", content=sign(other_key, pairwise("OTHER_AGENT")), headers=TEXT).json()
    theirs = {"Authorization": f"Bearer {other['token']}"}
    request_id = api.post("/v1/data-rights-request", content=sign(key, exercise("x@example.com")),
                          headers={**mine, **TEXT}).json()["request_id"]
    assert api.get(f"/v1/data-rights-request/{request_id}", headers=theirs).status_code == 403
    assert api.get("/v1/data-rights-request/no-such-request", headers=mine).status_code == 403
    assert api.get(f"/v1/agent/{AGENT}", headers=theirs).status_code == 403
    assert api.request("DELETE", f"/v1/data-rights-request/{request_id}", content=sign(other_key, {"reason": "x"}),
                       headers={**theirs, **TEXT}).status_code == 403
    # Nothing matched: denied / no_match, with the certificate that proves it.
    status = api.get(f"/v1/data-rights-request/{request_id}", headers=mine).json()
    assert (status["status"], status["reason"]) == ("denied", "no_match")
    assert status["results_url"].endswith(f"/v1/deletion-requests/{request_id}/certificate")


def test_states_map_onto_the_specs(api, drp, seed_model, make_client):
    from app.requests import service as requests

    admin, key = drp
    seed_model({"a": ("email", "held@example.com"), "b": ("email", "fraud@example.com"),
                "c": ("email", "done@example.com")})
    # An approval-gated agent's request is open until the business acts on it.
    gated = SigningKey.generate()
    api.post("/v1/drp/agents", headers=admin.headers, json={
        "id": "GATED", "name": "Gated", "verify_key": base64.b64encode(bytes(gated.verify_key)).decode(),
        "requires_approval": True})
    token = api.post("/v1/agent/GATED", content=sign(gated, pairwise("GATED")), headers=TEXT).json()["token"]
    auth = {"Authorization": f"Bearer {token}"}

    def submit(email: str, ref: str) -> dict:
        body = exercise(email, **{"agent-id": "GATED", "agent-request-id": ref})
        del body["regime"]  # voluntary (§3.01)
        answer = api.post("/v1/data-rights-request", content=sign(gated, body), headers={**auth, **TEXT})
        assert answer.status_code == 200, answer.text
        return answer.json()

    held = submit("held@example.com", "r-held")
    assert held["status"] == "open" and held["processing_details"]
    fraud = submit("fraud@example.com", "r-fraud")
    rejected = api.post(f"/v1/deletion-requests/{fraud['request_id']}/reject", headers=admin.headers,
                        json={"reason": "suspected_fraud: the identity documents did not match"})
    assert rejected.status_code == 200, rejected.text
    denied = api.get(f"/v1/data-rights-request/{fraud['request_id']}", headers=auth).json()
    assert (denied["status"], denied["reason"]) == ("denied", "suspected_fraud")
    done = submit("done@example.com", "r-done")
    assert api.post(f"/v1/deletion-requests/{done['request_id']}/approve", headers=admin.headers).status_code == 200
    assert api.get(f"/v1/data-rights-request/{done['request_id']}", headers=auth).json()["status"] == "in_progress"
    with session_scope() as session:
        request = requests.get_for_update(session, done["request_id"])
        requests.transition(session, request, "completed", actor="test", guarantee="exact")
    fulfilled = api.get(f"/v1/data-rights-request/{done['request_id']}", headers=auth).json()
    assert fulfilled["status"] == "fulfilled" and fulfilled["results_url"].endswith("/certificate")
    # The token is a portal key of the agent's own client: it fetches the certificate too.
    from tests.conftest import issue_certificate_now

    issue_certificate_now(done["request_id"])
    assert api.get(fulfilled["results_url"], headers=auth).status_code == 200
    # Revoking after completion is refused, and the request stays fulfilled.
    late = api.request("DELETE", f"/v1/data-rights-request/{done['request_id']}", content=sign(gated, {}),
                       headers={**auth, **TEXT})
    assert late.status_code == 409 and late.json()["code"] == "409"
