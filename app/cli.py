"""``unlearnd``: the command line over the same services the API uses."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from app.core.roles import Role

if TYPE_CHECKING:
    from app.core.config import Settings

# Hosts `unlearnd run` lets webhooks reach over plain http (a receiver on this machine).
LOOPBACK_HOSTS = ["127.0.0.1", "::1", "localhost"]

# Commands that need no data dir: `run` makes one; these read only files they are given.
NO_DATA_DIR = {("run",), ("certificate", "verify"), ("lineage", "verify-proof")}


def _configured_elsewhere() -> bool:
    """A deployment that names its database needs no data dir found for it."""
    if os.environ.get("UNLEARND_DATABASE_URL") or os.environ.get("UNLEARND_MODE", "").lower() == "production":
        return True
    secrets_dir = os.environ.get("UNLEARND_SECRET_FILES_DIR")
    if secrets_dir and (Path(secrets_dir) / "unlearnd_database_url").exists():
        return True
    dotenv = Path(".env")
    try:
        text = dotenv.read_text() if dotenv.is_file() else ""
    except OSError:
        text = ""
    return any(line.strip().startswith(("UNLEARND_DATA_DIR=", "UNLEARND_DATABASE_URL=")) for line in text.splitlines())


def find_data_dir(start: Path) -> Path | None:
    """The nearest ``var/`` at or above ``start`` that `unlearnd run` made (it holds the database
    or the secrets), else None."""
    for folder in (start, *start.parents):
        candidate = folder / "var"
        if candidate.is_dir() and ((candidate / "unlearnd.sqlite3").exists() or (candidate / "secrets").is_dir()):
            return candidate
    return None


def _locate_data_dir(path: tuple[str, ...]) -> None:
    """UNLEARND_DATA_DIR, or the nearest var/ upwards; otherwise stop with one line."""
    if path[:1] in {p[:1] for p in NO_DATA_DIR if len(p) == 1} or path[:2] in NO_DATA_DIR \
            or _configured_elsewhere():
        return
    named = os.environ.get("UNLEARND_DATA_DIR")
    if named:
        folder = Path(named).expanduser()
        if path[:2] == ("db", "upgrade"):
            folder.mkdir(parents=True, exist_ok=True)  # the first command of a fresh deployment
        elif not folder.is_dir():
            raise click.ClickException(f"no data dir at UNLEARND_DATA_DIR={named}: it does not exist")
        return
    found = find_data_dir(Path.cwd().resolve())
    if found is None:
        raise click.ClickException(
            "no data dir: set UNLEARND_DATA_DIR, or run this inside the folder where `unlearnd run` made var/")
    os.environ["UNLEARND_DATA_DIR"] = str(found)
    _settings(fresh=True)


def _settings(*, fresh: bool = False) -> Settings:
    """The settings, loaded when a command needs them: `--help` never loads pydantic-settings
    (on a slow machine, more than half of its time). ``fresh``: read the environment again."""
    from app.core.config import get_settings

    if fresh:
        get_settings.cache_clear()
    return get_settings()


class _Main(click.Group):
    """With --url (UNLEARND_URL), `requests` and `certificate` talk to that server through the
    client (app/client) instead of the local data dir. Otherwise the data dir is found first."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        ctx.meta["unlearnd.path"] = tuple(arg for arg in args[:2] if not arg.startswith("-"))
        ctx.meta["unlearnd.help"] = any(arg in ("--help", "-h") for arg in args)
        return super().resolve_command(ctx, args)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if ctx.params.get("url"):
            from app.client.cli import REMOTE_GROUPS

            if cmd_name in REMOTE_GROUPS:
                remote = REMOTE_GROUPS[cmd_name]
                if cmd_name == "certificate" and "verify" not in remote.commands:
                    # `certificate verify` needs no server: the remote group offers the local command.
                    remote.add_command(_room_command("certificate").commands["verify"])
                return remote
        if cmd_name in ROOM_COMMANDS and cmd_name not in self.commands:
            self.add_command(_room_command(cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *ROOM_COMMANDS})

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List every command without loading the rooms' modules for their one-line help."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            if name in self.commands:
                command = self.commands[name]
                if command.hidden:
                    continue
                rows.append((name, command.get_short_help_str(limit)))
            else:
                rows.append((name, ROOM_COMMANDS[name][2]))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=_Main)
@click.version_option(package_name="unlearnd")
@click.option("--url", envvar="UNLEARND_URL", metavar="URL",
              help="A remote Unlearnd server: `requests submit|list|show` and `certificate download|verify` "
                   "go there (env UNLEARND_URL; key in UNLEARND_API_KEY).")
@click.option("--api-key", envvar="UNLEARND_API_KEY", metavar="KEY", help="API key for --url (env UNLEARND_API_KEY).")
@click.pass_context
def main(ctx: click.Context, url: str | None, api_key: str | None) -> None:
    """Unlearnd: makes machine-learning models forget."""
    ctx.obj = {"url": url, "api_key": api_key}
    if not url and not ctx.meta.get("unlearnd.help"):
        _locate_data_dir(ctx.meta.get("unlearnd.path", ()))


# --- database ---------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Schema migrations."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Migrate the database up to REVISION (default: the latest)."""
    from app.core import migrate

    migrate.upgrade(revision=revision)
    click.echo(f"database at {revision}")


@db.command("downgrade")
@click.option("--revision", default="base", show_default=True)
def db_downgrade(revision: str) -> None:
    """Migrate the database down to REVISION (default: empty). Destroys data."""
    from app.core import migrate

    migrate.downgrade(revision=revision)
    click.echo(f"database at {revision}")


@db.command("check")
def db_check() -> None:
    """Exit non-zero if the ORM models and the migrated schema differ."""
    from app.core import migrate

    migrate.check()
    click.echo("no drift")


# --- clients ----------------------------------------------------------------------------------


@main.group()
def clients() -> None:
    """API clients and their keys."""


@clients.command("create")
@click.option("--name", required=True)
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--requires-approval", is_flag=True, help="An admin approves this portal's requests.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for machines.")
def clients_create(name: str, role: str, requires_approval: bool, as_json: bool) -> None:
    """Create a client; its key is printed once, as the last line."""
    from app.clients.service import create_client
    from app.core.database import session_scope

    with session_scope() as session:
        issued = create_client(session, name=name, role=role, requires_approval=requires_approval)
        client_id, key = issued.client.id, issued.api_key
    if as_json:
        click.echo(json.dumps({"id": client_id, "name": name, "role": role, "api_key": key}))
    else:
        click.echo(f"created {role} client '{name}' ({client_id}); the key is shown once:")
        click.echo(key)


@clients.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for machines.")
def clients_list(as_json: bool) -> None:
    """Every client, with its role and whether it is revoked (keys are never shown again)."""
    from app.clients.service import list_clients
    from app.core.database import session_scope

    with session_scope() as session:
        rows = [{"id": c.id, "name": c.name, "role": c.role, "revoked": c.revoked_at is not None}
                for c in list_clients(session)]
    if as_json:
        click.echo(json.dumps(rows))
        return
    click.echo(f"{'ID':36}  {'ROLE':8} {'STATE':8} NAME")
    for row in rows:
        click.echo(f"{row['id']:36}  {row['role']:8} {'revoked' if row['revoked'] else 'active':8} {row['name']}")


# --- processes --------------------------------------------------------------------------------


def _worker_command(*, beat: bool, concurrency: int = 1) -> list[str]:
    command = [
        sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
        "--loglevel", "INFO", "--concurrency", str(concurrency), "--without-gossip", "--without-mingle",
    ]
    if beat:
        settings = _settings()
        command += ["--beat", "--schedule", str(settings.data_dir / "beat-schedule")]
    return command


@main.command()
@click.option("--concurrency", default=1, show_default=True)
@click.option("--beat/--no-beat", default=False, help="Also run the periodic scheduler.")
def worker(concurrency: int, beat: bool) -> None:
    """Run a Celery worker (production: run as many as you like, on as many machines)."""
    os.execv(sys.executable, _worker_command(beat=beat, concurrency=concurrency))


@main.command()
def beat() -> None:
    """Run the periodic scheduler (exactly one per deployment)."""
    settings = _settings()
    os.execv(
        sys.executable,
        [sys.executable, "-m", "celery", "-A", "workers.celery_app", "beat", "--loglevel", "INFO",
         "--schedule", str(settings.data_dir / "beat-schedule")],
    )


def _share_metrics(*, fresh: bool) -> None:
    """API processes on one data dir write their Prometheus samples to one folder, so a scrape
    of any of them sums all. prometheus_client picks its storage when it is first imported,
    so this runs before app.main is. ``fresh`` empties the folder: ``unlearnd run`` starts a
    whole deployment, and samples of an earlier run's processes would be summed too."""
    import shutil

    folder = _settings().data_dir / "metrics"
    if fresh and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
def serve(host: str, port: int) -> None:
    """Run the API only (production; workers run separately)."""
    import uvicorn

    _share_metrics(fresh=False)
    from app.core.http_protocol import ProblemHTTPProtocol
    from app.main import create_app

    uvicorn.run(create_app(), host=host, port=port, log_config=None, http=ProblemHTTPProtocol)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
@click.option("--demo/--no-demo", default=True, show_default=True,
              help="Register the bundled digits dataset and train a SISA and a logreg model on it.")
@click.option("--new-admin-key", is_flag=True,
              help="Issue a fresh admin key (and revoke the one in var/secrets/admin.key) instead of reusing it.")
def run(host: str, port: int, demo: bool, new_admin_key: bool) -> None:
    """Embedded default: SQLite and a local queue under the data dir, the API and one worker.
    The admin key is printed once the API is up and kept in var/secrets/admin.key (mode 0600)."""
    import uvicorn

    _share_metrics(fresh=True)

    from app.core import migrate
    from app.core.http_protocol import ProblemHTTPProtocol
    from app.main import create_app

    # A local receiver is the usual first webhook endpoint; production allow-lists nothing.
    fresh = "UNLEARND_WEBHOOK_ALLOWED_HOSTS" not in os.environ
    if fresh:
        os.environ["UNLEARND_WEBHOOK_ALLOWED_HOSTS"] = json.dumps(LOOPBACK_HOSTS)
    settings = _settings(fresh=fresh)
    settings.artifacts_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade()
    key, reused = _admin_key(settings.secrets_dir / ADMIN_KEY_FILE, fresh=new_admin_key)
    if demo:
        # Before the worker starts: the demo ingests its dataset in this process.
        from app import demo as demo_data

        queued = demo_data.install()
        names = ", ".join(model.name for model in demo_data.DEMO_MODELS)
        click.echo(f"demo: dataset '{demo_data.DATASET_NAME}', models {names} ({len(queued)} training job(s) queued)")

    worker_process = subprocess.Popen(
        # The worker's banner and logs go to stderr, so stdout carries only what `run` says.
        _worker_command(beat=True), env=os.environ.copy(), stdout=sys.stderr, preexec_fn=_terminate_with_parent
    )
    # uvicorn re-raises the signal that stopped it once it has shut down; exiting through
    # SystemExit instead lets the worker be stopped below rather than orphaned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    banner = _banner(f"http://{host}:{port}", settings.data_dir, settings.secrets_dir / ADMIN_KEY_FILE, key, reused)

    class Server(uvicorn.Server):
        async def startup(self, sockets: list | None = None) -> None:
            await super().startup(sockets)
            if not self.should_exit:  # listening now; nothing is served before this returns
                click.echo(banner)
                sys.stdout.flush()

    try:
        Server(uvicorn.Config(create_app(settings), host=host, port=port, log_config=None,
                              http=ProblemHTTPProtocol)).run()
    finally:
        worker_process.send_signal(signal.SIGTERM)
        try:
            worker_process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker_process.kill()


ADMIN_KEY_FILE = "admin.key"
ADMIN_CLIENT_NAME = "admin (unlearnd run)"


def _admin_key(path: Path, *, fresh: bool) -> tuple[str, bool]:
    """The key in ``path`` while it still opens an active admin client, else a new admin
    client's key, written there with mode 0600. Returns the key and whether it was reused.
    ``fresh`` issues a new one and revokes the admin client of the old file."""
    from app.clients.service import create_client, revoke_client
    from app.core.auth import authenticate
    from app.core.database import session_scope
    from app.core.errors import UnlearndError

    saved = path.read_text().strip() if path.exists() else ""
    with session_scope() as session:
        previous = None
        if saved:
            try:
                previous = authenticate(session, saved)
            except UnlearndError:
                previous = None
            if previous is not None and previous.role_enum is Role.ADMIN and not fresh:
                return saved, True
        key = create_client(session, name=ADMIN_CLIENT_NAME, role=Role.ADMIN).api_key
        if fresh and previous is not None and previous.role_enum is Role.ADMIN:
            revoke_client(session, previous.id, actor="unlearnd run --new-admin-key")
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key + "\n")
    path.chmod(0o600)  # an older file keeps its mode through O_TRUNC
    return key, False


def _banner(url: str, data_dir: Path, key_file: Path, key: str, reused: bool) -> str:
    rule = "=" * 78
    origin = ("reused from the last run; `unlearnd run --new-admin-key` issues a fresh one" if reused
              else "new; kept for the next run")
    return "\n".join([
        rule,
        f"  Unlearnd is running at {url}  (API docs: {url}/docs, dashboard: {url}/admin)",
        f"  data: {data_dir}",
        f"  admin API key ({origin}; saved in {key_file}, mode 0600):",
        "",
        key,
        "",
        f"  try:  curl -H \"Authorization: Bearer $(cat {key_file})\" {url}/v1/models",
        rule,
    ])


def _terminate_with_parent() -> None:
    """In the embedded worker (Linux): SIGTERM when ``unlearnd run`` dies, even by SIGKILL."""
    import ctypes

    pr_set_pdeathsig = 1
    # Not glibc/Linux: the finally block in ``run`` still stops the worker on a clean exit.
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


# Each room offers a click group in ``app/<room>/cli.py``; loaded only when named, so `--help`
# and every other command skip the rooms' imports. The short help here is what `--help` lists.
ROOM_COMMANDS: dict[str, tuple[str, str, str]] = {
    "requests": ("app.requests.cli", "cli", "Deletion requests."),
    # The jobs room adds `lineage check` (the invariant sweep) to the lineage group.
    "lineage": ("app.jobs.cli", "lineage_cli", "Record lineage and snapshot proofs."),
    "jobs": ("app.jobs.cli", "cli", "Training and unlearning jobs."),
    "audit": ("app.audit.cli", "cli", "The tamper-evident audit log."),
    "keys": ("app.audit.cli", "keys_cli", "Signing keys for tree heads and certificates."),
    "certificate": ("app.certificates.cli", "cli", "Signed deletion certificates."),
}


def _room_command(name: str) -> click.Command:
    import importlib

    module, attribute, _ = ROOM_COMMANDS[name]
    return getattr(importlib.import_module(module), attribute)


if __name__ == "__main__":
    main()
