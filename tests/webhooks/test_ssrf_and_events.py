"""The SSRF guard's address rules and DNS-rebinding check, and the audit → webhook event mapping."""

from __future__ import annotations

import json
import socket

import pytest

from tests.webhooks.test_dispatch import deliver_now


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.1", "169.254.169.254", "::1", "192.168.1.1", "fd00::1",
                                     "::ffff:10.0.0.1", "100.64.0.1", "0.0.0.0", "224.0.0.1"])
def test_internal_addresses_are_forbidden(address):
    import ipaddress

    from app.webhooks.ssrf import is_forbidden

    assert is_forbidden(ipaddress.ip_address(address))


def test_public_address_is_allowed():
    import ipaddress

    from app.webhooks.ssrf import is_forbidden

    assert not is_forbidden(ipaddress.ip_address("93.184.216.34"))


def _resolving_to(monkeypatch, answers: dict[str, str]) -> None:
    real = socket.getaddrinfo

    def fake(host, port, *args, **kwargs):
        if host in answers:
            family = socket.AF_INET6 if ":" in answers[host] else socket.AF_INET
            return [(family, socket.SOCK_STREAM, 6, "", (answers[host], port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr("app.webhooks.ssrf.socket.getaddrinfo", fake)


@pytest.mark.parametrize("target", ["127.0.0.1", "10.0.0.1", "169.254.169.254", "::1"])
def test_a_name_resolving_inside_is_refused(env, monkeypatch, target):
    from app.webhooks.ssrf import UnsafeDestination, check

    _resolving_to(monkeypatch, {"hooks.example.test": target})
    with pytest.raises(UnsafeDestination, match="resolves to"):
        check("https://hooks.example.test/x")


def test_allow_listed_host_may_be_loopback_over_http(env, monkeypatch):
    from app.webhooks.ssrf import check
    from tests.conftest import reset_caches

    monkeypatch.setenv("UNLEARND_WEBHOOK_ALLOWED_HOSTS", json.dumps(["127.0.0.1"]))
    reset_caches()
    assert check("http://127.0.0.1:8080/in").address == "127.0.0.1"


def test_dns_rebinding_is_caught_at_delivery(webhook_env, monkeypatch, api, make_client):
    """Registered while the name is public, delivered after it re-resolves to loopback: refused, never dialled."""
    admin = make_client("admin")
    answers = {"hooks.example.test": "93.184.216.34"}
    _resolving_to(monkeypatch, answers)
    created = api.post("/v1/webhooks/endpoints", json={"url": "https://hooks.example.test/in",
                                                        "events": ["deletion_request.received"]},
                       headers=admin.headers)
    assert created.status_code == 201, created.text
    answers["hooks.example.test"] = "127.0.0.1"
    api.post("/v1/deletion-requests", json={"subject": [{"type": "email", "value": "a@example.org"}],
                                            "legal_basis": "gdpr_art17"}, headers=admin.headers)
    deliver_now()
    (delivery,) = api.get(f"/v1/webhooks/endpoints/{created.json()['id']}/deliveries", headers=admin.headers).json()
    log = api.get(f"/v1/webhooks/deliveries/{delivery['id']}", headers=admin.headers).json()["attempt_log"]
    assert log[0]["status_code"] is None and log[0]["error"].startswith("refused:")
    assert "127.0.0.1" in log[0]["error"]


def _fact(action: str, payload: dict, entity: str = "e-1"):
    from app.webhooks.events import AuditFact

    return AuditFact(seq=7, occurred_at="2026-01-01T00:00:00+00:00", action=action, entity_id=entity, payload=payload)


@pytest.mark.parametrize(("action", "payload", "expected"), [
    ("request.scheduled", {"from": "received", "to": "scheduled"}, ["deletion_request.scheduled"]),
    ("request.completed", {"from": "verifying", "to": "completed", "outcome": "forgotten"},
     ["deletion_request.completed"]),
    ("request.failed", {"from": "unlearning", "to": "failed"}, ["deletion_request.failed"]),
    ("request.rejected", {"from": "pending_approval", "to": "rejected"}, ["deletion_request.rejected"]),
    ("request.cancelled", {"from": "scheduled", "to": "cancelled"}, ["deletion_request.cancelled"]),
    ("request.unlearning", {"from": "scheduled", "to": "unlearning"}, []),
    ("deadline.at_risk", {"due_at": "2026-01-02T00:00:00+00:00", "status": "scheduled", "hours_left": 3.5},
     ["deletion_request.deadline_at_risk"]),
    ("job.succeeded", {"kind": "unlearn", "model_id": "m", "result_version_id": "v2", "method_used": "sisa",
                       "attempts": 1}, ["unlearning_job.succeeded"]),
    ("job.succeeded", {"kind": "train_shard"}, []),
    ("job.failed", {"kind": "unlearn", "model_id": "m", "attempts": 3, "error_type": "RuntimeError"},
     ["unlearning_job.failed"]),
    ("model_version.purged", {"sha256": ["ab" * 32] * 200, "deleted": 1}, ["model_version.purged"]),
    ("certificate.issued", {"certificate_id": "c", "request_id": "r", "content_sha256": "cd" * 32},
     ["certificate.issued"]),
    ("webhook.endpoint_disabled", {"client_id": "c", "reason": "410"}, ["webhook_endpoint.disabled"]),
    ("records.forgotten", {"record_ids": [1, 2]}, []),
    ("lineage.violation", {"model_id": "m", "number": 3, "state": "superseded", "forgotten_records": 12,
                           "unattached_requests": ["r1"], "uncarried_requests": [], "notify": "admins"},
     ["lineage.violation"]),
    ("qualification.revoked", {"model_id": "m", "version_id": "v", "method": "finetune", "band": [1, 50],
                               "job_id": "j", "records": 13, "flagged": 13, "p_value": 1e-13, "notify": "admins"},
     ["method_qualification.revoked"]),
    ("request.received", {"transitions": [[None, "received"], ["received", "scheduled"]], "legal_basis": "gdpr_art17",
                          "subject_hashes": ["secret-hash"], "request_hash": "ef" * 32, "due_at": "x"},
     ["deletion_request.received", "deletion_request.scheduled"]),
])
def test_audit_events_map_to_thin_webhook_events(action, payload, expected):
    from app.core.hashing import canonical_json
    from app.webhooks.events import from_audit

    mapped = from_audit(_fact(action, payload))
    assert [e.type for e in mapped] == expected
    for event in mapped:
        body = canonical_json({"type": event.type, "timestamp": "t", "data": event.data})
        assert len(body) < 20 * 1024
        assert b"subject_hashes" not in body and b"record_ids" not in body


def test_guarantee_class_is_the_weakest_method():
    from app.webhooks.events import guarantee_class

    assert guarantee_class("no_data_found", []) == "exact"
    assert guarantee_class("forgotten", ["sisa", "retrain"]) == "exact"
    assert guarantee_class("forgotten", ["sisa", "newton"]) == "certified"
    assert guarantee_class("forgotten", ["newton", "scrub"]) == "approximate"
