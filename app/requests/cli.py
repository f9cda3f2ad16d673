"""``unlearnd requests``: submit, list and show deletion requests over the same service as the API."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from app.core.cli_errors import as_click_errors
from app.core.database import session_scope
from app.requests import reads
from app.requests.models import LegalBasis, RequestStatus
from app.requests.schemas import DeletionRequestCreate, DeletionRequestDetail, DeletionRequestOut


@click.group("requests")
def cli() -> None:
    """Deletion requests."""


LIST_HEADER = (f"{'ID':36}  {'STATUS':16} {'DUE':10}  {'LEGAL BASIS':15} {'OUTCOME':16} {'GUARANTEE':11} "
               "EXTERNAL REF")


def list_row(r: Any) -> str:
    """One request under LIST_HEADER (a row or a DeletionRequestOut: the remote CLI's too)."""
    return (f"{r.id:36}  {r.status:16} {r.due_at:%Y-%m-%d}  {r.legal_basis:15} {r.outcome or '-':16} "
            f"{r.guarantee or '-':11} {r.external_ref or ''}")


def echo_page(page: Any) -> None:
    """A page of requests as the list commands print it (local, or the remote CLI's)."""
    click.echo(LIST_HEADER)
    for r in page.items:
        click.echo(list_row(r))
    if page.next_cursor:
        click.echo(f"next: --cursor {page.next_cursor}")


def _echo(document: DeletionRequestOut) -> None:
    click.echo(json.dumps(document.model_dump(mode="json"), indent=2))


SUBMISSION_OPTIONS = (
    click.option("--email", multiple=True),
    click.option("--user-id", multiple=True),
    click.option("--phone", multiple=True),
    click.option("--custom", multiple=True),
    click.option("--record", "records", multiple=True, metavar="DATASET:KEY"),
    click.option("--legal-basis", type=click.Choice([b.value for b in LegalBasis]), required=True),
    click.option("--jurisdiction"),
    click.option("--external-ref"),
    click.option("--verification-method", help="How the requester's identity was verified."),
)


def submission_options(command: Any) -> Any:
    """The subject and request options of both submit commands (local, and the remote CLI's)."""
    for option in reversed(SUBMISSION_OPTIONS):
        command = option(command)
    return command


def submission_body(
    *, email: tuple[str, ...], user_id: tuple[str, ...], phone: tuple[str, ...], custom: tuple[str, ...],
    records: tuple[str, ...], legal_basis: str, jurisdiction: str | None, external_ref: str | None,
    verification_method: str | None,
) -> dict[str, Any]:
    """The API body those options describe (validated by the API's schema, locally or remotely)."""
    identifiers = [
        {"type": kind, "value": value}
        for kind, values in (("email", email), ("user_id", user_id), ("phone", phone), ("custom", custom))
        for value in values
    ]
    refs = []
    for ref in records:
        dataset, sep, key = ref.partition(":")
        if not sep:
            raise click.BadParameter("expected DATASET:KEY", param_hint="--record")
        refs.append({"dataset": dataset, "record_key": key})
    return {
        "subject": identifiers, "records": refs, "legal_basis": legal_basis,
        "jurisdiction": jurisdiction, "external_ref": external_ref,
        "identity_verification": {"method": verification_method} if verification_method else None,
    }


@cli.command("submit")
@click.option("--client", "client_ref", required=True, help="Submit as this API client (id or name).")
@submission_options
@click.option("--requested-at", type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S%z"]))
@click.option("--idempotency-key")
def submit(client_ref: str, requested_at: datetime | None, idempotency_key: str | None, **options: Any) -> None:
    """Submit a deletion request. Identifiers are hashed before anything is written."""
    body = submission_body(**options) | ({"requested_at": requested_at} if requested_at else {})
    with as_click_errors(), session_scope() as session:
        submission = DeletionRequestCreate.model_validate(body)
        from app.requests import service  # intake loads lineage and the registry; list and show do not

        client = service.get_submitting_client(session, client_ref)
        outcome = service.submit(
            session, client=client, submission=submission, idempotency_key=idempotency_key,
            provenance=service.Provenance(channel="cli"),
        )
        _echo(DeletionRequestOut.model_validate(outcome.request))


@cli.command("list")
@click.option("--status", type=click.Choice([s.value for s in RequestStatus]))
@click.option("--legal-basis", type=click.Choice([b.value for b in LegalBasis]))
@click.option("--external-ref")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 200))
@click.option("--cursor")
def list_command(
    status: str | None, legal_basis: str | None, external_ref: str | None, limit: int, cursor: str | None
) -> None:
    """One line per request, newest first."""
    filters = reads.RequestFilters(
        status=RequestStatus(status) if status else None,
        legal_basis=LegalBasis(legal_basis) if legal_basis else None,
        external_ref=external_ref,
    )
    with as_click_errors(), session_scope() as session:
        echo_page(reads.list_requests(session, filters=filters, cursor=cursor, limit=limit))


@cli.command("show")
@click.argument("request_id")
def show(request_id: str) -> None:
    """One request with its status history."""
    with as_click_errors(), session_scope() as session:
        request = reads.get_request(session, request_id)
        _echo(DeletionRequestDetail.of(request, reads.history(session, request.id)))
