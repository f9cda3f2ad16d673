"""The API process and the CLI never load PyTorch: only worker tasks that fit, load, unlearn or
verify a model reach the engine's torch code. Each check runs in a fresh interpreter, because
this test process has long since imported torch through other tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

NO_TORCH = (
    "loaded = sorted(name for name in sys.modules if name == 'torch' or name.startswith('torch.'))\n"
    "assert not loaded, f'torch was imported: {loaded[:5]}'\n"
)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    finished = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ), capture_output=True,
                              text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr + finished.stdout
    return finished


def test_importing_the_api_does_not_load_torch(env):
    _run("import sys\nimport app.main\napp.main.create_app()\n" + NO_TORCH)


@pytest.mark.parametrize("args", [["--help"], ["requests", "list"], ["jobs", "list"]])
def test_cli_commands_do_not_load_torch(env, args):
    # standalone_mode=False returns instead of exiting, so the check runs after the command.
    finished = _run(f"import sys\nfrom app.cli import main\nassert main({args!r}, standalone_mode=False) in (0, None)\n"
                    + NO_TORCH)
    if args == ["--help"]:
        assert "Usage:" in finished.stdout


def test_the_engine_still_loads_torch_where_it_fits(env):
    """The check above can fail: the worker path still reaches torch through the same doorway."""
    _run("import sys\nfrom app.jobs import engine\nengine.check_recipe('logreg', {})\n"
         "assert 'torch' in sys.modules\n")
