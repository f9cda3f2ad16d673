"""``unlearnd audit ...`` and ``unlearnd keys ...``."""

from __future__ import annotations

import json
import sys

import click

from app.core.database import session_scope


@click.group("audit")
def cli() -> None:
    """The tamper-evident audit log."""


@cli.command("verify")
@click.option("--expected-head", metavar="HASH", help="A chain hash recorded out of band (head_hash); "
              "the log must still contain it, or it was truncated.")
def verify(expected_head: str | None) -> None:
    """Walk the chain and every signed tree head; exit 1 at the first broken link."""
    from app.audit.verify import verify_log

    with session_scope() as session:
        result = verify_log(session, expected_head=expected_head)
    if result.ok:
        click.echo(
            f"ok: {result.events_checked} events chained, {result.tree_nodes_checked} stored tree nodes and "
            f"{result.tree_heads_checked} signed tree heads match; "
            f"head seq {result.head_seq} hash {result.head_hash}"
        )
        return
    click.echo(f"BROKEN: {result.failure}", err=True)
    click.echo(f"verified intact up to seq {result.head_seq} (hash {result.head_hash})", err=True)
    sys.exit(1)


@cli.command("sign-head")
def sign_head() -> None:
    """Sign a tree head now and print it (keep it somewhere else to detect truncation)."""
    from app.audit.tree import head_hash, published_head, sign_tree_head

    with session_scope() as session:
        head = sign_tree_head(session)
        published = {**published_head(head), "head_hash": head_hash(session, head.tree_size)}
    click.echo(json.dumps(published, indent=2))


@click.group("keys")
def keys_cli() -> None:
    """Signing keys for tree heads and certificates."""


@keys_cli.command("init")
def init() -> None:
    """Create the first signing key at UNLEARND_SIGNING_KEY_PATH (production never creates
    one on its own); refuses to replace an existing key: that is what rotate is for."""
    from app.core.config import get_settings
    from app.core.signing import create_signing_key

    path = get_settings().resolved_signing_key_path()
    try:
        signer = create_signing_key()
    except FileExistsError:
        click.echo(f"{path} already holds a signing key; use `unlearnd keys rotate` to replace it", err=True)
        sys.exit(1)
    click.echo(f"created signing key {signer.key_id} at {path}")


@keys_cli.command("rotate")
def rotate() -> None:
    """Sign with a new key from now on; the old public key stays published."""
    from app.audit.keys import rotate_signing_key

    with session_scope() as session:
        key = rotate_signing_key(session, actor="cli")
        key_id = key.key_id
    click.echo(f"signing with {key_id} from now on; earlier keys remain in /.well-known/unlearnd-keys")


@keys_cli.command("list")
def list_keys() -> None:
    """The signing keys published in /.well-known/unlearnd-keys, active and retired."""
    from app.audit.keys import key_set

    with session_scope() as session:
        published = key_set(session)
    click.echo(f"{'KEY ID':43}  {'STATUS':8} CREATED")
    for key in published["keys"]:
        click.echo(f"{key['kid']:43}  {key['status']:8} {key['created_at']}")


extra_groups = [keys_cli]
