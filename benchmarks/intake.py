"""Intake and bulk intake against a bare one-row-insert FastAPI endpoint, on PostgreSQL;
then the light faces: `unlearnd --help`, `unlearnd requests list`, an idle API process's RSS.

    nice .venv/bin/python benchmarks/intake.py            # 32 clients, 15 s per endpoint
    nice .venv/bin/python benchmarks/intake.py --quick    # same path, 4 s per endpoint
    .venv/bin/python benchmarks/intake.py --only "bulk intake" --processes 1 --runs 5   # bulk: median of 5

Every server runs under uvicorn (production settings) with the same number of processes
(1, then 2) against one fresh database; the load generator is a plain asyncio HTTP/1.1
keep-alive client, so it costs as little CPU as possible on a machine it shares with the
server and PostgreSQL. Each intake request is a valid GDPR request with a distinct
Idempotency-Key and subject; bulk intake sends batches of such requests (each item with its
own idempotency_key) to POST /v1/deletion-requests/batch and counts items. Answered is not
done: each request's audit event must also be chained (a single intake's by the API's sealer
after the response, a batch's by the batch's own transaction), so the audit log is read at the
window's start and close, and polled afterwards until nothing is pending; bulk intake's figure
is the lower of the answered and the chained rates.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from fastapi import FastAPI
from sqlalchemy import JSON, Column, DateTime, MetaData, String, Table, insert

from app.api.deps import SessionDep
from app.core.database import new_id, utcnow

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
BARE_TABLE = "bench_bare_rows"


def bare_app() -> FastAPI:
    """The yardstick: validate a JSON body, insert it as one row, commit, answer 202."""
    rows = Table(BARE_TABLE, MetaData(), Column("id", String(36), primary_key=True), Column("body", JSON),
                 Column("created_at", DateTime(timezone=True)))
    app = FastAPI()

    @app.post("/bare", status_code=202)
    def bare(body: dict, session: SessionDep) -> dict:
        row_id = new_id()
        session.execute(insert(rows).values(id=row_id, body=body, created_at=utcnow()))
        return {"id": row_id}

    return app


@dataclass
class Result:
    name: str
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    processes: int = 1
    per_call: int = 1  # requests each HTTP call carries (a batch's items)
    # CPU seconds over the whole drive (warm-up included) and the requests it completed:
    # the server's processes, PostgreSQL's, and this load generator's.
    cpu: dict[str, float] = field(default_factory=dict)
    completed: int = 0
    # The audit chain (intake and bulk: one event per request): events chained inside the
    # window, events still pending when it closed, and how long after its close the API's
    # sealer had chained every one of them.
    chained: int | None = None
    pending_at_stop: int | None = None
    caught_up_after: float | None = None

    @property
    def chained_per_second(self) -> float | None:
        return None if self.chained is None else self.chained / self.seconds

    def cpu_ms_per_request(self, part: str) -> float:
        return 1000 * self.cpu.get(part, float("nan")) / max(1, self.completed)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """Send one request on a keep-alive connection and read its answer; its status code."""
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    await reader.readexactly(length)
    return int(head[9:12])


async def _client(port: int, make_request, stop_at: float, warm_until: float, result: Result) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while (now := time.perf_counter()) < stop_at:
            status = await _exchange(reader, writer, make_request())
            done = time.perf_counter()
            result.completed += result.per_call
            # Counted by completion inside the measured window: a bulk call started in the
            # warm-up and answered inside the window counts, one answered after it does not.
            if warm_until <= done <= stop_at:
                result.latencies_ms.append((done - now) * 1000)
                result.requests += result.per_call
                if status >= 400:
                    result.errors += result.per_call
    finally:
        writer.close()


async def _drive(name: str, port: int, make_request, clients: int, seconds: float, warmup: float,
                 processes: int, per_call: int, chain_dsn: str | None = None) -> Result:
    """``chain_dsn``: the API's database, whose audit chain is read at the window's start and
    end and then polled until every pending event is chained (see ``Result.chained``)."""
    result = Result(name, 0, 0, seconds, [], processes, per_call)
    start = time.perf_counter()
    clients_done = asyncio.gather(*(
        _client(port, make_request, start + warmup + seconds, start + warmup, result) for _ in range(clients)
    ))
    if chain_dsn is None:
        await clients_done
        return result
    await asyncio.sleep(max(0.0, start + warmup - time.perf_counter()))
    first, _ = await asyncio.to_thread(_chain_state, chain_dsn)
    await asyncio.sleep(max(0.0, start + warmup + seconds - time.perf_counter()))
    last, result.pending_at_stop = await asyncio.to_thread(_chain_state, chain_dsn)
    stopped = time.perf_counter()
    result.chained = last - first
    await clients_done
    while (pending := (await asyncio.to_thread(_chain_state, chain_dsn))[1]) and time.perf_counter() - stopped < 300:
        await asyncio.sleep(0.1)
    result.caught_up_after = time.perf_counter() - stopped if not pending else float("inf")
    return result


def _chain_state(dsn: str) -> tuple[int, int]:
    """(events chained, events pending) in the audit log."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        chained, pending = conn.execute(
            "SELECT (SELECT coalesce(max(seq), 0) FROM audit_events), (SELECT count(*) FROM audit_pending_events)"
        ).fetchone()
    return int(chained), int(pending)


def _post(path: str, body: dict, headers: dict[str, str]) -> bytes:
    payload = json.dumps(body).encode()
    lines = [f"POST {path} HTTP/1.1", "Host: bench", "Content-Type: application/json",
             f"Content-Length: {len(payload)}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def _intake_body(n: str) -> dict:
    return {
        "subject": [{"type": "email", "value": f"bench-{n}@example.org"}],
        "legal_basis": "gdpr_art17",
        "jurisdiction": "EU",
        "external_ref": f"bench-{n}",
        "identity_verification": {"method": "email_link"},
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(target: str, env: dict[str, str], log: Path, processes: int = 1) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    command = [sys.executable, "-m", "uvicorn", "--factory", target, "--port", str(port), "--no-access-log",
               "--log-level", "warning", "--loop", "uvloop", "--http", "httptools", "--workers", str(processes)]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180  # a shared, loaded machine starts processes slowly
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return process, port
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{target} did not start; see {log}")


def _ready(port: int, path: str = "/healthz") -> None:
    """Wait until every process answers (uvicorn's workers bind one socket; a few calls reach each)."""
    for _ in range(300):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
                if sock.recv(12).startswith(b"HTTP/1.1 "):
                    return
        except OSError:
            pass
        time.sleep(0.1)


def _median_seconds(command: list[str], env: dict[str, str], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _rss_mb(pid: int) -> float:
    """Resident set of a process and its children (uvicorn's one worker runs in the parent)."""
    total = 0
    for candidate in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{candidate}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def _cpu_seconds(server_pid: int) -> dict[str, float]:
    """CPU seconds used so far by the server (its processes), PostgreSQL (every process of the
    cluster: the bench database's backends, the WAL writer, checkpointer), and this process."""
    tick = os.sysconf("SC_CLK_TCK")
    parts = {"server": 0.0, "postgres": 0.0, "client": 0.0}
    server = {server_pid, *_children(server_pid)}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            name = (entry / "comm").read_text().strip()
        except OSError:
            continue
        pid, seconds = int(entry.name), (int(fields[11]) + int(fields[12])) / tick
        if pid in server:
            parts["server"] += seconds
        elif pid == os.getpid():
            parts["client"] += seconds
        elif name.startswith("postgres") or name.startswith("postmaster"):
            parts["postgres"] += seconds
    return parts


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def light_faces(env: dict[str, str]) -> dict[str, float]:
    """`unlearnd --help`, `unlearnd requests list` on the embedded default (fresh data dir,
    SQLite), median of 5, and an idle API process's RSS after it answered a few calls."""
    unlearnd = str(Path(sys.executable).parent / "unlearnd")
    workdir = Path(tempfile.mkdtemp(prefix="unlearnd-light-"))
    embedded = {k: v for k, v in os.environ.items() if not k.startswith("UNLEARND_")}
    embedded["UNLEARND_DATA_DIR"] = str(workdir / "var")
    (workdir / "var").mkdir()
    subprocess.run([unlearnd, "db", "upgrade"], cwd=workdir, env=embedded, check=True, capture_output=True)
    figures = {
        "unlearnd --help (s)": _median_seconds([unlearnd, "--help"], embedded),
        "unlearnd requests list (s)": _median_seconds([unlearnd, "requests", "list"], embedded),
    }
    log = workdir / "api.log"
    server, port = _serve("app.main:create_app", env, log)
    try:
        for _ in range(5):
            _ready(port)
        time.sleep(2)
        figures["API idle RSS (MB)"] = _rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=10)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs: a smoke check with the same shape")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float)
    # A portal's sweep sends the endpoint's maximum per call; the per-call costs (statements,
    # commit, HTTP) weigh ten times more per request at 100 (try --batch-size 100).
    parser.add_argument("--batch-size", type=int, default=1000, help="items per bulk call (default: the endpoint's maximum)")
    parser.add_argument("--processes", default="1,2", help="server processes to try, comma-separated")
    # The machine's speed moves by a quarter within minutes: one window is one draw of it.
    parser.add_argument("--runs", type=int, default=1,
                        help="bulk intake windows per process count, each on a fresh server; the headline quotes "
                             "their median")
    parser.add_argument("--only", default="bare insert,intake,bulk intake",
                        help="endpoints to run, comma-separated; ratios and the light faces only with all three")
    args = parser.parse_args()
    clients = args.clients
    seconds = args.seconds or (4.0 if args.quick else 15.0)
    warmup = 1.0 if args.quick else 3.0
    process_counts = [int(p) for p in args.processes.split(",")]

    dbname = f"unlearnd_bench_{os.getpid()}"
    workdir = Path(tempfile.mkdtemp(prefix="unlearnd-bench-"))
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{dbname}"
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'benchmarks'}",
        "UNLEARND_MODE": "production",
        "UNLEARND_DATABASE_URL": url,
        "UNLEARND_BROKER_URL": "redis://127.0.0.1:6379/12",
        "UNLEARND_SUBJECT_PEPPER": uuid.uuid4().hex,
        "UNLEARND_SIGNING_KEY_PATH": str(workdir / "signing_key.pem"),
        "UNLEARND_DATA_DIR": str(workdir),
        "UNLEARND_LOG_LEVEL": "WARNING",
    }
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    try:
        os.environ.update({k: v for k, v in env.items() if k.startswith("UNLEARND_")})
        from app.clients.service import create_client
        from app.core import migrate
        from app.core.database import session_scope

        migrate.upgrade(url)
        chain_dsn = PG_ADMIN.rsplit("/", 1)[0] + f"/{dbname}"
        with psycopg.connect(chain_dsn, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE {BARE_TABLE} (id varchar(36) PRIMARY KEY, body json, created_at timestamptz)")
        with session_scope() as session:
            key = create_client(session, name="bench-portal", role="portal").api_key

        log = workdir / "servers.log"
        results: list[Result] = []
        counter = iter(range(10**9))
        auth = {"Authorization": f"Bearer {key}"}

        def intake_request() -> bytes:
            n = f"{os.getpid()}-{next(counter)}"
            return _post("/v1/deletion-requests", _intake_body(n), {**auth, "Idempotency-Key": f"bench-{n}"})

        def bulk_request() -> bytes:
            items = []
            for _ in range(args.batch_size):
                n = f"{os.getpid()}-{next(counter)}"
                items.append({**_intake_body(n), "idempotency_key": f"bench-{n}"})
            return _post("/v1/deletion-requests/batch", {"requests": items}, auth)

        def bare_request() -> bytes:
            return _post("/bare", _intake_body(f"{os.getpid()}-{next(counter)}"), {})

        for processes in process_counts:
            for name, target, make_request, per_call in (
                ("bare insert", "intake:bare_app", bare_request, 1),
                ("intake", "app.main:create_app", intake_request, 1),
                ("bulk intake", "app.main:create_app", bulk_request, args.batch_size),
            ):
                if name not in args.only.split(","):
                    continue
                for _ in range(args.runs if name == "bulk intake" else 1):
                    print(f"{name}, {processes} process(es)...", file=sys.stderr, flush=True)
                    server, port = _serve(target, env, log, processes)
                    try:
                        _ready(port, "/openapi.json" if target.startswith("intake") else "/healthz")
                        before = _cpu_seconds(server.pid)
                        result = asyncio.run(_drive(name, port, make_request, clients, seconds, warmup, processes,
                                                    per_call, None if name == "bare insert" else chain_dsn))
                        after = _cpu_seconds(server.pid)
                        result.cpu = {part: after[part] - before.get(part, 0.0) for part in after}
                        results.append(result)
                    finally:
                        server.terminate()
                        server.wait(timeout=30)
        _report(results, clients, seconds, warmup, args.batch_size, process_counts)
        light = light_faces(env) if len({r.name for r in results}) == 3 else {}
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')

    if not light:
        return
    print("\n| light faces (median of 5; RSS once idle) | value | target |\n|---|---:|---:|")
    targets = {"unlearnd --help (s)": "<= 0.5", "unlearnd requests list (s)": "<= 1.0", "API idle RSS (MB)": "<= 150"}
    for label, value in light.items():
        print(f"| {label} | {value:.2f} | {targets[label]} |")


def _median_run(runs: list[Result]) -> Result:
    """The run whose throughput is the median of ``runs`` (the lower middle one of an even count)."""
    return sorted(runs, key=lambda r: r.rps)[(len(runs) - 1) // 2]


def _report(results: list[Result], clients: int, seconds: float, warmup: float, batch_size: int,
            process_counts: list[int]) -> None:
    print(f"\n{clients} concurrent clients, {seconds:.0f} s per endpoint after {warmup:.0f} s warm-up, PostgreSQL, "
          f"uvicorn with the same number of processes for each endpoint, load generator on the same machine; "
          f"bulk: {batch_size} requests per call, latency per call\n")
    print("| endpoint | processes | requests | errors | req/s | p50 ms | p99 ms | CPU ms per request: server / PostgreSQL / client |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r.name} | {r.processes} | {r.requests} | {r.errors} | {r.rps:.0f} | {r.percentile(0.5):.1f} "
              f"| {r.percentile(0.99):.1f} | {r.cpu_ms_per_request('server'):.2f} / "
              f"{r.cpu_ms_per_request('postgres'):.2f} / {r.cpu_ms_per_request('client'):.2f} |")
    chained = [r for r in results if r.chained is not None]
    if chained:
        print("\n| audit chain (one event per request) | processes | chained/s in the window | pending at its close "
              "| all chained after its close (s) |\n|---|---:|---:|---:|---:|")
        for r in chained:
            print(f"| {r.name} | {r.processes} | {r.chained_per_second:.0f} | {r.pending_at_stop} "
                  f"| {r.caught_up_after:.1f} |")
    print("\n| ratio vs bare insert, same run | processes | value | target |\n|---|---:|---:|---:|")
    for processes in process_counts:
        by_name = {name: _median_run([r for r in results if r.processes == processes and r.name == name])
                   for name in {r.name for r in results if r.processes == processes}}
        bare, intake, bulk = (by_name.get(name) for name in ("bare insert", "intake", "bulk intake"))
        if bare is None:  # --only without the yardstick: no ratios
            continue
        if intake is not None:
            print(f"| intake throughput | {processes} | {intake.rps / bare.rps:.2f} | >= 0.80 |")
            print(f"| intake p99 latency | {processes} | {intake.percentile(0.99) / bare.percentile(0.99):.2f} "
                  f"| <= 1.50 |")
            print(f"| intake median latency | {processes} | "
                  f"{statistics.median(intake.latencies_ms) / statistics.median(bare.latencies_ms):.2f} | |")
            print(f"| intake server CPU per request | {processes} | "
                  f"{intake.cpu_ms_per_request('server') / bare.cpu_ms_per_request('server'):.2f} | |")
        if bulk is not None:
            print(f"| bulk intake throughput | {processes} | {bulk.rps / bare.rps:.2f} | |")
    one = [r for r in results if r.name == "bulk intake" and r.processes == 1]
    if one:
        # Answered is not done: each request's audit event must be chained too. The lower of the
        # two rates is what the process sustains.
        sustained = [min(r.rps, r.chained_per_second) for r in one]
        print(f"\n| bulk intake, one process, {one[0].per_call} requests per call | value | target |\n|---|---:|---:|\n"
              f"| requests/s answered | {'; '.join(f'{r.rps:.0f}' for r in one)} | |\n"
              f"| requests/s chained in the audit log | {'; '.join(f'{r.chained_per_second:.0f}' for r in one)} | |")
        if len(one) > 1:
            print(f"| requests/s sustained (the lower), each run | {'; '.join(f'{v:.0f}' for v in sustained)} | |")
        label = f"median of {len(one)} runs" if len(one) > 1 else "the lower"
        print(f"| requests/s sustained ({label}) | {statistics.median(sustained):.0f} | >= 5000 |")


if __name__ == "__main__":
    main()
