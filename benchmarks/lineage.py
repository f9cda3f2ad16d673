"""Lineage at scale on PostgreSQL: ingest, snapshots, versions, then record/subject queries.

    nice .venv/bin/python benchmarks/lineage.py            # 1M rows, 50 snapshots (minutes)
    .venv/bin/python benchmarks/lineage.py --quick         # same path, small sizes (< 1 min)

Creates and drops its own database; prints a markdown table (and writes it with --out).
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("UNLEARND_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def _ready_client(port: int, api_key: str, keys: list[str], rng: random.Random) -> httpx.Client:
    """A client of the server on ``port`` once it answers, with its bitmap cache warmed. Waits up
    to two minutes: on a busy machine the server's imports alone have taken over 20 s."""
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {api_key}"})
    deadline = time.monotonic() + 120
    while True:
        try:
            client.get("/healthz")
            break
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    for key in rng.sample(keys, 200):
        client.get(f"/v1/lineage/records/bench/{key}").raise_for_status()
    return client


def _generate(path: Path, rows: int, subjects: int) -> None:
    rng = random.Random(7)
    schema = pa.schema([("key", pa.string()), ("email", pa.string()), ("label", pa.int64())]
                       + [(f"f{i}", pa.float64()) for i in range(8)])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, 100_000):
            n = min(100_000, rows - start)
            ids = range(start, start + n)
            columns = {"key": [f"rec{i:09d}" for i in ids], "email": [f"user{i % subjects}@example.com" for i in ids],
                       "label": [i % 10 for i in ids]}
            columns.update({f"f{j}": [rng.random() for _ in ids] for j in range(8)})
            writer.write_table(pa.table(columns, schema=schema))


def _ingest_child(dataset_id: str) -> None:
    from app.registry import service

    dataset = service.ingest_dataset(dataset_id)
    if dataset.status != "ready":
        raise SystemExit(f"ingestion failed: {dataset.error}")


def _percentiles(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return p(0.5), p(0.99), statistics.fmean(ordered) * 1000


def _paired(label: str, session_samples: list[float], read_samples: list[float],
            target: str) -> list[tuple[str, str, str]]:
    """The record query in a request's session (pre-ping, BEGIN, statement) and on the read
    engine (the statement alone), measured alternately, with the read path's ratio."""
    s50, s99, _ = _percentiles(session_samples)
    r50, r99, _ = _percentiles(read_samples)
    return [(f"{label}, request session ({len(session_samples):,})", f"p50 {s50:.2f} ms, p99 {s99:.2f} ms", ""),
            (f"{label}, read engine ({len(read_samples):,})",
             f"p50 {r50:.2f} ms, p99 {r99:.2f} ms ({r50 / s50:.2f}× / {r99 / s99:.2f}×)", target)]


class _OnTheLoop:
    """The record query as the HTTP route makes it (``read_record_lineage_async``: on the event
    loop, no worker thread), timed call by call on a loop of its own. None where the code under
    test predates it (a before run from an older checkout)."""

    def __init__(self) -> None:
        import asyncio

        from app.lineage import service as lineage

        self.call = getattr(lineage, "read_record_lineage_async", None)
        self.loop = asyncio.new_event_loop()
        self.samples: list[float] = []

    def time(self, key: str, *, keep: bool = True) -> None:
        if self.call is not None:
            t0 = time.perf_counter()
            self.loop.run_until_complete(self.call("bench", key))
            if keep:
                self.samples.append(time.perf_counter() - t0)

    def row(self, label: str, target: str) -> list[tuple[str, str, str]]:
        self.loop.close()
        if not self.samples:
            return []
        p50, p99, _ = _percentiles(self.samples)
        return [(f"{label}, on the event loop ({len(self.samples):,})", f"p50 {p50:.2f} ms, p99 {p99:.2f} ms", target)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    from sqlalchemy import select

    from app.core.database import session_scope
    from app.registry import artifacts, service
    from app.registry.models import DataRecord, Dataset
    from app.registry.schemas import ArtifactSpec

    figures: list[tuple[str, str, str]] = []
    root = service.data_root()
    root.mkdir(parents=True, exist_ok=True)
    subjects = max(1, args.rows // 5)
    rng = random.Random(11)
    if args.reused:
        with session_scope() as session:
            keys = list(session.scalars(select(DataRecord.record_key).join(Dataset).where(Dataset.name == "bench")))
        figures.append(("ingest, snapshots + versions", f"reused from database {args.db}", ""))
        return figures + _queries(args, rng, keys, subjects)
    _generate(root / "bench.parquet", args.rows, subjects)
    with session_scope() as session:
        dataset_id = service.register_dataset(
            session, name="bench", uri="bench.parquet", fmt="parquet", actor="bench",
            schema={"record_key": "key", "subject_column": "email", "identifier_type": "email", "label": "label",
                    "features": [f"f{i}" for i in range(8)]},
        ).id
    started = time.perf_counter()
    child = multiprocessing.get_context("spawn").Process(target=_ingest_child, args=(dataset_id,))
    child.start()
    child.join()
    elapsed = time.perf_counter() - started
    if child.exitcode:
        raise SystemExit("ingestion failed")
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    figures += [("ingest rows", f"{args.rows:,}", ""), ("ingest time", f"{elapsed:.1f} s", "≤ 60 s at 1M"),
                ("ingest rate", f"{args.rows / elapsed:,.0f} rows/s", "≥ 20,000 rows/s"),
                ("ingest peak RSS", f"{peak_mib:,.0f} MiB", "≤ 1024 MiB")]

    with session_scope() as session:
        ids = list(session.scalars(select(DataRecord.id).where(DataRecord.dataset_id == dataset_id)))
        keys = list(session.scalars(select(DataRecord.record_key).where(DataRecord.dataset_id == dataset_id)))
        model = service.register_model(session, name="bench-model", adapter="mlp", hyperparameters={},
                                       dataset_name="bench", policy=None, actor="bench")
    started = time.perf_counter()
    parent = None
    for i in range(args.snapshots):
        with session_scope() as session:
            snapshot = service.create_snapshot(session, dataset_id, exclude_record_ids=rng.sample(ids, len(ids) // 100))
            uri, digest = artifacts.put_bytes(f"weights {i}".encode())
            parent = service.add_version(session, model=session.merge(model), snapshot=snapshot,
                                         parent=session.merge(parent) if parent else None,
                                         artifacts=[ArtifactSpec(uri=uri, sha256=digest)], actor="bench")
    per_snapshot = (time.perf_counter() - started) / args.snapshots
    figures.append((f"{args.snapshots} snapshots + versions", f"{per_snapshot:.2f} s each", ""))
    args.built = True  # complete: a failure in the queries keeps it for the next --db run
    return figures + _queries(args, rng, keys, subjects)


def _queries(args: argparse.Namespace, rng: random.Random, keys: list[str],
             subjects: int) -> list[tuple[str, str, str]]:
    from app.core.database import get_sessionmaker, session_scope
    from app.core.hashing import subject_hash
    from app.lineage import service as lineage

    figures: list[tuple[str, str, str]] = []
    # A deployment's beat folds the lineage change log (the lineage sweep, workers/tasks/jobs.py);
    # a database built here had no beat, and its log holds 4 entries per snapshot: folded once.
    with session_scope() as session:
        lineage.compact_changes(session)
    # The million keys are this process's own: a full collection over them lands in some query.
    gc.freeze()
    sessions = get_sessionmaker()
    record_samples, subject_samples = [], []
    pepper = b"bench-pepper"
    # The service call as the intake makes it: inside a request's open session, one
    # transaction per query (the rollback between queries is not timed).
    # Alternated with the same call on the read engine (what the HTTP route uses: no pre-ping, no
    # BEGIN), so the two paths' ratio comes from the same minutes of machine load.
    read_samples: list[float] = []
    on_loop = _OnTheLoop()
    with sessions() as session:
        for phase in ("warm-up", "measure"):
            for key in rng.sample(keys, min(len(keys), args.record_queries if phase == "measure" else 200)):
                t0 = time.perf_counter()
                lineage.record_lineage(session, "bench", key)
                t1 = time.perf_counter()
                session.rollback()
                t2 = time.perf_counter()
                lineage.read_record_lineage("bench", key)
                if phase == "measure":
                    record_samples.append(t1 - t0)
                    read_samples.append(time.perf_counter() - t2)
                on_loop.time(key, keep=phase == "measure")
        for n in rng.sample(range(subjects), min(subjects, args.subject_queries)):
            hashed = subject_hash("email", f"user{n}@example.com", pepper)
            t0 = time.perf_counter()
            found = lineage.subject_lineage(session, hashed)
            subject_samples.append(time.perf_counter() - t0)
            session.rollback()
            assert found.records, "subject queries must find records"
    figures += _paired("record query, service", record_samples, read_samples, "p99 ≤ 5 ms")
    figures += on_loop.row("record query, service", "p99 ≤ 5 ms")
    p50, p99, _ = _percentiles(subject_samples)
    figures.append((f"subject query, service ({len(subject_samples):,})", f"p50 {p50:.2f} ms, p99 {p99:.2f} ms", ""))
    figures += _http(args, rng, keys, subjects)
    figures += _under_intake_load(args, rng, keys, subjects)
    return figures


def _http(args: argparse.Namespace, rng: random.Random, keys: list[str], subjects: int) -> list[tuple[str, str, str]]:
    from app.clients.service import create_client
    from app.core.database import session_scope

    with session_scope() as session:
        # Raw-identifier subject lookups are admin only, and rate limited per key: lifted here.
        api_key = create_client(session, name="bench", role="admin").api_key
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--port", str(port), "--log-level",
         "warning"], cwd=ROOT, env={**os.environ, "UNLEARND_SUBJECT_LOOKUPS_PER_MINUTE": "1000000"},
    )
    try:
        client = _ready_client(port, api_key, keys, rng)
        record, subject = [], []
        for key in rng.sample(keys, min(len(keys), args.record_queries)):
            t0 = time.perf_counter()
            client.get(f"/v1/lineage/records/bench/{key}").raise_for_status()
            record.append(time.perf_counter() - t0)
        for n in rng.sample(range(subjects), min(subjects, args.subject_queries)):
            t0 = time.perf_counter()
            client.post("/v1/lineage/subjects",
                        json={"identifier_type": "email", "identifier": f"user{n}@example.com"}).raise_for_status()
            subject.append(time.perf_counter() - t0)
    finally:
        server.terminate()
        server.wait(timeout=20)
    p50, p99, _ = _percentiles(record)
    rows = [(f"record query, HTTP ({len(record):,})", f"p50 {p50:.2f} ms, p99 {p99:.2f} ms", "p99 ≤ 20 ms")]
    p50, p99, _ = _percentiles(subject)
    rows.append((f"subject query, HTTP ({len(subject):,})", f"p50 {p50:.2f} ms, p99 {p99:.2f} ms", ""))
    return rows


def _intake_load(port: int, api_key: str, subjects: int, rate: float | None, seconds: float, done: Any) -> None:
    """Submit deletion requests (existing subjects, so each resolves through lineage) for
    ``seconds``: flat out with 16 connections when ``rate`` is None, else paced at ``rate``
    per second. Puts the number answered 2xx on ``done``."""
    import asyncio
    import itertools

    async def drive() -> int:
        ok = 0
        counter = itertools.count()
        start = time.perf_counter()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60,
                                     headers={"Authorization": f"Bearer {api_key}"}) as client:
            async def worker() -> None:
                nonlocal ok
                while (now := time.perf_counter()) < start + seconds:
                    n = next(counter)
                    if rate is not None and (due := start + n / rate) > now:
                        await asyncio.sleep(due - now)
                    body = {"subject": [{"type": "email", "value": f"user{n % subjects}@example.com"}],
                            "legal_basis": "gdpr_art17"}
                    response = await client.post("/v1/deletion-requests", json=body,
                                                 headers={"Idempotency-Key": f"load-{os.getpid()}-{n}"})
                    ok += response.status_code < 300
            await asyncio.gather(*(worker() for _ in range(16)))
        return ok

    done.put(asyncio.run(drive()))


def _under_intake_load(args: argparse.Namespace, rng: random.Random, keys: list[str],
                       subjects: int) -> list[tuple[str, str, str]]:
    """Record queries while intake runs at half the capacity measured in the same run, against
    the same API process; with ``--read-process`` the HTTP queries go to a second API process
    instead (a deployment routing lineage reads to API processes of their own; same machine,
    same intake).

    Each path is timed back to back in a phase of its own (read engine, request session, on the
    event loop, HTTP), then all four alternating, as this benchmark timed them before 2026-12-04.
    Alternating, each path's connection (and its PostgreSQL backend) sits idle while the three
    others run, some 5 ms, so every query wakes a process the scheduler has set aside on a busy
    2-core machine: that phase's figures are the latency of a sporadic read, and are printed
    beside the back-to-back ones, with no target of their own."""
    from app.clients.service import create_client
    from app.core.database import get_sessionmaker, session_scope
    from app.lineage import service as lineage

    with session_scope() as session:
        portal_key = create_client(session, name="bench-load", role="portal").api_key
        ml_key = create_client(session, name="bench-reader", role="ml").api_key
    port = _free_port()
    read_port = _free_port() if args.read_process else port
    servers = [subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--port", str(p), "--log-level",
         "warning"], cwd=ROOT, env=os.environ.copy(),
    ) for p in sorted({port, read_port})]
    context = multiprocessing.get_context("spawn")
    phase_seconds = args.load_seconds
    try:
        client = _ready_client(read_port, ml_key, keys, rng)
        done = context.Queue()
        probe = context.Process(target=_intake_load, args=(port, portal_key, subjects, None, args.load_seconds, done))
        probe.start()
        capacity = done.get() / args.load_seconds
        probe.join()
        rate = capacity / 2
        window = 1 + 5 * phase_seconds + 1
        load = context.Process(target=_intake_load, args=(port, portal_key, subjects, rate, window, done))
        load.start()
        time.sleep(1)  # let the load reach its pace
        on_loop = _OnTheLoop()
        on_loop.time(keys[0], keep=False)  # its connection
        sessions = get_sessionmaker()
        with sessions() as session:
            def in_session(key: str) -> None:
                lineage.record_lineage(session, "bench", key)

            def over_http(key: str) -> None:
                client.get(f"/v1/lineage/records/bench/{key}").raise_for_status()

            paths = {"read engine": lambda key: lineage.read_record_lineage("bench", key),
                     "request session": in_session, "on the event loop": lambda key: on_loop.time(key, keep=False),
                     "HTTP": over_http}
            alone = {name: _back_to_back(call, keys, rng, phase_seconds, session) for name, call in paths.items()}
            together: dict[str, list[float]] = {name: [] for name in paths}
            ends = time.perf_counter() + phase_seconds
            while time.perf_counter() < ends:
                for name, call in paths.items():
                    together[name] += _back_to_back(call, keys, rng, 0.0, session)
        achieved = done.get() / window
        load.join()
        on_loop.loop.close()
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=20)
    http = "HTTP, reads on an API process of their own" if args.read_process else "HTTP"
    targets = {"read engine": "p99 ≤ 5 ms", "on the event loop": "p99 ≤ 5 ms", "HTTP": "p99 ≤ 20 ms",
               "request session": ""}
    rows = [("intake capacity (same API process, 16 connections)", f"{capacity:.0f} req/s", ""),
            ("intake load during the queries", f"{achieved:.0f} req/s (target {rate:.0f}, half)", "")]
    for name, samples in alone.items():
        p50, p99, _ = _percentiles(samples)
        label = http if name == "HTTP" else f"service, {name}"
        rows.append((f"record query under intake load, {label}, back to back ({len(samples):,})",
                     f"p50 {p50:.2f} ms, p99 {p99:.2f} ms", targets[name]))
    for name, samples in together.items():
        p50, p99, _ = _percentiles(samples)
        label = http if name == "HTTP" else f"service, {name}"
        rows.append((f"record query under intake load, {label}, alternating with the others ({len(samples):,})",
                     f"p50 {p50:.2f} ms, p99 {p99:.2f} ms", "(sporadic reads: no target)"))
    return rows


def _back_to_back(call: Any, keys: list[str], rng: random.Random, seconds: float, session: Any) -> list[float]:
    """Times ``call`` on random keys, one after the other, for ``seconds`` (once when 0); the
    request session's transaction is ended between calls, untimed."""
    samples: list[float] = []
    ends = time.perf_counter() + seconds
    while True:
        key = rng.choice(keys)
        t0 = time.perf_counter()
        call(key)
        samples.append(time.perf_counter() - t0)
        session.rollback()
        if time.perf_counter() >= ends:
            return samples


def _drop(dbname: str, workdir: str) -> None:
    from app.core.database import get_engine

    get_engine().dispose()
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    subprocess.run(["rm", "-rf", workdir], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, same code path")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    parser.add_argument("--read-process", action="store_true",
                        help="under intake load, send the HTTP record queries to a second API process")
    parser.add_argument("--db", help="keep the database under this name, and reuse it (no generation, ingest or "
                                     "snapshots) when it already exists; drop it yourself when done")
    args = parser.parse_args()
    args.rows, args.snapshots = (20_000, 5) if args.quick else (1_000_000, 50)
    args.record_queries, args.subject_queries = (500, 100) if args.quick else (10_000, 1_000)
    args.load_seconds = 4.0 if args.quick else 10.0

    args.built = False
    dbname = args.db or f"bench_lineage_{os.getpid()}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        args.reused = bool(args.db) and conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                                     (dbname,)).fetchone() is not None
        if not args.reused:
            conn.execute(f'CREATE DATABASE "{dbname}"')
    if args.db:
        workdir = os.path.join(tempfile.gettempdir(), f"unlearnd-bench-{dbname}")
        os.makedirs(workdir, exist_ok=True)
    else:
        workdir = tempfile.mkdtemp(prefix="unlearnd-bench-")
    url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{dbname}"
    os.environ.update({"UNLEARND_DATABASE_URL": url, "UNLEARND_DATA_DIR": workdir,
                       "UNLEARND_SUBJECT_PEPPER": "bench-pepper", "UNLEARND_LOG_LEVEL": "WARNING",
                       "UNLEARND_BROKER_URL": os.environ.get("UNLEARND_BENCH_BROKER", "redis://127.0.0.1:6379/11")})
    try:
        from app.core import migrate

        migrate.upgrade(url)
        figures = run(args)
    except BaseException:
        if args.db and not args.reused and not args.built:  # half filled: the next run must not take it as ready
            _drop(dbname, workdir)
        raise
    finally:
        from app.core.database import get_engine

        get_engine().dispose()
        if not args.db:
            _drop(dbname, workdir)
    table = ["| measure | result | target |", "| --- | --- | --- |"]
    table += [f"| {name} | {value} | {target} |" for name, value, target in figures]
    text = f"lineage benchmark ({'quick' if args.quick else 'full'}, PostgreSQL)\n\n" + "\n".join(table) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
