"""README promises about the command line: what each documented command prints and how it exits."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sqlalchemy import inspect


def test_clients_create_and_list_speak_json_for_machines(env):
    from app.cli import main

    runner = CliRunner()
    created = runner.invoke(main, ["clients", "create", "--role", "portal", "--name", "acme", "--json"])
    assert created.exit_code == 0, created.output
    issued = json.loads(created.output)
    assert (issued["name"], issued["role"]) == ("acme", "portal") and issued["api_key"].startswith("ulk_")
    human = runner.invoke(main, ["clients", "create", "--role", "auditor", "--name", "books"])
    assert human.exit_code == 0 and human.output.splitlines()[-1].startswith("ulk_"), human.output

    listed = runner.invoke(main, ["clients", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = {row["name"]: row for row in json.loads(listed.output)}
    assert rows["acme"] == {"id": issued["id"], "name": "acme", "role": "portal", "revoked": False}
    assert rows["books"]["role"] == "auditor"
    assert "ulk_" not in listed.output  # keys are shown once, at creation
    plain = runner.invoke(main, ["clients", "list"])
    assert plain.exit_code == 0 and plain.output.splitlines()[0].split() == ["ID", "ROLE", "STATE", "NAME"]
    assert f"{issued['id']}  portal   active   acme" in plain.output


def test_keys_list_shows_the_signing_key_and_keeps_rotated_ones(env):
    from app.cli import main

    runner = CliRunner()
    first = runner.invoke(main, ["keys", "list"])
    assert first.exit_code == 0, first.output
    header, *rows = first.output.splitlines()
    assert header.split() == ["KEY", "ID", "STATUS", "CREATED"]
    [(kid, status)] = [line.split()[:2] for line in rows]
    assert status == "active"
    rotated = runner.invoke(main, ["keys", "rotate"])
    assert rotated.exit_code == 0 and "signing with" in rotated.output, rotated.output
    new_kid = rotated.output.split()[2]
    after = dict(line.split()[:2] for line in runner.invoke(main, ["keys", "list"]).output.splitlines()[1:])
    assert after == {new_kid: "active", kid: "retired"}


@pytest.mark.slow  # every migration up, down and up
def test_db_upgrade_check_downgrade_on_sqlite(tmp_path, monkeypatch):
    from app.cli import main
    from app.core.database import make_engine
    from tests.conftest import reset_caches

    database = tmp_path / "fresh.sqlite3"
    monkeypatch.setenv("UNLEARND_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("UNLEARND_DATABASE_URL", f"sqlite:///{database}")
    reset_caches()
    runner = CliRunner()
    try:
        assert runner.invoke(main, ["db", "check"]).exit_code != 0  # an empty database is not the models' schema
        upgraded = runner.invoke(main, ["db", "upgrade"])
        assert upgraded.exit_code == 0 and upgraded.output == "database at head\n", upgraded.output
        checked = runner.invoke(main, ["db", "check"])
        assert checked.exit_code == 0 and checked.output == "no drift\n", checked.output
        engine = make_engine(f"sqlite:///{database}")
        assert {"deletion_requests", "audit_events", "unlearning_jobs"} <= set(inspect(engine).get_table_names())
        engine.dispose()

        downgraded = runner.invoke(main, ["db", "downgrade"])
        assert downgraded.exit_code == 0 and downgraded.output == "database at base\n", downgraded.output
        engine = make_engine(f"sqlite:///{database}")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        engine.dispose()
        assert runner.invoke(main, ["db", "check"]).exit_code != 0
        assert runner.invoke(main, ["db", "upgrade"]).exit_code == 0
        assert runner.invoke(main, ["db", "check"]).exit_code == 0
    finally:
        reset_caches()


def test_room_commands_listed_without_loading_are_the_rooms_groups():
    """`unlearnd --help` lists the rooms' groups from a table instead of importing them: the
    table must name each group by its own name and say what its own help says."""
    from app.cli import ROOM_COMMANDS, _room_command

    for name, (_, _, short_help) in ROOM_COMMANDS.items():
        group = _room_command(name)
        assert group.name == name
        assert group.get_short_help_str(200) == short_help
