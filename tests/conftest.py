"""Test fixtures on real services: PostgreSQL and Redis on 127.0.0.1, SQLite for the embedded path.

Every test gets a database in the state of a template migrated once per test process, so
tests never see each other's rows. SQLite: a copy of the template file. PostgreSQL: a clone
made with CREATE DATABASE ... TEMPLATE, which a finished test gives back to be emptied and
checked against the template for the next test (``PgDatabasePool``: dropping a database costs
PostgreSQL a checkpoint, which on a shared machine took 0.1-2.5 s per test).
All databases this run created are dropped at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

PG_ADMIN_DSN = os.environ.get("UNLEARND_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
RUN_TAG = f"ut{os.getpid()}_{uuid.uuid4().hex[:6]}"


def _pg_url(dbname: str) -> str:
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    return f"{base}/{dbname}"


def _pg_exec(sql: str) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql)


def reset_caches() -> None:
    """Settings, engine, session factory and Celery app are cached per process; tests swap them."""
    from app.core import config, database, queue

    if database.get_engine.cache_info().currsize:
        database.get_engine().dispose()
    if database.get_read_engine.cache_info().currsize:
        database.get_read_engine().dispose()
    for cached in (config.get_settings, database.get_engine, database.get_read_engine, database.get_sessionmaker,
                   queue.get_celery):
        cached.cache_clear()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of this test process's own, on a free port.

    The machine's Redis is shared with other runs and must never be flushed; each pytest
    process (each xdist worker too) brokers its tests through a server it started itself,
    so workers of one run never take another run's tasks.
    """
    import redis

    workdir = tmp_path_factory.mktemp("redis")
    for _ in range(5):
        port = _free_port()
        process = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(workdir), "--logfile", str(workdir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        if process.poll() is None:
            break
    else:
        raise RuntimeError("could not start a private redis-server")
    yield url
    process.terminate()
    process.wait(timeout=10)


def _start_redis(port: int, workdir: Path) -> subprocess.Popen:
    import redis

    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            redis.Redis(port=port).ping()
            return process
        except redis.ConnectionError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("redis-server did not start")


@pytest.fixture
def own_redis(env, monkeypatch, tmp_path):
    """A redis-server of this test's own as its broker, which the test may stop and restart
    (``port, stop, restart``); restarted without persistence, it has lost every message."""
    port = _free_port()
    processes = [_start_redis(port, tmp_path)]
    # The env dict too: worker processes take their settings from it.
    env["UNLEARND_BROKER_URL"] = f"redis://127.0.0.1:{port}/0"
    monkeypatch.setenv("UNLEARND_BROKER_URL", env["UNLEARND_BROKER_URL"])
    reset_caches()

    def stop() -> None:
        processes[-1].terminate()
        processes[-1].wait(timeout=30)

    def restart() -> None:
        processes.append(_start_redis(port, tmp_path))

    yield port, stop, restart
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


# Drops every database whose name is LIKE argv[2], all at once (concurrent drops share checkpoints).
_DROP_DATABASES = """
import sys
from concurrent.futures import ThreadPoolExecutor
import psycopg
dsn, pattern = sys.argv[1:3]
with psycopg.connect(dsn, autocommit=True) as conn:
    names = [row[0] for row in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (pattern,))]
def drop(name):
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
with ThreadPoolExecutor(max(1, len(names))) as pool:
    list(pool.map(drop, names))
"""


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    from app.core import migrate

    name = f"{RUN_TAG}_template"
    _pg_exec(f'CREATE DATABASE "{name}"')
    migrate.upgrade(_pg_url(name))
    yield name
    # Dropped by a process of its own, which the run does not wait for: each DROP DATABASE
    # waits for a checkpoint, and at the end of a run on the busy machine that took 5-30 s.
    subprocess.Popen(
        [sys.executable, "-c", _DROP_DATABASES, PG_ADMIN_DSN, f"{RUN_TAG}%"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from app.core import migrate

    path = tmp_path_factory.mktemp("sqlite-template") / "template.sqlite3"
    migrate.upgrade(f"sqlite:///{path}")
    return path


# What a test could change in a database besides its rows. A database whose catalog no longer
# matches the template's (a test ran a downgrade, dropped a trigger, added a table...) is
# dropped rather than emptied.
_CATALOG_FINGERPRINT = """
SELECT md5(string_agg(item, E'\\n' ORDER BY item)) FROM (
    SELECT 'namespace ' || nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg_temp%' AND nspname NOT LIKE 'pg_toast_temp%'
    UNION ALL
    SELECT 'relation ' || c.oid::regclass::text || ' ' || c.relkind::text || c.relpersistence::text
           || c.relrowsecurity::text || coalesce(c.relacl::text, '')
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
    UNION ALL
    SELECT 'column ' || a.attrelid::regclass::text || '.' || a.attname || ' '
           || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull::text || ' '
           || coalesce(pg_get_expr(d.adbin, d.adrelid), '') || a.attidentity::text || a.attgenerated::text
      FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
       AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT 'constraint ' || conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid)
           || condeferrable::text || condeferred::text || convalidated::text
      FROM pg_constraint WHERE connamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
    UNION ALL
    SELECT 'index ' || pg_get_indexdef(i.indexrelid) || i.indisvalid::text
      FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
    UNION ALL
    SELECT 'trigger ' || pg_get_triggerdef(oid) || ' ' || tgenabled::text FROM pg_trigger WHERE NOT tgisinternal
    UNION ALL
    SELECT 'function ' || p.oid::regprocedure::text || ' ' || md5(p.prosrc) || coalesce(p.proconfig::text, '')
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
    UNION ALL
    SELECT 'rule ' || schemaname || '.' || tablename || ' ' || definition FROM pg_rules
    UNION ALL
    SELECT 'view ' || schemaname || '.' || viewname || ' ' || definition FROM pg_views
     WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
    UNION ALL
    SELECT 'policy ' || schemaname || '.' || tablename || ' ' || policyname || ' ' || coalesce(qual, '')
           || coalesce(with_check, '') FROM pg_policies
    UNION ALL
    SELECT 'extension ' || extname || ' ' || extversion FROM pg_extension
    UNION ALL
    SELECT 'type ' || t.oid::regtype::text FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
    UNION ALL
    SELECT 'sequence ' || seqrelid::regclass::text || ' ' || seqtypid::regtype::text || ' ' || seqstart || ' '
           || seqincrement || ' ' || seqmax || ' ' || seqmin || ' ' || seqcache || ' ' || seqcycle::text
      FROM pg_sequence
    UNION ALL
    SELECT 'setting ' || coalesce(setrole::regrole::text, '') || ' ' || setconfig::text FROM pg_db_role_setting
     WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
    UNION ALL
    SELECT 'large objects ' || count(*) FROM pg_largeobject_metadata
    UNION ALL
    SELECT 'prepared transactions ' || count(*) FROM pg_prepared_xacts WHERE database = current_database()
) AS catalog(item)
"""


class PgDatabasePool:
    """PostgreSQL databases for tests, each in the state of a fresh clone of the template.

    A database is made with CREATE DATABASE ... TEMPLATE the first time one is needed. When a
    test is done with it, it is given back and made equal to the template again instead of
    dropped (a DROP DATABASE makes PostgreSQL run a checkpoint; on this shared machine that
    cost 0.1-2.5 s per test, most of the fast suite's time): its other connections are ended,
    its catalog must still match the template's fingerprint (``_CATALOG_FINGERPRINT``), then
    in one transaction every table is emptied with triggers off (``session_replication_role
    = replica``: the audit log's append-only triggers stay exactly as migrated), the rows the
    migrations seeded are copied back, every sequence is set back to the template's value,
    and each table's rows are compared with the template's (a count of none, or the seeded
    rows byte for byte). A database that
    fails any step is dropped, and the next test gets a new clone.
    """

    def __init__(self, template: str) -> None:
        self.template = template
        self.free: list[str] = []
        with self._connect(template) as conn:
            self.fingerprint = conn.execute(_CATALOG_FINGERPRINT).fetchone()[0]
            self.tables = [row[0] for row in conn.execute(
                "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
                " AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1"
            )]
            self.rows = {table: self._dump(conn, table) for table in self.tables}
            self.sequences = conn.execute(
                "SELECT format('%I.%I', schemaname, sequencename), coalesce(last_value, start_value),"
                " last_value IS NOT NULL FROM pg_sequences"
            ).fetchall()

    @staticmethod
    def _connect(name: str, autocommit: bool = True) -> psycopg.Connection:
        return psycopg.connect(f"{PG_ADMIN_DSN.rsplit('/', 1)[0]}/{name}", autocommit=autocommit)

    @staticmethod
    def _dump(conn: psycopg.Connection, table: str) -> bytes:
        with conn.cursor().copy(f"COPY {table} TO STDOUT") as copy:
            return b"".join(bytes(chunk) for chunk in copy)

    def take(self) -> str:
        if self.free:
            return self.free.pop()
        name = f"{RUN_TAG}_{uuid.uuid4().hex[:10]}"
        _pg_exec(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return name

    def give_back(self, name: str) -> None:
        try:
            reset = self._reset(name)
        except psycopg.Error:
            reset = False
        if reset:
            self.free.append(name)
        else:
            _pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _reset(self, name: str) -> bool:
        # End the finished test's connections. Something of that test that keeps reconnecting
        # (a thread still relaying, say) gets the database dropped instead of handed on.
        deadline = time.monotonic() + 5
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            while admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s", (name,)
            ).fetchone()[0]:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.02)
        with self._connect(name, autocommit=False) as conn:
            if conn.execute(_CATALOG_FINGERPRINT).fetchone()[0] != self.fingerprint:
                return False
            conn.execute("SET LOCAL lock_timeout = '30s'")
            conn.execute("SET LOCAL session_replication_role = replica")
            for table in self.tables:
                conn.execute(f"DELETE FROM {table}")
            for table, rows in self.rows.items():
                if rows:
                    with conn.cursor().copy(f"COPY {table} FROM STDIN") as copy:
                        copy.write(rows)
            for sequence, value, is_called in self.sequences:
                conn.execute("SELECT setval(%s, %s, %s)", (sequence, value, is_called))
            # One query for the emptied tables' counts, byte for byte for the seeded ones.
            counts = conn.execute(
                "SELECT ARRAY[" + ", ".join(f"(SELECT count(*) FROM {table})" for table in self.tables) + "]"
            ).fetchone()[0]
            if any(count != 0 for table, count in zip(self.tables, counts, strict=True) if not self.rows[table]) or any(
                self._dump(conn, table) != rows for table, rows in self.rows.items() if rows
            ):
                conn.rollback()
                return False
            conn.commit()
        return True


@pytest.fixture(scope="session")
def pg_pool(pg_template: str) -> PgDatabasePool:
    return PgDatabasePool(pg_template)


def _fresh_database(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL for ``backend``; a PostgreSQL one stays this caller's until the session ends
    unless given back to ``pg_pool`` (the ``env`` fixture gives its back)."""
    if backend == "postgresql":
        return _pg_url(request.getfixturevalue("pg_pool").take())
    template_path = request.getfixturevalue("sqlite_template")
    target = tmp_path / "unlearnd.sqlite3"
    shutil.copy(template_path, target)
    return f"sqlite:///{target}"


@pytest.fixture(params=["postgresql", "sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    """Parametrise a test over both databases by asking for this fixture (or ``env``)."""
    return request.param


def wait_for_outbox_relay(timeout: float = 60.0) -> None:
    """Wait until this process's outbox relay thread has done what the finished test queued.
    Left running, it would reconnect to the test's database while the next test is set up, and
    could cache an engine built from settings that are being swapped under it."""
    from app.core import outbox

    for relayer in list(outbox._background):
        relayer.submit(lambda: None).result(timeout=timeout)  # one thread, in order: a barrier
    # The webhook waker's debounce timer reads the database when it fires: a timer left from this
    # test once read the defaults (embedded SQLite) while the next test's settings were swapped in,
    # and its engine was cached for that test.
    webhooks = sys.modules.get("app.webhooks.service")
    timer = webhooks.request_dispatch.timer if webhooks is not None else None
    if timer is not None:
        timer.join(timeout=timeout)


@pytest.fixture
def env(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Environment for one test: fresh database, its own data dir, Redis broker.

    Uses the ``backend`` parameter when the test asks for it, PostgreSQL otherwise.
    """
    backend = request.getfixturevalue("backend") if "backend" in request.fixturenames else "postgresql"
    pool = request.getfixturevalue("pg_pool") if backend == "postgresql" else None
    database_url = _fresh_database(backend, request, tmp_path)
    values = {
        "UNLEARND_MODE": "embedded",
        "UNLEARND_DATA_DIR": str(tmp_path / "var"),
        "UNLEARND_DATABASE_URL": database_url,
        "UNLEARND_BROKER_URL": f"{request.getfixturevalue('redis_server')}/9",
        "UNLEARND_SUBJECT_PEPPER": "test-pepper-not-secret",
        "UNLEARND_LOG_LEVEL": "INFO",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    reset_caches()
    yield values
    wait_for_outbox_relay()
    reset_caches()
    # Given back now: emptied for the next test, or dropped if it cannot be made equal to the
    # template again (the session's end drops whatever is left, which is then a database or two).
    if pool is not None:
        pool.give_back(database_url.rsplit("/", 1)[1])


@pytest.fixture
def api(env: dict[str, str]) -> Iterator[TestClient]:
    from app.main import create_app

    with TestClient(create_app(), raise_server_exceptions=False) as client:
        yield client


@dataclass(frozen=True)
class Caller:
    id: str
    role: str
    api_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@pytest.fixture
def make_client(env: dict[str, str]) -> Callable[..., Caller]:
    """Create an API client with a role; ``.headers`` authenticates as it."""
    from app.clients.service import create_client
    from app.core.database import session_scope

    def factory(role: str = "admin", name: str | None = None, requires_approval: bool = False) -> Caller:
        with session_scope() as session:
            issued = create_client(
                session, name=name or f"{role}-{uuid.uuid4().hex[:6]}", role=role, requires_approval=requires_approval
            )
            return Caller(id=issued.client.id, role=role, api_key=issued.api_key)

    return factory


class WorkerProcess:
    """A real ``celery worker`` subprocess on the test's broker and database."""

    def __init__(self, env: dict[str, str], log_path: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None

    def start_process(self) -> None:
        command = [
            sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "--loglevel", "INFO",
            "--concurrency", "1", "--without-gossip", "--without-mingle", "--without-heartbeat",
            "--hostname", f"test-{uuid.uuid4().hex[:6]}@%h", *self.extra_args,
        ]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def start(self, timeout: float = 60.0) -> WorkerProcess:
        """Start and wait until the worker answers a broadcast ping (Redis broker)."""
        from app.core.queue import get_celery

        self.start_process()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log_path.read_text()[-3000:]}")
            replies = get_celery().control.ping(timeout=1.0)
            if replies:
                return self
        raise RuntimeError(f"worker not ready:\n{self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the whole process group: what a crashed machine looks like to the broker."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def redis_broker(env: dict[str, str]) -> Iterator[str]:
    """An empty Redis database as this test's broker (on this process's private server)."""
    import redis

    client = redis.Redis.from_url(env["UNLEARND_BROKER_URL"])
    client.flushdb()
    yield env["UNLEARND_BROKER_URL"]
    client.flushdb()


@pytest.fixture
def start_worker(env: dict[str, str], redis_broker: str, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def factory(*extra_args: str) -> WorkerProcess:
        worker = WorkerProcess(env, tmp_path / f"worker-{len(workers)}.log", extra_args)
        workers.append(worker)
        return worker.start()

    yield factory
    for worker in workers:
        worker.stop()


@pytest.fixture
def server(env: dict[str, str]) -> Iterator[str]:
    """The API in a uvicorn process of its own on the test's database and broker; yields its base URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uvicorn = str(Path(sys.executable).parent / "uvicorn")
    process = subprocess.Popen(
        [uvicorn, "app.main:create_app", "--factory", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "uvicorn did not start"
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


# Fixtures that start real worker or server processes: a test that asks for one is slow
# and left out of `make test-fast`.
SLOW_FIXTURES = {"start_worker", "processes", "server"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def run_queued_erasures() -> None:
    """What the worker does with the erasure tasks the outbox queued (dataset files rewritten
    without forgotten rows); for tests that run jobs inline, with no worker to take them."""
    from sqlalchemy import select

    from app.core.database import session_scope
    from app.registry import erasure
    from app.registry.models import DatasetErasure, ErasureStatus

    with session_scope() as session:
        queued = list(session.scalars(select(DatasetErasure.id).where(DatasetErasure.status == ErasureStatus.QUEUED)
                                      .order_by(DatasetErasure.created_at)))
    for erasure_id in queued:
        erasure.run(erasure_id)


def issue_certificate_now(request_id: str, timeout: float = 180.0) -> None:
    """What the outbox tasks do when a request completes (its dataset rows erased, then the
    certificate issued); for tests that run jobs inline, with no worker to take the messages.
    Where a worker runs too, it may be running the erasure: wait for it."""
    from app.certificates.service import issue_certificate, waits_for_erasure
    from app.core.database import session_scope
    from app.registry.erasure import ErasureBusy

    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(ErasureBusy):  # a worker is running it: wait for it
            run_queued_erasures()
        with session_scope() as session:
            if not waits_for_erasure(session, request_id):
                issue_certificate(session, request_id)
                return
        assert time.monotonic() < deadline, f"request {request_id}: its dataset erasure never finished"
        time.sleep(0.2)
