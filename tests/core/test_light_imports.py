"""The API process and the CLI never load PyTorch: only worker tasks that fit, load, unlearn or
verify a model reach the engine's torch code. Each check runs in a fresh interpreter, because
this test process has long since imported torch through other tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

NO_TORCH = (
    "loaded = sorted(name for name in sys.modules if name == 'torch' or name.startswith('torch.'))\n"
    "assert not loaded, f'torch was imported: {loaded[:5]}'\n"
)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    finished = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ), capture_output=True,
                              text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr + finished.stdout
    return finished


def test_importing_the_api_does_not_load_torch(env):
    _run("import sys\nimport app.main\napp.main.create_app()\n" + NO_TORCH)


@pytest.mark.parametrize("args", [["--help"], ["requests", "list"], ["jobs", "list"]])
def test_cli_commands_do_not_load_torch(env, args):
    # standalone_mode=False returns instead of exiting, so the check runs after the command.
    finished = _run(f"import sys\nfrom app.cli import main\nassert main({args!r}, standalone_mode=False) in (0, None)\n"
                    + NO_TORCH)
    if args == ["--help"]:
        assert "Usage:" in finished.stdout


def test_cli_help_loads_neither_settings_nor_the_database_layer(env):
    """`unlearnd --help` lists every command without loading what the commands run on: most
    of its time was pydantic-settings, which the settings object loads."""
    _run("import sys\nfrom app.cli import main\nassert main(['--help'], standalone_mode=False) in (0, None)\n"
         "loaded = [n for n in ('pydantic_settings', 'sqlalchemy', 'app.core.config') if n in sys.modules]\n"
         "assert not loaded, loaded\n")


@pytest.mark.slow  # a process that imports torch
def test_the_engine_still_loads_torch_where_it_fits(env):
    """The check above can fail: the worker path still reaches torch through the same doorway."""
    _run("import sys\nfrom app.jobs import engine\nengine.adapter_of('logreg', {})\n"
         "assert 'torch' in sys.modules\n")


def _seed_trained_model() -> str:
    """A ready dataset, a logreg model on it and an active version trained on a snapshot: what
    starting training and a qualification study need. Written through the ORM, no engine."""
    import uuid

    from pyroaring import BitMap

    from app.core.database import session_scope
    from app.registry.models import DataRecord, Dataset, DatasetSnapshot, ModelVersion, RegisteredModel, VersionState

    suffix = uuid.uuid4().hex[:6]
    with session_scope() as session:
        dataset = Dataset(name=f"ds-{suffix}", uri="/data/x.csv", format="csv", schema={}, status="ready")
        session.add(dataset)
        session.flush()
        session.add_all([DataRecord(dataset_id=dataset.id, row_index=i, record_key=f"r{i}", subject_hash=f"{i:064x}",
                                    content_hash=f"{i:064x}") for i in range(3)])
        model = RegisteredModel(name=f"model-{suffix}", adapter="logreg", hyperparameters={"l2": 0.01},
                                dataset_id=dataset.id, policy={})
        snapshot = DatasetSnapshot(dataset_id=dataset.id, record_count=3, members=BitMap(range(3)).serialize(),
                                   merkle_root="0" * 64)
        session.add_all([model, snapshot])
        session.flush()
        session.add(ModelVersion(model_id=model.id, number=1, snapshot_id=snapshot.id, state=VersionState.ACTIVE,
                                 artifact_uri="file:///x", artifact_sha256="0" * 64))
        return model.name


def test_training_and_qualification_start_do_not_load_torch(env, make_client):
    """The API checks a built-in recipe and a method's guarantee without the engine; only the
    worker that fits or studies the model loads torch."""
    name = _seed_trained_model()
    ml = make_client("ml")
    _run(
        "import sys\nfrom fastapi.testclient import TestClient\nfrom app.main import create_app\n"
        f"headers = {ml.headers!r}\n"
        "with TestClient(create_app(), raise_server_exceptions=False) as api:\n"
        f"    r = api.post('/v1/models/{name}/train', json={{}}, headers=headers)\n"
        "    assert r.status_code == 202, r.text\n"
        f"    r = api.post('/v1/models/{name}/qualifications', headers=headers,\n"
        "                 json={'method': 'finetune', 'band_min': 1, 'band_max': 2, 'runs': 2})\n"
        "    assert r.status_code == 202, r.text\n"
        # An exact method needs no study: refused from the torch-free table.
        f"    r = api.post('/v1/models/{name}/qualifications', headers=headers,\n"
        "                 json={'method': 'retrain', 'band_min': 1, 'band_max': 2, 'runs': 2})\n"
        "    assert r.status_code == 422, r.text\n"
        + NO_TORCH
    )


def test_built_in_recipes_are_checked_as_the_adapters_check_them():
    from workers.unlearning import recipes
    from workers.unlearning.adapters import BUILTINS, get_adapter
    from workers.unlearning.methods import METHODS

    assert {name: spec.guarantee for name, spec in METHODS.items()} == recipes.METHOD_GUARANTEES
    assert {name: adapter.Params for name, adapter in BUILTINS.items()} == recipes.BUILTIN_PARAMS
    for name, hyperparameters in [("logreg", {"l2": 0}), ("mlp", {"hidden": [0]}), ("cnn", {"nope": 1}),
                                  ("sisa", {"base": "mlp", "base_params": {"dropout": 2}}), ("sisa", {"base": "sisa"})]:
        with pytest.raises((ValueError, TypeError)):
            recipes.check(name, hyperparameters)
        with pytest.raises((ValueError, TypeError)):
            get_adapter(name, **hyperparameters)
    assert recipes.check("logreg", {"l2": 0.5}) and not recipes.check("some-plugin", {})
