"""SISA sized to the data: the learning curve decides how many shards a recipe affords."""

import pytest
from sklearn.datasets import make_classification

from workers.unlearning import get_adapter, split
from workers.unlearning.data import from_arrays
from workers.unlearning.sizing import CurvePoint, choose_layout, size_sisa, slice_cost

# A convex base model: its accuracy at a given size is an optimum, not a draw, so the
# curve and the comparison with the ensemble are not at the mercy of training noise.
BASE = {"l2": 1e-3, "noise_std": 0.0, "unit_rows": False, "removal_cache": False}


def curve(*accuracies: float, rows: int = 1600) -> list[CurvePoint]:
    return [CurvePoint(rows // 2**i, accuracy, 0.0) for i, accuracy in enumerate(accuracies)]


def test_choose_layout_takes_the_largest_s_within_the_limit():
    flat = choose_layout(curve(0.90, 0.898, 0.895, 0.885, 0.85), 1600, 0.01)
    assert (flat.shards, flat.slices) == (4, 1) and flat.predicted_loss == pytest.approx(0.005)
    # A noisy rise at fewer rows does not let a larger S through.
    bumpy = choose_layout(curve(0.90, 0.85, 0.91, 0.91, 0.91), 1600, 0.01)
    assert bumpy.shards == 1


def test_choose_layout_says_so_when_no_s_above_one_meets_the_limit():
    steep = choose_layout(curve(0.90, 0.85, 0.80, 0.70, 0.60), 1600, 0.01)
    assert (steep.shards, steep.slices, steep.deletion_cost) == (1, 1, 1.0)
    assert steep.reason.startswith("no S > 1 keeps the ensemble within 1.00 points")
    assert [c["meets_limit"] for c in steep.candidates] == [False] * 4
    assert slice_cost(1) == 1.0 and slice_cost(4) == pytest.approx(0.75)


@pytest.fixture(scope="module")
def steep():
    """60 features, 4 classes, 2,000 rows: logistic regression still gains ~3 points
    from n/2 to n, ~9 from n/4 to n."""
    x, y = make_classification(2000, 60, n_informative=30, n_redundant=2, n_classes=4, class_sep=1.0,
                               random_state=0)
    data = from_arrays(x, y, [f"k{i:04d}" for i in range(len(y))])
    train, _, heldout = split(data, [], 0.3, seed=0)
    calibration, _, test = split(heldout, [], 0.5, seed=1)
    return train, calibration, test


@pytest.mark.slow
def test_sized_sisa_meets_the_accuracy_limit_on_a_steep_curve(steep):
    train, calibration, test = steep
    monolithic = get_adapter("logreg", **BASE).fit(train, 0)
    strict = size_sisa("logreg", BASE, train, calibration, 0, 0.01)
    assert strict.shards == 1 and strict.reason.startswith("no S > 1")
    loose = size_sisa("logreg", BASE, train, calibration, 0, 0.04)
    assert loose.shards >= 2 and loose.predicted_loss <= 0.04
    assert len(loose.curve) == 5 and loose.curve[0].rows == len(train)
    ensemble = get_adapter("sisa", base="logreg", base_params=BASE, shards=loose.shards,
                           slices=loose.slices).fit(train, 0)
    # Judged on rows the sizing never saw.
    assert monolithic.accuracy(test) - ensemble.accuracy(test) <= 0.04
