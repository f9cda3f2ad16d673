"""Reads that leave out a large set of requests: the certificate sweep and a model's pending requests.

    nice .venv/bin/python benchmarks/exclusion_reads.py              # 300,000 certified requests
    nice .venv/bin/python benchmarks/exclusion_reads.py --held 50000  # smaller (say so when quoting it)

A fresh PostgreSQL database (created and dropped here), migrated, then filled with SQL: ``--held``
completed requests, each certified and each held by one of 300 succeeded unlearning jobs of one
model, and 2,000 requests of that model awaiting unlearning; VACUUM ANALYZE, as autovacuum would.
Then, through the service functions the workers call:

- the sweep's read of the requests still waiting for a certificate
  (``certificates.service.requests_missing_certificates``, limit 100; none are waiting);
- the planner's read of a model's pending requests, less those its jobs hold
  (``jobs.scheduling._pending``, first 50 and all 2,000).

Each read's statement is also timed raw (psycopg, rows fetched, no ORM objects), and so is the
baseline, in the same run and database: each statement as it was written before (``NOT IN`` over a subquery
of every certificate, or of every request the model's jobs held), run as SQL under a
``statement_timeout`` (``--timeout``, default 60 s); a read cut off by it prints as "> timeout".
Medians of ``--runs`` (21; the baseline once, it takes seconds to minutes).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import psycopg

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"

FILL = """
SET session_replication_role = replica;  -- foreign keys name rows this benchmark does not write
INSERT INTO api_clients (id, name, role, key_id, key_hash, requires_approval, created_at)
VALUES ('client', 'bench', 'portal', 'k', 'h', false, now());
INSERT INTO deletion_requests (id, client_id, request_hash, subject_hashes, record_refs, legal_basis, scope,
                               requested_at, received_at, due_at, status, provenance, affected, updated_at,
                               completed_at, certified_at)
SELECT md5('held' || g)::uuid::text, 'client', md5(g::text), '[]', '[]', 'gdpr', '{}', now(), now(), now(),
       'completed', '{}', '{}', now(), now() - (g || ' seconds')::interval, now()
FROM generate_series(1, :held) g;
INSERT INTO certificates (id, request_id, document, signature, key_id, issued_at)
SELECT md5('cert' || id)::uuid::text, id, '{}', 's', 'k', now() FROM deletion_requests;
INSERT INTO unlearning_jobs (id, kind, model_id, method, status, progress, forget_count, attempts, max_attempts,
                             report, cost_units, created_by, created_at)
SELECT 'job' || g, 'unlearn', 'model', 'scrub', 'succeeded', 1, 1000, 1, 3, '{}', 1, 'bench', now()
FROM generate_series(0, 299) g;
INSERT INTO unlearning_job_requests (job_id, request_id)
SELECT 'job' || (row_number() OVER () % 300), id FROM deletion_requests;
INSERT INTO deletion_requests (id, client_id, request_hash, subject_hashes, record_refs, legal_basis, scope,
                               requested_at, received_at, due_at, status, provenance, affected, updated_at)
SELECT md5('pending' || g)::uuid::text, 'client', md5('p' || g), '[]', '[]', 'gdpr', '{}', now(), now(), now(),
       'scheduled', '{}', '{}', now()
FROM generate_series(1, 2000) g;
INSERT INTO deletion_request_model_versions (request_id, version_id, model_id)
SELECT id, 'version', 'model' FROM deletion_requests;
"""

# The statements as written now (``not_among``, ``certified_at``), timed raw like the old ones.
NEW_SWEEP = ("SELECT id, completed_at FROM deletion_requests WHERE status = 'completed' AND certified_at IS NULL "
             "ORDER BY completed_at, id LIMIT 500")
OLD_SWEEP = ("SELECT id FROM deletion_requests WHERE status = 'completed' AND id NOT IN "
             "(SELECT request_id FROM certificates) ORDER BY completed_at LIMIT 100")
OLD_PENDING = ("SELECT * FROM deletion_requests WHERE status IN ('scheduled', 'unlearning', 'verifying') "
               "AND EXISTS (SELECT 1 FROM deletion_request_model_versions v WHERE v.request_id = deletion_requests.id "
               "AND v.model_id = 'model') AND id NOT IN (SELECT r.request_id FROM unlearning_job_requests r "
               "JOIN unlearning_jobs j ON j.id = r.job_id WHERE j.model_id = 'model' AND j.kind = 'unlearn' "
               "AND j.status IN ('queued', 'running', 'succeeded'))")
NEW_PENDING = OLD_PENDING.replace("AND id NOT IN (SELECT r.request_id", "AND NOT EXISTS (SELECT 1 FROM (SELECT r.request_id")[:-1] \
    + ") AS held WHERE held.request_id = deletion_requests.id)"


def _median_ms(call, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def _statement_ms(url: str, sql: str, timeout_s: int, runs: int = 1) -> float | None:
    """Median of ``runs`` runs of the statement, rows fetched; None when the timeout cut it off."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"SET statement_timeout = '{timeout_s}s'")
        try:
            return _median_ms(lambda: conn.execute(sql).fetchall(), runs)
        except psycopg.errors.QueryCanceled:
            return None


def run(url: str, args: argparse.Namespace) -> list[tuple[str, float, float | None]]:
    from app.certificates.service import requests_missing_certificates
    from app.core.database import session_scope
    from app.jobs.scheduling import _pending

    plain = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        started = time.perf_counter()
        conn.execute(FILL.replace(":held", str(int(args.held))))
        conn.execute("VACUUM ANALYZE")
        print(f"filled {args.held:,} certified, held requests and 2,000 pending in {time.perf_counter() - started:.1f} s")

    def timed(read) -> float:
        def call() -> None:
            with session_scope() as session:
                read(session)
        return _median_ms(call, args.runs)

    with session_scope() as session:
        assert requests_missing_certificates(session, limit=100) == []
        assert len(_pending(session, "model", limit=None)) == 2000
    def statements(new: str, old: str) -> tuple[float | None, float | None]:
        return _statement_ms(plain, new, args.timeout, args.runs), _statement_ms(plain, old, args.timeout)

    return [
        ("certificate sweep, limit 100", timed(lambda s: requests_missing_certificates(s, limit=100)),
         *statements(NEW_SWEEP, OLD_SWEEP)),
        ("pending requests of a model, first 50", timed(lambda s: _pending(s, "model", limit=50)),
         *statements(NEW_PENDING + " LIMIT 50", OLD_PENDING + " LIMIT 50")),
        ("pending requests of a model, all 2,000", timed(lambda s: _pending(s, "model", limit=None)),
         *statements(NEW_PENDING, OLD_PENDING)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--held", type=int, default=300_000, help="certified requests held by the model's jobs")
    parser.add_argument("--runs", type=int, default=21, help="runs per read (median)")
    parser.add_argument("--timeout", type=int, default=60, help="seconds before a baseline statement is cut off")
    args = parser.parse_args()
    dbname = f"bench_exclusion_{os.getpid()}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{dbname}"
    os.environ.update({"UNLEARND_DATABASE_URL": url, "UNLEARND_DATA_DIR": tempfile.mkdtemp(prefix="unlearnd-bench-"),
                       "UNLEARND_SUBJECT_PEPPER": "bench-pepper", "UNLEARND_LOG_LEVEL": "WARNING"})
    try:
        from app.core import migrate

        migrate.upgrade(url)
        figures = run(url, args)
    finally:
        from app.core.database import get_engine

        get_engine().dispose()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    print(f"\n{args.held:,} requests certified and held by one model's jobs; PostgreSQL, work_mem as configured\n")
    cut = f"> {args.timeout * 1000:,}"
    print("| read | service call (median ms) | its statement now (median ms) | as before, NOT IN (one run, ms) "
          "| before / now, statements |\n|---|---:|---:|---:|---:|")
    for name, call, now, before in figures:
        ratio = "" if now is None else f"> {args.timeout * 1000 / now:,.0f}x" if before is None else f"{before / now:,.1f}x"
        print(f"| {name} | {call:,.1f} | {cut if now is None else f'{now:,.1f}'} | "
              f"{cut if before is None else f'{before:,.1f}'} | {ratio} |")


if __name__ == "__main__":
    main()
