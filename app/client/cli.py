"""The commands ``unlearnd --url URL`` runs against a remote server, through the client.

With ``--url`` (or ``UNLEARND_URL``) and ``UNLEARND_API_KEY`` these replace the local
``requests`` and ``certificate`` groups: no data dir and no database are needed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from app.client import ApiError, Client
from app.requests.cli import echo_page, submission_body, submission_options
from app.requests.models import LegalBasis, RequestStatus
from app.requests.schemas import DeletionRequestOut


@contextmanager
def _remote() -> Iterator[Client]:
    settings = click.get_current_context().find_root().obj
    try:
        with Client(settings["url"], settings["api_key"]) as client:
            yield client
    except ApiError as exc:
        raise click.ClickException(f"{settings['url']}: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        raise click.ClickException(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None


def _echo(document: DeletionRequestOut) -> None:
    click.echo(json.dumps(document.model_dump(mode="json"), indent=2))


@click.group("requests")
def requests_cli() -> None:
    """Deletion requests on the server at --url."""


@requests_cli.command("submit")
@submission_options
@click.option("--idempotency-key", help="Default: a fresh one, kept across retries.")
def submit(idempotency_key: str | None, **options: Any) -> None:
    """Submit a deletion request as the client of UNLEARND_API_KEY (a portal key)."""
    body = submission_body(**options)
    with _remote() as client:
        _echo(client.submit_request(body, idempotency_key=idempotency_key))


@requests_cli.command("list")
@click.option("--status", type=click.Choice([s.value for s in RequestStatus]))
@click.option("--legal-basis", type=click.Choice([b.value for b in LegalBasis]))
@click.option("--external-ref")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 200))
@click.option("--cursor")
@click.option("--json", "as_json", is_flag=True, help="The page as JSON, for machines.")
def list_command(status: str | None, legal_basis: str | None, external_ref: str | None, limit: int,
                 cursor: str | None, as_json: bool) -> None:
    """One line per request the key may see, newest first."""
    with _remote() as client:
        page = client.list_requests(status=status, legal_basis=legal_basis, external_ref=external_ref,
                                    cursor=cursor, limit=limit)
    if as_json:
        click.echo(json.dumps(page.model_dump(mode="json")))
        return
    echo_page(page)


@requests_cli.command("show")
@click.argument("request_id")
def show(request_id: str) -> None:
    """One request with its status history."""
    with _remote() as client:
        _echo(client.get_request(request_id))


@click.group("certificate")
def certificate_cli() -> None:
    """Deletion certificates from the server at --url."""


@certificate_cli.command("download")
@click.argument("request_id")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Default: certificate-REQUEST_ID.json (.jws with --jws).")
@click.option("--jws", is_flag=True, help="The compact JWS envelope instead of the JSON file.")
@click.option("--wait", default=60.0, show_default=True, help="Seconds to wait while it is being issued.")
def download(request_id: str, output: Path | None, jws: bool, wait: float) -> None:
    """Save a completed request's certificate byte for byte (then `unlearnd certificate verify FILE`)."""
    with _remote() as client:
        content = client.certificate(request_id, jws=jws, wait=wait)
    output = output or Path(f"certificate-{request_id}.{'jws' if jws else 'json'}")
    output.write_bytes(content)
    click.echo(f"wrote {output}")


REMOTE_GROUPS = {"requests": requests_cli, "certificate": certificate_cli}
