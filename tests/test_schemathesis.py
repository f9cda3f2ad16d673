"""Generated requests against a real server on PostgreSQL (issue 21): no 5xx, and every status
code the service answers is declared in its OpenAPI document.

schemathesis fuzzes every operation from the published schema, as the admin and as a portal,
against uvicorn in a process of its own with a real Redis broker. Links that revoke the
caller's own key are excluded (the rest of the run would only see 401s).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCHEMATHESIS = shutil.which("schemathesis", path=str(Path(sys.executable).parent))


def _fuzz(server: str, api_key: str, max_examples: int, workdir: Path) -> tuple[int, str]:
    """Run schemathesis; return the number of generated cases and its report."""
    assert SCHEMATHESIS, "schemathesis is in the test extras"
    result = subprocess.run(
        [SCHEMATHESIS, "run", f"{server}/openapi.json", "-H", f"Authorization: Bearer {api_key}",
         "--checks", "not_a_server_error,status_code_conformance", "--phases", "fuzzing",
         "--max-examples", str(max_examples), "--exclude-path-regex", "/revoke$", "--workers", "2",
         "--seed", "21", "--no-color"],
        capture_output=True, text=True, timeout=900, cwd=workdir,  # its cache stays out of the checkout
    )
    report = result.stdout[-8000:] + result.stderr[-2000:]
    generated = re.search(r"(\d+) generated", report)
    assert result.returncode == 0, report
    return (int(generated.group(1)) if generated else 0), report


@pytest.mark.parametrize("role", ["admin", "portal"])
def test_generated_requests_get_no_5xx_and_only_declared_codes(server, make_client, role, tmp_path):
    generated, report = _fuzz(server, make_client(role).api_key, max_examples=5, workdir=tmp_path)
    assert generated >= 100, report


@pytest.mark.slow
@pytest.mark.parametrize("role", ["admin", "portal"])
def test_a_thousand_generated_requests_per_role(server, make_client, role, tmp_path):
    generated, report = _fuzz(server, make_client(role).api_key, max_examples=25, workdir=tmp_path)
    assert generated >= 1000, report
