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
        postgresql = session.get_bind().dialect.name == "postgresql"
        lineage._LINEAGE_PARTS._items.clear()
        seen: set[str] = set()
        with _statements(session) as statements:
            for row, expected in zip(rows, general, strict=True):
                statements.clear()
                got = lineage.record_lineage(session, row.name, row.record_key)
                assert got.model_dump() == expected.model_dump()
                # No temporary models here: the record with its snapshots and what was trained on
                # them, one statement; on PostgreSQL the record and its dataset's fingerprint, and
                # the whole query only the first time a dataset's fingerprint is seen.
                first = postgresql and row.name not in seen
                seen.add(row.name)
                assert len(statements) == (2 if first else 1), statements


def test_record_query_follows_every_change_to_what_its_answer_is_read_from(env, backend):
    """What one record query of a dataset read is reused by the next ones only while nothing it
    was read from changed: a version purged, an artifact's state, a new snapshot and version, a
    temporary model set, a dataset no longer ready; each shows in the very next answer."""
    from sqlalchemy import text

    from app.core.database import session_scope
    from app.core.errors import NotFound
    from app.lineage import service as lineage
    from app.registry.models import DataRecord, Dataset
    from tests.registry.factory import ingested, model_with_versions, rows

    ingested("ds", rows(12))
    model_with_versions("ds", "m", [[], ["r00003"]])

    def answer(key: str = "r00004"):  # noqa: ANN202
        """The record query, checked against the general path (which reads everything afresh)."""
        with session_scope() as session:
            got = lineage.record_lineage(session, "ds", key)
            (row,) = session.execute(lineage._ready_records().where(Dataset.name == "ds",
                                                                    DataRecord.record_key == key)).all()
            assert got.model_dump() == lineage._lineages(session, [lineage._Row(*row)])[0].model_dump()
            return got

    def change(sql: str) -> None:
        with session_scope() as session:
            session.execute(text(sql))

    before = answer()
    assert len(before.model_versions) == 2 and before.still_contained
    assert "purged" not in {v.state for v in before.model_versions}
    assert answer() == before  # nothing changed: the same answer again
    change("UPDATE model_versions SET state = 'purged' WHERE number = 1")
    assert [v.state for v in answer().model_versions][0] == "purged"
    change("UPDATE model_artifacts SET state = 'purged'")
    assert {a.state for a in answer().artifacts} == {"purged"}
    change("UPDATE model_versions SET state = 'purged'")
    assert answer().still_contained is False
    model_with_versions("ds", "m2", [[]])
    after = answer()
    assert [v.model for v in after.model_versions] == ["m", "m", "m2"] and after.model_versions[-1].state != "purged"
    assert len(after.snapshots) == 3 and after.still_contained
    change("UPDATE registered_models SET name = 'renamed' WHERE name = 'm2'")
    assert [v.model for v in answer().model_versions][-1] == "renamed"
    assert answer().temporary_models == []
    change("INSERT INTO temporary_model_sets (id, model_id, snapshot_id, purpose, reference_id, storage, created_at)"
           " SELECT 'tms-1', v.model_id, v.snapshot_id, 'qualification', 'study-1', 'memory', CURRENT_TIMESTAMP"
           " FROM model_versions v JOIN registered_models m ON m.id = v.model_id WHERE m.name = 'renamed'")
    assert [t.purpose for t in answer().temporary_models] == ["qualification"]
    change("DELETE FROM temporary_model_sets")
    assert answer().temporary_models == []
    change("DELETE FROM model_artifacts WHERE version_id IN (SELECT v.id FROM model_versions v"
           " JOIN registered_models m ON m.id = v.model_id WHERE m.name = 'renamed')")
    assert len(answer().artifacts) == 2
    change("UPDATE datasets SET status = 'failed' WHERE name = 'ds'")
    with pytest.raises(NotFound), session_scope() as session:
        lineage.record_lineage(session, "ds", "r00004")


def test_folding_the_change_log_keeps_fingerprints_new_and_answers_fresh(env):
    """PostgreSQL: each write to a dataset's lineage adds an entry to ``lineage_changes``; the
    lineage sweep folds a dataset's entries past a bound into one. A fold gives a fingerprint no
    earlier state had, and answers after it still follow every change."""
    from sqlalchemy import text

    from app.core.database import session_scope
    from app.lineage import service as lineage
    from tests.registry.factory import ingested, model_with_versions, rows
    from workers.tasks.jobs import lineage_sweep

    ingested("ds", rows(12))
    model_with_versions("ds", "m", [[], ["r00003"]])

    def fingerprint() -> str:
        with session_scope() as session:
            return session.execute(lineage._RECORD_AND_FINGERPRINT, {"dataset": "ds", "key": "r00004"}).one()[-1]

    def entries() -> int:
        with session_scope() as session:
            return session.execute(text("SELECT count(*) FROM lineage_changes c JOIN datasets d ON d.id = c.dataset_id"
                                        " WHERE d.name = 'ds'")).scalar_one()

    seen = {fingerprint()}
    for _ in range(3):
        with session_scope() as session:
            session.execute(text("UPDATE model_artifacts SET state = state"))
        seen.add(fingerprint())
    assert len(seen) == 4 and entries() >= 4  # every write, even one changing no value, is seen
    with session_scope() as session:
        assert lineage.compact_changes(session, most=entries() + 1) == 0  # under the bound: untouched
        assert lineage.compact_changes(session, most=2) >= 3
    assert entries() == 1 and fingerprint() not in seen

    with session_scope() as session:
        lineage.record_lineage(session, "ds", "r00004")  # cached under the folded fingerprint
        session.execute(text("UPDATE model_versions SET state = 'purged' WHERE number = 1"))
    with session_scope() as session:
        assert [v.state for v in lineage.record_lineage(session, "ds", "r00004").model_versions][0] == "purged"
    for _ in range(lineage.MOST_CHANGES_KEPT + 1):
        with session_scope() as session:
            session.execute(text("UPDATE model_artifacts SET state = state"))
    lineage_sweep()  # the beat task's body folds them too
    assert entries() == 1
