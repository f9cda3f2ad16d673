"""Webhook delivery on PostgreSQL and Redis, production settings, one Celery worker (with beat).

    nice .venv/bin/python benchmarks/webhooks.py            # 20 s phases, 60 s outage
    nice .venv/bin/python benchmarks/webhooks.py --quick    # same path, short phases, 15 s outage

Events are real: each deletion request is submitted through the intake service in this
process (a request for an unknown subject commits `received` and `completed` at once, so
two deliveries per request). One admin endpoint points at a local threaded http.server that
verifies every signature with the `standardwebhooks` library.

1. Latency: paced submissions; per delivery, receiver arrival minus the intake commit.
2. Throughput: with the worker paused (SIGSTOP), a backlog of requests commits; then the
   worker resumes, and deliveries per second are counted from resuming to the last arrival.
3. Outage: the receiver is stopped while submissions continue, then started again while
   they still continue; drain = restart until every delivery of the outage has arrived.
   Order per request and losses are checked on the de-duplicated set (by webhook-id).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.webhooks.conftest import Receiver  # noqa: E402 - the same verifying receiver the tests use

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Submitter:
    def __init__(self, client_id: str) -> None:
        from app.core.auth import ApiClient
        from app.core.database import session_scope

        with session_scope() as session:
            self.client = session.get(ApiClient, client_id)
            session.expunge(self.client)
        self.committed: dict[str, float] = {}
        self.lock = threading.Lock()

    def submit_one(self) -> str:
        from app.core.database import session_scope
        from app.requests import service
        from app.requests.schemas import DeletionRequestCreate

        body = DeletionRequestCreate.model_validate({
            "subject": [{"type": "email", "value": f"{uuid.uuid4().hex}@bench.example"}],
            "legal_basis": "gdpr_art17",
        })
        with session_scope() as session:
            outcome = service.submit(session, client=self.client, submission=body,
                                     provenance=service.Provenance(channel="api"))
            request_id = outcome.request.id
        committed = time.monotonic()  # session_scope has committed (and sealed) by now
        with self.lock:
            self.committed[request_id] = committed
        return request_id

    def paced(self, rate: float, seconds: float) -> list[str]:
        ids, start, n = [], time.monotonic(), 0
        while time.monotonic() - start < seconds:
            target = start + n / rate
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            ids.append(self.submit_one())
            n += 1
        return ids

    def burst(self, count: int, threads: int) -> list[str]:
        ids: list[str] = []
        lock = threading.Lock()

        def work(share: int) -> None:
            for _ in range(share):
                rid = self.submit_one()
                with lock:
                    ids.append(rid)

        workers = [threading.Thread(target=work, args=(count // threads,)) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return ids


def arrivals_for(receiver: Receiver, ids: set[str]) -> dict[tuple[str, str], float]:
    first: dict[tuple[str, str], float] = {}
    for item in list(receiver.received):
        key = (item.payload["data"].get("request_id"), item.payload["type"])
        if key[0] in ids and key not in first:
            first[key] = item.at
    return first


def wait_delivered(receiver: Receiver, ids: set[str], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(arrivals_for(receiver, ids)) >= 2 * len(ids):
            return True
        time.sleep(0.05)
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    phase = 6.0 if args.quick else 20.0
    outage = 15.0 if args.quick else 60.0
    burst = 300 if args.quick else 2000

    dbname = f"unlearnd_bench_wh_{os.getpid()}"
    workdir = Path(tempfile.mkdtemp(prefix="unlearnd-bench-wh-"))
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "UNLEARND_MODE": "production",
        "UNLEARND_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{dbname}",
        "UNLEARND_BROKER_URL": "redis://127.0.0.1:6379/13",
        "UNLEARND_SUBJECT_PEPPER": uuid.uuid4().hex,
        "UNLEARND_SIGNING_KEY_PATH": str(workdir / "signing_key.pem"),
        "UNLEARND_WEBHOOK_SECRET_KEY": __import__("cryptography.fernet").fernet.Fernet.generate_key().decode(),
        "UNLEARND_WEBHOOK_ALLOWED_HOSTS": json.dumps(["127.0.0.1"]),
        "UNLEARND_DATA_DIR": str(workdir),
        "UNLEARND_LOG_LEVEL": "WARNING",
    }
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    worker = None
    receiver = Receiver().start()
    try:
        os.environ.update({k: v for k, v in env.items() if k.startswith("UNLEARND_")})

        from app.clients.service import create_client
        from app.core import migrate
        from app.core.auth import Role
        from app.core.database import session_scope
        from app.webhooks import service as webhooks

        migrate.upgrade()
        with session_scope() as session:
            admin = create_client(session, name="bench-admin", role=Role.ADMIN).client
            created = webhooks.create_endpoint(session, admin, url=receiver.url, event_types=[], description="bench")
            admin_id = admin.id
        receiver.secrets.append(created.secret)
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "--beat", "--schedule",
             str(workdir / "beat-schedule"), "--concurrency", "1", "--loglevel", "WARNING",
             "--without-gossip", "--without-mingle"],
            env=env, stdout=subprocess.DEVNULL, stderr=(workdir / "worker.log").open("wb"), cwd=ROOT,
            start_new_session=True,
        )
        submitter = Submitter(admin_id)
        # Warm-up: the worker is up once one delivery arrives.
        warm = {submitter.submit_one()}
        if not wait_delivered(receiver, warm, 120):
            raise SystemExit("worker never delivered; see " + str(workdir / "worker.log"))

        # 1. latency at a paced rate
        rate = 20.0
        ids = set(submitter.paced(rate, phase))
        wait_delivered(receiver, ids, 120)
        got = arrivals_for(receiver, ids)
        latencies = [at - submitter.committed[rid] for (rid, _), at in got.items()]
        print(f"latency: {len(ids)} requests at {rate:.0f}/s -> {len(got)} deliveries; "
              f"commit-to-delivery p50 {percentile(latencies, 0.5) * 1000:.0f} ms, "
              f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms")

        # 2. throughput: intake on this machine cannot offer more than the worker delivers, so
        # the worker is paused (SIGSTOP) while a backlog commits, then resumed and timed.
        os.killpg(worker.pid, signal.SIGSTOP)
        started = time.monotonic()
        ids = set(submitter.burst(burst, threads=4))
        offered = time.monotonic() - started
        resumed = time.monotonic()
        os.killpg(worker.pid, signal.SIGCONT)
        wait_delivered(receiver, ids, 600)
        got = arrivals_for(receiver, ids)
        span = max(got.values()) - resumed
        print(f"throughput: {len(ids)} requests committed in {offered:.1f} s with the worker paused; "
              f"{len(got)} deliveries (fan-out included) {span:.1f} s after resuming = {len(got) / span:.0f} deliveries/s")

        # 3. outage, with submissions going on throughout
        receiver.stop()
        during = set(submitter.paced(rate, outage))
        receiver.start()
        restarted = time.monotonic()
        after: set[str] = set()
        stop = threading.Event()

        def keep_submitting() -> None:
            while not stop.is_set():
                after.add(submitter.submit_one())
                time.sleep(1 / rate)

        feeder = threading.Thread(target=keep_submitting)
        feeder.start()
        drained = wait_delivered(receiver, during, 900)
        drain = time.monotonic() - restarted
        stop.set()
        feeder.join()
        wait_delivered(receiver, after, 120)
        unique = receiver.unique()
        in_order = all(
            [i.payload["type"] for i in unique if i.payload["data"].get("request_id") == rid]
            == ["deletion_request.received", "deletion_request.completed"]
            for rid in during
        )
        lost = 2 * len(during) - len({(i.payload["data"].get("request_id"), i.payload["type"]) for i in unique
                                      if i.payload["data"].get("request_id") in during})
        duplicates = len(receiver.received) - len(unique)
        unverified = sum(1 for i in receiver.received if not i.verified_by)
        print(f"outage: {outage:.0f} s down, {len(during)} requests ({2 * len(during)} deliveries) meanwhile; "
              f"drained {'in' if drained else 'NOT within'} {drain:.1f} s after restart; "
              f"lost {lost}, in order per request: {in_order}; duplicates received {duplicates}; "
              f"signatures not verifying: {unverified}")
    finally:
        receiver.stop()
        if worker is not None:
            os.killpg(worker.pid, signal.SIGCONT)
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        from app.core.database import get_engine

        get_engine().dispose()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}"')


if __name__ == "__main__":
    main()
