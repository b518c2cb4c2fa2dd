"""History through the engine: the seed workload (N events, one step, two outputs) after
many one-row update runs, each a version.

Prints the initial load and the one-row update (store_chunk + run_steps) with and without
history, interleaved (medians), then, after RUNS one-row update runs with history: the
history's size on disk against the size of the events table alone, and the time of
`versions.as_of` of the oldest version, of `versions.row_history` of one row and of
`versions.diff` of the last run.

Also a folder of FILES JSON files as a source: the initial sync and a one-file edit,
without and with history.

Usage: ``python benchmarks/bench_versions.py [--n 100000] [--runs 1000] [--files 10000] [--repeat 5]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def events(n: int):
    import pandas as pd

    return pd.DataFrame({
        "user_id": [str(i // 10) for i in range(n)],
        "event_id": [str(i % 10) for i in range(n)],
        "event": [json.dumps({"event_type": "click" if i % 3 else "view",
                              "ip": f"10.0.{i % 256}.{i % 7}"}) for i in range(n)],
    })


def pipeline(tmp: str, history: bool):
    from examples.seed_events import pipeline as seed

    catalog, ds, steps = seed.make_pipeline(f"sqlite:///{tmp}/bench.sqlite", history=history)
    return catalog, ds, steps


def one_update(catalog, ds, steps, df, i: int) -> float:
    from filepipe import run_steps

    n = len(df)
    row = df.iloc[[(n // 2 + 997 * i) % n]].assign(event=json.dumps({"event_type": "view", "ip": f"1.2.{i % 250}.9"}))
    t = time.perf_counter()
    catalog.get_datatable(ds, "events").store_chunk(row)
    run_steps(ds, steps)
    return time.perf_counter() - t


def compare(n: int, repeat: int) -> None:
    """Initial load and one-row updates, without and with history, interleaved."""
    from filepipe import run_steps

    df = events(n)
    loads: dict[bool, list[float]] = {False: [], True: []}
    updates: dict[bool, list[float]] = {False: [], True: []}
    for r in range(repeat):
        for history in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                catalog, ds, steps = pipeline(tmp, history)
                t = time.perf_counter()
                catalog.get_datatable(ds, "events").store_chunk(df)
                run_steps(ds, steps)
                loads[history].append(time.perf_counter() - t)
                updates[history].append(statistics.median(
                    one_update(catalog, ds, steps, df, r * 10 + i) for i in range(10)))
                ds.meta_dbconn.dispose()
    for label, figures in (("initial load + run", loads), ("one-row update + run", updates)):
        off, on = statistics.median(figures[False]), statistics.median(figures[True])
        print(f"N={n:,} {label:<22} without history {off * 1000:8.1f} ms, with {on * 1000:8.1f} ms: "
              f"+{(on - off) * 1000:.1f} ms ({on / off - 1:+.0%}) (medians of {repeat}, interleaved)",
              flush=True)


def after_runs(n: int, runs: int) -> None:
    """`runs` one-row update runs with history, then the size and query times."""
    from filepipe import run_steps, versions

    df = events(n)
    with tempfile.TemporaryDirectory() as tmp:
        catalog, ds, steps = pipeline(tmp, True)
        catalog.get_datatable(ds, "events").store_chunk(df)
        run_steps(ds, steps)
        first = versions.log(ds)[-1].run_id
        t = time.perf_counter()
        times = [one_update(catalog, ds, steps, df, i) for i in range(runs)]
        total = time.perf_counter() - t
        print(f"N={n:,} {runs} one-row update runs: {total:.1f} s, median {statistics.median(times) * 1000:.1f} ms "
              f"(max {max(times) * 1000:.0f} ms)", flush=True)
        t = time.perf_counter()
        store = ds.history  # moves the index's inbox to Parquet first
        settle = time.perf_counter() - t
        root = Path(tmp) / "bench.history"
        size = sum(f.stat().st_size for f in root.rglob("*.parquet"))
        files = len(list(root.rglob("*.parquet")))
        table = Path(tmp) / "events.parquet"
        catalog.get_datatable(ds, "events").get_data().to_parquet(table)
        with ds.meta.begin() as conn:  # the events table's own pages in the SQLite file
            in_sqlite = conn.exec_driver_sql(
                "SELECT SUM(pgsize) FROM dbstat WHERE name = 'events'").scalar_one()
        first_version = store.segments("events")[0].size
        print(f"history on disk {size / 1e6:.2f} MB in {files} files (moving the inbox: {settle * 1000:.0f} ms); "
              f"events history {store.size_bytes('events') / 1e6:.2f} MB, of which its first version "
              f"{first_version / 1e6:.2f} MB and the {runs} runs {(size - first_version) / 1e6:.2f} MB "
              f"over 3 tables; the events table in SQLite {in_sqlite / 1e6:.2f} MB, as Parquet "
              f"{table.stat().st_size / 1e6:.2f} MB", flush=True)
        last = versions.log(ds, limit=1)[0].run_id
        for label, call in (
            ("as_of(events, oldest version)", lambda: versions.as_of(ds, "events", first)),
            ("row_history(events, one row)", lambda: versions.row_history(
                ds, "events", {"user_id": str(n // 20), "event_id": "0"})),
            ("diff(click_count, last run)", lambda: versions.diff(ds, "click_count", run=last)),
            ("log(limit=20)", lambda: versions.log(ds, limit=20)),
        ):
            spent = []
            for _ in range(5):
                t = time.perf_counter()
                call()
                spent.append(time.perf_counter() - t)
            print(f"{label:<32} {statistics.median(spent) * 1000:8.1f} ms (median of 5)", flush=True)
        ds.meta_dbconn.dispose()


def folder(files: int, repeat: int) -> None:
    """A folder of `files` JSON files as a source: the initial sync and a sync after one
    edited file, without and with history, interleaved."""
    import os

    from filepipe import Catalog, DataStore, DBConn, Table
    from filepipe.stores import TableStoreFiledir
    from filepipe.sync import sync_table

    with tempfile.TemporaryDirectory() as tmp:
        inbox = Path(tmp, "inbox")
        inbox.mkdir()
        paths = []
        for i in range(files):
            path = inbox / f"{i}.json"
            path.write_text(json.dumps({"customer": f"c{i % 97}", "amount": i * 1.5}), encoding="utf-8")
            os.utime(path, (time.time() - 10, time.time() - 10))
            paths.append(path)
        first: dict[bool, list[float]] = {False: [], True: []}
        edit: dict[bool, list[float]] = {False: [], True: []}
        for r in range(repeat):
            for history in (False, True):
                index = Path(tmp, f"meta-{r}-{history}.sqlite")
                ds = DataStore(DBConn(f"sqlite:///{index}"), history=history)
                table = Catalog({"orders": Table(TableStoreFiledir(f"{inbox}/{{order_id}}.json"))}
                                ).get_datatable(ds, "orders")
                t = time.perf_counter()
                sync_table(table)
                first[history].append(time.perf_counter() - t)
                spent = []
                for k in range(5):
                    path = paths[(r * 5 + k) * 7919 % files]
                    path.write_text(json.dumps({"customer": "edited", "amount": [r, k, history]}), encoding="utf-8")
                    os.utime(path, (time.time() - 5, time.time() - 5))
                    t = time.perf_counter()
                    assert len(sync_table(table).changed) == 1
                    spent.append(time.perf_counter() - t)
                edit[history].append(statistics.median(spent))
                ds.meta_dbconn.dispose()
        for label, figures in (("initial sync", first), ("sync of one edited file", edit)):
            off, on = statistics.median(figures[False]), statistics.median(figures[True])
            print(f"{files:,} files {label:<24} without history {off * 1000:8.1f} ms, with "
                  f"{on * 1000:8.1f} ms: +{(on - off) * 1000:.1f} ms ({on / off - 1:+.0%}) "
                  f"(medians of {repeat}, interleaved)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    compare(args.n, args.repeat)
    folder(args.files, max(3, args.repeat // 2))
    after_runs(args.n, args.runs)


if __name__ == "__main__":
    main()
