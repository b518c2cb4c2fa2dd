"""Parquet sources and outputs: what a sync and a one-row change cost.

    python benchmarks/bench_parquet.py                      # 1M rows, 64 partitions
    python benchmarks/bench_parquet.py --rows 200000 --partitions 16 --repeat 5

Single file (1M rows as a source): the raw pyarrow write/read floor, the store's write,
the initial sync (reads and hashes every row), a no-op sync (one stat, nothing opened),
and a sync after one changed row (the file is rewritten by "someone else").

Dataset (the same rows in --partitions partitions, keyed by (bucket, id)): the initial
write, then one changed key (a) written through the store as an output would be (warm and
cold cache) and (b) through ``DataTable.store_chunk`` (meta + flush, as a step does),
(c) picked up by a sync when the dataset is a source. For each: the time and how many
files were rewritten or opened. Medians of --repeat runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from filepipe import Catalog, DataStore, DBConn, Table
from filepipe.stores import TableStoreParquet, TableStoreParquetDataset
from filepipe.sync import sync_table


def build_frame(rows: int, partitions: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    amount = rng.normal(size=rows)
    amount[rng.random(rows) < 0.1] = np.nan
    names = np.array([f"customer-{i:06d}" for i in range(max(rows // 20, 1))], dtype=object)
    return pd.DataFrame({
        "id": np.arange(rows, dtype=np.int64),
        "bucket": (np.arange(rows) % partitions).astype(np.int64),
        "customer": pd.Series(names[rng.integers(0, len(names), rows)], dtype="str"),
        "amount": amount,
        "at": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 10**15, rows), unit="ns"),
        "flag": rng.random(rows) < 0.5,
    })


def age(path: Path | str, seconds: float = 10.0) -> None:
    """Push an mtime into the past so that the next sync does not treat it as 'racy'."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


def timed(fn):
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


def file_stats(root: Path) -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in root.rglob("*.parquet")}


def rewritten(before: dict, after: dict) -> int:
    return sum(1 for p in set(before) | set(after) if before.get(p) != after.get(p))


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:9.1f} ms"


def bench_single_file(tmp: Path, df: pd.DataFrame, repeat: int) -> None:
    rows = len(df)
    print(f"== single file, {rows:,} rows ({', '.join(f'{c}:{t}' for c, t in df.dtypes.items())})")
    raw = tmp / "raw.parquet"
    t_raw_w, _ = timed(lambda: pq.write_table(pa.Table.from_pandas(df, preserve_index=False), raw))
    t_raw_r, _ = timed(lambda: pq.read_table(raw).to_pandas())
    print(f"pyarrow write (floor)                 : {ms(t_raw_w)}")
    print(f"pyarrow read + to_pandas (floor)      : {ms(t_raw_r)}")

    path = tmp / "src.parquet"
    writer = TableStoreParquet(path, ["id"])
    t_w, _ = timed(lambda: writer.write_file(df))
    print(f"store write_file (sorted, atomic)     : {ms(t_w)}   {path.stat().st_size / 1e6:.1f} MB")
    age(path)

    t_read, _ = timed(lambda: TableStoreParquet(path, ["id"]).read_files([str(path)]))
    print(f"store read_files (read + key check)   : {ms(t_read)}   (the store's share of a sync)")

    ds = DataStore(DBConn(f"sqlite:///{tmp}/meta_file.sqlite"))
    table = Catalog({"src": Table(TableStoreParquet(path, ["id"]))}).get_datatable(ds, "src")
    t_first, first = timed(lambda: sync_table(table))
    assert len(first.changed) == rows, len(first.changed)
    print(f"initial sync (read + hash + meta)     : {ms(t_first)}   {rows / t_first / 1e6:.2f} M rows/s")

    noop = []
    for _ in range(repeat):
        t, r = timed(lambda: sync_table(table))
        assert not r.opened and (r.changed is None or r.changed.empty)
        noop.append(t)
    print(f"no-op sync                            : {ms(statistics.median(noop))}")

    edit, write = [], []
    frame = df.copy()
    for k in range(repeat):
        i = (k * 7919 + 12345) % rows
        frame.loc[i, "amount"] = 1000.0 + k
        t_write, _ = timed(lambda: writer.write_file(frame))
        age(path)
        t, r = timed(lambda: sync_table(table))
        assert r.opened == [str(path)] and len(r.changed) == 1, (r.opened, r.changed)
        write.append(t_write)
        edit.append(t)
    print(f"one changed row: rewrite the file     : {ms(statistics.median(write))}")
    print(f"one changed row: sync (1 key changed) : {ms(statistics.median(edit))}")


def bench_dataset(tmp: Path, df: pd.DataFrame, partitions: int, repeat: int) -> None:
    rows = len(df)
    root = tmp / "sales"
    print(f"\n== dataset, {rows:,} rows in {partitions} partitions bucket=<n>/part-0.parquet, "
          f"keys (bucket, id)")

    def store() -> TableStoreParquet:
        return TableStoreParquetDataset(root, ["bucket", "id"], partition_cols=["bucket"])

    writer = store()
    t_init, _ = timed(lambda: (writer.upsert_rows(df), writer.flush()))
    files = file_stats(root)
    assert len(files) == partitions
    print(f"initial write (upsert + flush)        : {ms(t_init)}   {len(files)} files")
    t_list, _ = timed(writer.list_files)
    print(f"list_files (scandir walk)             : {ms(t_list)}")
    for p in files:
        age(p)

    def change(k: int) -> pd.DataFrame:
        row = df.iloc[[(k * 7919 + 4242) % rows]].copy()
        row["amount"] = -1000.0 - k
        return row

    warm_t, warm_n, cold_t, cold_n = [], [], [], []
    for k in range(repeat):
        before = file_stats(root)
        t, _ = timed(lambda: (writer.upsert_rows(change(k)), writer.flush()))
        warm_t.append(t)
        warm_n.append(rewritten(before, file_stats(root)))
    for k in range(repeat):
        before = file_stats(root)
        cold = store()  # nothing cached: reads only the partition of the key
        t, _ = timed(lambda: (cold.upsert_rows(change(100 + k)), cold.flush()))
        cold_t.append(t)
        cold_n.append(rewritten(before, file_stats(root)))
    print(f"one changed key, store, warm cache    : {ms(statistics.median(warm_t))}   "
          f"files rewritten: {max(warm_n)}")
    print(f"one changed key, store, cold          : {ms(statistics.median(cold_t))}   "
          f"files rewritten: {max(cold_n)}")

    # as an output: DataTable.store_chunk hashes, diffs with the meta, writes and flushes
    ds = DataStore(DBConn(f"sqlite:///{tmp}/meta_ds.sqlite"))
    out = Catalog({"out": Table(store())}).get_datatable(ds, "out")
    full = out.store.read_rows()
    # record the current rows in the meta without rewriting the files
    out.store_chunk(full, write_store=False)
    out_t, out_n = [], []
    for k in range(repeat):
        before = file_stats(root)
        t, changed = timed(lambda: out.store_chunk(change(200 + k)))
        assert len(changed) == 1
        out_t.append(t)
        out_n.append(rewritten(before, file_stats(root)))
    print(f"one changed key, DataTable.store_chunk: {ms(statistics.median(out_t))}   "
          f"files rewritten: {max(out_n)}")

    # as a source: a sync opens only the rewritten partition
    for p in file_stats(root):
        age(p)
    src_ds = DataStore(DBConn(f"sqlite:///{tmp}/meta_src.sqlite"))
    src = Catalog({"src": Table(store())}).get_datatable(src_ds, "src")
    t_first, first = timed(lambda: sync_table(src))
    print(f"source: initial sync                  : {ms(t_first)}   opened {len(first.opened)} files")
    noop = [timed(lambda: sync_table(src))[0] for _ in range(repeat)]
    print(f"source: no-op sync                    : {ms(statistics.median(noop))}")
    sync_t, opened = [], []
    for k in range(repeat):
        w = store()
        w.upsert_rows(change(300 + k))
        w.flush()
        for p in file_stats(root):
            if p.stat().st_mtime_ns > time.time_ns() - 5 * 10**9:
                age(p)
        t, r = timed(lambda: sync_table(src))
        assert len(r.changed) == 1, r.changed
        sync_t.append(t)
        opened.append(len(r.opened))
    print(f"source: one changed key, sync         : {ms(statistics.median(sync_t))}   "
          f"files opened: {max(opened)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    df = build_frame(args.rows, args.partitions)
    with tempfile.TemporaryDirectory(prefix="bench_parquet_") as tmp:
        bench_single_file(Path(tmp), df, args.repeat)
        bench_dataset(Path(tmp), df, args.partitions, args.repeat)


if __name__ == "__main__":
    main()
