"""The test suite's PostgreSQL pool (``tests.conftest.PgDatabasePool``) hands each test a database
in the template's state: a recycled database must equal a fresh clone, and one whose catalog a
test changed must be dropped, never handed out again."""

from __future__ import annotations

import psycopg
import pytest

from tests.conftest import PG_ADMIN_DSN, PgDatabasePool

pytestmark = pytest.mark.usefixtures("pg_template")


def _snapshot(conn: psycopg.Connection, pool: PgDatabasePool) -> tuple:
    sequences = conn.execute(
        "SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_sequences ORDER BY 1"
    ).fetchall()
    triggers = conn.execute("SELECT tgname, tgenabled::text FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1").fetchall()
    return {table: PgDatabasePool._dump(conn, table) for table in pool.tables}, sequences, triggers


def _exists(name: str) -> bool:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def test_a_recycled_database_equals_the_template(pg_template):
    pool = PgDatabasePool(pg_template)
    name = pool.take()
    with PgDatabasePool._connect(name) as conn:
        fresh = _snapshot(conn, pool)
        # What tests leave behind: rows in ordinary tables, an append-only audit event,
        # a seeded row changed, sequences advanced, and a connection still open.
        conn.execute("INSERT INTO audit_events VALUES (1, now(), 'a', 'b', 'c', 'd', '{}', 'p', 'h')")
        conn.execute("UPDATE webhook_cursor SET last_seq = 42")
        conn.execute("SELECT nextval(format('%I.%I', schemaname, sequencename)) FROM pg_sequences")
        left_open = PgDatabasePool._connect(name)
        left_open.execute("SELECT 1")
        assert _snapshot(conn, pool) != fresh
    pool.give_back(name)
    assert pool.free == [name]
    assert _is_dead(left_open)
    with PgDatabasePool._connect(name) as conn:
        assert _snapshot(conn, pool) == fresh
        # The append-only rule still holds in the recycled database.
        conn.execute("INSERT INTO audit_events VALUES (1, now(), 'a', 'b', 'c', 'd', '{}', 'p', 'h')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute("DELETE FROM audit_events")
    assert pool.take() == name
    pool.give_back(name)


def _is_dead(conn: psycopg.Connection) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return True
    return False


# Slow: each case costs a DROP DATABASE, the checkpoint the pool exists to avoid.
@pytest.mark.slow
@pytest.mark.parametrize("change", [
    "DROP TRIGGER audit_events_no_update_delete ON audit_events",
    "ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_truncate",
    "CREATE TABLE stray (id int)",
    "ALTER TABLE webhook_cursor ADD COLUMN extra int",
    "CREATE INDEX stray_index ON webhook_cursor (last_seq)",
    "DROP TABLE alembic_version",
])
def test_a_database_whose_catalog_changed_is_dropped(pg_template, change):
    pool = PgDatabasePool(pg_template)
    name = pool.take()
    with PgDatabasePool._connect(name) as conn:
        conn.execute(change)
    pool.give_back(name)
    assert pool.free == []
    assert not _exists(name)


def test_the_end_of_run_dropper_drops_exactly_the_runs_databases():
    import subprocess
    import sys
    import uuid

    from tests.conftest import _DROP_DATABASES

    tag = f"utdrop{uuid.uuid4().hex[:8]}"
    other = f"utkeep{uuid.uuid4().hex[:8]}"
    names = [f"{tag}_a", f"{tag}_template", other]
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        for name in names:
            conn.execute(f'CREATE DATABASE "{name}"')
    try:
        done = subprocess.run([sys.executable, "-c", _DROP_DATABASES, PG_ADMIN_DSN, f"{tag}%"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert [name for name in names if _exists(name)] == [other]
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            for name in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
