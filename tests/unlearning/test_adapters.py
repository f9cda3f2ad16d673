import importlib.metadata

import pytest
import torch

from workers.unlearning import adapters
from workers.unlearning.adapters import (
    AdapterError,
    adapter_from_state,
    available_adapters,
    get_adapter,
)
from workers.unlearning.adapters.mlp import MLPAdapter
from workers.unlearning.serialization import StateFormatError

FAST = {
    "mlp": {"hidden": [32], "epochs": 20, "batch_size": 32},
    "logreg": {"l2": 1e-3},
    "cnn": {"channels": [4, 8], "hidden": 16, "epochs": 8, "batch_size": 32},
    "sisa": {"base": "mlp", "base_params": {"hidden": [16], "epochs": 20, "batch_size": 32},
             "shards": 3, "slices": 2},
}


def _data_for(name, blobs, digits):
    return digits if name == "cnn" else blobs


@pytest.mark.parametrize("name", ["mlp", "logreg", "cnn", "sisa"])
def test_adapter_contract(name, blobs, digits, sha, torch_rng_untouched):
    data = _data_for(name, blobs, digits)
    model = get_adapter(name, **FAST[name]).fit(data, seed=3)
    proba = model.predict_proba(data.features)
    assert proba.shape == (len(data), model.num_classes) and proba.dtype == torch.float32
    assert torch.allclose(proba.sum(dim=1), torch.ones(len(data)), atol=1e-5)
    losses = model.per_sample_loss(data)
    assert losses.shape == (len(data),) and bool((losses >= 0).all())
    assert model.accuracy(data) > 0.7  # it learned something

    raw = model.state_bytes()
    twin = get_adapter(name, **FAST[name]).fit(data, seed=3)
    assert sha(twin.state_bytes()) == sha(raw), "same data and seed must give the same bytes"
    other = get_adapter(name, **FAST[name]).fit(data, seed=4)
    if name != "logreg":  # logreg starts from zeros: its optimum ignores the seed except for noise
        assert sha(other.state_bytes()) != sha(raw)

    restored = adapter_from_state(raw)
    assert type(restored) is type(model)
    assert sha(restored.state_bytes()) == sha(raw)
    assert torch.equal(restored.predict_proba(data.features), proba)


def test_num_classes_survive_a_missing_class(blobs):
    model = get_adapter("mlp", **FAST["mlp"]).fit(blobs, 0)
    without_class = blobs.take(blobs.labels != 3)
    retrained = model.fit_fresh(without_class, 0)
    assert retrained.num_classes == 4
    assert retrained.predict_proba(blobs.features).shape[1] == 4


def test_registry_errors():
    assert {"mlp", "logreg", "cnn", "sisa"} <= set(available_adapters())
    with pytest.raises(AdapterError, match="unknown adapter"):
        get_adapter("gbm")
    with pytest.raises(AdapterError, match="unknown hyper-parameter"):
        get_adapter("mlp", hiden=[3])
    with pytest.raises(AdapterError, match="not fitted"):
        get_adapter("mlp").state_bytes()
    with pytest.raises(StateFormatError):
        adapter_from_state(b"not a state")
    model_bytes = get_adapter("mlp", **FAST["mlp"]).build((3,), 2, 0).state_bytes()
    with pytest.raises(AdapterError, match="not 'logreg'"):
        get_adapter("logreg").load_state_bytes(model_bytes)


def test_third_party_adapter_from_entry_point(monkeypatch, blobs):
    class TinyMLP(MLPAdapter):
        name = "tiny"

    point = importlib.metadata.EntryPoint("tiny", "tiny_plugin:TinyMLP",
                                          adapters.ENTRY_POINT_GROUP)
    monkeypatch.setattr(point.__class__, "load", lambda self: TinyMLP)

    def fake_entry_points(group=None):
        return [point] if group == adapters.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(adapters, "entry_points", fake_entry_points)
    assert "tiny" in available_adapters()
    model = get_adapter("tiny", hidden=[8], epochs=2, batch_size=32).fit(blobs, 0)
    assert isinstance(model, TinyMLP)
    assert isinstance(adapter_from_state(model.state_bytes()), TinyMLP)
    # and SISA can shard it, since it is a full adapter with Params and partial_fit
    sisa = get_adapter("sisa", base="tiny", base_params={"hidden": [8], "epochs": 10, "batch_size": 32},
                       shards=2)
    assert sisa.fit(blobs, 0).accuracy(blobs) > 0.5


def test_sisa_layout_and_lookup(blobs):
    model = get_adapter("sisa", **FAST["sisa"]).fit(blobs, 0)
    all_keys = [key for shard in range(3) for key in model.shard_keys(shard)]
    assert sorted(all_keys) == sorted(blobs.keys)  # every record in exactly one shard
    held = model.shards_holding(["r0001", "r0002", "ghost"])
    assert sum(len(keys) for keys in held.values()) == 2
    for shard, keys in held.items():
        assert all(model.shard_of(key) == shard for key in keys)
        assert model.shard_state_bytes(shard) is not None
        assert len(model.checkpoint_keys(shard)) == 2
    assert model.stage_epochs() == round(2 * 20 / 3)


def test_cnn_needs_an_image_shape(blobs):
    with pytest.raises(AdapterError, match="as an image"):
        get_adapter("cnn", epochs=1).fit(blobs, 0)  # 10 flat features: not a square
    model = get_adapter("cnn", channels=[2], hidden=4, epochs=1, input_shape=[1, 2, 5]).fit(blobs, 0)
    assert model.predict_proba(blobs.features[:3]).shape == (3, 4)
