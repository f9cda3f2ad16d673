"""Who may scrape, and what a scrape returns."""

from __future__ import annotations

import ipaddress

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from sqlalchemy.orm import Session

from app.core.auth import Role, authenticate
from app.core.errors import Forbidden, Unauthenticated
from app.core.metrics import process_registry
from app.metrics.collector import DatabaseStateCollector


def address_allowed(host: str | None, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    """A scraper at an allow-listed address needs no key (Prometheus rarely carries one)."""
    if not host or not networks:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # a test client's or a Unix socket's made-up peer name
        return False
    return any(address in network for network in networks)


def authorize_scrape(session: Session, host: str | None, bearer_key: str | None,
                     networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> None:
    if address_allowed(host, networks):
        return
    if not bearer_key:
        raise Unauthenticated("metrics need an admin key (Authorization: Bearer) or an allow-listed address")
    if authenticate(session, bearer_key).role_enum is not Role.ADMIN:
        raise Forbidden("only admins may read metrics")


def exposition(session: Session) -> tuple[bytes, str]:
    """Samples of every process (or this one's), then the database's state, in text format."""
    database = CollectorRegistry(auto_describe=False)
    database.register(DatabaseStateCollector(session))
    body = generate_latest(process_registry() or REGISTRY) + generate_latest(database)
    return body, CONTENT_TYPE_LATEST
