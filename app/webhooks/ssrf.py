"""Where a webhook may be sent: https to public addresses only, unless the host is allow-listed.

The address is checked when the endpoint is registered and again, after a fresh DNS lookup,
right before every delivery; the delivery then dials exactly the address that passed, so a
name that re-resolves to an internal address between check and connect (DNS rebinding) is
never reached.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from app.core.config import get_settings
from app.core.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Cloud metadata services; all but the last are also non-global, listed so the intent is plain.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "169.254.170.2")
)


class UnsafeDestination(InvalidInput):
    slug, title = "unsafe-webhook-url", "Webhook URL not allowed"


@dataclass(frozen=True)
class Destination:
    scheme: str
    host: str  # as written in the URL (Host header, TLS server name)
    port: int
    path: str  # path and query
    address: str  # the IP to dial


@dataclass(frozen=True)
class ParsedUrl:
    scheme: str
    host: str
    port: int
    path: str


def parse(url: str) -> ParsedUrl:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeDestination(f"not a valid URL: {exc}", field="url") from exc
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".").lower()
    if scheme not in ("https", "http") or not host:
        raise UnsafeDestination("the URL must be https://host/...", field="url")
    if parts.username or parts.password:
        raise UnsafeDestination("credentials in the URL are not allowed; the payload is signed instead", field="url")
    if scheme == "http" and not _allow_listed(host):
        raise UnsafeDestination("webhooks are sent over https only", field="url")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return ParsedUrl(scheme, host, port or (443 if scheme == "https" else 80), path)


def _allow_listed(host: str) -> bool:
    allowed = {h.strip("[]").rstrip(".").lower() for h in get_settings().webhook_allowed_hosts}
    return host in allowed


def is_forbidden(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address in METADATA_ADDRESSES or not address.is_global or address.is_multicast


def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeDestination(f"host {host!r} does not resolve", field="url") from exc
    # Scope ids (fe80::1%eth0) are dropped: the address itself decides.
    return [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]


def check(url: str) -> Destination:
    """Resolve the URL's host and return the address to dial, or refuse the URL."""
    parsed = parse(url)
    addresses = _resolve(parsed.host, parsed.port)
    if not _allow_listed(parsed.host):
        # Every address must be public: a name with one internal address is refused outright,
        # not dialled at whichever address happens to be public.
        bad = [str(a) for a in addresses if is_forbidden(a)]
        if bad:
            raise UnsafeDestination(
                f"{parsed.host} resolves to a loopback, private, link-local or metadata address ({', '.join(bad)})",
                field="url",
            )
    return Destination(parsed.scheme, parsed.host, parsed.port, parsed.path, str(addresses[0]))
