"""Completion to certificate under sustained HTTP intake: the largest delay, the backlog, memory.

    nice .venv/bin/python benchmarks/certificate_delay.py                  # 10-minute load at 80% of capacity
    nice .venv/bin/python benchmarks/certificate_delay.py --seconds 120    # shorter (say so when quoting it)
    nice .venv/bin/python benchmarks/certificate_delay.py --rate 132.6     # an earlier run's load, whatever capacity is now
    nice .venv/bin/python benchmarks/certificate_delay.py --direct         # the older ORM-completion mode

Default (issue 21's figure): a fresh PostgreSQL database (created and dropped here), a
redis-server of its own on a free port as the broker, the API server (uvicorn on
``app.main:create_app``, production mode, one process) and a real ``celery worker``
(``--concurrency 2``) as separate processes.

1. Capacity: benchmarks/intake.py's closed-loop pool (``--clients``, default 32 keep-alive
   connections; its code, imported) posts ``POST /v1/deletion-requests`` for
   ``--capacity-seconds`` after a 3 s warm-up, with the worker running; requests/s is the capacity.
2. Load: the same pool, open-loop, at ``--load`` (default 0.8) of that capacity for ``--seconds``
   (default 600). Every request names a subject no dataset holds, so intake completes it as
   "no data found" in its own transaction and queues its certificate order through the outbox
   (``requests.service._settle``); no unlearning job runs. Every 10 s: completed, certified,
   outstanding, RSS of the API process and of the worker (with its pool children).
3. After the load it waits up to ``--drain`` seconds for the last certificate, then reports for
   every request completed under load ``certificate.issued_at - request.completed_at`` (median,
   p99, largest; those still without one count with their wait so far, as a lower bound), the
   backlog when the load stopped, and RSS median in the first vs last third of the load.
   Targets (issue 21): largest delay <= 60 s, memory flat.

``--direct`` keeps the older measurement: completions written through
``requests.service.transition`` at a fraction of the worker's own certificate capacity (no HTTP).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PER_JOB = 25


def _rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` and its children (the worker's pool), KiB."""
    total, family = 0, {pid}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                family.add(int(entry.name))
    for member in family:
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


class Fixture:
    """One dataset, model and purged version; ``complete`` adds a job and its requests."""

    def __init__(self) -> None:
        from pyroaring import BitMap

        from app.clients.service import create_client
        from app.core.database import session_scope, utcnow
        from app.core.hashing import sha256_hex
        from app.registry.models import DataRecord, Dataset, DatasetSnapshot, ModelVersion, RegisteredModel

        suffix = uuid.uuid4().hex[:8]
        with session_scope() as session:
            self.client_id = create_client(session, name=f"bench-portal-{suffix}", role="portal").client.id
            dataset = Dataset(name=f"bench-ds-{suffix}", uri="/data/x.csv", format="csv", schema={}, status="ready")
            session.add(dataset)
            session.flush()
            records = [DataRecord(dataset_id=dataset.id, row_index=i, record_key=f"r{i}",
                                  subject_hash=sha256_hex(f"s{i}".encode()), content_hash=sha256_hex(f"c{i}".encode()))
                       for i in range(4)]
            session.add_all(records)
            session.add(DatasetSnapshot(dataset_id=dataset.id, record_count=4, members=BitMap(range(4)).serialize(),
                                        merkle_root=sha256_hex(b"root")))
            model = RegisteredModel(name=f"bench-m-{suffix}", adapter="logreg", hyperparameters={},
                                    dataset_id=dataset.id, policy={})
            session.add(model)
            session.flush()
            base = ModelVersion(model_id=model.id, number=1, artifact_sha256=sha256_hex(b"v1"), state="purged",
                                purged_at=utcnow())
            session.add(base)
            session.flush()
            result = ModelVersion(model_id=model.id, number=2, parent_id=base.id, artifact_sha256=sha256_hex(b"v2"),
                                  state="active", origin="unlearned")
            session.add(result)
            session.flush()
            self.record_ids = [r.id for r in records]
            self.model_id, self.base_id, self.result_id = model.id, base.id, result.id
        self.made = 0

    def complete(self, count: int) -> None:
        """One succeeded job completing ``count`` requests in one transaction."""
        from app.core.database import session_scope, utcnow
        from app.core.hashing import sha256_hex
        from app.jobs.models import JobRequest, UnlearningJob
        from app.requests import service as requests
        from app.requests.models import DeletionRequest, RequestModelVersion, RequestRecord

        now = utcnow()
        with session_scope() as session:
            job = UnlearningJob(model_id=self.model_id, base_version_id=self.base_id, result_version_id=self.result_id,
                                method="scrub", method_used="retrain", status="succeeded", forget_count=count,
                                report={"verification": {"verdict": "pass"}})
            session.add(job)
            made = []
            for _ in range(count):
                self.made += 1
                n = self.made
                request = DeletionRequest(
                    client_id=self.client_id, external_ref=f"ext-{uuid.uuid4().hex}",
                    request_hash=sha256_hex(f"rq{uuid.uuid4().hex}".encode()),
                    subject_hashes=[sha256_hex(f"s{n % 4}".encode())], legal_basis="gdpr_art17", jurisdiction="EU",
                    requested_at=now - timedelta(days=2), received_at=now - timedelta(days=2),
                    due_at=now + timedelta(days=28), status="verifying",
                )
                session.add(request)
                made.append((request, self.record_ids[n % 4]))
            session.flush()
            for request, record_id in made:
                session.add(RequestRecord(request_id=request.id, record_id=record_id))
                session.add(RequestModelVersion(request_id=request.id, version_id=self.base_id, model_id=self.model_id))
                session.add(JobRequest(job_id=job.id, request_id=request.id))
            session.flush()
            for request, _ in made:
                requests.transition(session, request, "completed", actor="bench", outcome="forgotten")


def _state(since: datetime | None = None) -> tuple[int, int, float | None, list[float]]:
    """(completed, certified, largest delay so far in s, every delay in s); the delays of
    requests completed at or after ``since`` only, when given."""
    from sqlalchemy import func, select

    from app.certificates.models import Certificate
    from app.core.database import session_scope
    from app.requests.models import DeletionRequest

    with session_scope() as session:
        completed = session.scalar(select(func.count()).select_from(DeletionRequest)
                                   .where(DeletionRequest.status == "completed"))
        certified = session.scalar(select(func.count()).select_from(Certificate))
        query = (select(Certificate.issued_at, DeletionRequest.completed_at)
                 .join(DeletionRequest, DeletionRequest.id == Certificate.request_id))
        if since is not None:
            query = query.where(DeletionRequest.completed_at >= since)
        delays = [(issued - done).total_seconds() for issued, done in session.execute(query)]
    return completed, certified, (max(delays) if delays else None), delays


def _analyze() -> None:
    """Refresh the planner's statistics as autovacuum would (this machine's server runs with
    autovacuum off, so tables grown here would otherwise keep the row counts of an empty one)."""
    from sqlalchemy import text

    from app.core.database import get_engine

    with get_engine().connect() as connection:
        connection.execute(text("ANALYZE deletion_requests, deletion_request_records, deletion_request_model_versions, "
                                "unlearning_jobs, unlearning_job_requests, certificates, audit_events"))
        connection.commit()


def _wait_certified(target: int, timeout: float) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if _state()[1] >= target:
            return time.perf_counter() - started
        time.sleep(0.5)
    raise SystemExit(f"certificates did not catch up within {timeout:.0f} s")


def direct(args: argparse.Namespace) -> None:
    """``--direct``: completions written through ``requests.service.transition`` at a fraction of
    the worker's certificate capacity (no HTTP, no intake)."""

    name = f"bench_delay_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    os.environ.update(
        UNLEARND_DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}",
        UNLEARND_DATA_DIR=tempfile.mkdtemp(prefix="bench-delay-"),
        UNLEARND_SUBJECT_PEPPER="bench",
        UNLEARND_MODE="embedded",
        UNLEARND_BROKER_URL=args.broker,
    )
    log_path = Path(os.environ["UNLEARND_DATA_DIR"]) / "worker.log"
    worker = None
    try:
        from app.core import migrate
        from app.core.database import get_engine

        migrate.upgrade()
        with log_path.open("ab") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "--loglevel", "WARNING",
                 "--concurrency", "2", "--without-gossip", "--without-mingle"],
                env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            )
        fixture = Fixture()
        print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; worker log {log_path}")
        # warm the worker up (imports, connections) before anything is timed
        fixture.complete(PER_JOB)
        _wait_certified(PER_JOB, 300)
        _analyze()

        burst = max(PER_JOB, args.burst // PER_JOB * PER_JOB)
        # The worker is stopped (SIGSTOP) while the burst is completed, so its orders queue up
        # and the capacity is the worker's, not how fast this process completes requests.
        os.kill(worker.pid, signal.SIGSTOP)
        try:
            started = time.perf_counter()
            for _ in range(burst // PER_JOB):
                fixture.complete(PER_JOB)
            completing = time.perf_counter() - started
            time.sleep(2)  # the outbox relay thread hands the last orders to the broker
            _analyze()
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        took = _wait_certified(PER_JOB + burst, 1800)
        capacity = burst / took
        generator = burst / completing
        print(f"capacity: {burst} queued completions (jobs of {PER_JOB}) certified in {took:.1f} s after the worker "
              f"resumed: {capacity:.1f} certificates/s; this process completes {generator:.1f} requests/s at most")

        rate = args.load * capacity
        if rate > 0.95 * generator:
            print(f"  the load is capped at 95% of what this process can complete ({0.95 * generator:.1f}/s = "
                  f"{0.95 * generator / capacity:.0%} of capacity), both sharing the machine's CPUs")
            rate = 0.95 * generator
        interval = PER_JOB / rate
        print(f"load: one job of {PER_JOB} every {interval:.2f} s = {rate:.1f} completions/s "
              f"({rate / capacity:.0%} of capacity) for {args.seconds:.0f} s")
        from app.core.database import utcnow

        rss: list[tuple[float, int]] = []
        load_began = utcnow()
        began = time.perf_counter()
        next_job = began
        next_sample = began
        while time.perf_counter() - began < args.seconds:
            now = time.perf_counter()
            if now >= next_job:
                fixture.complete(PER_JOB)
                next_job += interval
            if now >= next_sample:
                completed, certified, largest, _ = _state(load_began)
                rss.append((now - began, _rss_kib(worker.pid)))
                print(f"  t={now - began:5.0f} s  completed {completed:6d}  certified {certified:6d}  "
                      f"outstanding {completed - certified:5d}  largest delay {largest or 0:6.1f} s  "
                      f"worker RSS {rss[-1][1] / 1024:6.1f} MiB  load {os.getloadavg()[0]:.1f}", flush=True)
                if len(rss) % 6 == 0:
                    _analyze()
                next_sample += 10
            time.sleep(max(0.0, min(next_job, next_sample) - time.perf_counter()))
        behind = next_job - time.perf_counter()
        completed = _state()[0]
        achieved = (completed - PER_JOB - burst) / (time.perf_counter() - began)
        drain = _wait_certified(completed, 1800)
        _, _, largest, load_delays = _state(load_began)
        third = max(1, len(rss) // 3)
        first_mib = statistics.median(r for _, r in rss[:third]) / 1024
        last_mib = statistics.median(r for _, r in rss[-third:]) / 1024
        print(f"\nafter the load: the last certificate {drain:.1f} s later; completions ran at {achieved:.1f}/s "
              f"({achieved / capacity:.0%} of capacity), {max(0.0, -behind):.1f} s behind the generator's clock at the end")
        print(f"completion to certificate, the {len(load_delays)} requests completed under load: median "
              f"{statistics.median(load_delays):.1f} s, p99 {sorted(load_delays)[int(0.99 * len(load_delays)) - 1]:.1f} s, "
              f"largest {largest:.1f} s (target <= 60 s: {'met' if largest <= 60 else 'MISSED'})")
        print(f"worker RSS: median {first_mib:.1f} MiB in the first third of the load, {last_mib:.1f} MiB in the "
              f"last ({last_mib / first_mib:.2f}x), max {max(r for _, r in rss) / 1024:.1f} MiB")
        print(f"load average at end: {os.getloadavg()[0]:.1f}")
        get_engine().dispose()
    finally:
        _tear_down([worker], name)


# --- the default: HTTP intake at a fraction of its measured capacity ----------------------------


async def _paced(port: int, make_request, rate: float, seconds: float, clients: int, tally: dict) -> None:
    """Open-loop load: request i is due at start + i / rate; ``clients`` keep-alive connections
    (benchmarks/intake.py's pool) take the next due request as soon as they are free, so a slow
    answer delays the schedule (counted in ``tally['late_s']``) instead of lowering the rate."""
    import asyncio

    from intake import _exchange

    start = time.perf_counter()
    total = int(rate * seconds)
    counter = iter(range(total))

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in counter:
                due = start + i / rate
                wait = due - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                else:
                    tally["late_s"] = max(tally["late_s"], -wait)
                status = await _exchange(reader, writer, make_request())
                tally["sent"] += 1
                if status >= 400:
                    tally["errors"] += 1
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    tally["took"] = time.perf_counter() - start


def _counts(dsn: str) -> tuple[int, int]:
    """(completed requests, certificates) straight from PostgreSQL."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        completed = connection.execute("SELECT count(*) FROM deletion_requests WHERE status = 'completed'").fetchone()[0]
        certified = connection.execute("SELECT count(*) FROM certificates").fetchone()[0]
    return completed, certified


def _delays(dsn: str, since: datetime) -> tuple[list[float], list[float]]:
    """Completion-to-certificate delays (s) of the requests completed at or after ``since``, and
    for those still without a certificate, how long they have waited so far."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT extract(epoch FROM c.issued_at - r.completed_at), extract(epoch FROM now() - r.completed_at), "
            "c.request_id IS NOT NULL FROM deletion_requests r LEFT JOIN certificates c ON c.request_id = r.id "
            "WHERE r.status = 'completed' AND r.completed_at >= %s", (since,)).fetchall()
    return [float(d) for d, _, done in rows if done], [float(w) for _, w, done in rows if not done]


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def through_intake(args: argparse.Namespace) -> None:
    """A real API server (uvicorn on app.main), a real Celery worker, PostgreSQL and a redis-server
    of its own; capacity of HTTP intake measured first, then load at ``--load`` of it."""
    import asyncio
    import threading

    import intake

    redis_port = intake._free_port()
    workdir = Path(tempfile.mkdtemp(prefix="bench-delay-"))
    dbname = f"bench_delay_{uuid.uuid4().hex[:8]}"
    dsn = f"postgresql://postgres@127.0.0.1:5432/{dbname}"
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'benchmarks'}",
        "UNLEARND_MODE": "production",
        "UNLEARND_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{dbname}",
        "UNLEARND_BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
        "UNLEARND_SUBJECT_PEPPER": uuid.uuid4().hex,
        "UNLEARND_SIGNING_KEY_PATH": str(workdir / "signing_key.pem"),
        "UNLEARND_DATA_DIR": str(workdir),
        "UNLEARND_LOG_LEVEL": "WARNING",
    }
    os.environ.update({k: v for k, v in env.items() if k.startswith("UNLEARND_")})
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", str(workdir)],
                             stdout=(workdir / "redis.log").open("ab"), stderr=subprocess.STDOUT)
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{dbname}"')
    server = worker = None
    try:
        from app.clients.service import create_client
        from app.core import migrate
        from app.core.database import session_scope
        from app.core.signing import create_signing_key

        migrate.upgrade(env["UNLEARND_DATABASE_URL"])
        create_signing_key()  # production never creates one itself (`unlearnd keys` does, once)
        with session_scope() as session:
            key = create_client(session, name="bench-portal", role="portal").api_key
        auth = {"Authorization": f"Bearer {key}"}
        counter = iter(range(10**9))

        def intake_request() -> bytes:
            # A subject no dataset holds: intake completes it as "no data found" in its own
            # transaction and queues its certificate order (app/requests/service.py, _settle).
            n = f"{os.getpid()}-{next(counter)}"
            return intake._post("/v1/deletion-requests", intake._intake_body(n), {**auth, "Idempotency-Key": f"d-{n}"})

        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "--loglevel", "WARNING",
             "--concurrency", "2", "--without-gossip", "--without-mingle"],
            env=env, stdout=(workdir / "worker.log").open("ab"), stderr=subprocess.STDOUT, cwd=ROOT)
        server, port = intake._serve("app.main:create_app", env, workdir / "api.log", 1)
        intake._ready(port)
        load_start = os.getloadavg()
        print(f"load average at start: {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f} on "
              f"{os.cpu_count()} CPUs; logs in {workdir}", flush=True)

        # 1. capacity: benchmarks/intake.py's closed-loop pool, with the worker certifying meanwhile
        capacity_began = time.perf_counter()
        measured = asyncio.run(intake._drive("intake", port, intake_request, args.clients, args.capacity_seconds,
                                             3.0, 1, 1))
        capacity = measured.rps
        print(f"intake capacity: {measured.requests} requests in {args.capacity_seconds:.0f} s with {args.clients} "
              f"clients = {capacity:.1f} requests/s ({measured.errors} errors, p50 {measured.percentile(0.5):.1f} ms, "
              f"p99 {measured.percentile(0.99):.1f} ms)", flush=True)
        completed, certified = _counts(dsn)
        drained = time.perf_counter()
        while certified < completed and time.perf_counter() - drained < args.drain:
            time.sleep(1)
            completed, certified = _counts(dsn)
        print(f"  the capacity run's {completed} certificates done {time.perf_counter() - drained:.1f} s after it "
              f"({completed - certified} outstanding): {certified / (time.perf_counter() - capacity_began):.1f} "
              f"requests/s through to their certificate, warm-up included (for comparison; the load is set from the "
              f"intake capacity)", flush=True)

        # 2. load at args.load of capacity, sampling backlog and memory every 10 s
        rate = args.rate or args.load * capacity
        print(f"load: {rate:.1f} requests/s ({rate / capacity:.0%} of capacity{', set by --rate' if args.rate else ''}) "
              f"for {args.seconds:.0f} s, {args.clients} clients", flush=True)
        with psycopg.connect(dsn, autocommit=True) as connection:
            load_began = connection.execute("SELECT now()").fetchone()[0]
        samples: list[tuple[float, float, float, int]] = []  # (t, api MiB, worker MiB, outstanding)
        stop = threading.Event()
        began = time.perf_counter()

        def sample() -> None:
            while not stop.wait(10):
                done, certs = _counts(dsn)
                samples.append((time.perf_counter() - began, intake._rss_mb(server.pid),
                                _rss_kib(worker.pid) / 1024, done - certs))
                t, api, work, behind = samples[-1]
                print(f"  t={t:5.0f} s  completed {done:7d}  certified {certs:7d}  outstanding {behind:6d}  "
                      f"API RSS {api:6.1f} MiB  worker RSS {work:6.1f} MiB  load {os.getloadavg()[0]:.2f}",
                      flush=True)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        tally = {"sent": 0, "errors": 0, "late_s": 0.0, "took": 0.0}
        asyncio.run(_paced(port, intake_request, rate, args.seconds, args.clients, tally))
        stop.set()
        sampler.join()
        completed, certified = _counts(dsn)
        backlog = completed - certified
        ended = time.perf_counter()
        while certified < completed and time.perf_counter() - ended < args.drain:
            time.sleep(1)
            completed, certified = _counts(dsn)
        drain = time.perf_counter() - ended
        delays, waiting = _delays(dsn, load_began)
        load_end = os.getloadavg()

        achieved = tally["sent"] / tally["took"]
        print(f"\nload average at end: {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}")
        print(f"sent {tally['sent']} requests in {tally['took']:.1f} s = {achieved:.1f}/s ({achieved / capacity:.0%} of "
              f"capacity), {tally['errors']} answered >= 400, at most {tally['late_s']:.1f} s behind schedule")
        print(f"backlog when the load stopped: {backlog} completed requests without a certificate; "
              f"{'the last certificate' if not waiting else 'still ' + str(len(waiting)) + ' without one'} "
              f"{drain:.1f} s later")
        if delays:
            largest = max(delays + waiting)
            print(f"completion to certificate, {len(delays)} requests completed under load: median "
                  f"{statistics.median(delays):.2f} s, p99 {_p99(delays):.2f} s, largest {largest:.2f} s"
                  f"{' (a lower bound: some never got one)' if waiting else ''} (target <= 60 s: "
                  f"{'met' if largest <= 60 and not waiting else 'MISSED'})")
        third = max(1, len(samples) // 3)
        for label, index in (("API", 1), ("worker", 2)):
            first = statistics.median(s[index] for s in samples[:third])
            last = statistics.median(s[index] for s in samples[-third:])
            print(f"{label} RSS: median {first:.1f} MiB in the first third of the load, {last:.1f} MiB in the last "
                  f"({last / first:.2f}x), max {max(s[index] for s in samples):.1f} MiB")
    finally:
        _tear_down([server, worker, redis], dbname)


def _tear_down(processes: list[subprocess.Popen | None], dbname: str) -> None:
    """Stop what a run started (SIGTERM, then SIGKILL after a minute) and drop its database."""
    for process in processes:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600.0, help="length of the load (default 600)")
    parser.add_argument("--load", type=float, default=0.8, help="fraction of the measured capacity (default 0.8)")
    parser.add_argument("--rate", type=float,
                        help="the load in requests/s instead of --load of the measured capacity (to repeat an "
                             "earlier run's load on a machine busier than it was then)")
    parser.add_argument("--direct", action="store_true",
                        help="the older mode: completions written through the ORM at a fraction of the worker's "
                             "certificate capacity, no HTTP intake")
    parser.add_argument("--burst", type=int, default=2000, help="--direct: requests in the capacity burst")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/13", help="--direct: the broker")
    parser.add_argument("--clients", type=int, default=32, help="HTTP clients, as benchmarks/intake.py (default 32)")
    parser.add_argument("--capacity-seconds", type=float, default=15.0,
                        help="length of the intake capacity measurement (default 15, after 3 s warm-up)")
    parser.add_argument("--drain", type=float, default=600.0,
                        help="how long to wait for the last certificate after the load (default 600)")
    args = parser.parse_args()
    if args.direct:
        direct(args)
    else:
        through_intake(args)


if __name__ == "__main__":
    main()
