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

from filepipe import BatchTransform, Catalog, DataStore, DBConn, Pipeline, Table, build_compute, run_steps
from filepipe.stores import TableStoreFiledir, TableStoreMemory
from filepipe.sync import file_changes, sync_table


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


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def cpu_timed(fn) -> tuple[float, float]:
    """(wall, CPU) seconds: CPU time (user + system of this process) is what matters when
    other processes load the machine; a stat call counts as system time."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def per_order(orders):
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
        print(f"files: {args.n} ({pattern}); load average {os.getloadavg()[0]:.1f} on "
              f"{os.cpu_count()} cores")
        print(f"initial sync (reads every file): {t_first:.2f} s = "
              f"{t_first / args.n * 1e3:.2f} ms/file")

        def noop() -> None:
            r = sync_table(table)
            assert not r.opened and not r.missing, (r.opened[:3], r.missing[:3])

        def stored() -> None:
            with ds.meta.begin() as conn:
                ds.meta.file_meta.stored(conn, table.name)

        root = str(store.root)
        for _ in range(2):  # warm the caches
            bare_walk(root), store.list_files(), noop()
        names = ["bare", "list", "select", "compare", "noop"]
        wall: dict[str, list[float]] = {n: [] for n in names}
        cpu: dict[str, list[float]] = {n: [] for n in names}
        for _ in range(args.repeat):  # interleaved: background load hits all alike
            for n, fn in (("bare", lambda: bare_walk(root)), ("list", store.list_files),
                          ("select", stored), ("compare", lambda: file_changes(table)),
                          ("noop", noop)):
                w, c = cpu_timed(fn)
                wall[n].append(w)
                cpu[n].append(c)
        med = statistics.median
        W = {n: med(v) for n, v in wall.items()}
        C = {n: med(v) for n, v in cpu.items()}

        def line(label: str, n: str, extra: str = "") -> None:
            print(f"{label:<34}: wall {W[n] * 1e3:7.1f} ms ({W[n] / W['bare']:4.2f}x)   "
                  f"cpu {C[n] * 1e3:7.1f} ms ({C[n] / C['bare']:4.2f}x){extra}")

        print("medians; (Nx) = ratio to the bare walk")
        line("bare os.scandir walk + stat", "bare")
        line("store.list_files()", "list")
        line("stored fingerprints SELECT", "select")
        line("file_changes (list+SELECT+merge)", "compare")
        ok = W["noop"] <= 3 * W["bare"]
        line("no-op sync_table", "noop", f"   target <= 3x: {'OK' if ok else 'OVER'}")

        edit_w, edit_c = [], []
        for k in range(args.repeat):
            p = paths[(k * 7919) % args.n]
            with open(p, encoding="utf-8") as f:
                obj = json.load(f)
            obj["amount"] += 1
            with open(p, "w", encoding="utf-8") as f:
                json.dump(obj, f)
            age(p)
            holder = {}
            w, c = cpu_timed(lambda: holder.setdefault("r", sync_table(table)))
            edit_w.append(w)
            edit_c.append(c)
            r = holder["r"]
            assert r.opened == [p] and len(r.changed) == 1, (r.opened, r.changed)
        ew, ec = med(edit_w), med(edit_c)
        print(f"{'sync after editing one file':<34}: wall {ew * 1e3:7.1f} ms "
              f"(+{(ew - W['noop']) * 1e3:.1f} ms)   cpu {ec * 1e3:7.1f} ms "
              f"(+{(ec - C['noop']) * 1e3:.1f} ms)   target < +50 ms: "
              f"{'OK' if ew - W['noop'] < 0.05 else 'OVER'}")
        one = paths[0]
        w1, c1 = cpu_timed(lambda: store.read_files([one]))
        print(f"{'store.read_files([one file])':<34}: wall {w1 * 1e3:7.1f} ms   "
              f"cpu {c1 * 1e3:7.1f} ms")

        if args.steps:
            steps = build_compute(ds, catalog, Pipeline([
                BatchTransform(per_order, inputs=["orders"], outputs=["out"])]))
            t_full = timed(lambda: run_steps(ds, steps))
            print(f"run_steps, first (step over all rows): {t_full:.2f} s")
            run_w, run_c = [], []
            for _ in range(args.repeat):
                w, c = cpu_timed(lambda: run_steps(ds, steps))
                run_w.append(w)
                run_c.append(c)
            rw, rc = med(run_w), med(run_c)
            print(f"{'no-op run_steps (1 step)':<34}: wall {rw * 1e3:7.1f} ms ({rw / W['bare']:4.2f}x)"
                  f"   cpu {rc * 1e3:7.1f} ms ({rc / C['bare']:4.2f}x)")


if __name__ == "__main__":
    main()
