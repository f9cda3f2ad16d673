"""Deterministic byte serialisation of model state.

``torch.save`` output depends on pickle details and library versions, so two
identical models could hash differently. This container is a JSON header with
sorted keys followed by raw little-endian tensor bytes in name order: the same
state always yields the same bytes, hence the same sha256.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

MAGIC = b"UNLEARND-STATE\x00\x01"
_LENGTH = struct.Struct("<Q")


class StateFormatError(ValueError):
    """The bytes are not a state written by :func:`pack`, or are truncated."""


@dataclass
class State:
    header: dict[str, Any]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def pack(
    header: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor] | None = None,
    blobs: Mapping[str, bytes] | None = None,
) -> bytes:
    tensors = dict(tensors or {})
    blobs = dict(blobs or {})
    arrays = {}
    layout = []
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name].detach().cpu().numpy())
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)
        arrays[name] = array
        layout.append({"name": name, "dtype": array.dtype.str, "shape": list(array.shape)})
    blob_layout = [{"name": name, "length": len(blobs[name])} for name in sorted(blobs)]
    head = canonical_json({"header": dict(header), "tensors": layout, "blobs": blob_layout})
    parts = [MAGIC, _LENGTH.pack(len(head)), head]
    parts += [arrays[item["name"]].tobytes() for item in layout]
    parts += [bytes(blobs[item["name"]]) for item in blob_layout]
    return b"".join(parts)


def unpack(raw: bytes) -> State:
    view = memoryview(raw)
    if bytes(view[: len(MAGIC)]) != MAGIC:
        raise StateFormatError("not an Unlearnd state (bad magic)")
    offset = len(MAGIC)
    try:
        (head_len,) = _LENGTH.unpack_from(view, offset)
        offset += _LENGTH.size
        head = json.loads(bytes(view[offset : offset + head_len]))
        offset += head_len
        tensors = {}
        for item in head["tensors"]:
            dtype = np.dtype(item["dtype"])
            count = int(np.prod(item["shape"], dtype=np.int64))
            size = count * dtype.itemsize
            if offset + size > len(view):
                raise StateFormatError(f"truncated tensor {item['name']!r}")
            array = np.frombuffer(view[offset : offset + size], dtype=dtype).reshape(item["shape"])
            tensors[item["name"]] = torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))
            offset += size
        blobs = {}
        for item in head["blobs"]:
            if offset + item["length"] > len(view):
                raise StateFormatError(f"truncated blob {item['name']!r}")
            blobs[item["name"]] = bytes(view[offset : offset + item["length"]])
            offset += item["length"]
    except (KeyError, TypeError, json.JSONDecodeError, struct.error) as exc:
        raise StateFormatError(f"corrupt state header: {exc}") from exc
    if offset != len(view):
        raise StateFormatError("trailing bytes after state")
    return State(header=head["header"], tensors=tensors, blobs=blobs)
