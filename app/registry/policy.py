"""A model's unlearning policy, typed, and checked at registration against what the engine knows.

This mirrors ``workers/unlearning`` (the verifier's ``Thresholds``, each method's config, the
built-in adapters and which methods apply to which) without importing it, so the API validates
a policy without loading PyTorch. ``tests/registry/test_policy.py`` fails when the two disagree.

Defaults live in one place each: a threshold or method option left out means the engine's own
default (the policy stores only what the caller set); the policy's own settings (method,
batching) default here, and the jobs room reads them from this model.
"""

from __future__ import annotations

from enum import StrEnum
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, with_config
from typing_extensions import TypedDict

from app.core.fields import FiniteFloat, Int32

# The engine's adapter plugin group (workers.unlearning.adapters.ENTRY_POINT_GROUP).
ADAPTER_ENTRY_POINT_GROUP = "unlearnd.adapters"
# Built-in adapters, and those that are torch classifiers (approximate methods need gradients).
BUILTIN_ADAPTERS = frozenset({"cnn", "logreg", "mlp", "sisa"})
TORCH_ADAPTERS = frozenset({"cnn", "logreg", "mlp"})


class Method(StrEnum):
    RETRAIN = "retrain"
    SISA = "sisa"
    NEWTON = "newton"
    FINETUNE = "finetune"
    NEGGRAD_PLUS = "neggrad_plus"
    SCRUB = "scrub"
    SALUN = "salun"


METHOD_NAMES = frozenset(method.value for method in Method)

# Which built-in adapters each method applies to (None: every adapter). A plugin adapter's
# class is not loaded at registration, so any method is accepted for it; a misfit is refused
# by the method at job time and the job falls back to the exact method.
METHOD_ADAPTERS: dict[Method, frozenset[str] | None] = {
    Method.RETRAIN: None,
    Method.SISA: frozenset({"sisa"}),
    Method.NEWTON: frozenset({"logreg"}),
    Method.FINETUNE: TORCH_ADAPTERS,
    Method.NEGGRAD_PLUS: TORCH_ADAPTERS,
    Method.SCRUB: TORCH_ADAPTERS,
    Method.SALUN: TORCH_ADAPTERS,
}


@with_config(ConfigDict(extra="forbid"))
class Thresholds(TypedDict, total=False):
    """workers.unlearning.verify.Thresholds: names and types; the defaults are the engine's."""

    max_mia_auc: FiniteFloat
    min_mia_auc: FiniteFloat
    max_attack_auc: FiniteFloat
    max_heldout_accuracy_drop: FiniteFloat
    accuracy_drop_z: FiniteFloat
    retrain_accuracy_z: FiniteFloat
    class_chance_margin: FiniteFloat
    max_js_divergence: FiniteFloat | None
    min_forget_size: Int32 | None
    min_power: FiniteFloat
    attack_folds: Int32
    seed: Int32


@with_config(ConfigDict(extra="forbid"))
class RetrainOptions(TypedDict, total=False):
    seed: Int32 | None


@with_config(ConfigDict(extra="forbid"))
class SisaOptions(TypedDict, total=False):
    pass


@with_config(ConfigDict(extra="forbid"))
class NewtonOptions(TypedDict, total=False):
    criterion: str
    refresh_cache: bool


@with_config(ConfigDict(extra="forbid"))
class FinetuneOptions(TypedDict, total=False):
    epochs: Int32 | None
    lr: FiniteFloat
    batch_size: Int32
    seed: Int32


@with_config(ConfigDict(extra="forbid"))
class NegGradPlusOptions(TypedDict, total=False):
    max_steps: Int32 | None
    lr: FiniteFloat
    batch_size: Int32
    forget_batch_size: Int32
    retain_weight: FiniteFloat
    match_heldout: bool
    check_every: Int32
    repair_steps: Int32
    seed: Int32


@with_config(ConfigDict(extra="forbid"))
class ScrubOptions(TypedDict, total=False):
    max_steps: Int32 | None
    retain_steps_per_forget_step: Int32
    lr: FiniteFloat
    batch_size: Int32
    forget_batch_size: Int32
    temperature: FiniteFloat
    ce_weight: FiniteFloat
    check_every: Int32
    repair_steps: Int32
    seed: Int32


@with_config(ConfigDict(extra="forbid"))
class SalunOptions(TypedDict, total=False):
    max_steps: Int32 | None
    lr: FiniteFloat
    batch_size: Int32
    forget_batch_size: Int32
    saliency_fraction: FiniteFloat
    check_every: Int32
    repair_steps: Int32
    seed: Int32


class MethodConfigs(BaseModel):
    """Per method, the options its engine config takes (workers.unlearning.methods)."""

    model_config = ConfigDict(extra="forbid")

    retrain: RetrainOptions | None = None
    sisa: SisaOptions | None = None
    newton: NewtonOptions | None = None
    finetune: FinetuneOptions | None = None
    neggrad_plus: NegGradPlusOptions | None = None
    scrub: ScrubOptions | None = None
    salun: SalunOptions | None = None

    def options_for(self, method: str) -> dict[str, Any] | None:
        """The mapping ``workers.unlearning.unlearn`` takes as config (None: the defaults)."""
        return getattr(self, method) if method in METHOD_NAMES else None


class UnlearningPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default_method: Method = Method.RETRAIN
    thresholds: Thresholds = Field(default_factory=dict)
    method_configs: MethodConfigs = Field(default_factory=MethodConfigs)
    batching_window_hours: float = Field(default=24.0, ge=0, le=24 * 30, allow_inf_nan=False)
    # A batch runs as soon as this many requests wait, whatever the window says.
    max_batch_size: int = Field(default=100, ge=1, le=10_000)
    # A batch that costs a full retrain anyway (every SISA shard touched, or an unsharded
    # model retrained) may keep collecting requests this long (deadlines still start it);
    # None: the ordinary window.
    full_retrain_window_hours: float | None = Field(default=None, ge=0, le=24 * 30)
    # Certified removal (newton on logreg, Guo et al. 2020): the (epsilon, delta) every
    # removal must meet; training derives the objective perturbation's scale from them.
    epsilon: float = Field(default=1.0, gt=0, le=100)
    delta: float = Field(default=1e-4, gt=0, lt=1)
    # SISA sizing: the ensemble may lose at most this much test accuracy (a fraction,
    # 0.01 = 1 point) against the monolithic model; training picks shards and slices to match.
    max_accuracy_loss: float = Field(default=0.01, ge=0, le=1)
    # Sampling audit of qualified approximate methods: every k-th job that keeps an approximate
    # result also runs the exact method and compares the two per record; a degraded comparison
    # revokes the qualification (and the job keeps the exact result). None: no audit.
    sampling_audit_every: int | None = Field(default=None, ge=1, le=1_000_000)
    # A batch forgetting at least this fraction of the active version's training data (a whole
    # source, say) goes straight to the exact method: approximate methods are neither
    # qualified nor sensible for removals that large.
    large_removal_fraction: float = Field(default=0.1, gt=0, le=1)

    def stored(self) -> dict[str, Any]:
        """The JSON the model row keeps: thresholds and options only as the caller set them."""
        return self.model_dump(mode="json", exclude={"method_configs"}) | {
            "method_configs": self.method_configs.model_dump(mode="json", exclude_none=True),
        }


class StoredPolicy(BaseModel):
    """A policy as the jobs room reads it back. Rows written before registration checked the
    policy may name thresholds the verifier does not know or a method it does not have: the
    former are set aside and reported, the latter runs into the job's fallback, as before."""

    policy: UnlearningPolicy
    method: str
    ignored_thresholds: list[str]

    @classmethod
    def read(cls, raw: dict[str, Any]) -> StoredPolicy:
        values = dict(raw or {})
        method = str(values.pop("default_method", Method.RETRAIN.value))
        thresholds = dict(values.pop("thresholds", None) or {})
        known = {name: value for name, value in thresholds.items() if name in Thresholds.__annotations__}
        policy = UnlearningPolicy.model_validate(
            {**values, "thresholds": known, "default_method": method if method in METHOD_NAMES else Method.RETRAIN}
        )
        return cls(policy=policy, method=method, ignored_thresholds=sorted(set(thresholds) - set(known)))


def exact_method(adapter: str) -> Method:
    """The exact method for an adapter without loading it: SISA models forget shard by shard,
    every other model is retrained (the engine's ``exact_method_for``, read from the name)."""
    return Method.SISA if adapter == "sisa" else Method.RETRAIN


def known_adapters() -> set[str]:
    """Built-ins plus installed plugins, by entry-point name (no plugin is loaded)."""
    return set(BUILTIN_ADAPTERS) | {ep.name for ep in entry_points(group=ADAPTER_ENTRY_POINT_GROUP)}


def method_fits_adapter(method: Method, adapter: str) -> bool:
    fits = METHOD_ADAPTERS[method]
    return fits is None or adapter not in BUILTIN_ADAPTERS or adapter in fits

