"""Throughput of filepipe.hashing.hash_rows on a 1M-row frame (target: >= 3 M rows/s).

Columns: int64, float64 with 10 % NaN, text with ~10 % distinct values, datetime64.
The text column is measured both as pandas' default ``str`` dtype and as ``object``. CPU time is
printed beside wall time because a shared machine makes wall time noisy.
Run from the repository root: ``python benchmarks/bench_hashing.py [rows]`` (with filepipe
installed, or ``PYTHONPATH=.`` set).
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np
import pandas as pd

from filepipe.hashing import hash_rows


def build_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    """The benchmark frame: int, float with NaN, str with ~rows/10 distinct values, datetime."""
    rng = np.random.default_rng(seed)
    floats = rng.normal(size=rows)
    floats[rng.random(rows) < 0.1] = np.nan
    names = np.array([f"user-{i:07d}" for i in range(max(rows // 10, 1))], dtype=object)
    return pd.DataFrame(
        {
            "id": np.arange(rows, dtype=np.int64),
            "amount": floats,
            "user": pd.Series(names[rng.integers(0, len(names), rows)], dtype="str"),
            "at": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 10**15, rows), "ns"),
        }
    )


def median_seconds(df: pd.DataFrame, repeats: int = 3) -> tuple[float, float]:
    """Median wall-clock and median CPU seconds of `repeats` calls of hash_rows(df)."""
    wall, cpu = [], []
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        hash_rows(df)
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def main(rows: int) -> None:
    df = build_frame(rows)
    variants = {"str dtype": df, "object str": df.astype({"user": object})}
    for label, frame in variants.items():
        wall, cpu = median_seconds(frame)
        print(f"hash_rows {label:<10} {rows:,} rows  median {wall:.3f} s  {rows / wall / 1e6:.2f} M rows/s"
              f"  (CPU {cpu:.3f} s: {rows / cpu / 1e6:.2f} M rows/s)")
        print("  dtypes:", ", ".join(f"{c}:{t}" for c, t in frame.dtypes.items()))
    for column in df.columns:
        wall, cpu = median_seconds(df[[column]])
        print(f"  column {column:<7} alone  median {wall:.3f} s  {rows / wall / 1e6:.2f} M rows/s"
              f"  (CPU {cpu:.3f} s)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
