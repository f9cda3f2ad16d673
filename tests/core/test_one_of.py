"""``one_of``: set membership whose values travel as one JSON text on PostgreSQL (psycopg adapts
a list parameter element by element in Python), and as an IN list elsewhere."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, MetaData, String, Table, select

from app.core.database import get_engine, one_of, session_scope

_ROWS = Table("one_of_probe", MetaData(), Column("name", String(8), primary_key=True), Column("number", BigInteger))
STORED = {"abcdefgh": 1, "a,b": 2, 'quote"d': 3, "back\\sl": 4, "naïve ü": 5, "{x}": 6}


def test_one_of_matches_exactly_the_values_given(env: dict[str, str], backend: str) -> None:
    _ROWS.create(get_engine())
    with session_scope() as session:
        session.execute(_ROWS.insert(), [{"name": k, "number": v} for k, v in STORED.items()])
    with session_scope() as session:
        def names(values: list) -> set[str]:
            return set(session.scalars(select(_ROWS.c.name).where(one_of(session, _ROWS.c.name, values))))

        assert names(list(STORED)) == set(STORED)  # separators, quotes, escapes, non-ASCII
        assert names(["a", "b", "{x", "quote"]) == set()  # no value matches part of another
        # Longer than the column: a cast of the elements to varchar(8) would cut this to
        # "abcdefgh" and match a row it does not name.
        assert names(["abcdefghij"]) == set()
        assert set(session.scalars(select(_ROWS.c.name).where(one_of(session, _ROWS.c.number, [2, 5, 99])))) \
            == {"a,b", "naïve ü"}
