"""The record query's read connection: autocommit, no pre-ping, and a killed connection is retried
on a fresh one (or is a 503), never a 500."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.registry.factory import ingested, model_with_versions, rows


def _kill_other_backends(dsn: str) -> int:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as killer:
        return killer.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()[0]


@pytest.mark.slow  # reason: builds a registry and an app, and reconnects after killing its connections (~4 s)
def test_record_query_answers_after_its_connection_is_killed(env, api, make_client):
    from app.core.database import get_read_engine, read_once

    dsn = env["UNLEARND_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
    ingested("ds", rows(12))
    model_with_versions("ds", "m", [[], ["r00003"]])
    reader = make_client("ml")
    first = api.get("/v1/lineage/records/ds/r00004", headers=reader.headers)
    assert first.status_code == 200, first.text

    engine = get_read_engine()
    assert engine.pool._pre_ping is False
    with engine.connect() as connection:
        assert connection.connection.dbapi_connection.autocommit is True
    assert _kill_other_backends(dsn) >= 1

    # Nothing pings the pooled connection: the record query meets the dead one and runs again.
    second = api.get("/v1/lineage/records/ds/r00004", headers=reader.headers)
    assert second.status_code == 200, second.text
    assert second.json() == first.json()

    # The same at the service level, counting the attempts: the first one hits the killed connection.
    _kill_other_backends(dsn)
    attempts = []

    def pid(session):  # noqa: ANN001, ANN202
        attempts.append(1)
        return session.execute(text("SELECT pg_backend_pid()")).scalar()

    assert read_once(pid) > 0
    assert len(attempts) == 2


def test_a_read_that_loses_its_connection_twice_is_unavailable(env):
    from sqlalchemy import exc as sa_exc

    from app.core.database import read_once
    from app.core.transient import is_unavailable

    attempts = []

    def killed(session):  # noqa: ANN001, ANN202
        attempts.append(1)
        return session.execute(text("SELECT pg_terminate_backend(pg_backend_pid())")).scalar()

    with pytest.raises(sa_exc.DBAPIError) as caught:
        read_once(killed)
    assert len(attempts) == 2
    # What the transient-error middleware turns into a 503 with Retry-After.
    assert is_unavailable(caught.value)


def test_record_query_over_http_on_both_databases(backend, env, api, make_client):
    from app.core.database import get_engine, get_read_engine

    ingested("ds", rows(6))
    reader = make_client("ml")
    assert api.get("/v1/lineage/records/ds/r00002", headers=reader.headers).status_code == 200
    assert api.get("/v1/lineage/records/ds/nope", headers=reader.headers).status_code == 404
    # SQLite has no round trips to save: the main engine, and so the request's session (a second
    # session would wait on the write lock the first one's BEGIN IMMEDIATE took).
    assert (get_read_engine() is get_engine()) == (backend == "sqlite")


def test_a_statement_straight_on_the_cursor_reports_a_lost_connection_as_sqlalchemy_does(env):
    from sqlalchemy import exc as sa_exc
    from sqlalchemy import func, select

    from app.core.database import fetch_all, read_once
    from app.core.transient import is_unavailable

    killed = select(func.pg_terminate_backend(func.pg_backend_pid()))
    attempts = []

    def kill(session):  # noqa: ANN001, ANN202
        attempts.append(1)
        return fetch_all(session, killed, {})

    with pytest.raises(sa_exc.DBAPIError) as caught:
        read_once(kill)
    # Invalidated, so read_once ran it again on a fresh connection; the 503 is the middleware's.
    assert len(attempts) == 2
    assert caught.value.connection_invalidated
    assert is_unavailable(caught.value)
    assert read_once(lambda session: fetch_all(session, select(func.pg_backend_pid()), {}))[0][0] > 0


def test_record_query_over_http_runs_on_the_event_loop_on_postgresql(env, api, make_client):
    from sqlalchemy import event

    from app.core.database import get_engine, get_read_engine
    from app.lineage import service as lineage

    ingested("ds", rows(12))
    model_with_versions("ds", "m", [[], ["r00003"]])
    reader = make_client("ml")
    assert api.get("/v1/lineage/records/ds/r00005", headers=reader.headers).status_code == 200  # caches the bitmaps

    checkouts = []

    def checkout(*args) -> None:  # noqa: ANN002
        checkouts.append(1)

    for engine in (get_engine(), get_read_engine()):
        event.listen(engine, "checkout", checkout)
    try:
        answers = [api.get(f"/v1/lineage/records/ds/{key}", headers=reader.headers) for key in ("r00003", "r00004")]
        missing = api.get("/v1/lineage/records/ds/nope", headers=reader.headers)
    finally:
        for engine in (get_engine(), get_read_engine()):
            event.remove(engine, "checkout", checkout)
    # Neither pool was used: the statement went over the event loop's own async connection.
    assert checkouts == []
    assert missing.status_code == 404
    for key, answer in zip(("r00003", "r00004"), answers, strict=True):
        assert answer.status_code == 200, answer.text
        assert answer.json() == lineage.read_record_lineage("ds", key).model_dump(mode="json")
    assert [v["number"] for v in answers[0].json()["model_versions"]] == [1]
    assert [v["number"] for v in answers[1].json()["model_versions"]] == [1, 2]


def test_a_read_on_the_event_loop_that_loses_its_connection_twice_is_unavailable(env):
    import asyncio
    import concurrent.futures

    import psycopg
    from sqlalchemy import exc as sa_exc
    from sqlalchemy import func, select

    from app.core.database import fetch_all_async
    from app.core.transient import is_unavailable

    dsn = env["UNLEARND_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("CREATE SEQUENCE attempts")
    # nextval is not rolled back, so the sequence counts the attempts that reached the database.
    killed = select(func.nextval("attempts"), func.pg_terminate_backend(func.pg_backend_pid()))

    async def reads() -> None:
        assert (await fetch_all_async(select(func.pg_backend_pid()), {}))[0][0] > 0
        with pytest.raises(sa_exc.DBAPIError) as caught:
            await fetch_all_async(killed, {})
        assert caught.value.connection_invalidated and is_unavailable(caught.value)
        # The next read connects anew.
        assert (await fetch_all_async(select(func.pg_backend_pid()), {}))[0][0] > 0

    try:
        # On a thread of its own: an earlier test in this process may have left an event loop
        # running on the main thread (Playwright's sync API does), where asyncio.run refuses.
        with concurrent.futures.ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, reads()).result()
        with psycopg.connect(dsn, autocommit=True) as admin:
            assert admin.execute("SELECT last_value FROM attempts").fetchone()[0] == 2
    finally:  # the test database is reused only while its catalog is the template's
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("DROP SEQUENCE attempts")


def test_a_burst_of_reads_on_the_event_loop_waits_for_the_pools_bound(env):
    """Sixty reads at once share at most the read engine's pool bound of connections (40): the
    rest wait for one, where each would have opened its own (past max_connections under a burst).
    A connection given back while reads wait stays open for them: closing it past the pool size
    made a waiting read open another, which failed this about one run in eight on a busy machine."""
    import asyncio
    import concurrent.futures

    from sqlalchemy import func, select

    from app.core.database import READ_POOL_OVERFLOW, READ_POOL_SIZE, fetch_all_async

    held = select(func.pg_backend_pid(), func.pg_sleep(0.2))

    async def burst() -> list[int]:
        answers = await asyncio.gather(*(fetch_all_async(held, {}) for _ in range(60)))
        return [rows[0][0] for rows in answers]

    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        backends = thread.submit(asyncio.run, burst()).result()
    assert len(backends) == 60
    assert 1 < len(set(backends)) <= READ_POOL_SIZE + READ_POOL_OVERFLOW == 40
