"""An auditor checks Unlearnd's proofs with standard tools only: a certificate from a real
unlearning job, downloaded as a JWS, verifies with a generic JOSE library against the
published JWKS; the latest signed tree head, as a C2SP tlog-checkpoint signed note,
verifies with a few lines of ``cryptography``; and the RFC 9162 inclusion and consistency
proofs tie the certificate's anchor to that checkpoint. The checking runs in a separate
interpreter that imports nothing from Unlearnd (tests/auditor/check_proofs.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.demo import DemoModel
from tests.conftest import issue_certificate_now
from tests.jobs.conftest import run_inline, submit

CHECKER = Path(__file__).resolve().parent.parent / "auditor" / "check_proofs.py"
MODEL = DemoModel("digits-logreg", "logreg", {"l2": 1e-3, "max_iter": 100}, {"default_method": "newton"})


def _audit(folder: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UNLEARND_", "PYTHONPATH"))}
    return subprocess.run([sys.executable, str(CHECKER), str(folder)], capture_output=True, text=True,
                          cwd=folder, env=env, timeout=120)


@pytest.mark.slow
def test_a_real_certificate_and_checkpoint_verify_with_standard_tools(env, api, make_client, install_demo, tmp_path):
    from app.cli import main

    admin, portal = make_client("admin"), make_client("portal")
    (training,) = install_demo(MODEL)
    assert run_inline(training)["status"] == "succeeded"
    request = submit(api, portal, "demo-subject-12")
    batch = api.post(f"/v1/models/{MODEL.name}/unlearn-now", headers=admin.headers)
    assert batch.status_code == 202, batch.text
    assert run_inline(batch.json()["job"]["id"])["status"] == "succeeded"
    issue_certificate_now(request["id"])

    url = f"/v1/deletion-requests/{request['id']}/certificate"
    jws = api.get(f"{url}.jws", headers=portal.headers)
    assert jws.status_code == 200 and jws.headers["content-type"] == "application/jose"
    negotiated = api.get(url, headers={**portal.headers, "Accept": "application/jose"})
    assert negotiated.content == jws.content, "one key, one payload: one JWS"
    plain = api.get(url, headers=portal.headers)
    assert plain.headers["content-type"] == "application/json"

    # The log grows past the certificate's tree head before the auditor looks.
    submit(api, portal, "someone-else")
    assert api.post("/v1/audit/tree-heads", headers=admin.headers).status_code == 201
    checkpoint = api.get("/v1/audit/checkpoint", headers=portal.headers)
    assert checkpoint.status_code == 200 and checkpoint.headers["content-type"].startswith("text/plain")
    size = int(checkpoint.text.splitlines()[1])
    anchor = json.loads(plain.content)["certificate"]["anchor"]
    first, seq = anchor["tree_head"]["tree_size"], anchor["event"]["seq"]
    assert first < size

    folder = tmp_path / "auditor"
    folder.mkdir()
    (folder / "keys.json").write_text(api.get("/.well-known/unlearnd-keys").text)
    (folder / "certificate.jws").write_bytes(jws.content)
    (folder / "checkpoint").write_text(checkpoint.text)
    (folder / "checkpoint-keys").write_text(api.get("/.well-known/unlearnd-checkpoint-keys").text)
    (folder / "consistency.json").write_text(
        api.get(f"/v1/audit/consistency-proof?first={first}&second={size}", headers=portal.headers).text)
    (folder / "inclusion.json").write_text(
        api.get(f"/v1/audit/events/{seq}/inclusion-proof?tree_size={size}", headers=portal.headers).text)

    checked = _audit(folder)
    assert checked.returncode == 0, checked.stderr
    report = json.loads(checked.stdout)
    assert report["request_id"] == request["id"] and report["checkpoint_size"] == size
    assert report["certificate_tree_size"] == first and report["checkpoint_origin"] == "unlearnd/audit-log"

    # Each forgery is caught by the standard tools: a checkpoint claiming another size, a JWS
    # whose payload was edited, a consistency proof for another tree.
    lines = checkpoint.text.split("\n")
    (folder / "checkpoint").write_text("\n".join([lines[0], str(size + 1), *lines[2:]]))
    assert "Invalid" in _audit(folder).stderr
    (folder / "checkpoint").write_text(checkpoint.text)
    header, payload, signature = jws.text.split(".")
    import base64

    edited = base64.urlsafe_b64decode(payload + "==").replace(b'"outcome":"forgotten"', b'"outcome":"withheld"')
    assert edited != base64.urlsafe_b64decode(payload + "==")
    forged = f"{header}.{base64.urlsafe_b64encode(edited).rstrip(b'=').decode()}.{signature}"
    (folder / "certificate.jws").write_text(forged)
    assert "JWS" in _audit(folder).stderr
    (folder / "certificate.jws").write_bytes(jws.content)
    (folder / "consistency.json").write_text(
        api.get(f"/v1/audit/consistency-proof?first={first - 1}&second={size}", headers=portal.headers).text)
    assert "consistency" in _audit(folder).stderr

    # Our own verifier takes both forms, and the old-form file still verifies.
    for name, content in (("c.jws", jws.content), ("c.json", plain.content)):
        (tmp_path / name).write_bytes(content)
        result = CliRunner().invoke(main, ["certificate", "verify", str(tmp_path / name),
                                           "--public-key", str(folder / "keys.json")])
        assert result.exit_code == 0 and request["id"] in result.output, result.output
    assert "JWS envelope signed by" in CliRunner().invoke(
        main, ["certificate", "verify", str(tmp_path / "c.jws"), "--public-key", str(folder / "keys.json")]).output
    (tmp_path / "forged.jws").write_text(forged)
    rejected = CliRunner().invoke(main, ["certificate", "verify", str(tmp_path / "forged.jws"),
                                         "--public-key", str(folder / "keys.json")])
    assert rejected.exit_code == 1 and "JWS" in rejected.output
