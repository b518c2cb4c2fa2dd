"""A folder of small JSON files as a source: how much a no-op sync and one edit cost.

    python benchmarks/bench_filedir.py               # 10,000 files in inbox/{order_id}.json
    python benchmarks/bench_filedir.py --n 2000 --levels 2   # users/{user_id}/{event_id}.json

Prints: a bare ``os.scandir`` walk with one stat per file (the floor), the store's
``list_files()``, a no-op ``sync_table`` (target: <= 3x the bare walk), the same with
``run_steps`` around it, and a sync after one edited file (target: < 50 ms above the
no-op). Medians of --repeat runs, interleaved so that background load hits all alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from filepipe import BatchTransform, Catalog, DataStore, DBConn, Pipeline, Table, build_compute, run_steps  # noqa: E402
from filepipe.stores import TableStoreFiledir, TableStoreMemory  # noqa: E402
from filepipe.sync import stored_fingerprints, sync_table  # noqa: E402


def bare_walk(root: str) -> int:
    """The floor: every entry under `root`, one stat per file (what any listing must do)."""
    n = 0
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                else:
                    e.stat()
                    n += 1
    return n


def age(path: str, seconds: float = 10.0) -> None:
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


def timed(fn) -> float:  # noqa: ANN001
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def per_order(orders):  # noqa: ANN001, ANN201 - the pipeline step for the run_steps figure
    return orders[["order_id", "amount"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="number of files")
    ap.add_argument("--levels", type=int, choices=(1, 2), default=1,
                    help="1: inbox/{order_id}.json, 2: inbox/{user_id}/{order_id}.json")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--steps", action="store_true",
                    help="also time a no-op run_steps with one per-key step (slow setup)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_filedir_") as tmp:
        os.chdir(tmp)
        inbox = Path(tmp, "inbox")
        paths = []
        for i in range(args.n):
            folder = inbox / f"u{i % 100}" if args.levels == 2 else inbox
            folder.mkdir(parents=True, exist_ok=True)
            p = folder / f"{i}.json"
            p.write_text(json.dumps({"customer": f"c{i % 97}", "amount": i * 1.5,
                                     "note": "é" * (i % 7)}), encoding="utf-8")
            age(str(p))
            paths.append(str(p))
        pattern = "inbox/{user_id}/{order_id}.json" if args.levels == 2 else "inbox/{order_id}.json"
        store = TableStoreFiledir(pattern)
        catalog = Catalog({"orders": Table(store),
                           "out": Table(TableStoreMemory(store.primary_keys))})
        ds = DataStore(DBConn(f"sqlite:///{tmp}/meta.sqlite"))
        table = catalog.get_datatable(ds, "orders")

        t0 = time.perf_counter()
        first = sync_table(table)
        t_first = time.perf_counter() - t0
        assert len(first.opened) == args.n, len(first.opened)
        print(f"files: {args.n} ({pattern}), initial sync (reads every file): {t_first:.2f} s "
              f"= {t_first / args.n * 1e3:.2f} ms/file")

        def noop() -> None:
            r = sync_table(table)
            assert not r.opened and not r.missing, (r.opened[:3], r.missing[:3])

        def stored() -> None:
            with ds.meta.begin() as conn:
                stored_fingerprints(conn, table)

        root = str(store.root)
        for _ in range(2):  # warm the caches
            bare_walk(root), store.list_files(), noop()
        walk_t, list_t, fp_t, noop_t = [], [], [], []
        for _ in range(args.repeat):
            walk_t.append(timed(lambda: bare_walk(root)))
            list_t.append(timed(store.list_files))
            fp_t.append(timed(stored))
            noop_t.append(timed(noop))
        med = statistics.median
        w, lf, fp, no = med(walk_t), med(list_t), med(fp_t), med(noop_t)
        print(f"bare os.scandir walk + stat      : {w * 1e3:8.1f} ms")
        print(f"store.list_files()               : {lf * 1e3:8.1f} ms  ({lf / w:.2f}x the walk)")
        print(f"stored fingerprints SELECT       : {fp * 1e3:8.1f} ms")
        print(f"no-op sync_table                 : {no * 1e3:8.1f} ms  ({no / w:.2f}x the walk; "
              f"target <= 3x) {'OK' if no <= 3 * w else 'OVER'}")

        edit_t = []
        for k in range(args.repeat):
            p = paths[(k * 7919) % args.n]
            with open(p, encoding="utf-8") as f:
                obj = json.load(f)
            obj["amount"] += 1
            with open(p, "w", encoding="utf-8") as f:
                json.dump(obj, f)
            age(p)
            t0 = time.perf_counter()
            r = sync_table(table)
            edit_t.append(time.perf_counter() - t0)
            assert r.opened == [p] and len(r.changed) == 1, (r.opened, r.changed)
        ed = med(edit_t)
        print(f"sync after editing one file      : {ed * 1e3:8.1f} ms  (+{(ed - no) * 1e3:.1f} ms "
              f"over the no-op; target < 50 ms) {'OK' if ed - no < 0.05 else 'OVER'}")

        if args.steps:
            steps = build_compute(ds, catalog, Pipeline([
                BatchTransform(per_order, inputs=["orders"], outputs=["out"])]))
            t_full = timed(lambda: run_steps(ds, steps))
            print(f"run_steps, first (step over all rows): {t_full:.2f} s")
            run_t = []
            for _ in range(args.repeat):
                run_t.append(timed(lambda: run_steps(ds, steps)))
            rs = med(run_t)
            print(f"no-op run_steps (1 step)         : {rs * 1e3:8.1f} ms  ({rs / w:.2f}x the walk)")


if __name__ == "__main__":
    main()
