"""The house plan is enforced by machine: the import contracts in pyproject.toml hold, and they bite."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_tree_keeps_every_import_contract():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("app/registry/service.py", "from app.jobs import models as _upward", "app.registry is not allowed to import app.jobs"),
        ("workers/unlearning/data.py", "import app.core.config as _app", "workers.unlearning is not allowed to import app"),
        ("app/core/database.py", "import fastapi as _framework", "app.core.database is not allowed to import fastapi"),
    ],
)
def test_a_wrong_import_breaks_a_contract(tmp_path, module, line, broken):
    # A copy of the tree with one import against the plan: lint-imports run there must refuse it.
    for part in ("app", "workers"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with (tmp_path / module).open("a") as source:
        source.write(f"\n{line}\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert broken in result.stdout


def test_worker_processes_do_not_load_the_web_framework():
    # The modules a Celery worker imports (its app and every task module) leave FastAPI unloaded.
    probe = (
        "import sys; from app.core.queue import TASK_MODULES; import importlib, workers.celery_app; "
        "[importlib.import_module(m) for m in TASK_MODULES]; "
        "print(sorted(m for m in ('fastapi', 'starlette', 'app.api') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]"


def test_every_task_name_is_owned_by_the_celery_app_module(env):
    # The names services enqueue, the names workers register and the names beat sends are one set.
    import importlib

    from app.core.config import get_settings
    from app.core.queue import TASK_MODULES, TaskName, beat_schedule, get_celery

    for module in TASK_MODULES:
        importlib.import_module(module)
    owned = {value for key, value in vars(TaskName).items() if key.isupper()}
    registered = {name for name in get_celery().tasks if name.startswith("unlearnd.")}
    assert registered == owned
    assert {entry["task"] for entry in beat_schedule(get_settings()).values()} <= owned
