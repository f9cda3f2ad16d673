"""``unlearnd jobs``: train, batch, list, retry and cancel over the same service as the API."""

from __future__ import annotations

import json

import click

from app.core.cli_errors import as_click_errors
from app.core.database import session_scope, utcnow
from app.jobs import invariant, service
from app.jobs.models import JobKind, JobStatus
from app.jobs.schemas import JobOut
from app.lineage.cli import cli as lineage_cli

ACTOR = "cli"


@click.group("jobs")
def cli() -> None:
    """Training and unlearning jobs."""


def _echo(job: object) -> None:
    click.echo(json.dumps(JobOut.model_validate(job).model_dump(mode="json"), indent=2))


@cli.command("train")
@click.argument("model")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--heldout-fraction", default=service.TrainingConfig.heldout_fraction, show_default=True, type=float)
def train(model: str, seed: int, heldout_fraction: float) -> None:
    """Queue training of a new version of MODEL."""
    with as_click_errors(), session_scope() as session:
        job = service.start_training(session, model, actor=ACTOR,
                                     config=service.TrainingConfig(seed=seed, heldout_fraction=heldout_fraction))
        _echo(job)


@cli.command("unlearn-now")
@click.argument("model")
def unlearn_now(model: str) -> None:
    """Batch MODEL's pending deletions into a job at once."""
    with as_click_errors(), session_scope() as session:
        _echo(service.unlearn_now(session, model, actor=ACTOR).job)


@cli.command("schedule")
def schedule() -> None:
    """Run one scheduler tick (what the periodic task does) and print its decisions."""
    with as_click_errors(), session_scope() as session:
        for outcome in service.schedule(session):
            decision = outcome.decision
            click.echo(f"{outcome.model}: {decision.reason}; {len(decision.batch)} request(s), "
                       f"{decision.units} unit(s) ({decision.units_saved} saved)"
                       + (f" -> job {outcome.job.id}" if outcome.job else ""))


@cli.command("list")
@click.option("--status", type=click.Choice([s.value for s in JobStatus]))
@click.option("--kind", type=click.Choice([k.value for k in JobKind]))
@click.option("--model")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, service.MAX_PAGE))
def list_jobs(status: str | None, kind: str | None, model: str | None, limit: int) -> None:
    """One line per job, newest first."""
    filters = service.JobFilters(status=JobStatus(status) if status else None, kind=JobKind(kind) if kind else None,
                                 model=model)
    with as_click_errors(), session_scope() as session:
        jobs = service.list_jobs(session, filters, limit=limit)
        names = service.model_names(session, {job.model_id for job in jobs})
        click.echo(f"{'ID':36}  {'KIND':11} {'MODEL':20} {'STATUS':9} {'STAGE':10} {'DONE':>4}  {'METHOD':10} "
                   f"{'GUARANTEE':11} VERDICT")
        for job in jobs:
            report = job.report or {}
            click.echo(f"{job.id:36}  {job.kind:11} {names.get(job.model_id, '?'):20} {job.status:9} "
                       f"{job.stage or '-':10} {job.progress:4.0%}  {job.method_used or job.method:10} "
                       f"{report.get('guarantee') or '-':11} {report.get('verdict') or '-'}")


@cli.command("show")
@click.argument("job_id")
def show(job_id: str) -> None:
    """One job as JSON: its status, report (verification, guarantee) and requests."""
    with as_click_errors(), session_scope() as session:
        job = service.get_job(session, job_id)
        document = JobOut.model_validate(job).model_dump(mode="json")
        click.echo(json.dumps({**document, "report": job.report,
                               "request_ids": service.job_requests(session, job.id)}, indent=2))


@cli.command("retry")
@click.argument("job_id")
def retry(job_id: str) -> None:
    """Run a failed job again."""
    with as_click_errors(), session_scope() as session:
        _echo(service.retry_job(session, job_id, actor=ACTOR))


@cli.command("cancel")
@click.argument("job_id")
def cancel(job_id: str) -> None:
    """Withdraw a job before unlearning starts."""
    with as_click_errors(), session_scope() as session:
        _echo(service.cancel_job(session, job_id, actor=ACTOR))


@lineage_cli.command("check")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def lineage_check(as_json: bool) -> None:
    """Check the lineage invariant over every live version (read-only); exit 1 on a violation.

    A live version may hold a record at stake only while something will unlearn it there:
    see the jobs room's ``invariant`` module. The sweep (beat) covers what this reports."""
    with as_click_errors(), session_scope() as session:
        checked_at = utcnow().isoformat()
        found, violations = invariant.check(session)
    bad = {v.version_id for v in violations}
    if as_json:
        click.echo(json.dumps({
            "checked_at": checked_at, "holding": len(found),
            "pending": [{"model": h.model, "number": h.number, "state": h.state, "forgotten": len(h.forgotten),
                         "requests": sorted(h.requests)} for h in found if h.version_id not in bad],
            "violations": [{"model": v.model, "number": v.number, "state": v.state, "version_id": v.version_id,
                            "forgotten_records": v.forgotten_records, "unattached_requests": list(v.unattached_requests),
                            "uncarried_requests": list(v.uncarried_requests)} for v in violations],
        }, indent=2))
    else:
        for holding in found:
            if holding.version_id not in bad:
                click.echo(f"pending: {holding.model} v{holding.number} ({holding.state}) holds records of "
                           f"{len(holding.requests)} open request(s) and {len(holding.forgotten)} forgotten record(s); "
                           "attached and scheduled")
        for violation in violations:
            click.echo(f"VIOLATION: {violation.describe()}")
        click.echo(f"lineage check at {checked_at}: {len(violations)} violation(s), "
                   f"{len(found) - len(violations)} live version(s) holding records pending unlearning")
    if violations:
        raise SystemExit(1)
