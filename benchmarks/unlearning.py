"""Benchmark of the unlearning engine: time, accuracy and forgetting, per method.

    python benchmarks/unlearning.py            # full run (datasets of issue 5, 3 seeds)
    python benchmarks/unlearning.py --quick    # same code path, small sizes, < 1 minute

Prints markdown tables. Datasets: sklearn digits (bundled), MNIST-1D generated
locally with ``mnist1d.data.make_dataset`` (never its download path) and
``make_classification`` (60,000 x 40, 10 classes). For every dataset, seed and
forget set (1 record, 1% at random, one whole class) it times each method and,
in the same run, an exact retrain; a second retrain with another seed is the
noise floor. Times are CPU seconds of this process (``time.process_time``) with
one torch thread, so other work on a shared machine does not skew the ratios;
wall seconds are reported too.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.unlearning import configure, get_adapter, split, unlearn, verify  # noqa: E402
from workers.unlearning.data import LabelledData, from_arrays  # noqa: E402
from workers.unlearning.methods import CertifiedBudgetExceeded  # noqa: E402
from workers.unlearning.sizing import size_sisa  # noqa: E402
from workers.unlearning.stats import loss_auc, matched_reference  # noqa: E402

APPROXIMATE = ("finetune", "neggrad_plus", "scrub", "salun")
HELDOUT_FRACTION = 0.2
UNCERTIFIED_BUDGET = 1e12  # lets newton run so its cost and accuracy can be measured


@dataclass
class Dataset:
    name: str
    data: LabelledData
    mlp: dict[str, Any]


@dataclass
class Row:
    """One method on one forget set, across seeds."""

    values: dict[str, list[float]] = field(default_factory=dict)
    verdicts: list[str] = field(default_factory=list)

    def add(self, **values: float) -> None:
        for key, value in values.items():
            self.values.setdefault(key, []).append(float(value))


def load_datasets(quick: bool) -> list[Dataset]:
    from sklearn.datasets import load_digits, make_classification

    digits = load_digits()
    images = digits.images / 16.0
    sets = [Dataset(
        "digits", from_arrays(images, digits.target, [f"digit-{i}" for i in range(len(images))]),
        mlp={"hidden": [256, 256], "epochs": 10 if quick else 30, "batch_size": 64},
    )]

    import mnist1d.data

    args = mnist1d.data.get_dataset_args()
    args.num_samples = 2000 if quick else 10_000
    generated = mnist1d.data.make_dataset(args)  # local generation; no download involved
    x = np.concatenate([generated["x"], generated["x_test"]])
    y = np.concatenate([generated["y"], generated["y_test"]])
    sets.append(Dataset(
        "mnist1d", from_arrays(x, y, [f"m1d-{i}" for i in range(len(y))]),
        mlp={"hidden": [256, 256], "epochs": 10 if quick else 40, "lr": 2e-3, "batch_size": 128},
    ))

    rows = 3000 if quick else 60_000
    x, y = make_classification(rows, 40, n_informative=20, n_redundant=10, n_classes=10,
                               random_state=0)
    sets.append(Dataset(
        "synthetic-60k" if not quick else "synthetic-3k",
        from_arrays(x, y, [f"syn-{i}" for i in range(rows)]),
        mlp={"hidden": [256, 256], "epochs": 5 if quick else 10, "batch_size": 128},
    ))
    return sets


def timed(function, *args, **kwargs):
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    return result, time.process_time() - cpu, time.perf_counter() - wall


def forget_sets(train: LabelledData, seed: int, num_classes: int) -> dict[str, list[str]]:
    rng = np.random.default_rng(seed)
    keys = list(train.keys)
    one_class = seed % num_classes
    return {
        "1 record": [keys[int(rng.integers(len(keys)))]],
        "1% random": [keys[i] for i in rng.choice(len(keys), max(1, len(keys) // 100), replace=False)],
        "1 class": [k for k, y in zip(keys, train.labels.tolist(), strict=True) if y == one_class],
    }


def gap_closed(original_auc: float, method_auc: float, retrain_auc: float) -> float:
    """Share of the original's MIA-AUC distance to the retrain that the method removed.

    Two-sided: overshooting below the retrain's AUC (forgotten rows now stand out by
    high loss) counts against the method just like stopping short.
    """
    gap = abs(original_auc - retrain_auc)
    return 1.0 - abs(method_auc - retrain_auc) / gap if gap > 1e-9 else math.nan


@dataclass
class Case:
    """One forget set on one seed, with its exact retrain as the yardstick."""

    name: str
    retain: LabelledData
    forget: LabelledData
    test: LabelledData
    original: Any
    retrained: Any
    retrain_cpu: float
    original_auc: float = math.nan
    retrain_auc: float = math.nan

    def __post_init__(self) -> None:
        matched = matched_reference(self.forget, self.test)
        self.original_auc = loss_auc(self.original.per_sample_loss(self.forget),
                                     self.original.per_sample_loss(matched))
        self.retrain_auc = loss_auc(self.retrained.per_sample_loss(self.forget),
                                    self.retrained.per_sample_loss(matched))


def record(table: dict, case: Case, method: str, model: Any, cpu: float, wall: float,
           baseline: Any = None) -> Row:
    report = verify(baseline or case.original, model, case.retain, case.forget, case.test,
                    reference=case.retrained)
    row = table.setdefault((case.name, method), Row())
    mia = report.mia.get("auc", math.nan)
    test_accuracy = model.accuracy(case.test)
    row.add(
        ratio=cpu / case.retrain_cpu, cpu=cpu, wall=wall,
        retain=model.accuracy(case.retain), forget=model.accuracy(case.forget), test=test_accuracy,
        auc=mia, attack=report.mia.get("attack_auc", math.nan),
        d_test=test_accuracy - case.retrained.accuracy(case.test),
        d_auc=mia - case.retrain_auc,
        closed=gap_closed(case.original_auc, mia, case.retrain_auc),
        js=report.divergence["forget"] if report.divergence else math.nan,
    )
    row.verdicts.append(report.verdict)
    return row


def run_dataset(ds: Dataset, seeds: list[int], out: dict) -> None:
    num_classes = int(ds.data.labels.max()) + 1
    table: dict[tuple[str, str], Row] = {}
    newton_rows: dict[str, Row] = {}
    for seed in seeds:
        train, _, heldout = split(ds.data, [], HELDOUT_FRACTION, seed)
        # Methods calibrate on one half of the held-out rows; verification and
        # test accuracy use the other, so no method grades its own homework.
        calibration, _, test = split(heldout, [], 0.5, seed + 1000)
        original = get_adapter("mlp", **ds.mlp).fit(train, seed)
        sisa_model = get_adapter("sisa", base="mlp", base_params=ds.mlp).fit(train, seed)  # default S, R
        logreg = get_adapter("logreg", residual_budget=UNCERTIFIED_BUDGET).fit(train, seed)
        certified_budget = get_adapter("logreg").removal_budget()
        for set_name, keys in forget_sets(train, seed, num_classes).items():
            retain, forget, _ = split(train, keys, 0.0, seed)
            (retrained, _), retrain_cpu, retrain_wall = timed(
                unlearn, "retrain", original, retain, forget, calibration)
            case = Case(set_name, retain, forget, test, original, retrained, retrain_cpu)
            record(table, case, "original (no unlearning)", original, 0.0, 0.0)
            record(table, case, "retrain", retrained, retrain_cpu, retrain_wall)
            (second, _), cpu, wall = timed(unlearn, "retrain", original, retain, forget, calibration,
                                           {"seed": seed + 100})
            record(table, case, "retrain, other seed (noise floor)", second, cpu, wall)
            for method in APPROXIMATE:
                (model, report), cpu, wall = timed(unlearn, method, original, retain, forget, calibration)
                record(table, case, method, model, cpu, wall).add(steps=report.details["steps"])
            (model, report), cpu, wall = timed(unlearn, "sisa", sisa_model, retain, forget, calibration)
            label = (f"sisa S={sisa_model.hyperparameters.shards} "
                     f"R={sisa_model.hyperparameters.slices}")
            record(table, case, label, model, cpu, wall, baseline=sisa_model).add(
                shards_touched=len(report.details["shards_touched"]),
                slices_retrained=report.details["slices_retrained"],
            )
            if set_name != "1 class":
                newton_row = newton_rows.setdefault(set_name, Row())
                exact, retrain_cpu_lr, _ = timed(logreg.fit_fresh, retain, seed)
                (model, report), step_cpu, _ = timed(unlearn, "newton", logreg, retain, forget,
                                                     calibration, {"refresh_cache": False})
                _, cpu, _ = timed(unlearn, "newton", logreg, retain, forget, calibration)
                details = report.details
                relative = float((model.weights() - exact.weights()).norm() / exact.weights().norm())
                newton_row.add(
                    retrain_cpu=retrain_cpu_lr, step_cpu=step_cpu,
                    total_cpu=cpu, ratio=step_cpu / retrain_cpu_lr,
                    relative=relative, bound=details["residual_bound"],
                    residual=details["gradient_residual_norm"], budget=certified_budget,
                    accept_bound=details["residual_bound"] <= certified_budget,
                    accept_measured=details["gradient_residual_norm"] <= certified_budget,
                    test=model.accuracy(test), test_exact=exact.accuracy(test),
                )
    out[ds.name] = {"table": table, "newton": newton_rows}


def sisa_grid(ds: Dataset, seed: int, quick: bool) -> list[dict[str, Any]]:
    train, _, heldout = split(ds.data, [], HELDOUT_FRACTION, seed)
    mono, mono_cpu, _ = timed(get_adapter("mlp", **ds.mlp).fit, train, seed)
    mono_accuracy = mono.accuracy(heldout)
    rng = np.random.default_rng(seed)
    deletions = 3 if not quick else 2
    rows = []
    for shards in (1, 2, 5, 10):
        for slices in (1, 4):
            model, fit_cpu, _ = timed(get_adapter("sisa", base="mlp", base_params=ds.mlp,
                                                  shards=shards, slices=slices).fit, train, seed)
            ratios, stages = [], []
            for _ in range(deletions):
                key = train.keys[int(rng.integers(len(train)))]
                retain, forget, _ = split(train, [key], 0.0, seed)
                (_, report), cpu, _ = timed(unlearn, "sisa", model, retain, forget, heldout)
                ratios.append(cpu / mono_cpu)
                stages.append(report.details["slices_retrained"])
            rows.append({
                "S": shards, "R": slices, "fit_ratio": fit_cpu / mono_cpu,
                "accuracy": model.accuracy(heldout), "delta": model.accuracy(heldout) - mono_accuracy,
                "delete_ratio": statistics.mean(ratios), "delete_ratio_max": max(ratios),
                "stages": statistics.mean(stages), "mono_cpu": mono_cpu, "mono_accuracy": mono_accuracy,
            })
    return rows


def fmt(values: list[float], digits: int = 3, percent: bool = False) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "n/a"
    scale = 100.0 if percent else 1.0
    mean = statistics.mean(values) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def verdict_summary(verdicts: list[str]) -> str:
    counts = {v: verdicts.count(v) for v in ("pass", "fail", "inconclusive") if verdicts.count(v)}
    return ", ".join(f"{name} {count}/{len(verdicts)}" for name, count in counts.items())


def render(results: dict, grids: dict, args: argparse.Namespace, seconds: float) -> str:
    lines = [f"# Unlearning benchmark{' (quick)' if args.quick else ''}", "",
             f"Seeds: {args.seeds}; torch threads: {args.threads}; device: cpu; "
             f"total wall time {seconds / 60:.1f} min. Ratios use CPU seconds of this process. "
             "Accuracies in %, mean ± std over seeds. Verdicts from `verify` with default thresholds "
             "against the test half of the held-out rows; methods calibrate on the other half.", ""]
    lines += targets(results)
    for name, result in results.items():
        lines += [f"## {name}", "",
                  "| forget set | method | time / retrain | retain acc | forget acc | test acc | "
                  "Δtest vs retrain | MIA AUC | LR-attack AUC | ΔAUC vs retrain | MIA gap closed | "
                  "JS to retrain | verdicts |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for (set_name, method), row in result["table"].items():
            v = row.values
            extra = f" ({fmt(v['steps'], 0)} steps)" if "steps" in v else ""
            if "shards_touched" in v:
                extra = (f" (shards touched {fmt(v['shards_touched'], 1)}, "
                         f"slice stages retrained {fmt(v['slices_retrained'], 1)})")
            lines.append(
                f"| {set_name} | {method}{extra} | {fmt(v['ratio'])} | {fmt(v['retain'], 1, True)} | "
                f"{fmt(v['forget'], 1, True)} | {fmt(v['test'], 1, True)} | {fmt(v['d_test'], 1, True)} | "
                f"{fmt(v['auc'])} | {fmt(v['attack'])} | {fmt(v['d_auc'])} | {fmt(v['closed'], 0, True)}% | "
                f"{fmt(v['js'], 4)} | {verdict_summary(row.verdicts)} |")
        lines.append("")
        if result["newton"]:
            lines += [f"### {name}: certified removal (`newton` on `logreg`)", "",
                      "| forget set | logreg retrain CPU s | Newton step CPU s | step / retrain | "
                      "incl. cache refresh, CPU s | rel. L2 to retrain | test acc (newton / retrain) | "
                      "residual bound | measured residual | budget at ε=1 | accepted (bound / measured) |",
                      "|---|---|---|---|---|---|---|---|---|---|---|"]
            for set_name, row in result["newton"].items():
                v = row.values
                lines.append(
                    f"| {set_name} | {fmt(v['retrain_cpu'], 2)} | "
                    f"{fmt(v['step_cpu'], 4)} | {fmt(v['ratio'], 4)} | {fmt(v['total_cpu'], 3)} | "
                    f"{fmt(v['relative'], 5)} | {fmt(v['test'], 1, True)} / {fmt(v['test_exact'], 1, True)} | "
                    f"{fmt(v['bound'], 3)} | {fmt(v['residual'], 4)} | {fmt(v['budget'], 3)} | "
                    f"{int(sum(v['accept_bound']))}/{len(v['accept_bound'])} / "
                    f"{int(sum(v['accept_measured']))}/{len(v['accept_measured'])} |")
            lines.append("")
        grid = grids.get(name)
        if grid:
            lines += [f"### {name}: SISA shards × slices (seed {args.seeds[0]}; "
                      f"monolithic MLP {grid[0]['mono_cpu']:.2f} CPU s, test acc "
                      f"{grid[0]['mono_accuracy'] * 100:.1f}%)", "",
                      "| S | R | fit / monolithic | ensemble test acc | Δ vs monolithic | "
                      "1-record deletion / monolithic retrain (mean, max) | slice stages retrained |",
                      "|---|---|---|---|---|---|---|"]
            for row in grid:
                lines.append(
                    f"| {row['S']} | {row['R']} | {row['fit_ratio']:.2f} | {row['accuracy'] * 100:.1f} | "
                    f"{row['delta'] * 100:+.1f} | {row['delete_ratio']:.3f}, {row['delete_ratio_max']:.3f} | "
                    f"{row['stages']:.1f} |")
            lines.append("")
    return "\n".join(lines)


def targets(results: dict) -> list[str]:
    """Issue 5's promises, each with the measured figure and whether it is met."""
    lines = ["## Targets", "", "| target | measured | met |", "|---|---|---|"]

    def mean(values: list[float]) -> float:
        return statistics.mean(values) if values else math.nan

    synthetic = next((r for name, r in results.items() if name.startswith("synthetic")), None)
    if synthetic:
        for (set_name, method), row in synthetic["table"].items():
            if set_name == "1 record" and method.startswith("sisa"):
                ratio, delta = mean(row.values["ratio"]), mean(row.values["d_test"]) * 100
                lines.append(f"| SISA ({method}) single-record deletion ≤ 0.10x retrain, test acc within "
                             f"2 points of monolithic | {ratio:.3f}x, {delta:+.1f} points | "
                             f"{'yes' if ratio <= 0.10 and delta >= -2 else 'no'} |")
    mnist = results.get("mnist1d")
    if mnist:
        for method in APPROXIMATE:
            row = mnist["table"].get(("1% random", method))
            if row:
                ratio, closed = mean(row.values["ratio"]), mean(row.values["closed"]) * 100
                delta = mean(row.values["d_test"]) * 100
                met = ratio <= 0.15 and closed >= 80 and delta >= -1
                lines.append(f"| mnist1d 1%: {method} ≤ 0.15x, closes ≥ 80% of MIA gap, test within 1 point "
                             f"| {ratio:.3f}x, {closed:.0f}%, {delta:+.1f} points | {'yes' if met else 'no'} |")
        row = mnist["table"].get(("1% random", "original (no unlearning)"))
        if row:
            fails = row.verdicts.count("fail")
            lines.append(f"| mnist1d 1%: verifier fails the unmodified original | fail {fails}/{len(row.verdicts)} "
                         f"| {'yes' if fails == len(row.verdicts) else 'no'} |")
    for name, result in results.items():
        row = result["newton"].get("1% random")
        if row:
            ratio, relative = mean(row.values["ratio"]), max(row.values["relative"])
            lines.append(f"| {name}: newton ≤ 0.02x logreg retrain, params within 2% (1% removal) | "
                         f"{ratio:.4f}x, max rel. L2 {relative * 100:.3f}% | "
                         f"{'yes' if ratio <= 0.02 and relative <= 0.02 else 'no'} |")
    return lines + [""]


# -- certified removal under the default policy (issue 12) ---------------------------------

SUBJECT_ROWS = 13  # the demo's subjects hold 11-17 training rows each
SEQUENTIAL_MEASURED = 40  # single-record removals run one by one before extrapolating


def newton_removals(ds: Dataset, seed: int, quick: bool) -> dict[str, Any]:
    """The default certified logreg: which removals it accepts, at what cost and distance
    to the exact retrain, and how many single records in a row its budget allows."""
    train, _, heldout = split(ds.data, [], HELDOUT_FRACTION, seed)
    model, fit_cpu, _ = timed(get_adapter("logreg").fit, train, seed)
    rng = np.random.default_rng(seed)
    rows: dict[str, Row] = {}
    sizes = {"1 record": 1, "1 subject (13 rows)": SUBJECT_ROWS, "1%": max(1, len(train) // 100)}
    for name, size in sizes.items():
        row = rows.setdefault(name, Row())
        for _ in range(2 if quick else 3):
            keys = [train.keys[i] for i in rng.choice(len(train), size, replace=False)]
            retain, forget, _ = split(train, keys, 0.0, seed)
            exact, retrain_cpu, _ = timed(model.fit_fresh, retain, seed)
            try:
                (unlearned, report), cpu, _ = timed(unlearn, "newton", model, retain, forget, heldout,
                                                    {"refresh_cache": False})
            except CertifiedBudgetExceeded as refused:
                row.add(accepted=0.0, bound=refused.bound, budget=refused.budget)
                continue
            _, total_cpu, _ = timed(unlearn, "newton", model, retain, forget, heldout)
            relative = float((unlearned.weights() - exact.weights()).norm() / exact.weights().norm())
            row.add(accepted=1.0, ratio=cpu / retrain_cpu, total_ratio=total_cpu / retrain_cpu,
                    relative=relative, bound=report.details["bound"], budget=report.details["budget"],
                    test=unlearned.accuracy(heldout), test_exact=exact.accuracy(heldout))
    # Sequential single-record removals on one lineage until the budget refuses one.
    current, data, spent, measured = model, train, [], 0
    for step in range(SEQUENTIAL_MEASURED if not quick else 15):
        key = data.keys[int(rng.integers(len(data)))]
        retain, forget, _ = split(data, [key], 0.0, seed)
        try:
            current, report = unlearn("newton", current, retain, forget, heldout)
        except CertifiedBudgetExceeded:
            break
        spent.append(report.details["gradient_residual_norm"])
        data, measured = retain, step + 1
    else:
        measured = None  # budget not spent within the measured steps
    budget = model.removal_budget()
    mean_charge = statistics.mean(spent) if spent else math.nan
    return {"rows": rows, "n": len(train), "sigma": model.noise_scale, "budget": budget, "fit_cpu": fit_cpu,
            "test": model.accuracy(heldout), "sequential": measured if measured is not None else len(spent),
            "exhausted": measured is not None,
            "extrapolated": int(budget / mean_charge) if spent and measured is None else None,
            "mean_charge": mean_charge}


def render_newton(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["## Certified removal under the default policy (`newton`, ε = 1, δ = 1e-4)", "",
             "| dataset | train rows | σ | budget | test acc | forget set | accepted | step / retrain "
             "(incl. cache refresh) | rel. L2 to retrain | accumulated bound |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, result in results.items():
        for set_name, row in result["rows"].items():
            v = row.values
            accepted = v.get("accepted", [])
            lines.append(
                f"| {name} | {result['n']} | {result['sigma']:.3g} | {result['budget']:.3g} | "
                f"{result['test'] * 100:.1f} | {set_name} | {int(sum(accepted))}/{len(accepted)} | "
                f"{fmt(v.get('ratio', []), 4)} ({fmt(v.get('total_ratio', []), 3)}) | "
                f"{fmt(v.get('relative', []), 3, True)}% | {fmt(v.get('bound', []), 4)} |")
    lines += ["", "| dataset | sequential single-record removals before the budget refuses one | "
              "mean charge per removal |", "|---|---|---|"]
    for name, result in results.items():
        if result["exhausted"]:
            count = f"{result['sequential']} (measured)"
        else:
            count = (f"> {result['sequential']} measured; ≈ {result['extrapolated']} at the mean charge "
                     "(extrapolated)")
        lines.append(f"| {name} | {count} | {result['mean_charge']:.3g} |")
    return lines + [""]


def sized_sisa(ds: Dataset, seed: int, quick: bool, max_accuracy_loss: float = 0.01) -> dict[str, Any]:
    """SISA with the S, R the learning curve picks: accuracy vs monolithic, deletion cost."""
    train, _, heldout = split(ds.data, [], HELDOUT_FRACTION, seed)
    calibration, _, test = split(heldout, [], 0.5, seed + 1000)
    layout, sizing_cpu, _ = timed(size_sisa, "mlp", ds.mlp, train, calibration, seed, max_accuracy_loss)
    mono, mono_cpu, _ = timed(get_adapter("mlp", **ds.mlp).fit, train, seed)
    model = get_adapter("sisa", base="mlp", base_params=ds.mlp, shards=layout.shards,
                        slices=layout.slices).fit(train, seed)
    rng = np.random.default_rng(seed)
    ratios = []
    for _ in range(2 if quick else 3):
        retain, forget, _ = split(train, [train.keys[int(rng.integers(len(train)))]], 0.0, seed)
        _, cpu, _ = timed(unlearn, "sisa", model, retain, forget, calibration)
        ratios.append(cpu / mono_cpu)
    return {"layout": layout, "sizing_ratio": sizing_cpu / mono_cpu, "mono_test": mono.accuracy(test),
            "sisa_test": model.accuracy(test), "delete_ratio": statistics.mean(ratios), "n": len(train)}


def render_sized(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["## SISA sized to the data (max_accuracy_loss = 1 point)", "",
             "| dataset | chosen S × R | why | sizing cost / monolithic fit | test acc SISA / monolithic | "
             "Δ points (target ≥ −1) | 1-record deletion / retrain (target ≤ 0.15) |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        layout = r["layout"]
        delta = (r["sisa_test"] - r["mono_test"]) * 100
        lines.append(f"| {name} | {layout.shards} × {layout.slices} | {layout.reason} | {r['sizing_ratio']:.2f} | "
                     f"{r['sisa_test'] * 100:.1f} / {r['mono_test'] * 100:.1f} | {delta:+.1f} | "
                     f"{r['delete_ratio']:.3f} |")
    lines += ["", "Frontier (from the learning curve: predicted accuracy loss vs expected deletion cost):", "",
              "| dataset | S | shard rows | shard acc (calibration) | predicted loss, points | "
              "deletion cost ≈ 1/S | meets the limit |", "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        for c in r["layout"].candidates:
            if "shards" not in c:
                continue
            lines.append(f"| {name} | {c['shards']} | {c['shard_rows']} | {c['shard_accuracy'] * 100:.1f} | "
                         f"{c['predicted_loss'] * 100:.1f} | {c['deletion_cost']:.3f} | "
                         f"{'yes' if c['meets_limit'] else 'no'} |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, same code path")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--datasets", nargs="+", default=None, help="subset of dataset names")
    parser.add_argument("--no-grid", action="store_true", help="skip the SISA S x R table")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    parser.add_argument("--section", choices=("methods", "newton", "sisa"), default="methods",
                        help="methods: every method (issue 5); newton: certified removal under the default "
                             "policy; sisa: SISA sized to the data (issue 12)")
    args = parser.parse_args()
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    configure(threads=args.threads, device="cpu")
    torch.manual_seed(0)
    started = time.perf_counter()
    datasets = [d for d in load_datasets(args.quick)
                if args.datasets is None or d.name in args.datasets or d.name.split("-")[0] in args.datasets]
    warm = datasets[0].data.take(list(range(64)))  # first-call imports must not count as method time
    for method in ("retrain", *APPROXIMATE):
        unlearn(method, get_adapter("mlp", hidden=[8], epochs=1).fit(warm, 0), warm.take(list(range(48))),
                warm.take(list(range(48, 56))), warm.take(list(range(56, 64))))
    if args.section != "methods":
        started_section = time.perf_counter()
        if args.section == "newton":
            text = "\n".join(render_newton({ds.name: newton_removals(ds, args.seeds[0], args.quick)
                                            for ds in datasets}))
        else:
            text = "\n".join(render_sized({ds.name: sized_sisa(ds, args.seeds[0], args.quick)
                                           for ds in datasets if not ds.name.startswith("digits")}))
        text = (f"# Unlearning benchmark, section {args.section}{' (quick)' if args.quick else ''}\n\n"
                f"Seed {args.seeds[0]}; torch threads {args.threads}; ratios of CPU seconds; wall "
                f"{(time.perf_counter() - started_section) / 60:.1f} min.\n\n{text}")
        print(text)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text + "\n")
        return
    results: dict = {}
    grids: dict = {}
    for ds in datasets:
        print(f"... {ds.name}: {len(ds.data)} rows", file=sys.stderr, flush=True)
        run_dataset(ds, args.seeds, results)
        if not args.no_grid:
            grids[ds.name] = sisa_grid(ds, args.seeds[0], args.quick)
    text = render(results, grids, args, time.perf_counter() - started)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
