"""The audit log over HTTP and the CLI: signed heads, proofs a client can check with nothing
but the published key, paginated and JSON-lines exports, and `audit verify` / `keys rotate`."""

from __future__ import annotations

import json

from click.testing import CliRunner
from sqlalchemy import select

from app.audit import service as audit
from app.audit.models import AuditEvent
from app.audit.proofs import verify_tree_head
from app.core import merkle
from app.core.database import session_scope
from app.core.signing import public_key_from_jwk


def _record(count: int) -> None:
    with session_scope() as session:
        for n in range(count):
            audit.record(session, actor="test", action="thing.done", entity_type="thing", entity_id=str(n), payload={"n": n})


def _published_keys(api) -> dict[str, bytes]:
    return {k["kid"]: public_key_from_jwk(k) for k in api.get("/.well-known/unlearnd-keys").json()["keys"]}


def test_tree_heads_and_proofs_verify_against_the_published_key(api, make_client, backend):
    auditor, portal = make_client("auditor"), make_client("portal")
    assert api.get("/v1/audit/tree-heads/latest", headers=portal.headers).status_code == 404
    _record(10)
    first = api.post("/v1/audit/tree-heads", headers=auditor.headers)
    assert first.status_code == 201, first.text
    assert api.post("/v1/audit/tree-heads", headers=portal.headers).status_code == 403
    _record(7)
    second = api.post("/v1/audit/tree-heads", headers=auditor.headers).json()
    latest = api.get("/v1/audit/tree-heads/latest", headers=portal.headers).json()
    assert latest == second
    first = first.json()
    keys = _published_keys(api)
    for head in (first, second):
        verify_tree_head(head, keys[head["key_id"]])

    proof = api.get("/v1/audit/events/5/inclusion-proof", headers=portal.headers).json()
    assert proof["tree_size"] == second["tree_size"] and proof["root_hash"] == second["root_hash"]
    merkle.verify_inclusion(
        merkle.leaf_hash(bytes.fromhex(proof["event_hash"])), proof["leaf_index"], proof["tree_size"],
        [bytes.fromhex(p) for p in proof["audit_path"]], bytes.fromhex(second["root_hash"]),
    )
    consistency = api.get(
        "/v1/audit/consistency-proof", params={"first": first["tree_size"], "second": second["tree_size"]},
        headers=portal.headers,
    ).json()
    merkle.verify_consistency(
        first["tree_size"], second["tree_size"], bytes.fromhex(first["root_hash"]), bytes.fromhex(second["root_hash"]),
        [bytes.fromhex(p) for p in consistency["proof"]],
    )


def test_proof_requests_with_bad_sizes_are_4xx_naming_the_field(api, make_client):
    portal, auditor = make_client("portal"), make_client("auditor")
    _record(3)
    signed_size = api.post("/v1/audit/tree-heads", headers=auditor.headers).json()["tree_size"]
    _record(2)
    newer = api.get(f"/v1/audit/events/{signed_size + 1}/inclusion-proof", headers=portal.headers)
    assert newer.status_code == 409 and newer.json()["field"] == "tree_size"
    too_big = api.get("/v1/audit/events/2/inclusion-proof", params={"tree_size": 999}, headers=portal.headers)
    assert too_big.status_code == 422 and too_big.json()["field"] == "tree_size"
    assert api.get("/v1/audit/events/999/inclusion-proof", headers=portal.headers).status_code == 404
    bad = api.get("/v1/audit/consistency-proof", params={"first": 0}, headers=portal.headers)
    assert bad.status_code == 422 and bad.json()["field"] == "first"


def test_events_paginate_and_export_as_json_lines(api, make_client, backend):
    auditor, admin, portal = make_client("auditor"), make_client("admin"), make_client("portal")
    _record(25)
    assert api.get("/v1/audit/events", headers=portal.headers).status_code == 403
    seen, cursor = [], None
    while True:
        page = api.get("/v1/audit/events", params={"limit": 10, **({"cursor": cursor} if cursor else {})},
                       headers=auditor.headers).json()
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [e["seq"] for e in seen] == list(range(1, len(seen) + 1)) and len(seen) >= 28
    exported = api.get("/v1/audit/events", params={"format": "jsonl", "cursor": "3"}, headers=admin.headers)
    assert exported.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in exported.text.splitlines()]
    assert [e["seq"] for e in lines] == [e["seq"] for e in seen[3:]]
    assert all(line["hash"] == page_event["hash"] for line, page_event in zip(lines, seen[3:], strict=True))
    bad = api.get("/v1/audit/events", params={"cursor": "abc"}, headers=auditor.headers)
    assert bad.status_code == 422 and bad.json()["field"] == "cursor"
    assert api.get("/v1/audit/events", params={"limit": 0}, headers=auditor.headers).status_code == 422


def test_cli_audit_verify_and_key_rotation(api, env):
    from app.cli import main

    _record(5)
    runner = CliRunner()
    signed = runner.invoke(main, ["audit", "sign-head"])
    assert signed.exit_code == 0, signed.output
    head = json.loads(signed.output)
    ok = runner.invoke(main, ["audit", "verify", "--expected-head", head["head_hash"]])
    assert ok.exit_code == 0 and "ok:" in ok.output, ok.output
    missing = runner.invoke(main, ["audit", "verify", "--expected-head", "ab" * 32])
    assert missing.exit_code == 1 and "truncated" in missing.output

    before = set(_published_keys(api))
    rotated = runner.invoke(main, ["keys", "rotate"])
    assert rotated.exit_code == 0, rotated.output
    after = _published_keys(api)
    assert before < set(after) and len(after) == len(before) + 1
    runner.invoke(main, ["audit", "sign-head"])
    assert runner.invoke(main, ["audit", "verify"]).exit_code == 0
    with session_scope() as session:
        rotations = list(session.scalars(select(AuditEvent).where(AuditEvent.action == "signing_key.rotated")))
    assert len(rotations) == 1 and rotations[0].payload["retired_key_id"] in before


def test_well_known_keys_need_no_authentication(api):
    published = api.get("/.well-known/unlearnd-keys")
    assert published.status_code == 200
    (key,) = published.json()["keys"]
    assert (key["kty"], key["crv"], key["alg"], key["status"]) == ("OKP", "Ed25519", "EdDSA", "active")
    public_key_from_jwk(key)  # kid is the RFC 7638 thumbprint of x, or this raises


def test_checkpoint_is_a_c2sp_signed_note_of_the_latest_head(api, make_client, monkeypatch):
    """Byte layout per C2SP signed-note / tlog-checkpoint: origin, size, base64 root, blank line,
    `— name base64(keyhash || sig)`; the verifier key is `name+hash+base64(0x01||key)`."""
    import base64
    import hashlib

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from app.core.config import get_settings

    portal = make_client("portal")
    assert api.get("/v1/audit/checkpoint", headers=portal.headers).status_code == 404
    assert api.get("/v1/audit/checkpoint").status_code == 401
    _record(5)
    head = api.post("/v1/audit/tree-heads", headers=make_client("auditor").headers).json()
    note = api.get("/v1/audit/checkpoint", headers=portal.headers).text
    body, signature_line = note.split("\n\n")
    assert body.split("\n") == ["unlearnd/audit-log", str(head["tree_size"]),
                                base64.b64encode(bytes.fromhex(head["root_hash"])).decode()]
    assert signature_line.endswith("\n") and signature_line.count("\n") == 1
    (vkey,) = api.get("/.well-known/unlearnd-checkpoint-keys").text.split()
    name, key_hash, key = vkey.split("+", 2)
    raw_key = base64.b64decode(key)
    assert raw_key[0] == 1 and raw_key[1:] == next(iter(_published_keys(api).values()))
    assert hashlib.sha256(name.encode() + b"\n" + raw_key).digest()[:4].hex() == key_hash
    dash, signer, blob = signature_line.strip().split(" ")
    assert (dash, signer) == ("\u2014", name) and base64.b64decode(blob)[:4].hex() == key_hash
    Ed25519PublicKey.from_public_bytes(raw_key[1:]).verify(base64.b64decode(blob)[4:], (body + "\n").encode())

    monkeypatch.setenv("UNLEARND_PUBLIC_URL", "https://privacy.example.com/unlearnd/")
    get_settings.cache_clear()
    assert api.get("/v1/audit/checkpoint", headers=portal.headers).text.startswith("privacy.example.com/unlearnd/audit-log\n")
    monkeypatch.setenv("UNLEARND_CHECKPOINT_ORIGIN", "example.org/log")
    get_settings.cache_clear()
    assert api.get("/.well-known/unlearnd-checkpoint-keys").text.startswith("example.org/log+")
