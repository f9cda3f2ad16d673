"""SISA: Sharded, Isolated, Sliced, Aggregated training (Bourtoule et al., 2021).

Records are dealt to S shards and, within a shard, to R slices by a keyed hash
of their record key, so a record's place never depends on which other records
exist. Shard s trains one base model in R stages: stage r continues from stage
r-1 on slices 0..r. After every stage the base model's state is checkpointed
under a *chain key*: a hash of the recipe, the seed, the shard and the ordered
record keys of slices 0..r. Removing records changes the chain keys from the
first affected slice on; every stage before it keeps its key, so its checkpoint
is reused and only later stages are retrained. The result is bit-identical to
training SISA from scratch on the retained data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from .. import runtime
from ..data import LabelledData
from ..placement import SisaParams, sisa_place
from ..serialization import canonical_json
from .base import AdapterError, BaseAdapter, make_params, params_to_dict


@dataclass
class ShardUpdate:
    """What retraining one shard did, for the caller's per-shard artifacts."""

    shard: int
    first_stage: int  # first retrained stage; stages before it were reused
    stages_retrained: int
    rows: int
    dropped_checkpoints: list[str]
    new_checkpoints: list[str]


class SisaAdapter(BaseAdapter):
    name = "sisa"
    Params = SisaParams

    def __init__(self, **hyperparameters: Any) -> None:
        super().__init__(**hyperparameters)
        base_type = _base_type(self.hyperparameters.base)
        canonical = params_to_dict(make_params(base_type.Params, self.hyperparameters.base_params))
        object.__setattr__(self.hyperparameters, "base_params", canonical)
        self.slice_keys: list[list[list[str]]] = []  # [shard][slice] -> ordered record keys
        self.chains: list[list[str]] = []  # [shard][stage] -> checkpoint key
        self.checkpoints: dict[str, bytes] = {}
        self.models: list[BaseAdapter | None] = []
        self._shard_index: dict[str, int] | None = None  # key -> shard, built on first lookup

    # -- layout ------------------------------------------------------------
    def stage_epochs(self) -> int:
        """Epochs per stage so a shard sees its data about ``epochs`` times in total.

        Stage r trains on r/R of the shard, so 2E/(R+1) epochs per stage add up
        to E passes (Bourtoule et al.); slicing then costs no extra compute.
        """
        epochs = int(self.hyperparameters.base_params.get("epochs", 1))
        return max(1, round(2 * epochs / (self.hyperparameters.slices + 1)))

    def _place(self, key: str) -> tuple[int, int, bytes]:
        return sisa_place(self.seed, key, self.hyperparameters.shards, self.hyperparameters.slices)

    def _layout(self, keys: Iterable[str]) -> list[list[list[str]]]:
        hp = self.hyperparameters
        cells: list[list[list[tuple[bytes, str]]]] = [
            [[] for _ in range(hp.slices)] for _ in range(hp.shards)
        ]
        for key in keys:
            shard, slice_, digest = self._place(key)
            cells[shard][slice_].append((digest, key))
        return [[[key for _, key in sorted(cell)] for cell in shard] for shard in cells]

    def _chain(self, shard: int, slices: list[list[str]]) -> list[str]:
        recipe = canonical_json({"base": self.hyperparameters.base,
                                 "base_params": self.hyperparameters.base_params,
                                 "slices": self.hyperparameters.slices,
                                 "num_classes": self.num_classes,
                                 "feature_shape": list(self.feature_shape)})
        digest = hashlib.sha256(recipe + f"|{self.seed}|{shard}".encode()).digest()
        chain = []
        for keys in slices:
            digest = hashlib.sha256(digest + json.dumps(keys).encode()).digest()
            chain.append(digest.hex())
        return chain

    # -- protocol ----------------------------------------------------------
    def build(self, feature_shape: tuple[int, ...], num_classes: int, seed: int) -> SisaAdapter:
        self.feature_shape = tuple(feature_shape)
        self.num_classes = int(num_classes)
        self.seed = int(seed)
        shards = self.hyperparameters.shards
        self.slice_keys = [[[] for _ in range(self.hyperparameters.slices)] for _ in range(shards)]
        self.chains = [[] for _ in range(shards)]
        self.checkpoints = {}
        self.models = [None] * shards
        self._shard_index = None
        return self

    def fit(self, data: LabelledData, seed: int) -> SisaAdapter:
        self.build(data.feature_shape, self.resolve_num_classes(data), seed)
        self.slice_keys = self._layout(data.keys)
        rows = {key: i for i, key in enumerate(data.keys)}
        for shard in range(self.hyperparameters.shards):
            self._train_shard(shard, self.slice_keys[shard], data, rows)
        return self

    def remove(self, forget_keys: Iterable[str], retain: LabelledData) -> list[ShardUpdate]:
        """Forget records in place, retraining only the shards that held them.

        ``retain`` must hold every record the model keeps for the touched shards
        (it may hold more); returns what was retrained and which checkpoints
        became obsolete (they contain forgotten records and must be destroyed).
        """
        self._require_fitted()
        held = self.shards_holding(forget_keys)
        updates = []
        needed = {key for shard in held for cell in self.slice_keys[shard] for key in cell}
        rows = {key: i for i, key in enumerate(retain.keys) if key in needed}
        for shard, keys in sorted(held.items()):
            gone = set(keys)
            slices = [[key for key in cell if key not in gone] for cell in self.slice_keys[shard]]
            updates.append(self._train_shard(shard, slices, retain, rows))
            self.slice_keys[shard] = slices
            for key in gone:
                del self._shard_index[key]
        return updates

    def predict_proba(self, features: torch.Tensor) -> torch.Tensor:
        self._require_fitted()
        members = [model for model in self.models if model is not None]
        if not members:
            raise AdapterError("sisa: every shard is empty")
        # Mean probability: each shard is an independent vote, weighted equally.
        total = members[0].predict_proba(features)
        for model in members[1:]:
            total = total + model.predict_proba(features)
        return total / len(members)

    # -- what the caller stores per shard ------------------------------------
    def shard_of(self, key: str) -> int:
        return self._place(str(key))[0]

    def shards_holding(self, keys: Iterable[str]) -> dict[int, list[str]]:
        """Shard -> the given keys it was trained on; keys the model never saw are left out."""
        if self._shard_index is None:
            self._shard_index = {
                key: shard
                for shard, cells in enumerate(self.slice_keys) for cell in cells for key in cell
            }
        held: dict[int, list[str]] = {}
        for key in {str(k) for k in keys}:
            if key in self._shard_index:
                held.setdefault(self._shard_index[key], []).append(key)
        return {shard: sorted(found) for shard, found in held.items()}

    def shard_keys(self, shard: int) -> list[str]:
        return [key for cell in self.slice_keys[shard] for key in cell]

    def shard_state_bytes(self, shard: int) -> bytes | None:
        """The shard's final model (its last checkpoint), or None for an empty shard."""
        chain = self.chains[shard]
        return self.checkpoints[chain[-1]] if self.models[shard] is not None else None

    def checkpoint_keys(self, shard: int) -> list[str]:
        return list(self.chains[shard])

    # -- training ----------------------------------------------------------
    def _new_base(self) -> BaseAdapter:
        base = _base_type(self.hyperparameters.base)(**self.hyperparameters.base_params)
        base.num_classes = self.num_classes
        return base

    def _train_shard(
        self, shard: int, slices: list[list[str]], data: LabelledData, rows: dict[str, int]
    ) -> ShardUpdate:
        old_chain = self.chains[shard]
        new_chain = self._chain(shard, slices)
        first = 0
        while first < len(new_chain) and first < len(old_chain) and new_chain[first] == old_chain[first]:
            first += 1
        base = self._new_base()
        if first:
            base.load_state_bytes(self.checkpoints[new_chain[first - 1]])
        else:
            base.build(self.feature_shape, self.num_classes, runtime.derive_seed(self.seed, "shard", shard))
        seen: list[str] = [key for cell in slices[:first] for key in cell]
        epochs = self.stage_epochs()
        for stage in range(first, len(slices)):
            seen += slices[stage]
            if slices[stage]:
                try:
                    index = [rows[key] for key in seen]
                except KeyError as missing:
                    raise AdapterError(f"sisa: record {missing} of shard {shard} is not in the data") from None
                base.partial_fit(data.take(index), runtime.derive_seed(self.seed, "shard", shard, "stage", stage), epochs)
            self.checkpoints[new_chain[stage]] = base.state_bytes()
        dropped = [key for key in old_chain[first:] if key not in new_chain]
        for key in dropped:
            del self.checkpoints[key]
        self.chains[shard] = new_chain
        self.models[shard] = base if seen else None
        return ShardUpdate(shard, first, len(slices) - first, len(seen), dropped, new_chain[first:])

    # -- state -------------------------------------------------------------
    def _header(self) -> dict[str, Any]:
        return {"slice_keys": self.slice_keys, "chains": self.chains,
                "trained": [model is not None for model in self.models]}

    def _blobs(self) -> dict[str, bytes]:
        return {f"checkpoint/{key}": blob for key, blob in self.checkpoints.items()}

    def _restore(self, header: dict[str, Any], tensors: dict, blobs: dict) -> None:
        self._shard_index = None
        self.slice_keys = header["slice_keys"]
        self.chains = header["chains"]
        self.checkpoints = {name.split("/", 1)[1]: blob for name, blob in blobs.items()}
        self.models = [
            self._new_base().load_state_bytes(self.checkpoints[chain[-1]]) if trained else None
            for chain, trained in zip(self.chains, header["trained"], strict=True)
        ]


def _base_type(name: str) -> type:
    from . import adapter_type  # the registry imports this module, so import lazily

    base_type = adapter_type(name)
    if base_type is SisaAdapter or not all(
        hasattr(base_type, attribute) for attribute in ("Params", "partial_fit")
    ):
        raise AdapterError(f"sisa needs a base adapter with Params and partial_fit; {name!r} has not")
    return base_type
