"""Does the gate tell the truth? Populations of models, judged per example.

    python benchmarks/forgetting.py            # full: 16 models per population
    python benchmarks/forgetting.py --quick    # same code, 4 models per population, small data
    python benchmarks/forgetting.py --jobs 4   # the four (dataset, forget size) cases in parallel

For sklearn digits and MNIST-1D (generated locally by ``mnist1d.data.make_dataset``; no
download), and random forget sets of 1% and 10% of the training rows, it trains:

* ``original``: N models on all training rows (seeds vary);
* ``retrain``: N exact retrains without the forget set: the per-example reference;
* ``retrain (ceiling)``: N further retrains with other seeds: what an exact method looks like
  to the same tests (the ceiling, and the null for the gate's false-fail rate);
* each approximate method applied to each original (calibrated on one half of the held-out
  rows; the gate judges on the other half).

Per population it prints: the challenge-style forget score against the reference
retrains (``workers.unlearning.qualification.forget_score``) next to the ceiling's; the
per-example flag rate (offline-LiRA Gaussian per record, two-sided 95%); held-out accuracy;
cost per model relative to one retrain; and the gate's (``verify``) pass / fail /
inconclusive counts. A model is *flagged* by the per-example test when its flag rate exceeds
the ceiling retrains' mean by more than the qualification margin (0.05). The gate's
false-pass rate is the share of flagged models it passes; its false-fail rate is the share
of ceiling retrains it fails. Targets: false-pass <= 5%, false-fail <= 5%, the untouched
original never passes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.unlearning import configure, get_adapter, split, unlearn, verify  # noqa: E402
from workers.unlearning.data import LabelledData, from_arrays  # noqa: E402
from workers.unlearning.qualification import (  # noqa: E402
    QualificationPolicy,
    forget_score,
    per_example_flags,
    record_scores,
)

METHODS = ("neggrad_plus", "scrub", "salun", "finetune")
HELDOUT_FRACTION = 0.2
FRACTIONS = (0.01, 0.10)


def load(name: str, quick: bool) -> tuple[LabelledData, dict[str, Any]]:
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        data = from_arrays(digits.images / 16.0, digits.target, [f"digit-{i}" for i in range(len(digits.target))])
        return data, {"hidden": [256, 256], "epochs": 10 if quick else 30, "batch_size": 64}
    import mnist1d.data

    args = mnist1d.data.get_dataset_args()
    args.num_samples = 2000 if quick else 5000
    generated = mnist1d.data.make_dataset(args)  # local generation; no download involved
    x = np.concatenate([generated["x"], generated["x_test"]])
    y = np.concatenate([generated["y"], generated["y_test"]])
    data = from_arrays(x, y, [f"m1d-{i}" for i in range(len(y))])
    return data, {"hidden": [256, 256], "epochs": 10 if quick else 40, "lr": 2e-3, "batch_size": 128}


def run_case(name: str, fraction: float, runs: int, quick: bool, accuracy_drop_z: float = 0.0) -> dict[str, Any]:
    configure(threads=1)
    data, recipe = load(name, quick)
    train, _, heldout = split(data, [], HELDOUT_FRACTION, seed=0)
    rng = np.random.default_rng(int(fraction * 1000))
    forget_keys = sorted(rng.choice(list(train.keys), size=max(1, round(fraction * len(train))), replace=False))
    retain, forget = train.without(forget_keys), train.select(forget_keys)
    calibration, _, test = split(heldout, [], 0.5, seed=1)

    def fit(rows: LabelledData, seed: int) -> Any:
        return get_adapter("mlp", **recipe).fit(rows, seed=seed)

    populations: dict[str, list[Any]] = {"original": [], "retrain (ceiling)": [], **{m: [] for m in METHODS}}
    reference: list[torch.Tensor] = []
    seconds: dict[str, float] = dict.fromkeys(populations, 0.0)
    retrain_seconds = 0.0
    for i in range(runs):
        started = time.process_time()
        reference.append(record_scores(fit(retain, 1000 + i), forget))
        retrain_seconds += time.process_time() - started
        started = time.process_time()
        populations["retrain (ceiling)"].append(fit(retain, 2000 + i))
        seconds["retrain (ceiling)"] += time.process_time() - started
        original = fit(train, 3000 + i)
        populations["original"].append(original)
        for method in METHODS:
            started = time.process_time()
            edited, _ = unlearn(method, original, retain, forget, calibration, {"seed": i})
            seconds[method] += time.process_time() - started
            populations[method].append(edited)
    ref = torch.stack(reference)
    policy = QualificationPolicy()
    ceiling_models = populations["retrain (ceiling)"]
    ceiling_scores = torch.stack([record_scores(m, forget) for m in ceiling_models])
    ceiling_flag = float(per_example_flags(ref, ceiling_scores, policy.alpha).double().mean())
    ceiling_score, _ = forget_score(ceiling_scores, ref)
    rows = {}
    for label, models in populations.items():
        scores = torch.stack([record_scores(m, forget) for m in models])
        per_model_flags = per_example_flags(ref, scores, policy.alpha).double().mean(1)
        flagged = (per_model_flags > ceiling_flag + policy.flag_margin).tolist()
        score, _ = forget_score(scores, ref)
        verdicts = []
        for original, model in zip(populations["original"], models, strict=True):
            verdicts.append(verify(original, model, retain, forget, test,
                                   {"accuracy_drop_z": accuracy_drop_z}).verdict)
        rows[label] = {
            "forget_score": score, "flag_rate": float(per_model_flags.mean()), "flagged": sum(flagged),
            "test_accuracy": statistics.fmean(m.accuracy(test) for m in models),
            "cost": seconds[label] / retrain_seconds if label != "original" else None,
            "pass": verdicts.count("pass"), "fail": verdicts.count("fail"),
            "inconclusive": verdicts.count("inconclusive"),
            "flagged_passes": sum(v == "pass" and f for v, f in zip(verdicts, flagged, strict=True)),
            "qualifies": (float(per_model_flags.mean()) <= ceiling_flag + policy.flag_margin
                          and score >= policy.forget_score_fraction * ceiling_score),
        }
    return {"dataset": name, "fraction": fraction, "forget_size": len(forget), "train_size": len(train),
            "runs": runs, "ceiling_score": ceiling_score, "ceiling_flag": ceiling_flag, "rows": rows}


def render(results: list[dict[str, Any]], args: argparse.Namespace, wall: float) -> str:
    lines = [f"# Forgetting benchmark ({'quick' if args.quick else 'full'}: {results[0]['runs']} models per "
             f"population; gate accuracy_drop_z {args.accuracy_drop_z:g}; {wall:.0f} s wall)", ""]
    flagged = flagged_passes = ceiling_fails = ceiling_total = original_passes = 0
    for case in results:
        lines += [f"## {case['dataset']}, {case['fraction']:.0%} forget set ({case['forget_size']} of "
                  f"{case['train_size']} training rows)", "",
                  f"Retrain ceiling: forget score {case['ceiling_score']:.3f}, per-example flag rate "
                  f"{case['ceiling_flag']:.3f}.", "",
                  "| population | forget score | vs ceiling | flag rate | flagged models | test acc | cost vs retrain "
                  "| gate pass / fail / inconclusive | qualifies |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for label, row in case["rows"].items():
            cost = "-" if row["cost"] is None else f"{row['cost']:.2f}x"
            share = row["forget_score"] / case["ceiling_score"] if case["ceiling_score"] else float("nan")
            lines.append(
                f"| {label} | {row['forget_score']:.3f} | {share:.0%} | {row['flag_rate']:.3f} | "
                f"{row['flagged']}/{case['runs']} | {row['test_accuracy']:.3f} | {cost} | "
                f"{row['pass']} / {row['fail']} / {row['inconclusive']} | "
                f"{'yes' if row['qualifies'] else 'no'} |")
            if label == "retrain (ceiling)":
                ceiling_fails += row["fail"]
                ceiling_total += case["runs"]
            else:
                flagged += row["flagged"]
                flagged_passes += row["flagged_passes"]
            if label == "original":
                original_passes += row["pass"]
        lines.append("")
    false_pass = flagged_passes / flagged if flagged else 0.0
    false_fail = ceiling_fails / ceiling_total if ceiling_total else 0.0
    lines += ["## Targets", "",
              "| target | measured | met |", "|---|---|---|",
              f"| false-pass <= 5% (flagged models the gate passed) | {flagged_passes}/{flagged} = {false_pass:.1%} "
              f"| {'yes' if false_pass <= 0.05 else 'no'} |",
              f"| false-fail <= 5% (ceiling retrains the gate failed) | {ceiling_fails}/{ceiling_total} = "
              f"{false_fail:.1%} | {'yes' if false_fail <= 0.05 else 'no'} |",
              f"| untouched original never passes | {original_passes} passes | "
              f"{'yes' if original_passes == 0 else 'no'} |", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=None, help="models per population (default 16, quick 4)")
    parser.add_argument("--jobs", type=int, default=1, help="cases run in parallel processes")
    parser.add_argument("--accuracy-drop-z", type=float, default=0.0,
                        help="the gate's accuracy_drop_z (standard errors of noise allowed on the utility check)")
    args = parser.parse_args()
    runs = args.runs or (4 if args.quick else 16)
    cases = [(name, fraction) for name in ("digits", "mnist1d") for fraction in FRACTIONS]
    started = time.perf_counter()
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            results = list(pool.map(run_case, *zip(*cases, strict=True), [runs] * len(cases),
                                    [args.quick] * len(cases), [args.accuracy_drop_z] * len(cases)))
    else:
        results = []
        for name, fraction in cases:
            results.append(run_case(name, fraction, runs, args.quick, args.accuracy_drop_z))
            # Each case as it finishes (stderr), so an interrupted run still leaves its figures.
            print(render(results[-1:], args, time.perf_counter() - started), file=sys.stderr, flush=True)
    print(render(results, args, time.perf_counter() - started))


if __name__ == "__main__":
    main()
