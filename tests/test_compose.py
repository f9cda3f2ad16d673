"""docker-compose.yml, docker/Dockerfile, pyproject.toml and the README must agree: no Docker
engine runs here, so the compose stack is checked by reading it, and the mechanisms it relies
on (file secrets, an operator-made signing key in a writable folder) are run for real."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
APP_SERVICES = ("migrate", "api", "worker", "beat")
LONG_RUNNING = ("postgres", "redis", "api", "worker", "beat")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (ROOT / "docker" / "Dockerfile").read_text()


def _data_dir(dockerfile: str) -> str:
    return re.search(r"UNLEARND_DATA_DIR=(\S+)", dockerfile).group(1)


def _mounts(service: dict) -> dict[str, str]:
    """Mount target -> source (a named volume or a host path)."""
    return {entry.split(":")[1]: entry.split(":")[0] for entry in service.get("volumes", [])}


def test_app_services_share_one_production_image_and_read_secrets_from_files(compose):
    from app.core.config import SECRET_FILES_DIR_VARIABLE, Settings

    services = compose["services"]
    for name in APP_SERVICES:
        service = services[name]
        environment = service["environment"]
        assert service["image"] == "unlearnd:latest" and environment["UNLEARND_MODE"] == "production", name
        assert environment[SECRET_FILES_DIR_VARIABLE] == "/run/secrets", name
        # No secret in plain sight: neither the pepper nor a URL carrying the password.
        assert not {"UNLEARND_SUBJECT_PEPPER", "UNLEARND_DATABASE_URL"} & set(environment), name
        assert {"unlearnd_subject_pepper", "unlearnd_database_url"} <= set(service["secrets"]), name
        for secret in service["secrets"]:
            assert secret.removeprefix("unlearnd_") in Settings.model_fields, f"{secret} names no setting"
            assert secret in compose["secrets"], secret
    postgres = services["postgres"]
    assert "POSTGRES_PASSWORD" not in postgres["environment"]
    password_file = postgres["environment"]["POSTGRES_PASSWORD_FILE"]
    assert password_file.removeprefix("/run/secrets/") in postgres["secrets"]


def test_signing_keys_live_in_a_volume_the_service_user_owns(compose, dockerfile):
    for name in APP_SERVICES:
        service = compose["services"][name]
        key_path = Path(service["environment"]["UNLEARND_SIGNING_KEY_PATH"])
        mounts = _mounts(service)
        assert mounts.get(str(key_path.parent)) == "signing-keys", name
        assert "signing_key" not in str(service.get("secrets")), "a file secret is read-only: rotation could not work"
    assert "signing-keys" in compose["volumes"]
    # A named volume takes the owner of the image folder it is mounted on.
    key_dir = compose["services"]["api"]["environment"]["UNLEARND_SIGNING_KEY_PATH"].rsplit("/", 1)[0]
    assert re.search(rf"mkdir -p [^\n]*{re.escape(key_dir)}", dockerfile)
    assert re.search(rf"chown -R unlearnd {re.escape(_data_dir(dockerfile))}", dockerfile)
    assert re.search(r"useradd [^\n]*--uid 10001 [^\n]*unlearnd", dockerfile) and "USER unlearnd" in dockerfile


def test_start_order_health_and_restarts(compose):
    services = compose["services"]
    healthcheck = services["postgres"]["healthcheck"]["test"]
    assert "pg_isready" in healthcheck and healthcheck[healthcheck.index("-h") + 1] == "127.0.0.1"
    migrate = " ".join(services["migrate"]["command"])
    assert "unlearnd db upgrade" in migrate and "for " in migrate and "sleep" in migrate, migrate
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker", "beat"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name
    for name in LONG_RUNNING:
        assert services[name].get("restart") in ("always", "unless-stopped"), name
    assert services["migrate"]["restart"] == "no"
    assert [" ".join(services[name]["command"][:2]) for name in ("api", "worker", "beat")] == [
        "unlearnd serve", "unlearnd worker", "unlearnd beat"]


def test_datasets_and_artifacts_are_mounted_where_the_service_looks(compose, dockerfile):
    data_dir = _data_dir(dockerfile)
    for name in APP_SERVICES:
        mounts = _mounts(compose["services"][name])
        assert mounts[data_dir] == "artifacts"
        assert f"{data_dir}/datasets" in mounts, "the API registers dataset files only under DATA_DIR/datasets"


def test_the_image_installs_the_object_store_extra():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert any(dep.startswith("s3fs") for dep in pyproject["project"]["optional-dependencies"]["s3"])
    assert 'pip install ".[s3]"' in (ROOT / "docker" / "Dockerfile").read_text()


def test_readme_documents_the_first_start(compose):
    readme = (ROOT / "README.md").read_text()
    production = readme.split("## Production", 1)[1].split("\n## ", 1)[0]
    for step in ("unlearnd keys init", "clients create --role admin", "secrets/unlearnd_subject_pepper",
                 "secrets/unlearnd_database_url", "secrets/postgres_password", "./datasets", "s3fs"):
        assert step in production, step
    postgres = compose["services"]["postgres"]["environment"]
    assert f"@postgres:5432/{postgres['POSTGRES_DB']}" in production
    assert "no Docker engine" in production
    for secret in compose["secrets"].values():
        assert secret["file"].removeprefix("./") in production, secret


def test_file_secrets_set_the_pepper_and_database_url(tmp_path, monkeypatch):
    from app.core.config import SECRET_FILES_DIR_VARIABLE, get_settings
    from tests.conftest import reset_caches

    (tmp_path / "unlearnd_subject_pepper").write_text("pepper-from-a-file\n")
    (tmp_path / "unlearnd_database_url").write_text("postgresql+psycopg://unlearnd:pw@postgres:5432/unlearnd\n")
    for variable in ("UNLEARND_SUBJECT_PEPPER", "UNLEARND_DATABASE_URL"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv(SECRET_FILES_DIR_VARIABLE, str(tmp_path))
    monkeypatch.setenv("UNLEARND_MODE", "production")
    monkeypatch.setenv("UNLEARND_SIGNING_KEY_PATH", str(tmp_path / "keys" / "signing_key.pem"))
    reset_caches()
    try:
        settings = get_settings()
        assert settings.pepper_bytes() == b"pepper-from-a-file"
        assert settings.database_url == "postgresql+psycopg://unlearnd:pw@postgres:5432/unlearnd"
        monkeypatch.setenv("UNLEARND_SUBJECT_PEPPER", "from-the-environment")
        reset_caches()
        assert get_settings().subject_pepper == "from-the-environment"  # an environment variable wins
    finally:
        # Restore the environment before clearing the caches: a background thread (the webhook
        # waker's timer) that reads settings in between would otherwise cache these file secrets
        # (a database at host 'postgres') for the tests that follow in this process.
        monkeypatch.undo()
        reset_caches()


def test_keys_init_makes_the_first_key_once_and_rotation_replaces_it(env, tmp_path, monkeypatch):
    from app.cli import main
    from tests.conftest import reset_caches

    key_path = tmp_path / "keys" / "signing_key.pem"
    monkeypatch.setenv("UNLEARND_MODE", "production")
    monkeypatch.setenv("UNLEARND_SIGNING_KEY_PATH", str(key_path))
    reset_caches()
    runner = CliRunner()
    created = runner.invoke(main, ["keys", "init"])
    assert created.exit_code == 0 and str(key_path) in created.output, created.output
    assert key_path.stat().st_mode & 0o777 == 0o600
    first = key_path.read_bytes()
    again = runner.invoke(main, ["keys", "init"])
    assert again.exit_code == 1 and key_path.read_bytes() == first
    kid = created.output.split()[3]
    assert runner.invoke(main, ["keys", "list"]).output.splitlines()[1].split()[:2] == [kid, "active"]
    rotated = runner.invoke(main, ["keys", "rotate"])
    assert rotated.exit_code == 0, rotated.output
    assert key_path.read_bytes() != first
    statuses = dict(line.split()[:2] for line in runner.invoke(main, ["keys", "list"]).output.splitlines()[1:])
    assert statuses[kid] == "retired" and list(statuses.values()).count("active") == 1
