"""The single-record query's fast path: the same answer as the general path, in one statement."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import event

from tests.lineage.test_lineage import _build_random_registry


@pytest.mark.parametrize("seed", [4, 5])
def test_record_query_matches_the_general_path_in_one_statement(env, backend, seed):
    from app.core.database import get_engine, session_scope
    from app.lineage import service as lineage
    from app.registry.models import DataRecord, Dataset

    truth = _build_random_registry(random.Random(seed))
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:  # noqa: ANN001
        statements.append(statement)

    engine = get_engine()
    with session_scope() as session:
        rows = session.execute(lineage._ready_records().order_by(Dataset.name, DataRecord.record_key)).all()
        assert len(rows) == sum(len(keys) for keys in truth["keys"].values())
        general = lineage._lineages(session, [lineage._Row(*row) for row in rows])  # warms the bitmaps too
        event.listen(engine, "before_cursor_execute", count)
        try:
            for row, expected in zip(rows, general, strict=True):
                statements.clear()
                got = lineage.record_lineage(session, row.name, row.record_key)
                assert got.model_dump() == expected.model_dump()
                # No temporary models here: the record with its snapshots and what was trained on them, one statement.
                assert len(statements) <= 1, statements
        finally:
            event.remove(engine, "before_cursor_execute", count)
