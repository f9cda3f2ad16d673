"""Audit-log timings on a scratch PostgreSQL database (not collected by pytest).

    nice .venv/bin/python -m tests.audit.bench_audit [EVENTS]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid

import psycopg

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def main(events: int) -> None:
    name = f"bench_audit_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    os.environ.update(
        UNLEARND_DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}",
        UNLEARND_DATA_DIR=tempfile.mkdtemp(prefix="bench-audit-"),
        UNLEARND_SUBJECT_PEPPER="bench",
    )
    try:
        from app.audit import service as audit
        from app.audit.tree import inclusion_proof, sign_tree_head
        from app.audit.verify import verify_log
        from app.core import migrate
        from app.core.database import get_engine, session_scope

        migrate.upgrade()
        started = time.perf_counter()
        for n in range(events):
            with session_scope() as session:
                audit.record(session, actor="bench", action="thing.done", entity_type="thing", entity_id=str(n))
        took = time.perf_counter() - started
        print(f"record (one event per transaction): {events / took:,.0f} events/s")
        with session_scope() as session:
            started = time.perf_counter()
            head = sign_tree_head(session)
            print(f"sign tree head over {head.tree_size:,} events: {1000 * (time.perf_counter() - started):,.0f} ms")
            started = time.perf_counter()
            inclusion_proof(session, events // 2, head.tree_size)
            print(f"inclusion proof: {1000 * (time.perf_counter() - started):,.0f} ms")
            started = time.perf_counter()
            result = verify_log(session)
            print(f"verify chain + heads ({result.events_checked:,} events): "
                  f"{1000 * (time.perf_counter() - started):,.0f} ms, ok={result.ok}")
        get_engine().dispose()
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000)
