import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from workers.unlearning.data import DataError, LabelledData, from_arrays, load_table, split


@pytest.fixture
def frame():
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "key": [f"{i:03d}" for i in range(50)],
        "b": rng.normal(size=50),
        "a": rng.normal(size=50),
        "label": rng.integers(0, 3, size=50),
    })


def test_parquet_and_csv_give_the_same_tensors(tmp_path, frame):
    frame.to_parquet(tmp_path / "t.parquet")
    frame.to_csv(tmp_path / "t.csv", index=False)
    a = load_table(tmp_path / "t.parquet", "parquet", key_column="key", label_column="label")
    b = load_table(tmp_path / "t.csv", "csv", key_column="key", label_column="label")
    assert a.features.dtype == torch.float32 and a.labels.dtype == torch.int64
    assert a.keys == b.keys and a.keys[7] == "007"  # keys stay text, leading zeros kept
    assert torch.equal(a.features, b.features) and torch.equal(a.labels, b.labels)
    # Columns are taken in sorted-name order when not named explicitly.
    assert torch.allclose(a.features[:, 0], torch.tensor(frame["a"].values, dtype=torch.float32))
    assert a.fingerprint() == b.fingerprint()


def test_feature_columns_select_and_order(tmp_path, frame):
    frame.to_parquet(tmp_path / "t.parquet")
    data = load_table(tmp_path / "t.parquet", "parquet", key_column="key", label_column="label",
                      feature_columns=["b"])
    assert data.feature_shape == (1,)
    assert torch.allclose(data.features[:, 0], torch.tensor(frame["b"].values, dtype=torch.float32))


def test_array_field_in_parquet_csv_and_npz(tmp_path):
    images = np.arange(6 * 4, dtype=np.float64).reshape(6, 2, 2)
    keys = [f"k{i}" for i in range(6)]
    labels = np.array([0, 1, 0, 1, 2, 2])
    table = pa.table({"id": keys, "y": labels, "pixels": [img.tolist() for img in images]})
    pq.write_table(table, tmp_path / "img.parquet")
    pd.DataFrame({"id": keys, "y": labels, "pixels": [json.dumps(img.tolist()) for img in images]}
                 ).to_csv(tmp_path / "img.csv", index=False)
    np.savez(tmp_path / "img.npz", id=np.array(keys), y=labels, pixels=images)
    loaded = [
        load_table(tmp_path / f"img.{fmt}", fmt, key_column="id", label_column="y", array_field="pixels")
        for fmt in ("parquet", "csv", "npz")
    ]
    for data in loaded:
        assert data.feature_shape == (2, 2)
        assert torch.equal(data.features, torch.tensor(images, dtype=torch.float32))
        assert data.keys == tuple(keys)


def test_npz_without_field_uses_its_only_feature_array(tmp_path):
    np.savez(tmp_path / "x.npz", key=np.arange(4), label=np.arange(4) % 2, x=np.ones((4, 3)))
    data = load_table(tmp_path / "x.npz", "npz", key_column="key", label_column="label")
    assert data.feature_shape == (3,) and data.keys == ("0", "1", "2", "3")


@pytest.mark.parametrize("bad, message", [
    ({"label": ["cat"] * 50}, "integer class ids"),
    ({"label": [0.5] * 50}, "integer class ids"),
    ({"key": ["same"] * 50}, "not unique"),
    ({"a": [np.nan] * 50}, "NaN"),
])
def test_bad_tables_are_refused(tmp_path, frame, bad, message):
    for column, values in bad.items():
        frame[column] = values
    frame.to_parquet(tmp_path / "t.parquet")
    with pytest.raises(DataError, match=message):
        load_table(tmp_path / "t.parquet", "parquet", key_column="key", label_column="label")


def test_missing_column_and_unknown_format(tmp_path, frame):
    frame.to_parquet(tmp_path / "t.parquet")
    with pytest.raises(DataError, match="missing column 'nope'"):
        load_table(tmp_path / "t.parquet", "parquet", key_column="nope", label_column="label")
    with pytest.raises(DataError, match="unknown format"):
        load_table(tmp_path / "t.parquet", "xlsx", key_column="key", label_column="label")


def test_split_is_deterministic_and_keyed(blobs):
    forget = ["r0003", "r0100"]  # r0003 is also among the rows deleted below
    first = split(blobs, forget, 0.2, seed=5)
    second = split(blobs, forget, 0.2, seed=5)
    for a, b in zip(first, second, strict=True):
        assert a.fingerprint() == b.fingerprint()
    retain, forgotten, heldout = first
    assert set(forgotten.keys) == set(forget)
    assert len(retain) + len(forgotten) + len(heldout) == len(blobs)
    assert 0.15 < len(heldout) / len(blobs) < 0.25
    # Held-out membership depends on the key only: deleting other rows keeps it.
    smaller = blobs.without(blobs.keys[:100])
    _, _, heldout_smaller = split(smaller, ["r0100"], 0.2, seed=5)
    assert set(heldout_smaller.keys) == set(heldout.keys) - set(blobs.keys[:100])
    assert set(split(blobs, forget, 0.2, seed=6)[2].keys) != set(heldout.keys)


def test_split_rejects_unknown_forget_keys_when_strict(blobs):
    with pytest.raises(DataError, match="not in the data"):
        split(blobs, ["ghost"], 0.2, seed=0)
    retain, forget, _ = split(blobs, ["ghost"], 0.2, seed=0, strict=False)
    assert len(forget) == 0


def test_labelled_data_validates_alignment():
    with pytest.raises(DataError):
        LabelledData(torch.zeros(3, 2), torch.zeros(2, dtype=torch.int64), ("a", "b", "c"))
    data = from_arrays(np.eye(3), [0, 1, 2], ["a", "b", "c"])
    assert data.select(["c", "a"]).keys == ("a", "c")  # data order, not argument order
