"""Random interleavings of intake, training (SISA fan-out: its snapshot is pinned long
before its version registers), unlearning and import on a small registry, one job step at
a time in this process. After every step no violation of the lineage invariant exists
(registration covers what it brings in); once everything settled, no live version holds a
record at stake and every request completed with its records in no live artifact.

Few examples (each is a fresh database and a few SISA fits), so this explores, it does
not prove: a failing interleaving is printed by Hypothesis and is a bug."""

from __future__ import annotations

import shutil
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from app.demo import DemoModel
from tests.jobs.conftest import TINY_SISA

SISA = DemoModel("digits-sisa", "sisa", TINY_SISA, {"default_method": "sisa"})
ROWS = 300  # 3 rows for each of the 100 demo subjects
SUBJECTS = 4

STEP = st.one_of(
    st.tuples(st.just("submit"), st.integers(0, SUBJECTS - 1)),
    st.tuples(st.just("train"), st.just(0)),
    st.tuples(st.just("step"), st.just(0)),
    st.tuples(st.just("unlearn"), st.just(0)),
    st.tuples(st.just("import"), st.integers(0, 3)),
    st.tuples(st.just("tick"), st.just(0)),
)


def _fresh_database(backend: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from tests.conftest import RUN_TAG, _pg_exec, _pg_url, reset_caches

    if backend == "postgresql":
        name = f"{RUN_TAG}_{uuid.uuid4().hex[:10]}"
        _pg_exec(f'CREATE DATABASE "{name}" TEMPLATE "{request.getfixturevalue("pg_template")}"')
        url = _pg_url(name)
    else:
        target = tmp_path / f"{uuid.uuid4().hex[:10]}.sqlite3"
        shutil.copy(request.getfixturevalue("sqlite_template"), target)
        url = f"sqlite:///{target}"
    monkeypatch.setenv("UNLEARND_DATABASE_URL", url)
    reset_caches()


def _violations() -> list:
    from app.core.database import session_scope
    from app.jobs import invariant

    with session_scope() as session:
        return invariant.check(session)[1]


def _queued_jobs() -> list[str]:
    from app.core.database import session_scope
    from app.jobs.models import JobKind, UnlearningJob

    with session_scope() as session:
        return list(session.scalars(select(UnlearningJob.id).where(
            UnlearningJob.status == "queued", UnlearningJob.kind != JobKind.TRAIN_SHARD.value
        ).order_by(UnlearningJob.created_at)))


def _one_step() -> None:
    """One execution of the oldest queued job (a SISA parent fans out, a shard trains, the
    parent assembles: each is its own step, so others can come in between)."""
    from app.core.database import session_scope
    from app.jobs import service
    from app.jobs.models import UnlearningJob

    with session_scope() as session:
        job_id = session.scalar(select(UnlearningJob.id).where(UnlearningJob.status == "queued")
                                .order_by(UnlearningJob.created_at, UnlearningJob.id).limit(1))
    if job_id is not None:
        service.execute(job_id, "property-worker")


def _unlearn_now() -> None:
    from app.core.database import session_scope
    from app.core.errors import Conflict
    from app.jobs import service

    try:
        with session_scope() as session:
            service.unlearn_now(session, SISA.name, actor="test")
    except Conflict:
        pass  # nothing pending, or no active version yet


def _import(api, ml, which: int) -> None:
    """A version "trained elsewhere" on one of the existing snapshots, with the active
    version's bytes (so later jobs can unlearn from it). Refused (409) when it would
    remember a forgotten record; anything else must register."""
    from app.core.database import session_scope
    from app.registry.models import DatasetSnapshot, ModelVersion

    with session_scope() as session:
        snapshots = list(session.scalars(select(DatasetSnapshot.id).order_by(DatasetSnapshot.created_at,
                                                                              DatasetSnapshot.id)))
        active = session.scalar(select(ModelVersion).where(ModelVersion.state == "active"))
        if not snapshots or active is None:
            return
        body = {"snapshot_id": snapshots[which % len(snapshots)],
                "artifacts": [{"uri": active.artifact_uri, "sha256": active.artifact_sha256, "kind": "model"}]}
    response = api.post(f"/v1/models/{SISA.name}/versions", headers=ml.headers, json=body)
    assert response.status_code in (201, 409), response.text


def _settle(api, admin) -> None:
    from app.core.database import session_scope
    from app.jobs import service
    from tests.jobs.conftest import run_inline

    for _ in range(12):
        for job_id in _queued_jobs():
            run_inline(job_id)
        _unlearn_now()
        with session_scope() as session:
            service.schedule(session)
        open_requests = [r for r in api.get("/v1/deletion-requests?limit=200", headers=admin.headers).json()["items"]
                         if r["status"] not in ("completed", "failed")]
        if not _queued_jobs() and not open_requests:
            return
    raise AssertionError(f"did not settle: queued {_queued_jobs()}, open {open_requests}")


@pytest.mark.slow
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(steps=st.lists(STEP, min_size=3, max_size=9))
def test_the_invariant_holds_over_random_interleavings(backend, env, request, monkeypatch, tmp_path, steps):
    from fastapi.testclient import TestClient

    from app import demo
    from app.core.database import session_scope
    from app.jobs import invariant
    from app.lineage import service as lineage
    from app.main import create_app
    from app.requests.models import RequestRecord
    from tests.conftest import Caller

    _fresh_database(backend, request, monkeypatch, tmp_path)
    from app.clients.service import create_client

    with session_scope() as session:
        callers = {role: create_client(session, name=f"{role}-{uuid.uuid4().hex[:6]}", role=role)
                   for role in ("admin", "portal", "ml")}
        admin, portal, ml = (Caller(id=c.client.id, role=role, api_key=c.api_key) for role, c in callers.items())
    demo.install(actor="test", models=(SISA,), limit=ROWS)
    with TestClient(create_app(), raise_server_exceptions=False) as api:
        for action, argument in steps:
            if action == "submit":
                body = {"subject": [{"type": "user_id", "value": demo.subject_id(argument)}],
                        "legal_basis": "gdpr_art17"}
                assert api.post("/v1/deletion-requests", json=body, headers=portal.headers).status_code == 202
            elif action == "train":
                assert api.post(f"/v1/models/{SISA.name}/train", json={}, headers=ml.headers).status_code == 202
            elif action == "step":
                _one_step()
            elif action == "unlearn":
                _unlearn_now()
            elif action == "import":
                _import(api, ml, argument)
            else:
                with session_scope() as session:
                    from app.jobs import service

                    service.schedule(session)
            assert _violations() == [], (action, argument)
        _settle(api, admin)
        requests = api.get("/v1/deletion-requests?limit=200", headers=admin.headers).json()["items"]
        assert {r["status"] for r in requests} <= {"completed"}, requests
        with session_scope() as session:
            assert invariant.check(session) == ([], [])
            for item in requests:
                record_ids = list(session.scalars(select(RequestRecord.record_id)
                                                  .where(RequestRecord.request_id == item["id"])))
                assert lineage.live_versions_holding(session, record_ids) == [], item["id"]
