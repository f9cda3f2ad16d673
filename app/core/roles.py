"""API client roles: a module of its own so the CLI can name them without loading the database layer."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    PORTAL = "portal"
    ML = "ml"
    AUDITOR = "auditor"
    ADMIN = "admin"


def sees_every_client(role: str) -> bool:
    """The one visibility rule: admins and auditors see every client's requests and events;
    a portal sees its own; an ML client sees jobs and versions, and of the requests only the
    selector removals it submitted itself."""
    return role in (Role.ADMIN, Role.AUDITOR)
