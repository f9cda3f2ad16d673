"""Raw-identifier subject lookups: an oracle from identifier to subject hash, so admin only,
audited without the identifier, and rate-limited per key across processes."""

from __future__ import annotations

from sqlalchemy import select

URL = "/v1/lineage/subjects"
BODY = {"identifier_type": "email", "identifier": "Someone@Example.org"}


def test_only_admins_may_look_up_a_raw_identifier(api, make_client, backend):
    for role in ("ml", "auditor", "portal"):
        refused = api.post(URL, json=BODY, headers=make_client(role).headers)
        assert refused.status_code == 403, (role, refused.text)
        assert "subject_hash" not in refused.text
    allowed = api.post(URL, json=BODY, headers=make_client("admin").headers)
    assert allowed.status_code == 200, allowed.text


def test_a_lookup_is_audited_with_a_hash_of_what_was_asked_never_the_identifier(api, make_client, backend):
    from app.audit.models import AuditEvent
    from app.core.database import session_scope

    admin = make_client("admin")
    assert api.post(URL, json=BODY, headers=admin.headers).status_code == 200
    with session_scope() as session:
        events = list(session.scalars(select(AuditEvent).where(AuditEvent.action == "lineage.subject_lookup")))
    assert [(e.actor, e.entity_type) for e in events] == [(admin.id, "subject_lookup")]
    assert len(events[0].entity_id) == 64
    assert "someone" not in str(events[0].payload).lower() and "someone" not in events[0].entity_id


def test_lookups_beyond_the_limit_get_429_with_retry_after(api, make_client, env, monkeypatch):
    from tests.conftest import reset_caches

    monkeypatch.setenv("UNLEARND_SUBJECT_LOOKUPS_PER_MINUTE", "3")
    reset_caches()
    admin, other = make_client("admin"), make_client("admin")
    for _ in range(3):
        assert api.post(URL, json=BODY, headers=admin.headers).status_code == 200
    limited = api.post(URL, json=BODY, headers=admin.headers)
    assert limited.status_code == 429, limited.text
    assert limited.headers["content-type"].startswith("application/problem+json")
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    # The limit is per key.
    assert api.post(URL, json=BODY, headers=other.headers).status_code == 200
