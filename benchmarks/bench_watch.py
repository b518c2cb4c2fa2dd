"""Watch daemon latency and Office-save debouncing (filepipe.watch).

For each debounce value (default: watch.DEFAULT_DEBOUNCE) a fresh project is made in a
temp folder: data/orders.csv (`--rows` orders over 50 customers) → one group-by step →
out/summary.csv. The daemon runs in a thread with a real observer. Then:

1. latency: `--edits` single-row edits of orders.csv (one plain write each, a pause
   between them); a second watchdog observer on out/ timestamps the rename that replaces
   summary.csv. Printed: median and 95th percentile of write → output replaced, and the
   median time of the cycles themselves (latency ≈ debounce + cycle).
2. Office saves: `--saves` simulated Excel saves (lock file `~$orders.csv`, temp file
   written, original renamed away, temp renamed onto orders.csv, renamed original deleted,
   lock deleted) and as many LibreOffice saves (`.~lock.orders.csv#`, orders.csv renamed to
   orders.csv.osl-tmp, orders.csv written, osl-tmp deleted, lock deleted), each spread over
   `--save-ms` ms. Printed: cycles per save (1 is right; more means a cycle ran mid-save)
   and how many cycles found orders.csv missing (they delete its rows, emptying the
   outputs until the next cycle puts them back).

Run from the repository root: ``python benchmarks/bench_watch.py [--debounce 0.1 0.3 ...]``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

from filepipe import BatchTransform, Catalog, FilepipeApp, Pipeline, Table
from filepipe.stores import TableStoreCSV
from filepipe.watch import DEFAULT_DEBOUNCE, Watcher

WAIT = 60.0


def summarize(orders):
    return orders.groupby("customer", as_index=False)["amount"].sum()


def orders_text(rows: int, version: int, changed: int) -> str:
    lines = ["order_id,customer,amount"]
    for i in range(rows):
        amount = i % 97 + (version if i == changed else 0)
        lines.append(f"{i},c{i % 50:02d},{amount}")
    return "\n".join(lines) + "\n"


class Project:
    def __init__(self, base: Path, rows: int, debounce: float) -> None:
        self.rows = rows
        self.src = base / "data" / "orders.csv"
        self.out = base / "out" / "summary.csv"
        self.src.parent.mkdir()
        self.out.parent.mkdir()
        self.src.write_text(orders_text(rows, 0, 0))
        catalog = Catalog({
            "orders": Table(TableStoreCSV(self.src, primary_keys=["order_id"])),
            "summary": Table(TableStoreCSV(self.out, primary_keys=["customer"])),
        })
        self.app = FilepipeApp(catalog, Pipeline([BatchTransform(
            summarize, inputs=["orders"], outputs=["summary"], transform_keys=["customer"])]),
            root=base)
        self.cond = threading.Condition()
        self.cycles: list[float] = []        # seconds per cycle (report.seconds)
        self.saw_missing = 0                 # cycles that found orders.csv missing
        self.lines: list[str] = []
        self.stop = threading.Event()
        self.watcher = Watcher(self.app, debounce=debounce, rescan_every=None,
                               echo=self._echo, stop=self.stop, on_cycle=self._on_cycle)
        self.thread = threading.Thread(target=self.watcher.run, daemon=True)
        self.replaced_at: float | None = None

    def _echo(self, line: str) -> None:
        with self.cond:
            self.lines.append(line)

    def _on_cycle(self, report) -> None:
        with self.cond:
            self.cycles.append(report.seconds)
            self.saw_missing += bool(report.missing_files)
            self.cond.notify_all()

    def wait(self, predicate, what: str) -> None:
        with self.cond:
            if not self.cond.wait_for(predicate, WAIT):
                raise SystemExit(f"timed out waiting for {what}; log:\n" + "\n".join(self.lines))

    def wait_idle(self, quiet: float) -> None:
        """No new cycle and nothing pending for `quiet` seconds (bounded by WAIT)."""
        deadline = time.monotonic() + WAIT
        with self.cond:
            while time.monotonic() < deadline:
                n = len(self.cycles)
                settle = time.monotonic() + quiet
                while time.monotonic() < settle:
                    self.cond.wait(settle - time.monotonic())
                if n == len(self.cycles) and not self.watcher.debouncer.pending \
                        and not self.watcher.busy:
                    return
        raise SystemExit("the daemon never went idle")


def watch_output(project: Project):
    """A second observer on out/: records when summary.csv is replaced (renamed onto)."""
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers import Observer

    target = str(project.out)

    class Handler(FileSystemEventHandler):
        def on_moved(self, event) -> None:
            if os.fsdecode(event.dest_path) == target:
                with project.cond:
                    project.replaced_at = time.perf_counter()
                    project.cond.notify_all()

    obs = Observer()
    obs.schedule(Handler(), str(project.out.parent))
    obs.start()
    return obs


def excel_save(src: Path, text: str, gap: float) -> None:
    d = src.parent
    lock, tmp, old = d / f"~${src.name}", d / f"{random.getrandbits(32):08X}", \
        d / f"{random.getrandbits(32):08X}"
    lock.write_text("user")
    time.sleep(gap)
    with open(tmp, "w") as f:
        f.write(text[: len(text) // 2])
        f.flush()
        f.write(text[len(text) // 2:])
    time.sleep(gap)
    os.rename(src, old)
    time.sleep(gap)
    os.rename(tmp, src)
    time.sleep(gap)
    old.unlink()
    lock.unlink()


def libreoffice_save(src: Path, text: str, gap: float) -> None:
    d = src.parent
    lock, osl = d / f".~lock.{src.name}#", d / f"{src.name}.osl-tmp"
    lock.write_text("user,host,time")
    time.sleep(gap)
    os.rename(src, osl)
    time.sleep(gap)
    src.write_text(text)
    time.sleep(gap)
    osl.unlink()
    time.sleep(gap)
    lock.unlink()


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def bench(debounce: float, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_watch_") as tmp:
        p = Project(Path(tmp), args.rows, debounce)
        obs = watch_output(p)
        p.thread.start()
        p.wait(lambda: len(p.cycles) >= 1, "the startup sync")
        p.wait_idle(3 * debounce + 0.2)
        version = 1
        latencies, cycle_s = [], []
        for _ in range(args.edits):
            n = len(p.cycles)
            with p.cond:
                p.replaced_at = None
            text = orders_text(args.rows, version, version % args.rows)
            t0 = time.perf_counter()
            p.src.write_text(text)
            p.wait(lambda: p.replaced_at is not None and len(p.cycles) > n, "the output")
            latencies.append(p.replaced_at - t0)
            cycle_s.append(p.cycles[n])
            version += 1
            p.wait_idle(debounce + 0.2)
        saves = {}
        p.saw_missing = 0
        for name, save in (("excel", excel_save), ("libreoffice", libreoffice_save)):
            counts = []
            for _ in range(args.saves):
                n = len(p.cycles)
                save(p.src, orders_text(args.rows, version, version % args.rows),
                     args.save_ms / 4000)
                version += 1
                p.wait(lambda: len(p.cycles) > n, "the save's cycle")
                p.wait_idle(3 * debounce + 0.3)
                counts.append(len(p.cycles) - n)
            saves[name] = counts
        p.stop.set()
        p.thread.join(WAIT)
        obs.stop()
        obs.join(5)
    return {"debounce": debounce, "latencies": latencies, "cycles": cycle_s, "saves": saves,
            "saw_missing": p.saw_missing}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--debounce", type=float, nargs="+", default=[DEFAULT_DEBOUNCE])
    ap.add_argument("--edits", type=int, default=20)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--saves", type=int, default=5, help="simulated saves per program")
    ap.add_argument("--save-ms", type=float, default=100.0, help="duration of one save")
    args = ap.parse_args()
    print(f"{args.rows} orders, {args.edits} edits, {args.saves} Excel + {args.saves} "
          f"LibreOffice saves of ~{args.save_ms:g} ms each; {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"{'debounce':>8}  {'latency median':>14}  {'p95':>7}  {'max':>7}  "
          f"{'cycle median':>12}  {'cycles/Excel save':>17}  {'cycles/LO save':>14}  "
          f"{'saw file missing':>16}")
    for d in args.debounce:
        r = bench(d, args)
        lat, cyc = r["latencies"], r["cycles"]
        xl, lo = r["saves"]["excel"], r["saves"]["libreoffice"]
        print(f"{d:>7.2f}s  {statistics.median(lat) * 1000:>12.0f}ms  {pct(lat, 0.95) * 1000:>5.0f}ms"
              f"  {max(lat) * 1000:>5.0f}ms  {statistics.median(cyc) * 1000:>10.0f}ms  "
              f"{' '.join(map(str, xl)):>17}  {' '.join(map(str, lo)):>14}  "
              f"{r['saw_missing']:>16}", flush=True)


if __name__ == "__main__":
    main()
