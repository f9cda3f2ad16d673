"""Dashboard fixtures: a registry with requests waiting for approval, and a signed-in client."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.requests.conftest import seed_model, submission  # noqa: F401 - seed_model is a fixture
from tests.webhooks.conftest import receiver, webhook_env  # noqa: F401 - fixtures


@dataclass(frozen=True)
class Seeded:
    model_name: str
    pending: list[str]  # request ids waiting for an admin's approval


@pytest.fixture
def seeded(api, make_client, seed_model) -> Seeded:  # noqa: F811
    """Five subjects in one model; a portal whose requests need approval asks for each."""
    subjects = {f"rec-{n}": ("email", f"person{n}@example.org") for n in range(5)}
    model = seed_model(subjects)
    portal = make_client("portal", requires_approval=True)
    pending = []
    for n in range(5):
        body = submission(subject=[{"type": "email", "value": f"person{n}@example.org"}], external_ref=f"dash-{n}")
        created = api.post("/v1/deletion-requests", json=body, headers=portal.headers)
        assert created.status_code == 202, created.text
        assert created.json()["status"] == "pending_approval"
        pending.append(created.json()["id"])
    return Seeded(model_name=model.model_name, pending=pending)


def add_purged_lineage(model_name: str) -> None:
    """v1 purged, v2 derived from it by unlearning: what a completed deletion leaves."""
    from sqlalchemy import select

    from app.core.database import session_scope
    from app.registry.models import ModelVersion, RegisteredModel, VersionState

    with session_scope() as session:
        model = session.scalar(select(RegisteredModel).where(RegisteredModel.name == model_name))
        first = session.scalar(select(ModelVersion).where(ModelVersion.model_id == model.id))
        first.state = VersionState.PURGED
        session.add(ModelVersion(model_id=model.id, number=2, parent_id=first.id, snapshot_id=first.snapshot_id,
                                 state=VersionState.ACTIVE, origin="unlearned", artifact_sha256="1" * 64))


def model_and_version(model_name: str) -> tuple[str, str]:
    from sqlalchemy import select

    from app.core.database import session_scope
    from app.registry.models import ModelVersion, RegisteredModel

    with session_scope() as session:
        model = session.scalar(select(RegisteredModel).where(RegisteredModel.name == model_name))
        version = session.scalar(select(ModelVersion).where(ModelVersion.model_id == model.id,
                                                            ModelVersion.number == 1))
        return model.id, version.id


def add_study(model_name: str, *, status: str = "qualified", score: float = 0.91) -> str:
    """A finished qualification study of neggrad_plus on v1, as the worker's _finish leaves it."""
    from app.core.database import session_scope, utcnow
    from app.jobs.models import MethodQualification

    model_id, version_id = model_and_version(model_name)
    study = {"qualified": status == "qualified", "reasons": [] if status == "qualified" else ["too weak"],
             "forget_size": 8, "runs": 4, "flag_rate_unlearned": 0.04, "flag_rate_retrain": 0.03,
             "forget_score": score, "forget_score_ceiling": 0.95, "forget_score_original": 0.12,
             "accuracy_unlearned": 0.93, "accuracy_retrain": 0.94, "accuracy_original": 0.95}
    with session_scope() as session:
        row = MethodQualification(model_id=model_id, version_id=version_id, method="neggrad_plus", band_min=1,
                                  band_max=8, status=status, settings={"runs": 4}, report={"study": study},
                                  report_sha256="a" * 64, finished_at=utcnow())
        session.add(row)
        session.flush()
        return row.id


def retrain_from_scratch(model_name: str) -> None:
    """A newly trained version (no parent) becomes active: what lapses a qualification."""
    from sqlalchemy import select

    from app.core.database import session_scope
    from app.registry.models import ModelVersion, VersionState

    model_id, version_id = model_and_version(model_name)
    with session_scope() as session:
        first = session.get(ModelVersion, version_id)
        first.state = VersionState.SUPERSEDED
        number = len(session.scalars(select(ModelVersion.id).where(ModelVersion.model_id == model_id)).all()) + 1
        session.add(ModelVersion(model_id=model_id, number=number, snapshot_id=first.snapshot_id,
                                 state=VersionState.ACTIVE, origin="trained", artifact_sha256="2" * 64))


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def sign_in(api, make_client) -> Callable[[str], str]:
    """Sign the test client in with a new key of ``role``; returns the page's CSRF token."""

    def factory(role: str = "admin") -> str:
        caller = make_client(role)
        response = api.post("/admin/login", data={"api_key": caller.api_key}, follow_redirects=False)
        assert response.status_code == 303, response.text
        page = api.get("/admin/audit")
        assert page.status_code == 200
        return CSRF.search(page.text).group(1)

    return factory


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    """Debian's Chromium (the project installs it; Playwright never downloads a browser),
    with the flags this machine's closed network and root user need."""
    return {
        **browser_type_launch_args,
        "executable_path": "/usr/bin/chromium",
        "args": ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    }


@pytest.fixture
def live_server(env):
    """The app on a real port (uvicorn in a thread), against this test's database."""
    import socket
    import threading
    import time

    import uvicorn

    from app.main import create_app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)
