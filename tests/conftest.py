"""Test fixtures on real services: PostgreSQL and Redis on 127.0.0.1, SQLite for the embedded path.

Every test gets a database of its own, cloned from a template migrated once per run
(PostgreSQL: CREATE DATABASE ... TEMPLATE; SQLite: a file copy), so tests never see
each other's rows and the audit log's append-only triggers never need bypassing.
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
    for cached in (config.get_settings, database.get_engine, database.get_sessionmaker, queue.get_celery):
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


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    from app.core import migrate

    name = f"{RUN_TAG}_template"
    _pg_exec(f'CREATE DATABASE "{name}"')
    migrate.upgrade(_pg_url(name))
    created: list[str] = []
    yield name
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{RUN_TAG}%",)).fetchall()
        for (dbname,) in rows:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}"')
    del created


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from app.core import migrate

    path = tmp_path_factory.mktemp("sqlite-template") / "template.sqlite3"
    migrate.upgrade(f"sqlite:///{path}")
    return path


def _fresh_database(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "postgresql":
        template = request.getfixturevalue("pg_template")
        name = f"{RUN_TAG}_{uuid.uuid4().hex[:10]}"
        _pg_exec(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return _pg_url(name)
    template_path = request.getfixturevalue("sqlite_template")
    target = tmp_path / "unlearnd.sqlite3"
    shutil.copy(template_path, target)
    return f"sqlite:///{target}"


@pytest.fixture(params=["postgresql", "sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    """Parametrise a test over both databases by asking for this fixture (or ``env``)."""
    return request.param


@pytest.fixture
def env(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Environment for one test: fresh database, its own data dir, Redis broker.

    Uses the ``backend`` parameter when the test asks for it, PostgreSQL otherwise.
    """
    backend = request.getfixturevalue("backend") if "backend" in request.fixturenames else "postgresql"
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
    reset_caches()
    # Dropped now rather than all at the end of the session, where hundreds of drops ran
    # inside the last test's timeout and, on a loaded machine, overran it.
    if database_url.startswith("postgresql"):
        _pg_exec(f'DROP DATABASE IF EXISTS "{database_url.rsplit("/", 1)[1]}" WITH (FORCE)')


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
SLOW_FIXTURES = {"start_worker", "processes"}


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
