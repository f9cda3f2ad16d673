"""The model policy is typed and checked at registration; its mirror of the engine stays in step."""

from __future__ import annotations

import typing

import pytest

from tests.registry.factory import ingested, rows


def test_the_policy_mirrors_the_engine():
    # The registry validates without importing the engine (no PyTorch in the API); this is the
    # one place both are loaded, so a name or type changed on either side fails here.
    from app.registry import policy
    from workers.unlearning import Thresholds, adapters
    from workers.unlearning.adapters import LogRegAdapter, SisaAdapter, TorchClassifier
    from workers.unlearning.methods import METHODS

    def fields(cls: type) -> dict[str, object]:
        return typing.get_type_hints(cls)

    assert fields(policy.Thresholds) == fields(Thresholds)
    assert set(policy.METHOD_NAMES) == set(METHODS)
    for name, spec in METHODS.items():
        options = typing.get_type_hints(policy.MethodConfigs)[name]
        options_type = next(arg for arg in typing.get_args(options) if arg is not type(None))
        assert fields(options_type) == fields(spec.config), name
    assert policy.ADAPTER_ENTRY_POINT_GROUP == adapters.ENTRY_POINT_GROUP
    assert set(adapters.BUILTINS) == policy.BUILTIN_ADAPTERS
    torch_adapters = {name for name, cls in adapters.BUILTINS.items() if issubclass(cls, TorchClassifier)}
    assert torch_adapters == policy.TORCH_ADAPTERS
    # Each method's own refusal (UnsupportedModel) is an isinstance check on these classes.
    expected = {"retrain": None, "sisa": {SisaAdapter.name}, "newton": {LogRegAdapter.name}}
    for name in METHODS:
        assert policy.METHOD_ADAPTERS[name] == expected.get(name, torch_adapters), name


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"adapter": "mlp", "policy": {"thresholds": {"min_retain_accuracy": 0.9}}},
         "policy.thresholds.min_retain_accuracy"),
        ({"adapter": "mlp", "policy": {"thresholds": {"attack_folds": "many"}}}, "policy.thresholds.attack_folds"),
        ({"adapter": "mlp", "policy": {"default_method": "finetun"}}, "policy.default_method"),
        ({"adapter": "mlp", "policy": {"method_configs": {"finetune": {"epoch": 2}}}},
         "policy.method_configs.finetune.epoch"),
        ({"adapter": "mlp", "policy": {"method_configs": {"gradient_ascent": {}}}},
         "policy.method_configs.gradient_ascent"),
        ({"adapter": "xgboost"}, "adapter"),
        ({"adapter": "mlp", "policy": {"default_method": "newton"}}, "policy.default_method"),
        ({"adapter": "logreg", "policy": {"default_method": "sisa"}}, "policy.default_method"),
    ],
)
def test_registration_refuses_what_the_engine_does_not_know(env, api, make_client, body, field):
    ingested("ds", rows(8))
    response = api.post("/v1/models", json={"name": "m", "dataset": "ds", **body},
                        headers=make_client("ml").headers)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert api.get("/v1/models/m", headers=make_client("ml").headers).status_code == 404


def test_a_valid_policy_is_stored_as_given(env, api, make_client):
    ingested("ds", rows(8))
    policy = {"default_method": "finetune", "thresholds": {"max_mia_auc": 0.6, "attack_folds": 3},
              "method_configs": {"finetune": {"epochs": 2}}}
    response = api.post("/v1/models", json={"name": "m", "adapter": "mlp", "dataset": "ds", "policy": policy},
                        headers=make_client("ml").headers)
    assert response.status_code == 201, response.text
    stored = response.json()["policy"]
    # Only what the caller set: an unset threshold or option means the engine's default.
    assert stored["thresholds"] == {"max_mia_auc": 0.6, "attack_folds": 3}
    assert stored["method_configs"] == {"finetune": {"epochs": 2}}
    assert stored["default_method"] == "finetune" and stored["max_batch_size"] == 100


def test_a_policy_stored_before_the_checks_still_reads():
    from app.registry.policy import StoredPolicy

    read = StoredPolicy.read({"default_method": "gradient_ascent", "thresholds": {"max_mia_auc": 0.6, "legacy": 1.0}})
    # The unknown method stays as written (the job reports it and falls back to the exact one).
    assert read.method == "gradient_ascent"
    assert read.policy.thresholds == {"max_mia_auc": 0.6} and read.ignored_thresholds == ["legacy"]
    assert read.policy.max_batch_size == 100 and read.policy.method_configs.options_for("retrain") is None


@pytest.mark.slow  # trains a model and retrains it through the engine
def test_method_options_reach_the_engine(blobs_for_policy):
    from app.jobs import engine
    from app.registry.policy import MethodConfigs

    model, retain, forget, heldout = blobs_for_policy
    configs = MethodConfigs.model_validate({"retrain": {"seed": 7}})
    outcome = engine.unlearn_verified(model, "retrain", retain, forget, heldout, engine.thresholds({}),
                                      configs.options_for, seed=0, on_stage=lambda stage: None)
    assert outcome.report["attempts"][0]["unlearning"]["details"]["seed"] == 7


@pytest.fixture
def blobs_for_policy():
    import torch

    from workers.unlearning import LabelledData, get_adapter

    features = torch.randn(60, 4, generator=torch.Generator().manual_seed(0))
    labels = (features[:, 0] > 0).long()
    data = LabelledData(features=features, labels=labels, keys=tuple(f"k{i}" for i in range(60)))
    model = get_adapter("logreg").fit(data.take(list(range(40))), 0)
    return model, data.take(list(range(5, 40))), data.take(list(range(5))), data.take(list(range(40, 60)))
