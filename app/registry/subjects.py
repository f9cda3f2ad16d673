"""Subject identifiers as the registry's datasets hashed them.

Every dataset records the canonicaliser version (and, for user ids, whether it folds case)
its subject hashes were made with. A lookup hashes the identifier once per combination
present, so records ingested under an older canonicaliser are still found, and says which
combinations it checked, so a "no data found" claim names exactly what was looked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import ColumnElement, Select, select, true
from sqlalchemy.orm import Session

from app.core.config import get_settings
from app.core.errors import InvalidInput
from app.core.hashing import CANONICALISER_VERSION, IdentifierType, subject_hash
from app.registry.models import Dataset


@dataclass(frozen=True)
class HashScheme:
    version: int
    fold_case: bool = False


@dataclass(frozen=True)
class SubjectHashes:
    # Under the current canonicaliser, exact case: the hash a new request is identified by.
    current: str
    # Every hash the identifier has under a scheme some dataset uses (current included).
    lookup: list[str]
    versions: list[int]


def schemes_in_use(session: Session, *, first: ColumnElement[Any] | None = None) -> list[HashScheme]:
    """The current scheme plus every (version, fold_case) some dataset's hashes were made with.
    ``first``: an expression evaluated once in the same statement, before the datasets are read
    (intake takes the lineage lock so, saving a round trip)."""
    schemes = {HashScheme(CANONICALISER_VERSION)}
    # Core on the session's connection: intake runs this on every request, and the ORM's
    # execution layer would cost more than the statement.
    for version, schema in session.connection().execute(_schemes_query(first)):
        if version is not None:
            schemes.add(HashScheme(version, bool((schema or {}).get("fold_case"))))
    return sorted(schemes, key=lambda s: (s.version, s.fold_case))


_CURRENT = HashScheme(CANONICALISER_VERSION)


@lru_cache(maxsize=8)
def _schemes_query(first: ColumnElement[Any] | None) -> Select[Any]:
    """Built once per ``first`` (callers pass module-level expressions, hashed by identity)."""
    query = select(Dataset.canonicaliser_version, Dataset.schema)
    if first is not None:
        # One row even with no dataset: the expression is evaluated whatever the table holds.
        ahead = select(first.label("first")).subquery()
        query = query.select_from(ahead).outerjoin(Dataset, true())
    return query


def hashes_for(
    kind: IdentifierType | str, value: str, schemes: list[HashScheme], *, field: str = "value"
) -> SubjectHashes:
    """The identifier's hash under each scheme. It must be valid under the current canonicaliser;
    an older one that refuses it simply had no way to store it."""
    kind = IdentifierType(kind)
    pepper = get_settings().pepper_bytes()
    current = subject_hash(kind, value, pepper, field=field)
    lookup, versions = {current}, {CANONICALISER_VERSION}
    for scheme in schemes:
        if scheme == _CURRENT:  # hashed above
            continue
        if scheme.fold_case and kind is not IdentifierType.USER_ID:
            continue
        try:
            lookup.add(subject_hash(kind, value, pepper, field=field, version=scheme.version,
                                    fold_case=scheme.fold_case))
        except InvalidInput:
            continue
        versions.add(scheme.version)
    return SubjectHashes(current=current, lookup=sorted(lookup), versions=sorted(versions))
