"""Benchmark filepipe.xlsx.write_sheet.

    python benchmarks/bench_xlsx_write.py [--rows 100000] [--repeat 3]

Frame: ROWS x 10 columns (2 ints, 2 floats one with NaN, 3 strings one with blanks and
leading spaces, a datetime, a date-only datetime, a bool). Measures, median of REPEAT runs:
  * create: write_sheet to a path that does not exist (new workbook);
  * replace: write_sheet of sheet "Out" in a workbook that also holds a separate ROWS-row
    sheet "Big" (which must be copied through unchanged);
  * read: read_sheet of "Out" with calamine, for reference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from filepipe.xlsx import read_sheet, write_sheet


def make_frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    words = np.array(["alpha", "beta", "gamma", "delta & co", "ëpsilon", "<zeta>", "  eta", "théta 😀"])
    notes = pd.Series(words[rng.integers(0, len(words), n)] + " " + rng.integers(0, 10**6, n).astype(str))
    notes[rng.random(n) < 0.1] = None
    price = rng.normal(100, 30, n).round(2)
    price[rng.random(n) < 0.05] = np.nan
    return pd.DataFrame({
        "id": np.arange(n, dtype=np.int64),
        "qty": rng.integers(-1000, 1000, n),
        "price": price,
        "ratio": rng.random(n),
        "customer": pd.Series(words[rng.integers(0, len(words), n)], dtype="str"),
        "code": pd.Series(rng.integers(0, 16**6, n)).map("{:06x}".format).astype("str"),
        "note": notes.astype("str"),
        "ts": pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 5 * 365 * 86400, n), unit="s"),
        "day": pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 3650, n), unit="D"),
        "flag": rng.random(n) < 0.5,
    })


def timed(fn, repeat: int) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU seconds (all threads) of each run."""
    walls, cpus = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return walls, cpus


def report(label: str, times: tuple[list[float], list[float]], rows: int,
           path: str | None = None) -> None:
    walls, cpus = times
    med = statistics.median(walls)
    size = f", file {os.path.getsize(path) / 1e6:.1f} MB" if path else ""
    print(f"{label:<46} wall {med:5.2f} s = {rows / med:>7,.0f} rows/s; "
          f"cpu {statistics.median(cpus):5.2f} s; runs {' '.join(f'{t:.2f}' for t in walls)}{size}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    n, repeat = args.rows, args.repeat

    df = make_frame(n)
    big = make_frame(n, seed=1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"frame: {n:,} rows x {df.shape[1]} columns; pandas {pd.__version__}, "
          f"numpy {np.__version__}, python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"load average {load:.1f}; medians of {repeat} runs")

    with tempfile.TemporaryDirectory() as d:
        new_path = os.path.join(d, "new.xlsx")

        def create() -> None:
            if os.path.exists(new_path):
                os.unlink(new_path)
            write_sheet(new_path, "Out", df)

        report("create: new workbook, 1 sheet", timed(create, repeat), n, new_path)

        two = os.path.join(d, "two.xlsx")
        write_sheet(two, "Big", big)
        write_sheet(two, "Out", df.head(10))
        with zipfile.ZipFile(two) as z:
            big_xml = z.read("xl/worksheets/sheet1.xml")
        report(f"replace: sheet 'Out' beside a {n:,}-row sheet",
               timed(lambda: write_sheet(two, "Out", df), repeat), n, two)
        with zipfile.ZipFile(two) as z:
            assert z.read("xl/worksheets/sheet1.xml") == big_xml, "'Big' changed"

        report("read: read_sheet('Out') with calamine", timed(lambda: read_sheet(two, "Out"), repeat), n)


if __name__ == "__main__":
    main()
