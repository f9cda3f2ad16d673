"""Intake throughput against a bare one-row-insert FastAPI endpoint, on PostgreSQL.

    nice .venv/bin/python benchmarks/intake.py            # 32 clients, 20 s per endpoint
    nice .venv/bin/python benchmarks/intake.py --quick    # same path, small and short

Both servers run under uvicorn (one process, production settings) against one fresh
database; the load generator is a plain asyncio HTTP/1.1 keep-alive client, so it costs
as little CPU as possible on a machine it shares with the server and PostgreSQL.
Each intake request is a valid GDPR request with a distinct Idempotency-Key and subject.
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
from dataclasses import dataclass
from pathlib import Path

import psycopg
from fastapi import FastAPI
from sqlalchemy import JSON, Column, DateTime, MetaData, String, Table, insert

from app.core.database import SessionDep, new_id, utcnow

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

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def _client(port: int, make_request, stop_at: float, warm_until: float, result: Result) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while (now := time.perf_counter()) < stop_at:
            writer.write(make_request())
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = next(
                int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
            )
            await reader.readexactly(length)
            if now >= warm_until:
                result.latencies_ms.append((time.perf_counter() - now) * 1000)
                result.requests += 1
                if status >= 400:
                    result.errors += 1
    finally:
        writer.close()


async def _drive(name: str, port: int, make_request, clients: int, seconds: float, warmup: float) -> Result:
    result = Result(name, 0, 0, seconds, [])
    start = time.perf_counter()
    await asyncio.gather(*(
        _client(port, make_request, start + warmup + seconds, start + warmup, result) for _ in range(clients)
    ))
    return result


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


def _serve(target: str, env: dict[str, str], log: Path) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    command = [sys.executable, "-m", "uvicorn", "--factory", target, "--port", str(port), "--no-access-log",
               "--log-level", "warning", "--loop", "uvloop", "--http", "httptools"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return process, port
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{target} did not start; see {log}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small and short: a smoke check")
    parser.add_argument("--clients", type=int)
    parser.add_argument("--seconds", type=float)
    args = parser.parse_args()
    clients = args.clients or (8 if args.quick else 32)
    seconds = args.seconds or (3.0 if args.quick else 20.0)
    warmup = 1.0 if args.quick else 3.0

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
        "UNLEARND_LOG_LEVEL": "INFO",
    }
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    try:
        os.environ.update({k: v for k, v in env.items() if k.startswith("UNLEARND_")})
        from app.clients.service import create_client
        from app.core import migrate
        from app.core.database import session_scope

        migrate.upgrade(url)
        with psycopg.connect(PG_ADMIN.rsplit("/", 1)[0] + f"/{dbname}", autocommit=True) as conn:
            conn.execute(f"CREATE TABLE {BARE_TABLE} (id varchar(36) PRIMARY KEY, body json, created_at timestamptz)")
        with session_scope() as session:
            key = create_client(session, name="bench-portal", role="portal").api_key

        log = workdir / "servers.log"
        results = []
        counter = iter(range(10**9))
        auth = {"Authorization": f"Bearer {key}"}

        def intake_request() -> bytes:
            n = f"{os.getpid()}-{next(counter)}"
            return _post("/v1/deletion-requests", _intake_body(n), {**auth, "Idempotency-Key": f"bench-{n}"})

        def bare_request() -> bytes:
            return _post("/bare", _intake_body(f"{os.getpid()}-{next(counter)}"), {})

        for name, target, make_request in (
            ("bare insert", "intake:bare_app", bare_request),
            ("intake", "app.main:create_app", intake_request),
        ):
            server, port = _serve(target, env, log)
            try:
                results.append(asyncio.run(_drive(name, port, make_request, clients, seconds, warmup)))
            finally:
                server.terminate()
                server.wait(timeout=10)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')

    bare, intake = results
    print(f"\n{clients} concurrent clients, {seconds:.0f} s per endpoint after {warmup:.0f} s warm-up, "
          f"PostgreSQL, one uvicorn process each, load generator on the same machine\n")
    print("| endpoint | requests | errors | req/s | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r.name} | {r.requests} | {r.errors} | {r.rps:.0f} | {r.percentile(0.5):.1f} | {r.percentile(0.99):.1f} |")
    print("\n| ratio (intake / bare) | value | target |\n|---|---:|---:|")
    print(f"| throughput | {intake.rps / bare.rps:.2f} | >= 0.80 |")
    print(f"| p99 latency | {intake.percentile(0.99) / bare.percentile(0.99):.2f} | <= 1.25 |")
    print(f"| median latency | {statistics.median(intake.latencies_ms) / statistics.median(bare.latencies_ms):.2f} | |")


if __name__ == "__main__":
    main()
