"""The single-record query's fast path: the same answer as the general path, in one statement."""

from __future__ import annotations

import random
from contextlib import contextmanager

import pytest
from sqlalchemy import event

from tests.lineage.test_lineage import _build_random_registry


@contextmanager
def _statements(session):  # noqa: ANN001, ANN202
    """Every statement the session's connection runs, through SQLAlchemy or straight on its cursor
    (``fetch_all`` on PostgreSQL)."""
    statements: list[str] = []
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        def count(conn, cursor, statement, *args) -> None:  # noqa: ANN001
            statements.append(statement)

        event.listen(connection.engine, "before_cursor_execute", count)
        try:
            yield statements
        finally:
            event.remove(connection.engine, "before_cursor_execute", count)
        return
    import psycopg

    class Counting(psycopg.Cursor):
        def execute(self, query, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            statements.append(query)
            return super().execute(query, *args, **kwargs)

    dbapi_connection = connection.connection.dbapi_connection
    dbapi_connection.cursor_factory = Counting
    try:
        yield statements
    finally:
        dbapi_connection.cursor_factory = psycopg.Cursor


@pytest.mark.parametrize("seed", [4, 5])
def test_record_query_matches_the_general_path_in_one_statement(env, backend, seed):
    from app.core.database import session_scope
    from app.lineage import service as lineage
    from app.registry.models import DataRecord, Dataset

    truth = _build_random_registry(random.Random(seed))
    with session_scope() as session:
        rows = session.execute(lineage._ready_records().order_by(Dataset.name, DataRecord.record_key)).all()
        assert len(rows) == sum(len(keys) for keys in truth["keys"].values())
        general = lineage._lineages(session, [lineage._Row(*row) for row in rows])  # warms the bitmaps too
        with _statements(session) as statements:
            for row, expected in zip(rows, general, strict=True):
                statements.clear()
                got = lineage.record_lineage(session, row.name, row.record_key)
                assert got.model_dump() == expected.model_dump()
                # No temporary models here: the record with its snapshots and what was trained on them, one statement.
                assert len(statements) == 1, statements
