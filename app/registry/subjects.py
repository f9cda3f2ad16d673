"""Subject identifiers as the registry's datasets hashed them.

Every dataset records the canonicaliser version (and, for user ids, whether it folds case)
its subject hashes were made with. A lookup hashes the identifier once per combination
present, so records ingested under an older canonicaliser are still found, and says which
combinations it checked, so a "no data found" claim names exactly what was looked for.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
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


def schemes_in_use(session: Session) -> list[HashScheme]:
    """The current scheme plus every (version, fold_case) some dataset's hashes were made with."""
    schemes = {HashScheme(CANONICALISER_VERSION)}
    for version, schema in session.execute(select(Dataset.canonicaliser_version, Dataset.schema)):
        schemes.add(HashScheme(version, bool((schema or {}).get("fold_case"))))
    return sorted(schemes, key=lambda s: (s.version, s.fold_case))


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
        if scheme.fold_case and kind is not IdentifierType.USER_ID:
            continue
        try:
            lookup.add(subject_hash(kind, value, pepper, field=field, version=scheme.version,
                                    fold_case=scheme.fold_case))
        except InvalidInput:
            continue
        versions.add(scheme.version)
    return SubjectHashes(current=current, lookup=sorted(lookup), versions=sorted(versions))
