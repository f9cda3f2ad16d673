"""One engine and one session factory, for SQLite (embedded) and PostgreSQL (production)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import JSON, DateTime, Engine, MetaData, String, Table, create_engine, event, insert, text
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from app.core.config import get_settings

# Named constraints keep Alembic migrations deterministic across both databases.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware on the way out even on SQLite, which stores naive strings."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use timezone-aware UTC")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[Any]: JSON(),
        str: String(),
    }


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30, "isolation_level": None}
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            # WAL lets the API read while the worker writes; foreign keys are off by default.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin_immediate(connection: Any) -> None:
            # Take the write lock up front: a deferred transaction that reads then writes
            # can fail outright under WAL instead of waiting, and the audit chain reads
            # its tail before appending.
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # pre_ping: a connection killed under us (database restart) is replaced, not raised.
    # Sized for uvicorn's 40 worker threads plus the audit sealer, so requests never queue on the pool.
    return create_engine(url, pool_pre_ping=True, pool_size=20, max_overflow=30)


@lru_cache
def get_engine() -> Engine:
    return make_engine(get_settings().database_url)


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


@contextmanager
def session_scope() -> Iterator[Session]:
    """A unit of work for CLI commands and Celery tasks: commit on success, roll back on error."""
    session = get_sessionmaker()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def insert_rows(
    session: Session, table: Table, rows: Sequence[dict[str, Any]], *, skip_conflicts: bool = False,
    returning: str | None = None,
) -> list[Any]:
    """Insert many rows (all with the same keys) in one statement; with ``returning``, the named
    column of each row written. ``skip_conflicts``: ON CONFLICT DO NOTHING (a row that conflicts
    is not written and not returned).

    On PostgreSQL the rows travel as one JSON parameter expanded by ``json_populate_recordset``:
    a thousand rows are one round trip with one bind, where a multi-row VALUES statement has
    tens of thousands of parameters to render and convert and an executemany sends a statement
    per row. Datetimes must be timezone-aware (ISO 8601 with offset). SQLite: an executemany."""
    if not rows:
        return []
    columns = list(rows[0])
    if session.get_bind().dialect.name == "postgresql":
        names = ", ".join(f'"{column}"' for column in columns)
        sql = (f'INSERT INTO "{table.name}" ({names}) SELECT {names} '
               f'FROM json_populate_recordset(NULL::"{table.name}", CAST(:rows AS json))')
        if skip_conflicts:
            sql += " ON CONFLICT DO NOTHING"
        if returning is not None:
            sql += f' RETURNING "{returning}"'
        result = session.execute(text(sql), {"rows": json.dumps(rows, default=_json_value, separators=(",", ":"))})
        return list(result.scalars()) if returning is not None else []
    statement: Any = insert(table)
    if skip_conflicts:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        statement = sqlite_insert(table).on_conflict_do_nothing()
    if returning is not None:
        return list(session.scalars(statement.returning(table.c[returning]), list(rows)))
    session.execute(statement, list(rows))
    return []


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use timezone-aware UTC")
        return value.astimezone(UTC).isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
