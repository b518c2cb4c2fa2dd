"""Benchmark TableStoreExcel as a source and as an output.

    python benchmarks/bench_excel.py [--rows 100000]

Source: a ROWS x 10 sheet "Data" written by xlsxwriter (as another program would: numbers,
shared strings, a date format), in a workbook that also holds a small "Notes" sheet.
Timed, each once, on a fresh SQLite metadata index:
  * initial sync        sync_table(): read the sheet, hash every row, write all meta
  * no-op sync          the file unchanged: must not open it (read_file calls counted)
  * one edited cell     the workbook re-saved with one cell changed (untimed), then sync:
                        exactly one key must change
Output (sheet "Out" of its own workbook):
  * write output        TableStoreExcel.upsert_rows + flush (write_sheet) of ROWS rows
  * run_steps, full     a per-row BatchTransform from the (synced) source to an output sheet
  * run_steps, 1 row    after another one-cell edit: the source re-read, one key recomputed,
                        the output sheet rewritten
  * run_steps, no-op    nothing changed
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from filepipe import (
    BatchTransform,
    Catalog,
    DataStore,
    DBConn,
    Pipeline,
    RunReport,
    Table,
    build_compute,
    run_steps,
)
from filepipe.stores import TableStoreExcel
from filepipe.sync import sync_table


def make_frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    words = np.array(["alpha", "beta", "gamma", "delta & co", "ëpsilon", "zeta", "théta"])
    price = rng.normal(100, 30, n).round(2)
    price[rng.random(n) < 0.05] = np.nan
    return pd.DataFrame({
        "id": np.arange(1, n + 1, dtype=np.int64),
        "qty": rng.integers(-1000, 1000, n),
        "stock": rng.integers(0, 10**6, n),
        "price": price,
        "ratio": rng.random(n),
        "customer": words[rng.integers(0, len(words), n)],
        "code": pd.Series(rng.integers(0, 16**6, n)).map("{:06x}".format).to_numpy(),
        "note": np.char.add("note ", rng.integers(0, 10**6, n).astype(str)),
        "day": pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 3650, n), unit="D"),
        "flag": rng.random(n) < 0.5,
    })


def save_like_another_program(path: Path, df: pd.DataFrame) -> None:
    """Write the workbook with xlsxwriter (shared strings, number formats), then age it."""
    import xlsxwriter

    tmp = path.with_name("~saving.xlsx")
    wb = xlsxwriter.Workbook(str(tmp), {"default_date_format": "yyyy-mm-dd"})
    ws = wb.add_worksheet("Data")
    ws.write_row(0, 0, list(df.columns))
    cols = [df[c].astype(object).where(df[c].notna(), None).tolist() for c in df.columns]
    for i, row in enumerate(zip(*cols), start=1):
        ws.write_row(i, 0, row)  # None: no cell; Timestamps: dates in the default format
    wb.add_worksheet("Notes").write(0, 0, "a note")
    wb.close()
    os.replace(tmp, path)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - 10_000_000_000))  # not 'racy'


def timed(label: str, fn, rows: int | None = None):
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    rate = f" = {rows / seconds:>9,.0f} rows/s" if rows else ""
    print(f"  {label:<44} {seconds:7.3f} s{rate}", flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    n = ap.parse_args().rows

    df = make_frame(n)
    print(f"{n:,} rows x {df.shape[1]} columns; pandas {pd.__version__}, python "
          f"{sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    calls = {"read_file": 0}
    real_read_file = TableStoreExcel.read_file

    def counting(self, path):
        calls["read_file"] += 1
        return real_read_file(self, path)

    TableStoreExcel.read_file = counting  # type: ignore[method-assign]

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        src = d / "source.xlsx"
        t0 = time.perf_counter()
        save_like_another_program(src, df)
        print(f"source written by xlsxwriter in {time.perf_counter() - t0:.1f} s (untimed), "
              f"{src.stat().st_size / 1e6:.1f} MB")

        print("source (sync_table):")
        ds = DataStore(DBConn(f"sqlite:///{d / 'meta.sqlite'}"))
        catalog = Catalog({
            "data": Table(TableStoreExcel(src, "Data", ["id"])),
            "out": Table(TableStoreExcel(d / "out.xlsx", "Out", ["id"])),
        })
        table = catalog.get_datatable(ds, "data")

        res = timed("initial sync", lambda: sync_table(table), n)
        assert len(res.changed) == n, len(res.changed)
        before = calls["read_file"]
        res = timed("no-op sync", lambda: sync_table(table))
        assert calls["read_file"] == before and res.opened == [], "the no-op sync opened the file"
        print(f"  {'':<44} (read_file calls: {calls['read_file'] - before})")

        edited = df.copy()
        edited.loc[n // 2, "price"] = 12345.67
        save_like_another_program(src, edited)
        res = timed("one edited cell, sync", lambda: sync_table(table), n)
        assert len(res.changed) == 1, len(res.changed)

        print("output:")
        store = TableStoreExcel(d / "written.xlsx", "Out", ["id"])
        store.upsert_rows(df.head(1))
        store.flush()

        def write_output() -> None:
            store.upsert_rows(df)
            store.flush()
        timed(f"write output sheet ({n:,} rows)", write_output, n)
        print(f"  {'':<44} file {(d / 'written.xlsx').stat().st_size / 1e6:.1f} MB")

        def doubled(data: pd.DataFrame) -> pd.DataFrame:
            return data.assign(price=data["price"] * 2)

        steps = build_compute(ds, catalog, Pipeline([BatchTransform(
            doubled, ["data"], ["out"], chunk_size=n)]))
        rep = timed("run_steps, full (source synced)", lambda: run_steps(ds, steps), n)
        assert rep.ok and rep.tables["out"]["added"] == n, rep.summary()
        edited.loc[n // 3, "note"] = "edited again"
        save_like_another_program(src, edited)
        rep = timed("run_steps, one edited cell", lambda: run_steps(ds, steps))
        assert rep.tables["out"] == {"added": 0, "updated": 1, "deleted": 0}, rep.tables
        src_stat = src.stat()
        os.utime(src, ns=(src_stat.st_atime_ns, src_stat.st_mtime_ns - 10_000_000_000))
        run_steps(ds, steps)  # re-hash of the 'racy' file, nothing changes
        before = calls["read_file"]
        rep = timed("run_steps, no-op", lambda: run_steps(ds, steps, RunReport()))
        assert not rep.changed and calls["read_file"] == before
        print(f"  {'':<44} (read_file calls: {calls['read_file'] - before})")


if __name__ == "__main__":
    main()
