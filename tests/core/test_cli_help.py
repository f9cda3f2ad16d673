"""Every command and subcommand explains itself, and the package builds without setuptools warnings."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]


def _walk(command: click.Command, path: list[str]) -> list[tuple[list[str], click.Command]]:
    found = [(path, command)]
    if isinstance(command, click.Group):
        # Through the group's own listing: the main group loads each room's commands lazily.
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            found += _walk(command.get_command(ctx, name), [*path, name])
    return found


def test_every_subcommand_has_help():
    from app.cli import main

    runner = CliRunner()
    commands = _walk(main, [])
    assert len(commands) > 30
    missing = []
    for path, command in commands:
        result = runner.invoke(main, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output
        summary = (command.help or "").strip()
        if not summary:
            missing.append(" ".join(path))
    assert not missing, f"commands without help: {missing}"


@pytest.mark.slow  # builds the wheel (seconds)
def test_license_is_an_spdx_expression_and_the_build_warns_of_nothing(tmp_path):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    output = built.stdout + built.stderr
    assert "deprecat" not in output.lower(), output[-3000:]
    assert list(tmp_path.glob("unlearnd-*.whl"))
