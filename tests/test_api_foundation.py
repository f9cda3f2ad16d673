"""The HTTP skeleton: probes, problem details, authentication and roles, on both databases."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

PROBLEM = "application/problem+json"


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    for member in ("type", "title", "status", "detail", "instance"):
        assert member in body
    assert body["status"] == status
    return body


def test_liveness_and_readiness(api, backend):
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["database"] == "ok"


def test_readiness_reports_unreachable_broker(env, monkeypatch):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from tests.conftest import reset_caches

    monkeypatch.setenv("UNLEARND_BROKER_URL", "redis://127.0.0.1:1/0")
    reset_caches()
    with TestClient(create_app()) as client:
        body = assert_problem(client.get("/readyz"), 503)
    assert "broker" in body["detail"]


def test_every_v1_route_needs_a_key(api):
    spec = api.get("/openapi.json").json()["paths"]
    paths = {(path, method.upper()) for path, ops in spec.items() if path.startswith("/v1") for method in ops}
    assert paths, "no /v1 routes registered"
    # DRP pair-wise key setup (§2.05) is how an agent gets its key: it is authenticated by the
    # agent's Ed25519 signature instead, and refuses anything unsigned.
    signed_instead = ("/v1/agent/{agent_id}", "POST")
    assert signed_instead in paths
    assert_problem(api.post("/v1/agent/agent_id", content=b"", headers={"Content-Type": "text/plain"}), 403)
    for path, method in sorted(paths - {signed_instead}):
        concrete = path.replace("{", "").replace("}", "")
        body = assert_problem(api.request(method, concrete), 401)
        assert "Bearer" in body["detail"]


def test_bad_key_is_401_and_wrong_role_is_403(api, make_client):
    assert_problem(api.get("/v1/clients", headers={"Authorization": "Bearer ulk_nope_nope"}), 401)
    assert_problem(api.get("/v1/clients", headers={"Authorization": "Basic abc"}), 401)
    portal = make_client("portal")
    body = assert_problem(api.get("/v1/clients", headers=portal.headers), 403)
    assert "admin" in body["detail"]


def test_revoked_key_is_refused(api, make_client):
    admin, other = make_client("admin"), make_client("ml")
    assert api.post(f"/v1/clients/{other.id}/revoke", headers=admin.headers).status_code == 200
    assert_problem(api.get("/v1/clients", headers=other.headers), 401)


def test_malformed_json_is_422_problem(api, make_client):
    admin = make_client("admin")
    response = api.post(
        "/v1/clients", content=b'{"name": "x", "role":', headers={**admin.headers, "Content-Type": "application/json"}
    )
    body = assert_problem(response, 422)
    assert body["type"].endswith("malformed-json")


def test_validation_error_names_the_field(api, make_client):
    admin = make_client("admin")
    body = assert_problem(api.post("/v1/clients", json={"name": "x", "role": "emperor"}, headers=admin.headers), 422)
    assert body["field"] == "role"


def test_oversized_body_is_413(api, make_client):
    admin = make_client("admin")
    response = api.post("/v1/clients", content=b"x" * (65 * 1024), headers={**admin.headers, "Content-Type": "application/json"})
    assert_problem(response, 413)


def test_unknown_route_is_problem(api):
    assert_problem(api.get("/nope"), 404)


def test_api_keys_are_stored_hashed(api, make_client, backend):
    from app.core.auth import ApiClient
    from app.core.database import session_scope

    admin = make_client("admin")
    created = api.post("/v1/clients", json={"name": "acme", "role": "portal"}, headers=admin.headers)
    assert created.status_code == 201
    key = created.json()["api_key"]
    secret = key.split("_", 2)[2]
    with session_scope() as session:
        rows = session.execute(select(ApiClient.key_hash, ApiClient.key_id, ApiClient.name)).all()
        dump = repr(rows)
        assert secret not in dump and key not in dump
    # The new key works; the listing never shows keys.
    listing = api.get("/v1/clients", headers={"Authorization": f"Bearer {key}"})
    assert listing.status_code == 403
    assert "api_key" not in api.get("/v1/clients", headers=admin.headers).json()[0]


def test_request_id_is_echoed(api):
    response = api.get("/healthz", headers={"X-Request-ID": "abc123"})
    assert response.headers["x-request-id"] == "abc123"
    assert len(api.get("/healthz").headers["x-request-id"]) == 32


def test_openapi_is_served(api):
    assert api.get("/openapi.json").json()["info"]["title"] == "Unlearnd"
    assert api.get("/docs").status_code == 200


def test_database_is_the_fresh_one(env, backend):
    from app.core.database import get_engine

    with get_engine().connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM api_clients")).scalar() == 0
    assert get_engine().dialect.name == backend


@pytest.mark.parametrize("missing", ["UNLEARND_SUBJECT_PEPPER", "UNLEARND_SIGNING_KEY_PATH"])
def test_production_refuses_missing_secrets(monkeypatch, missing, tmp_path):
    from app.core.config import MissingSecretError, Settings

    monkeypatch.setenv("UNLEARND_MODE", "production")
    monkeypatch.setenv("UNLEARND_SUBJECT_PEPPER", "p")
    monkeypatch.setenv("UNLEARND_SIGNING_KEY_PATH", str(tmp_path / "k.pem"))
    monkeypatch.delenv(missing)
    with pytest.raises(MissingSecretError, match=missing):
        Settings()


def test_embedded_pepper_is_generated_once(monkeypatch, tmp_path):
    from app.core.config import Settings

    monkeypatch.setenv("UNLEARND_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("UNLEARND_SUBJECT_PEPPER", raising=False)
    first, second = Settings().pepper_bytes(), Settings().pepper_bytes()
    assert first == second and len(first) >= 32
    assert (tmp_path / "secrets" / "subject_pepper").stat().st_mode & 0o077 == 0


def test_the_last_active_admin_key_cannot_be_revoked(api, make_client, backend):
    first = make_client("admin")
    itself = api.post(f"/v1/clients/{first.id}/revoke", headers=first.headers)
    assert_problem(itself, 409)
    assert "last" in itself.json()["detail"]
    second = make_client("admin")
    # With two admins, one may go (even itself); then the survivor is the last one.
    assert api.post(f"/v1/clients/{first.id}/revoke", headers=first.headers).status_code == 200
    assert_problem(api.post(f"/v1/clients/{second.id}/revoke", headers=second.headers), 409)
    portal = make_client("portal")
    assert api.post(f"/v1/clients/{portal.id}/revoke", headers=second.headers).status_code == 200
    assert api.get("/v1/clients", headers=second.headers).status_code == 200
