"""PostgreSQL refuses to change or remove audit history, whatever the connection's table rights."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.audit import service as audit
from app.audit.tree import sign_tree_head
from app.core.database import get_engine, session_scope


def _seed() -> None:
    with session_scope() as session:
        for n in range(3):
            audit.record(session, actor="test", action="thing.done", entity_type="thing", entity_id=str(n))
        sign_tree_head(session)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET actor = 'mallory' WHERE seq = 2",
        "DELETE FROM audit_events WHERE seq = 3",
        "TRUNCATE audit_events CASCADE",
        "UPDATE audit_tree_heads SET root_hash = repeat('0', 64)",
        "DELETE FROM audit_tree_heads",
        "TRUNCATE audit_tree_heads",
    ],
)
def test_triggers_refuse_rewriting_history(env, statement):
    _seed()
    with pytest.raises(DBAPIError, match="append-only"), get_engine().begin() as connection:
        connection.execute(text(statement))
    with get_engine().connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM audit_events")).scalar() >= 3
        assert connection.execute(text("SELECT count(*) FROM audit_tree_heads")).scalar() == 1


def test_inserts_still_work_and_the_log_verifies(env):
    from app.audit.verify import verify_log

    _seed()
    with session_scope() as session:
        audit.record(session, actor="test", action="thing.done", entity_type="thing", entity_id="later")
        result = verify_log(session)
    assert result.ok, result.failure
    assert result.tree_heads_checked == 1


def test_downgrade_removes_the_triggers(env):
    """The migration is reversible: after downgrading 0002 the same UPDATE goes through."""
    from app.core import migrate

    _seed()
    url = env["UNLEARND_DATABASE_URL"]
    get_engine().dispose()
    migrate.downgrade(url, "0001")
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("UPDATE audit_events SET actor = 'mallory' WHERE seq = 2")
    migrate.upgrade(url)
    with psycopg.connect(dsn, autocommit=True) as connection, pytest.raises(psycopg.Error, match="append-only"):
        connection.execute("DELETE FROM audit_events")
