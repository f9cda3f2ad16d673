"""``unlearnd lineage``: offline checks of snapshot membership proofs."""

from __future__ import annotations

import json
from pathlib import Path

import click

from app.core.merkle import ProofError
from app.lineage.proofs import verify_proof


@click.group(name="lineage")
def cli() -> None:
    """Record lineage and snapshot proofs."""


@cli.command("verify-proof")
@click.argument("proof_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--root", "expected_root", default=None,
              help="The snapshot's published Merkle root (hex); without it the root in the file is trusted.")
def verify_proof_command(proof_file: Path, expected_root: str | None) -> None:
    """Check an inclusion or non-inclusion proof offline; exit 1 if it does not hold."""
    try:
        document = json.loads(proof_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"not a JSON proof: {exc}") from None
    if not isinstance(document, dict):
        raise click.ClickException("not a JSON proof object")
    if expected_root is not None and document.get("merkle_root") != expected_root.lower():
        click.echo("INVALID: the proof is for another root than the published one", err=True)
        raise SystemExit(1)
    try:
        claim = verify_proof(document)
    except ProofError as exc:
        click.echo(f"INVALID: {exc}", err=True)
        raise SystemExit(1) from None
    click.echo(f"VALID: {claim}")
