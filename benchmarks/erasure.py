"""Training-data erasure: rows rewritten per second and peak memory when a 1M-row dataset
file is rewritten without its forgotten rows (issue 16).

    nice .venv/bin/python benchmarks/erasure.py                 # 1,000,000 rows, 10% forgotten, 3 runs
    nice .venv/bin/python benchmarks/erasure.py --rows 200000   # quicker
    nice .venv/bin/python benchmarks/erasure.py --format npz    # the NPZ rewrite (row blocks)

Measured: ``app.registry.erasure.rewrite`` (the erasure task's streaming rewrite: 50k-row
batches in, filtered, written and hashed in one pass) on a Parquet file of record key,
subject id, source, label and 16 float features. Baseline, in the same run: the obvious
non-streaming rewrite (read the whole table, filter, write it, hash the file). Each run is
its own process so peak RSS is its own; figures are medians over the runs.

``--format npz``: an NPZ of record keys, labels and a (rows, 16) float64 feature array; the
streaming rewrite copies member by member in ~8 MiB row blocks; the baseline is the earlier
in-memory rewrite (``np.load`` every array, filter, ``np.savez``, hash the file).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FEATURES = 16


def _write(path: Path, rows: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    writer = None
    for start in range(0, rows, 100_000):
        n = min(100_000, rows - start)
        index = np.arange(start, start + n)
        columns = {
            "record_key": pa.array([f"r{i:08d}" for i in index]),
            "user_id": pa.array([f"user-{i % 50_000}" for i in index]),
            "source": pa.array(np.where(index % 10 == 3, "feed-a", "feed-b")),
            "label": pa.array(index % 10),
        }
        for f in range(FEATURES):
            columns[f"f{f:02d}"] = pa.array(rng.random(n))
        table = pa.table(columns)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


def _write_npz(path: Path, rows: int) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    index = np.arange(rows)
    np.savez(path, record_key=np.array([f"r{i:08d}" for i in index]), label=index % 10,
             features=rng.random((rows, FEATURES)))


def _child(mode: str, path: str, rows: int, out_dir: str, fmt: str = "parquet") -> None:
    """One measured rewrite in this process; prints JSON (seconds, peak RSS MiB)."""
    import hashlib
    import resource
    import time

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from app.registry.erasure import rewrite
    from app.registry.schemas import DatasetColumns, DatasetFormat

    drop = [f"r{i:08d}" for i in range(rows) if i % 10 == 3]
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    if mode == "streaming":
        if fmt == "npz":
            columns = DatasetColumns(record_key="record_key", label="label", image="features")
        else:
            columns = DatasetColumns(record_key="record_key", label="label", features=["f00"])
        with open(path, "rb") as handle:
            result = rewrite(handle, DatasetFormat(fmt), columns, drop, Path(out_dir))
        kept = result.rows_kept
    elif fmt == "npz":
        import numpy as np

        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        mask = np.asarray(pc.invert(pc.is_in(pa.array(arrays["record_key"].astype(str)), value_set=pa.array(drop))))
        target = Path(out_dir) / "baseline.npz"
        np.savez(target, **{name: array[mask] for name, array in arrays.items()})
        hashlib.sha256(target.read_bytes()).hexdigest()
        kept = int(mask.sum())
    else:
        table = pq.read_table(path)
        kept_table = table.filter(pc.invert(pc.is_in(table.column("record_key"), value_set=pa.array(drop))))
        target = Path(out_dir) / "baseline.parquet"
        pq.write_table(kept_table, target)
        hashlib.sha256(target.read_bytes()).hexdigest()
        kept = kept_table.num_rows
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "kept": kept, "peak_rss_mib": peak / 1024,
                      "growth_mib": (peak - base_rss) / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--format", choices=["parquet", "npz"], default="parquet")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "PATH", "OUT"))
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], args.child[1], args.rows, args.child[2], args.format)
        return
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / f"data.{args.format}"
        (_write_npz if args.format == "npz" else _write)(source, args.rows)
        results: dict[str, list[dict[str, float]]] = {"streaming": [], "baseline": []}
        for _ in range(args.runs):
            for mode in results:
                out = Path(tmp) / f"out-{mode}"
                out.mkdir(exist_ok=True)
                done = subprocess.run([sys.executable, __file__, "--rows", str(args.rows), "--format", args.format, "--child", mode,
                                       str(source), str(out)], check=True, capture_output=True, text=True, cwd=ROOT)
                results[mode].append(json.loads(done.stdout.strip().splitlines()[-1]))
        size_mib = source.stat().st_size / 2**20
    print(f"file: {args.rows:,} rows, {size_mib:.1f} MiB {args.format}, 10% of rows forgotten; medians of {args.runs} runs")
    figures = {}
    for mode, runs in results.items():
        seconds = statistics.median(r["seconds"] for r in runs)
        figures[mode] = {"rows_per_second": args.rows / seconds, "seconds": seconds,
                         "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in runs),
                         "growth_mib": statistics.median(r["growth_mib"] for r in runs)}
        print(f"{mode:>9}: {figures[mode]['rows_per_second']:>12,.0f} rows/s ({seconds:.2f} s), "
              f"peak RSS {figures[mode]['peak_rss_mib']:.0f} MiB (+{figures[mode]['growth_mib']:.0f} MiB while rewriting)")
    s, b = figures["streaming"], figures["baseline"]
    print(f"streaming vs baseline: {s['rows_per_second'] / b['rows_per_second']:.2f}x the rows/s, "
          f"{s['growth_mib'] / max(b['growth_mib'], 1):.2f}x the memory growth")


if __name__ == "__main__":
    main()
