"""A newcomer's first hour: `unlearnd run` prints and keeps its admin key, the CLI finds its
data dir (or says in one line that it cannot), list commands have headers."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import httpx
import pytest

from tests.conftest import _free_port
from tests.e2e.conftest import clean_environment, http_ready, unlearnd, wait_until

RULE = "=" * 78
# Each test runs the CLI as a subprocess (seconds), the first one `unlearnd run` three times.
pytestmark = pytest.mark.slow


def _banner_key(service) -> str:
    def banner() -> str | None:
        text = service.stdout_path.read_text()
        return text if text.count(RULE) >= 2 else None

    text = wait_until(banner, timeout=180, what="the start-up banner", watch=(service,))
    [key] = re.findall(r"^(ulk_\S+)$", text, flags=re.MULTILINE)
    return key


@pytest.mark.timeout(600)
def test_run_prints_its_admin_key_after_start_up_keeps_it_and_reuses_it(processes, tmp_path):
    env = clean_environment()
    key_file = tmp_path / "var" / "secrets" / "admin.key"

    def start(*extra: str):
        port = _free_port()
        service = processes.start("unlearnd-run", ["run", "--no-demo", "--port", str(port), *extra], env,
                                  cwd=tmp_path, separate_stdout=True)
        key = _banner_key(service)
        base = f"http://127.0.0.1:{port}"
        # Printed once the API listens: the key works at once.
        assert http_ready(base)
        return service, key, base

    first, key, base = start()
    printed = first.stdout_path.read_text()
    assert f"data: {tmp_path / 'var'}" in printed and "new; kept for the next run" in printed
    assert key_file.read_text().strip() == key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    first.stop()
    assert first.process.returncode == 0, first.log()[-3000:]

    second, again, base = start()
    assert again == key and "reused from the last run" in second.stdout_path.read_text()
    second.stop()

    third, fresh, base = start("--new-admin-key")
    assert fresh != key and key_file.read_text().strip() == fresh
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {fresh}"}).status_code == 200
    assert httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    third.stop()

    # The CLI below the project folder finds var/ by itself; its lists have header rows.
    deeper = tmp_path / "notebooks" / "week1"
    deeper.mkdir(parents=True)
    listed = unlearnd("clients", "list", env=env, cwd=deeper)
    assert listed.returncode == 0, listed
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["ID", "ROLE", "STATE", "NAME"]
    assert sorted(row.split()[2] for row in rows) == ["active", "revoked"]
    requests = unlearnd("requests", "list", env=env, cwd=deeper)
    assert requests.returncode == 0 and requests.stdout.split()[:3] == ["ID", "STATUS", "DUE"], requests
    assert "GUARANTEE" in requests.stdout.splitlines()[0]


@pytest.mark.parametrize("args", [["requests", "list"], ["jobs", "list"], ["clients", "list"], ["audit", "verify"]])
def test_without_a_data_dir_the_cli_says_so_in_one_line(tmp_path, args):
    result = unlearnd(*args, env=clean_environment(), cwd=tmp_path)
    assert result.returncode == 1, result
    assert result.stderr.splitlines() == [
        "Error: no data dir: set UNLEARND_DATA_DIR, or run this inside the folder where `unlearnd run` made var/"]
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "var").exists()  # and it made none


def test_help_and_offline_verification_need_no_data_dir(tmp_path):
    for args in (["requests", "list", "--help"], ["--help"], ["certificate", "verify", "--help"]):
        result = unlearnd(*args, env=clean_environment(), cwd=tmp_path)
        assert result.returncode == 0 and "Usage:" in result.stdout, (args, result)
    # A bad file is refused by the verifier itself, not by a data-dir check.
    (tmp_path / "x.json").write_text("{}")
    checked = unlearnd("certificate", "verify", str(tmp_path / "x.json"), "--public-key", "AAAA",
                       env=clean_environment(), cwd=tmp_path)
    assert checked.returncode == 1 and "no data dir" not in checked.stderr, checked


def test_an_explicit_data_dir_wins(tmp_path):
    (tmp_path / "var" / "secrets").mkdir(parents=True)  # a var/ nearby is not used
    target = tmp_path / "elsewhere"
    env = clean_environment(UNLEARND_DATA_DIR=str(target))
    missing = unlearnd("requests", "list", env=env, cwd=tmp_path)
    assert missing.returncode == 1 and missing.stderr.splitlines() == [
        f"Error: no data dir at UNLEARND_DATA_DIR={target}: it does not exist"], missing
    made = unlearnd("db", "upgrade", env=env, cwd=tmp_path)
    assert made.returncode == 0, made
    assert (Path(target) / "unlearnd.sqlite3").exists() and not (tmp_path / "var" / "unlearnd.sqlite3").exists()
