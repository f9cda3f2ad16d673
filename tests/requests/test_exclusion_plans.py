"""Reads that leave out a set of requests chosen by a subquery (those a job holds) are planned
as anti-joins on PostgreSQL, however large that set. ``NOT IN (subquery)`` is hashed only
while the subquery fits in ``work_mem``; past that PostgreSQL scans it again for every outer
row: 2.5 s for the first 50 requests awaiting unlearning, 52 s for 2,000, once 300,000 requests
had been held by jobs (see app.core.database.not_among)."""

from __future__ import annotations

from sqlalchemy import Text, cast, event, func, select, text

from app.core.database import get_engine, session_scope


def _plans(call) -> list[str]:
    """The plan of every statement ``call(session)`` runs, with work_mem at its minimum."""
    statements: list[tuple[str, object]] = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", seen)
    try:
        with session_scope() as session:
            session.execute(text("SET LOCAL work_mem = '64kB'"))
            call(session)
            plans = []
            for statement, parameters in statements:
                cursor = session.connection().connection.cursor()
                cursor.execute("EXPLAIN " + statement, parameters)
                plans.append("\n".join(row[0] for row in cursor.fetchall()))
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    return plans


def test_leaving_out_what_jobs_hold_is_an_anti_join_however_many_they_held(env):
    from app.requests import service

    # 100,000 ids (4 MB), far past work_mem: a NOT IN of them could not be hashed.
    held = select(func.md5(cast(func.generate_series(1, 100_000), Text)))
    for call in (lambda s: service.awaiting_for_model(s, "some-model", excluding=held, limit=50),
                 lambda s: service.awaiting_among(s, held, excluding=held, limit=50)):
        (plan,) = _plans(call)
        assert "Anti Join" in plan and "SubPlan" not in plan, plan
