"""The history store (#10): what 1,000 one-row update runs of a 100,000-row table cost.

    python benchmarks/bench_history.py                       # 100,000 rows, 1,000 runs
    python benchmarks/bench_history.py --rows 20000 --runs 200 --repeat 7

The table is the seed workload's `events` (keys user_id, event_id; a JSON `event` text).
Its first segment holds all rows (one version each, as a first run writes them); then each
run updates one random row: one one-row segment appended, then `compact` (as the engine
calls it after every run). Printed: append + compact per run (median, 95th percentile,
max), the history's size on disk against a plain Parquet file of the table, `as_of` of the
oldest state (the 100,000 first versions) and of the latest, and `versions` of one row.
Medians of --repeat timings.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from filepipe.hashing import hash_rows
from filepipe.history import HistoryStore

KEYS = ["user_id", "event_id"]


def events(n: int) -> pd.DataFrame:
    """The seed workload's events: 10 per user, `event` a JSON text."""
    return pd.DataFrame({
        "user_id": [str(i // 10) for i in range(n)],
        "event_id": [str(i % 10) for i in range(n)],
        "event": [json.dumps({"event_type": "click" if i % 3 else "view", "ip": f"10.0.{i % 256}.{i % 7}"})
                  for i in range(n)],
    })


def versions_of(rows: pd.DataFrame, first_seq: int, run: int, kind: str) -> pd.DataFrame:
    return rows.assign(_fp_seq=np.arange(first_seq, first_seq + len(rows), dtype=np.int64), _fp_run=run,
                       _fp_kind=kind, _fp_hash=pd.array(hash_rows(rows), dtype="Int64"))


def median_ms(fn: Callable[[int], object], repeat: int) -> tuple[float, float]:
    """Median and max wall time of `fn(i)` over `repeat` calls, in ms."""
    times = []
    for i in range(repeat):
        t = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    table = events(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "events.parquet"
        table.to_parquet(plain, index=False)  # what a user's own Parquet file of the table weighs
        plain_zstd = Path(tmp) / "events-zstd.parquet"
        pq.write_table(pa.Table.from_pandas(table, preserve_index=False), plain_zstd, compression="zstd")
        store = HistoryStore(Path(tmp) / "history")
        t = time.perf_counter()
        store.append("events", versions_of(table, 1, 1, "added"))
        first_ms = (time.perf_counter() - t) * 1000
        first_bytes = store.size_bytes("events")
        oldest = args.rows
        per_run, updated = [], []
        for run in range(args.runs):
            i = int(rng.integers(args.rows))
            row = table.iloc[[i]].assign(event=json.dumps({"event_type": "click", "ip": f"run {run}"}))
            updated.append(i)
            t = time.perf_counter()
            store.append("events", versions_of(row, oldest + 1 + run, run + 2, "updated"))
            store.compact("events")
            per_run.append((time.perf_counter() - t) * 1000)
        history_bytes = store.size_bytes("events")
        segments = store.segments("events")

        state = store.as_of("events", KEYS, oldest)
        assert len(state) == args.rows and state["event"].tolist() == table.sort_values(KEYS)["event"].tolist()
        as_of_oldest = median_ms(lambda _: store.as_of("events", KEYS, oldest), args.repeat)
        as_of_latest = median_ms(lambda _: store.as_of("events", KEYS, oldest + args.runs), args.repeat)
        rows = [updated[k] for k in range(args.repeat)]  # rows with two versions or more
        keys = [dict(zip(KEYS, table.iloc[r][KEYS])) for r in rows]
        assert all(len(store.versions("events", KEYS, k)) >= 2 for k in keys)
        one_row = median_ms(lambda k: store.versions("events", KEYS, keys[k]), args.repeat)

        print(f"table: {args.rows:,} rows; {args.runs:,} one-row update runs (append + compact each)")
        print(f"first segment ({args.rows:,} versions) written in {first_ms:,.0f} ms")
        print(f"append + compact per run: median {statistics.median(per_run):.1f} ms, "
              f"p95 {np.percentile(per_run, 95):.1f} ms, max {max(per_run):.1f} ms")
        print(f"history on disk: {history_bytes / 1e6:.2f} MB in {len(segments)} segments; "
              f"plain Parquet of the table: {plain.stat().st_size / 1e6:.2f} MB (snappy), "
              f"{plain_zstd.stat().st_size / 1e6:.2f} MB (zstd); "
              f"the {args.runs:,} runs added {(history_bytes - first_bytes) / 1e3:.0f} kB")
        print(f"as_of(oldest): median {as_of_oldest[0]:.0f} ms (max {as_of_oldest[1]:.0f}); "
              f"as_of(latest): median {as_of_latest[0]:.0f} ms (max {as_of_latest[1]:.0f})")
        print(f"versions(one row): median {one_row[0]:.1f} ms (max {one_row[1]:.1f}) over {args.repeat} rows")


if __name__ == "__main__":
    main()
