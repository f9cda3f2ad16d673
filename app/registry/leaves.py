"""Snapshot Merkle leaves and the per-dataset leaf index.

A leaf is ``canonical_json([record_key, content_hash])``; leaves are ordered by record
key in Unicode code-point order (Python's ``str`` order, the same on every database),
which is what makes a non-inclusion proof possible: two adjacent leaves bracket a key.

The leaf index is every record of a dataset as (row_index, record_key, leaf hash),
sorted by key, stored once as an Arrow IPC artifact. A snapshot's tree is then the
index filtered by the snapshot's membership bitmap: no rows re-read, no re-hashing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyroaring import BitMap
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core import merkle
from app.core.hashing import canonical_json
from app.registry import artifacts
from app.registry.cache import ImmutableCache
from app.registry.models import DataRecord, Dataset

if TYPE_CHECKING:  # numpy and pyarrow load where an index is built or read, not with leaf_hash
    import numpy as np
    import pyarrow as pa

LEAF_BYTES = 32


def leaf_data(record_key: str, content_hash: str) -> bytes:
    return canonical_json([record_key, content_hash])


def leaf_hash(record_key: str, content_hash: str) -> bytes:
    return merkle.leaf_hash(leaf_data(record_key, content_hash))


@dataclass(frozen=True)
class LeafIndex:
    row_index: np.ndarray  # uint32, in record-key order
    record_key: pa.StringArray
    leaves: np.ndarray  # (n, 32) uint8

    def select(self, members: BitMap) -> SnapshotLeaves:
        import numpy as np
        import pyarrow as pa

        present = np.zeros(int(self.row_index.max(initial=0)) + 1, dtype=bool)
        rows = np.frombuffer(members.to_array(), dtype=np.uint32) if members else np.empty(0, np.uint32)
        present[rows[rows < present.size]] = True
        mask = present[self.row_index]
        return SnapshotLeaves(
            row_index=self.row_index[mask],
            record_key=self.record_key.filter(pa.array(mask)),
            leaves=self.leaves[mask],
        )


@dataclass(frozen=True)
class SnapshotLeaves:
    row_index: np.ndarray
    record_key: pa.StringArray
    leaves: np.ndarray

    def __len__(self) -> int:
        return int(self.row_index.size)

    def hashes(self) -> list[bytes]:
        flat = self.leaves.tobytes()
        return [flat[i : i + LEAF_BYTES] for i in range(0, len(flat), LEAF_BYTES)]

    def root(self) -> bytes:
        return merkle.root(self.hashes())


def build_leaf_index(session: Session, dataset: Dataset) -> str:
    """Write the dataset's leaf index to the artifact store; return its URI."""
    import pyarrow as pa

    rows = session.execute(
        select(DataRecord.row_index, DataRecord.record_key, DataRecord.content_hash).where(
            DataRecord.dataset_id == dataset.id
        )
    ).all()
    rows.sort(key=lambda r: r.record_key)
    leaves = b"".join(leaf_hash(r.record_key, r.content_hash) for r in rows)
    table = pa.table(
        {
            "row_index": pa.array([r.row_index for r in rows], pa.uint32()),
            "record_key": pa.array([r.record_key for r in rows], pa.string()),
            "leaf": pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(LEAF_BYTES), len(rows), [None, pa.py_buffer(leaves)]
            ),
        }
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    uri, _ = artifacts.put_bytes(sink.getvalue().to_pybytes())
    return uri


def _load(uri: str) -> LeafIndex:
    import numpy as np
    import pyarrow as pa

    table = pa.ipc.open_file(pa.BufferReader(artifacts.get_bytes(uri))).read_all().combine_chunks()
    leaf_column = table.column("leaf").chunk(0) if table.num_rows else pa.array([], pa.binary(LEAF_BYTES))
    if table.num_rows:
        buffer = leaf_column.buffers()[1]
        start = leaf_column.offset * LEAF_BYTES
        leaves = np.frombuffer(buffer, dtype=np.uint8)[start : start + table.num_rows * LEAF_BYTES]
    else:
        leaves = np.empty(0, np.uint8)
    keys = table.column("record_key")
    return LeafIndex(
        row_index=table.column("row_index").to_numpy(),
        record_key=keys.chunk(0) if keys.num_chunks else pa.array([], pa.string()),
        leaves=leaves.reshape(-1, LEAF_BYTES),
    )


# Leaf indexes are content-addressed, so a loaded one never goes stale.
leaf_index_cache: ImmutableCache[LeafIndex] = ImmutableCache(size=4)


def leaf_index(session: Session, dataset: Dataset) -> LeafIndex:
    if dataset.leaf_index_uri is None or not artifacts.exists(dataset.leaf_index_uri):
        dataset.leaf_index_uri = build_leaf_index(session, dataset)
    uri = dataset.leaf_index_uri
    return leaf_index_cache.get(uri, lambda: _load(uri))
