"""The jobs room's one doorway into the unlearning engine (``workers/unlearning``).

No database and no artifact store here: the one read is a dataset file, opened by the registry.
The rules that need both (which records, which versions) live in ``training`` and
``unlearning``; this module turns their answers into engine calls and back.

PyTorch is imported inside the functions that fit, load, unlearn or verify a model (they run on
workers), never at module import: the API and the CLI import this module for its torch-free
parts (recipe layout, record placement, constants) and must not pay for loading the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.core.errors import InvalidInput
from app.core.hashing import json_safe
from app.registry import locations
from workers.unlearning.options import from_mapping
from workers.unlearning.placement import SISA, SisaParams, is_held_out, sisa_place

if TYPE_CHECKING:
    from workers.unlearning import LabelledData, Thresholds
    from workers.unlearning.adapters import SisaAdapter

# Share of a dataset's records never trained on, chosen by a keyed hash of the record key,
# so the same rows stay out at every retrain and can stand for non-members when verifying.
DEFAULT_HELDOUT_FRACTION = 0.2
PASS = "pass"


class EngineInputError(ValueError):
    """The dataset or model recipe cannot be used by the engine; the message says why."""


def load_dataset(uri: str, fmt: str, columns: dict[str, Any]) -> LabelledData:
    """Every row of a registered dataset file, keyed by its record key, opened the way
    ingestion opens it (a local path under the dataset root or a URL under a configured
    remote prefix, re-checked now)."""
    from workers.unlearning import load_table

    try:
        with locations.open_dataset(uri) as handle:
            return load_table(
                handle, fmt,
                key_column=columns["record_key"], label_column=columns["label"],
                feature_columns=columns.get("features") or None, array_field=columns.get("image"),
            )
    except InvalidInput as exc:
        raise EngineInputError(f"dataset location refused: {exc.detail}") from None
    except FileNotFoundError as exc:
        raise EngineInputError(f"dataset cannot be loaded for training: no such file: {uri}") from exc
    except (ValueError, KeyError, OSError) as exc:
        raise EngineInputError(f"dataset cannot be loaded for training: {exc}") from exc


def training_split(data: LabelledData, heldout_fraction: float, seed: int) -> tuple[LabelledData, LabelledData]:
    """(train, heldout): the held-out rows are fixed by key and seed, so retrains agree on them."""
    from workers.unlearning import split

    train, _, heldout = split(data, [], heldout_fraction, seed)
    return train, heldout


def record_counts(keys: Iterable[str], trained_keys: frozenset[str], heldout_fraction: float,
                  seed: int) -> dict[str, int]:
    """What a model held of these records: trained on; held out by the split (never in any
    model of this recipe and seed); or neither (not in its training snapshot at all)."""
    keys = set(keys)
    absent = keys - trained_keys
    held_out = sum(is_held_out(key, heldout_fraction, seed) for key in absent)
    return {"trained_on": len(keys & trained_keys), "held_out": held_out,
            "not_in_snapshot": len(absent) - held_out}


def verification_halves(heldout: LabelledData, seed: int) -> tuple[LabelledData, LabelledData]:
    """(calibration, verification): approximate methods tune on one half, ``verify`` judges on
    the other, so a method is never graded on the rows it calibrated against."""
    from workers.unlearning import split

    calibration, _, verification = split(heldout, [], 0.5, seed + 1)
    return calibration, verification


def check_recipe(adapter_name: str, hyperparameters: dict[str, Any]) -> None:
    """Refuse a bad adapter name or hyper-parameter before any job is queued. A built-in recipe
    is checked without PyTorch (``workers.unlearning.recipes``), so the API never loads it; a
    plugin's can only be checked by building it."""
    from workers.unlearning import recipes

    try:
        if not recipes.check(adapter_name, hyperparameters):
            adapter_of(adapter_name, hyperparameters)
    except (ValueError, TypeError) as exc:
        raise EngineInputError(f"model recipe rejected: {exc}") from exc


def adapter_of(adapter_name: str, hyperparameters: dict[str, Any]) -> Any:
    """An unfitted adapter of the recipe (loads PyTorch)."""
    from workers.unlearning import get_adapter

    try:
        return get_adapter(adapter_name, **hyperparameters)
    except (ValueError, TypeError) as exc:
        raise EngineInputError(f"model recipe rejected: {exc}") from exc


def recipe_under_policy(
    adapter_name: str, hyperparameters: dict[str, Any], *, epsilon: float, delta: float
) -> dict[str, Any]:
    """The hyper-parameters a training run uses: the recipe's own, plus what the model's
    policy decides for this adapter (a certified model's epsilon and delta) where the recipe
    is silent."""
    if adapter_name != "logreg":
        return dict(hyperparameters)
    return {"epsilon": epsilon, "delta": delta, **hyperparameters}


def fit(adapter_name: str, hyperparameters: dict[str, Any], data: LabelledData, seed: int) -> Any:
    return adapter_of(adapter_name, hyperparameters).fit(data, seed)


def load_model(raw: bytes) -> Any:
    from workers.unlearning import adapter_from_state

    return adapter_from_state(raw)


def is_sharded(model: Any) -> bool:
    from workers.unlearning.adapters import SisaAdapter

    return isinstance(model, SisaAdapter)


def exact_method_for(model: Any) -> str:
    return "sisa" if is_sharded(model) else "retrain"


def shard_assigner(adapter_name: str, hyperparameters: dict[str, Any], seed: int) -> Callable[[str], int] | None:
    """Which SISA shard a record key lands in, without loading any weights; None when unsharded.

    Placement is a keyed hash of (seed, key), so the recipe and seed alone decide it.
    """
    if adapter_name != SISA:
        return None
    layout = _sisa_params(hyperparameters)
    return lambda key: sisa_place(seed, str(key), layout.shards, layout.slices)[0]


def _sisa_params(hyperparameters: dict[str, Any]) -> SisaParams:
    """A SISA recipe's layout, read the way the adapter reads it (an unknown name is refused)."""
    return from_mapping(SisaParams, hyperparameters, EngineInputError, "hyper-parameter")


def needs_sizing(adapter_name: str, hyperparameters: dict[str, Any]) -> bool:
    """A SISA recipe that leaves the shard count open is sized to its data at training."""
    return adapter_name == SISA and "shards" not in hyperparameters


def sisa_sizing(hyperparameters: dict[str, Any], train: LabelledData, heldout: LabelledData, seed: int,
                max_accuracy_loss: float) -> dict[str, Any]:
    """The base recipe's learning curve and the shards and slices it affords (engine ``sizing``)."""
    from workers.unlearning.adapters import SisaAdapter
    from workers.unlearning.sizing import size_sisa

    recipe = SisaAdapter(**hyperparameters).hyperparameters
    layout = size_sisa(recipe.base, dict(recipe.base_params), train, heldout, seed, max_accuracy_loss)
    return json_safe(layout.to_dict())


def sized(hyperparameters: dict[str, Any], sizing: dict[str, Any] | None) -> dict[str, Any]:
    """The recipe with the shard and slice counts a sizing chose (unchanged without one)."""
    if not sizing:
        return dict(hyperparameters)
    return {**hyperparameters, "shards": sizing["shards"], "slices": sizing["slices"]}


def shard_count(adapter_name: str, hyperparameters: dict[str, Any]) -> int:
    """How many independent pieces training splits into: SISA shards, else one."""
    if adapter_name != SISA:
        return 1
    return _sisa_params(hyperparameters).shards


def num_classes_of(hyperparameters: dict[str, Any], data: LabelledData) -> int:
    """The output layout a whole fit would choose, fixed up front so every shard agrees."""
    configured = hyperparameters.get("num_classes")
    return int(configured) if configured is not None else int(data.labels.max()) + 1


def fit_shard(hyperparameters: dict[str, Any], data: LabelledData, seed: int, shard: int, num_classes: int) -> bytes:
    """Train one SISA shard exactly as a whole fit would (placement, seeds and checkpoints
    depend only on the recipe, the seed and the shard's own records); returns the state."""
    from workers.unlearning.adapters import SisaAdapter

    assign = shard_assigner(SisaAdapter.name, hyperparameters, seed)
    own = data.take([i for i, key in enumerate(data.keys) if assign(key) == shard])
    partial = SisaAdapter(**{**hyperparameters, "num_classes": num_classes})
    return partial.fit(own, seed).state_bytes()


def merge_shards(hyperparameters: dict[str, Any], seed: int, feature_shape: tuple[int, ...], num_classes: int,
                 shard_states: dict[int, bytes]) -> SisaAdapter:
    """One SISA model from shards trained apart: byte-identical to fitting it whole."""
    from workers.unlearning import adapter_from_state
    from workers.unlearning.adapters import SisaAdapter

    whole = SisaAdapter(**hyperparameters).build(feature_shape, num_classes, seed)
    for shard, raw in shard_states.items():
        part = adapter_from_state(raw)
        whole.slice_keys[shard], whole.chains[shard] = part.slice_keys[shard], part.chains[shard]
        whole.checkpoints.update({key: part.checkpoints[key] for key in part.chains[shard]})
        whole.models[shard] = part.models[shard]
    return whole


@dataclass(frozen=True)
class ArtifactPart:
    kind: str  # model | shard | checkpoint
    data: bytes
    keys: list[str]  # exactly the records this part was trained on
    shard: int | None = None
    slice: int | None = None


def artifact_parts(model: Any, trained_keys: Iterable[str]) -> list[ArtifactPart]:
    """The whole model, plus for SISA each shard's final model and each earlier slice
    checkpoint, each with the records it saw, so lineage can answer per part."""
    parts = [ArtifactPart("model", model.state_bytes(), sorted(trained_keys))]
    if not is_sharded(model):
        return parts
    for shard, chain in enumerate(model.chains):
        if model.models[shard] is None:
            continue
        seen: list[str] = []
        for stage, checkpoint in enumerate(chain):
            seen += model.slice_keys[shard][stage]
            last = stage == len(chain) - 1
            parts.append(ArtifactPart(
                "shard" if last else "checkpoint", model.checkpoints[checkpoint], sorted(seen), shard, stage,
            ))
    return parts


def thresholds(values: Mapping[str, Any]) -> Thresholds:
    """The verifier's thresholds from the policy's (already typed and checked at registration)."""
    from workers.unlearning import Thresholds
    from workers.unlearning.methods.base import make_config

    return make_config(Thresholds, values)


@dataclass
class UnlearningOutcome:
    model: Any
    method_used: str
    fell_back: bool
    units: int  # SISA: shards retrained; otherwise the one job
    report: dict[str, Any] = field(default_factory=dict)


def unlearn_verified(
    base: Any,
    method: str,
    retain: LabelledData,
    forget: LabelledData,
    heldout: LabelledData,
    thresholds: Thresholds,
    method_options: Callable[[str], Mapping[str, Any] | None],
    *,
    seed: int,
    on_stage: Callable[[str], None],
    qualification: dict[str, Any] | None = None,
    retrain_accuracy: Mapping[str, Any] | None = None,
) -> UnlearningOutcome:
    """Run the policy's method; keep an approximate result only if verification passes,
    otherwise (or when the method refuses) run the exact method instead. Exact results are
    correct by construction; their verification is reported, not gated. ``retrain_accuracy``
    (the qualification study's retrains on the same held-out rows) makes the approximate
    result's utility check compare it with retrains rather than with the original."""
    from workers.unlearning import CertifiedBudgetExceeded, unlearn, verify
    from workers.unlearning.methods import METHODS, UnsupportedModel

    calibration, verification = verification_halves(heldout, seed)
    exact = exact_method_for(base)
    attempts: list[dict[str, Any]] = []
    spec = METHODS.get(method)
    if spec is None:
        attempts.append({"method": method, "outcome": "unknown method"})
    elif spec.guarantee == "approximate" and qualification is None:
        # Without a study showing the method forgets per example on this model, an attempt
        # could only be wasted (or, worse, pass a population test it should not).
        attempts.append({"method": method, "outcome": "not qualified", "reason": (
            f"no passing qualification covers this model version and a forget set of {len(forget)} records; "
            f"ran the exact method {exact} directly")})
    else:
        try:
            unlearned, report = unlearn(method, base, retain, forget, calibration, method_options(method))
        except (CertifiedBudgetExceeded, UnsupportedModel) as exc:
            attempts.append({"method": method, "outcome": "refused", "reason": str(exc)})
        else:
            on_stage("verifying")
            verdict = verify(base, unlearned, retain, forget, verification, thresholds,
                             retrain_accuracy=retrain_accuracy)
            outcome = verdict.verdict
            if not spec.exact and report.details.get("steps") == 0:
                outcome = "fail"
                verdict.reasons.append("the method made no update (0 steps): nothing was unlearned")
            attempts.append({"method": method, "outcome": outcome, "unlearning": report.to_dict(),
                             "verification": verdict.to_dict(), "qualification": qualification})
            # A certified removal's claim is its (epsilon, delta) bound, not the statistics.
            if spec.exact or report.details.get("guarantee") == "certified" or outcome == PASS:
                return _outcome(unlearned, method, False, report.details, attempts)
        on_stage("unlearning")
    unlearned, report = unlearn(exact, base, retain, forget, calibration, method_options(exact))
    on_stage("verifying")
    verdict = verify(base, unlearned, retain, forget, verification, thresholds)
    attempts.append({"method": exact, "outcome": verdict.verdict, "unlearning": report.to_dict(),
                     "verification": verdict.to_dict(), "fallback": True})
    return _outcome(unlearned, exact, method != exact, report.details, attempts)


def is_approximate(method: str) -> bool:
    from workers.unlearning.recipes import METHOD_GUARANTEES  # torch-free: the API asks this

    return METHOD_GUARANTEES.get(method) == "approximate"


def qualify(adapter_name: str, hyperparameters: dict[str, Any], train: LabelledData,
            forget_sets: list[list[str]], heldout: LabelledData, method: str, *, runs: int,
            seed: int) -> dict[str, Any]:
    """The per-example qualification study of ``method`` on this recipe, one study per forget
    set, combined (see ``workers.unlearning.qualification``). Every model it trains lives in
    this function's memory only and is unreachable (and collected) once it returns."""
    import gc

    from workers.unlearning import unlearn
    from workers.unlearning.qualification import combine, run_study

    calibration, verification = verification_halves(heldout, seed)

    def fit_recipe(data: LabelledData, fit_seed: int) -> Any:
        return fit(adapter_name, hyperparameters, data, fit_seed)

    def run_method(original: Any, retain: LabelledData, forget: LabelledData, run_seed: int) -> Any:
        edited, _ = unlearn(method, original, retain, forget, calibration, {"seed": run_seed})
        return edited

    results = [run_study(fit_recipe, run_method, train, keys, verification, runs=runs, seed=seed + 10_000 * i)
               for i, keys in enumerate(forget_sets)]
    gc.collect()
    return json_safe(combine(results))


def sampling_audit(outcome: UnlearningOutcome, base: Any, retain: LabelledData, forget: LabelledData,
                   heldout: LabelledData, thresholds: Thresholds,
                   method_options: Callable[[str], Mapping[str, Any] | None], *, seed: int,
                   study_report: dict[str, Any]) -> tuple[UnlearningOutcome, dict[str, Any]]:
    """Run the exact method on the job's forget set and compare the approximate result with
    it per record, at the noise scale and test levels of the qualification's study. Returns
    the outcome the job keeps (the approximate one, or on a degraded comparison the exact
    retrain, already in hand) and the comparison."""
    from workers.unlearning import unlearn, verify
    from workers.unlearning.qualification import audit_comparison

    calibration, verification = verification_halves(heldout, seed)
    exact = exact_method_for(base)
    retrained, report = unlearn(exact, base, retain, forget, calibration, method_options(exact))
    study = study_report.get("study", {})
    policy = study.get("policy", {})
    comparison = json_safe(audit_comparison(
        outcome.model, retrained, forget, float(study.get("reference_score_std", 0.0)),
        alpha=float(policy.get("alpha", 0.05)), flag_margin=float(policy.get("flag_margin", 0.05))))
    comparison["exact_method"] = exact
    if not comparison["degraded"]:
        return UnlearningOutcome(model=outcome.model, method_used=outcome.method_used, fell_back=outcome.fell_back,
                                 units=outcome.units, report={**outcome.report, "sampling_audit": comparison}), comparison
    verdict = verify(base, retrained, retain, forget, verification, thresholds)
    attempts = [*outcome.report["attempts"], {
        "method": exact, "outcome": verdict.verdict, "unlearning": report.to_dict(),
        "verification": verdict.to_dict(), "fallback": True, "reason": (
            "the sampling audit found the approximate result off the exact retrain per record; the retrain is kept "
            "and the qualification is revoked")}]
    kept = _outcome(retrained, exact, True, report.details, attempts)
    kept.report["sampling_audit"] = comparison
    return kept, comparison


def _outcome(model: Any, method: str, fell_back: bool, details: dict[str, Any],
             attempts: list[dict[str, Any]]) -> UnlearningOutcome:
    from workers.unlearning.methods import METHODS

    units = len(details["shards_touched"]) if method == "sisa" else 1
    final = attempts[-1]
    guarantee = METHODS[method].guarantee
    if guarantee == "certified" and details.get("guarantee") != "certified":
        guarantee = "approximate"  # a Newton step without its certificate is only an approximation
    report = {"method_used": method, "guarantee": guarantee, "fell_back": fell_back, "attempts": attempts,
              "verdict": final["outcome"], "verification": final["verification"]}
    if guarantee == "approximate" and final.get("qualification"):
        report["qualification"] = final["qualification"]
    if details.get("guarantee") == "certified":
        report["certification"] = {key: details[key] for key in CERTIFICATION_FIELDS}
    return UnlearningOutcome(model=model, method_used=method, fell_back=fell_back, units=units,
                             report=json_safe(report))


# What a certified removal states (Guo et al.): the (epsilon, delta) pair, the noise scale it
# rests on, and the lineage's accumulated gradient residual against its budget.
CERTIFICATION_FIELDS = ("guarantee", "epsilon", "delta", "noise_std", "criterion", "bound", "budget",
                        "budget_left", "gradient_residual_norm")
