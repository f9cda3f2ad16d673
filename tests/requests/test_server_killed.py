"""The API server process SIGKILLed in the middle of intake: single and batch submissions that
had written their rows but not committed leave nothing behind, and the clients' retries with
the same keys (against a restarted server) land exactly once.

"Mid-intake" is made certain, not hoped for: the test holds an EXCLUSIVE lock on
``outbox_messages``, so every intake transaction (each request here completes at intake and
writes its certificate order last, just before COMMIT) has written its request, history and
audit rows and waits on that lock when the server is killed."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import func, select

from tests.conftest import PG_ADMIN_DSN

URL = "/v1/deletion-requests"


def _start(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uvicorn = str(Path(sys.executable).parent / "uvicorn")
    process = subprocess.Popen(
        [uvicorn, "app.main:create_app", "--factory", "--host", "127.0.0.1", "--port", str(port), "--log-level",
         "warning"], env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, f"http://127.0.0.1:{port}"
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.2)


def _body(n: str) -> dict:
    return {"subject": [{"type": "email", "value": f"killed-{n}@example.org"}], "legal_basis": "gdpr_art17"}


def _dsn(env: dict[str, str]) -> str:
    return PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + env["UNLEARND_DATABASE_URL"].rsplit("/", 1)[1]


def _waiting_on_outbox(conn: psycopg.Connection) -> set[int]:
    """Backends of this database waiting on a lock to write an outbox row."""
    return {pid for (pid,) in conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND wait_event_type = 'Lock' AND query ILIKE 'INSERT INTO outbox_messages%'")}


def _alive(conn: psycopg.Connection, pids: set[int]) -> int:
    return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", [list(pids)]).fetchone()[0]


@pytest.mark.slow
def test_server_sigkilled_mid_intake_writes_nothing_and_retries_land_once(env, make_client):
    from app.audit.models import AuditEvent, PendingAuditEvent
    from app.core.database import session_scope
    from app.requests.models import DeletionRequest, RequestTransition

    portal = make_client("portal")
    singles = [f"single-{n}" for n in range(4)]
    batch = [{**_body(f"batch-{n}"), "idempotency_key": f"batch-{n}"} for n in range(20)]
    answered: list[int] = []

    def send_single(base: str, key: str) -> None:
        with contextlib.suppress(httpx.HTTPError):  # the server dies under it: the client retries later
            answered.append(httpx.post(f"{base}{URL}", json=_body(key), timeout=120,
                                       headers={**portal.headers, "Idempotency-Key": key}).status_code)

    def send_batch(base: str) -> None:
        with contextlib.suppress(httpx.HTTPError):
            answered.append(httpx.post(f"{base}{URL}/batch", json={"requests": batch}, timeout=120,
                                       headers=portal.headers).status_code)

    server, base = _start(env)
    blocker = psycopg.connect(_dsn(env))
    try:
        blocker.execute("LOCK TABLE outbox_messages IN EXCLUSIVE MODE")  # held until rollback
        clients = [threading.Thread(target=send_single, args=(base, key)) for key in singles]
        clients.append(threading.Thread(target=send_batch, args=(base,)))
        for client in clients:
            client.start()
        with psycopg.connect(_dsn(env), autocommit=True) as watcher:
            deadline = time.monotonic() + 120
            while len(stuck := _waiting_on_outbox(watcher)) < len(clients):
                assert time.monotonic() < deadline, "intake never reached its last write"
                time.sleep(0.1)
            # Every submission has written its rows in its open transaction: kill the server now.
            os.kill(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
            for client in clients:
                client.join(timeout=120)
            assert answered == [], "no submission could have been answered"
            blocker.rollback()  # the orphaned transactions get their lock, then find no client
            deadline = time.monotonic() + 120
            while _alive(watcher, stuck) > 0:
                assert time.monotonic() < deadline, "the dead server's transactions never ended"
                time.sleep(0.1)
    finally:
        blocker.close()
        if server.poll() is None:
            server.kill()
            server.wait(timeout=30)

    with session_scope() as session:
        for model in (DeletionRequest, RequestTransition, PendingAuditEvent, AuditEvent):
            if model is AuditEvent:  # the portal's key creation is in the chain; no intake event is
                assert session.scalar(select(func.count()).select_from(model)
                                      .where(model.action == "request.received")) == 0
                continue
            assert session.scalar(select(func.count()).select_from(model)) == 0, model.__tablename__

    # The clients retry with the same keys against a restarted server: each lands once.
    server, base = _start(env)
    try:
        for attempt in ("created", "replayed"):
            for key in singles:
                response = httpx.post(f"{base}{URL}", json=_body(key), timeout=120,
                                      headers={**portal.headers, "Idempotency-Key": key})
                assert response.status_code == (202 if attempt == "created" else 200), response.text
            response = httpx.post(f"{base}{URL}/batch", json={"requests": batch}, timeout=120, headers=portal.headers)
            assert response.status_code == 200, response.text
            assert response.json()[attempt] == len(batch), response.json()
    finally:
        server.terminate()
        server.wait(timeout=30)
    with session_scope() as session:
        keys = list(session.scalars(select(DeletionRequest.idempotency_key)))
        assert sorted(keys) == sorted([*singles, *(item["idempotency_key"] for item in batch)])
        # Each request whole: received -> completed history and its one audit event.
        assert session.scalar(select(func.count()).select_from(RequestTransition)) == 2 * len(keys)
        events = sum(session.scalar(select(func.count()).select_from(m).where(m.action == "request.received"))
                     for m in (AuditEvent, PendingAuditEvent))
        assert events == len(keys)
