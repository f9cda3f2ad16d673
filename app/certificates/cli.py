"""``unlearnd certificate ...``: verification needs neither the database nor the service's
configuration, only the file and a public key (or the URL that publishes them)."""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

import click


@click.group("certificate")
def cli() -> None:
    """Signed deletion certificates."""


def _keys_from_url(url: str) -> dict[str, bytes]:
    from app.core.signing import public_key_from_jwk

    with urllib.request.urlopen(url, timeout=15) as response:  # noqa: S310 - the operator names the URL
        published = json.loads(response.read())
    return {jwk["kid"]: public_key_from_jwk(jwk) for jwk in published.get("keys", [])}


def _keys_from_text(text: str) -> dict[str, bytes]:
    from app.core.signing import key_id_for, parse_public_key, public_key_from_jwk

    stripped = text.strip()
    if stripped.startswith("{") and '"keys"' in stripped:
        return {jwk["kid"]: public_key_from_jwk(jwk) for jwk in json.loads(stripped)["keys"]}
    raw = parse_public_key(stripped)
    return {key_id_for(raw): raw}


def _read_if_file(argument: str) -> str:
    """``--public-key`` takes a file name or the key itself; a long inline key is no file."""
    try:
        candidate = Path(argument)
        return candidate.read_text() if candidate.is_file() else argument
    except OSError:
        return argument


@cli.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--public-key", "public_key", metavar="KEY",
              help="PEM/JWK/JWKS file, or the key itself (base64url or hex of the 32 raw bytes).")
@click.option("--keys-url", metavar="URL", help="Where the service publishes its keys: .../.well-known/unlearnd-keys")
def verify(file: Path, public_key: str | None, keys_url: str | None) -> None:
    """Check a certificate offline (the .json file or the .jws envelope); exit 1 with the
    reason if any check fails."""
    from app.certificates.verify import CertificateInvalid, verify_certificate_file
    from app.core.signing import SignatureInvalid

    if bool(public_key) == bool(keys_url):
        raise click.UsageError("give exactly one of --public-key or --keys-url")
    try:
        keys = _keys_from_url(keys_url) if keys_url else _keys_from_text(_read_if_file(public_key))
        verified = verify_certificate_file(file.read_bytes(), keys)
    except (CertificateInvalid, SignatureInvalid, ValueError, OSError) as exc:
        click.echo(f"INVALID: {exc}", err=True)
        sys.exit(1)
    click.echo(
        f"valid: certificate {verified.certificate_id} for request {verified.request_id}, signed by "
        f"{verified.key_id}, anchored at audit event {verified.audit_seq} of a signed tree of {verified.tree_size}; "
        f"{verified.lineage_proofs_checked} non-inclusion proof(s) checked against the stated snapshot roots"
        + (f"; JWS envelope signed by {verified.jws_key_id}" if verified.jws_key_id else "")
    )


@cli.command("issue")
@click.argument("request_id")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write the file here.")
def issue(request_id: str, output: Path | None) -> None:
    """Issue (or fetch) the certificate of a completed request."""
    from app.certificates.service import certificate_file, issue_certificate
    from app.core.database import session_scope
    from app.core.errors import UnlearndError

    try:
        with session_scope() as session:
            content = certificate_file(issue_certificate(session, request_id, actor="cli"))
    except UnlearndError as exc:  # not completed, or its rows still wait for their erasure
        raise click.ClickException(exc.detail) from None
    if output:
        output.write_bytes(content)
        click.echo(f"wrote {output}")
    else:
        sys.stdout.buffer.write(content)
