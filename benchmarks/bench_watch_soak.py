"""Watch daemon soak: random edits for a while, then the outputs must equal a fresh recompute.

A temp project is built: ``inbox/{order_id}.json`` (`--files` small orders: customer, sku,
qty) and the workbook ``prices.xlsx`` (sheet Prices: sku, unit_price) at the project root,
two steps writing a folder output ``out/priced/{order_id}.json`` (each order with its price
and amount, transform key sku) and a workbook output ``out/report.xlsx`` (sheet Customers:
orders, items and revenue per customer). ``filepipe watch`` runs on it as a subprocess
(what a user runs), its log read line by line and copied to ``watch.log`` beside the
workbook (which must start no cycle), while a seeded random editor spends `--seconds` on
order edits (plain writes and atomic ones), creates, deletes, renames, vim-style saves
(``x.json`` renamed to ``x.json~``, written, backup deleted), bursts and pauses, and
Excel-style (lock, temp file renamed onto the workbook) and LibreOffice-style (workbook
renamed to ``.osl-tmp``, written anew) saves of the workbook with changed, added and
removed prices. Then the editor stops, the daemon is left until quiet and
stopped with SIGINT, and every output is compared with a fresh recompute (a new project
folder, a copy of the final sources, a fresh index, ``filepipe run``).

Printed: PASS/FAIL with the first differences, operations done, cycles and the problems
their log lines reported, the daemon's peak RSS (VmHWM) and the time from the last edit
to the end of the last cycle.

Run from the repository root: ``python benchmarks/bench_watch_soak.py [--files 10000]
[--seconds 60] [--seed 1]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import openpyxl
import pandas as pd

PIPELINE = '''
import pandas as pd

from filepipe import BatchTransform, Catalog, FilepipeApp, Pipeline, Table
from filepipe.stores import TableStoreExcel, TableStoreFiledir


def price_orders(orders: pd.DataFrame, prices: pd.DataFrame) -> pd.DataFrame:
    priced = orders.merge(prices, on="sku", how="left")
    priced["unit_price"] = priced["unit_price"].fillna(0.0).astype(float)
    priced["amount"] = (priced["qty"] * priced["unit_price"]).round(2)
    return priced[["order_id", "customer", "sku", "qty", "unit_price", "amount"]]


def customer_totals(priced: pd.DataFrame) -> pd.DataFrame:
    return (priced.groupby("customer", as_index=False)
            .agg(orders=("order_id", "count"), items=("qty", "sum"), revenue=("amount", "sum"))
            .round({"revenue": 2}))


catalog = Catalog({
    "orders": Table(TableStoreFiledir("inbox/{order_id}.json")),
    "prices": Table(TableStoreExcel("prices.xlsx", sheet="Prices", primary_keys=["sku"])),
    "priced": Table(TableStoreFiledir("out/priced/{order_id}.json")),
    "customers": Table(TableStoreExcel("out/report.xlsx", sheet="Customers",
                                       primary_keys=["customer"])),
})
app = FilepipeApp(catalog, Pipeline([
    BatchTransform(price_orders, inputs=["orders", "prices"], outputs=["priced"],
                   transform_keys=["sku"]),
    BatchTransform(customer_totals, inputs=["priced"], outputs=["customers"],
                   transform_keys=["customer"]),
]))
'''

SKUS = [f"s{i:02d}" for i in range(60)]
CUSTOMERS = [f"c{i:03d}" for i in range(300)]
QUIET = 5.0          # seconds without a log line after the last edit: the daemon is done
WAIT = 90.0          # cap on any wait


def filepipe_cmd() -> list[str]:
    exe = shutil.which("filepipe")
    return [exe] if exe else [sys.executable, "-c", "from filepipe.cli import main; main()"]


# --- the project ----------------------------------------------------------------------------

def order_text(rng: random.Random) -> str:
    return json.dumps({"customer": rng.choice(CUSTOMERS), "sku": rng.choice(SKUS[:50]),
                       "qty": rng.randint(1, 9)})


def write_prices(path: Path, prices: dict[str, float]) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Prices"
    ws.append(["sku", "unit_price"])
    for sku, price in prices.items():
        ws.append([sku, price])
    wb.save(path)


def make_project(base: Path, files: int, rng: random.Random) -> dict[str, float]:
    (base / "pipeline.py").write_text(PIPELINE)
    inbox = base / "inbox"
    inbox.mkdir()
    for i in range(files):
        (inbox / f"{i}.json").write_text(order_text(rng))
    prices = {sku: round(rng.uniform(1, 100), 2) for sku in SKUS[:50]}
    write_prices(base / "prices.xlsx", prices)
    return prices


# --- the random editor ----------------------------------------------------------------------

#: cumulative share of draws → operation (the rest is a pause)
OPERATIONS = [(0.12, "create"), (0.40, "edit"), (0.52, "atomic edit"), (0.62, "delete"),
              (0.72, "rename"), (0.82, "vim save"), (0.86, "burst"), (0.88, "excel save"),
              (0.90, "libreoffice save"), (1.01, "pause")]


class Editor:
    """Seeded random edits of the project's sources; counts what it did."""

    def __init__(self, base: Path, prices: dict[str, float], rng: random.Random) -> None:
        self.base, self.inbox, self.book = base, base / "inbox", base / "prices.xlsx"
        self.prices, self.rng = prices, rng
        self.ids = sorted(int(p.stem) for p in self.inbox.glob("*.json"))
        self.next_id = max(self.ids, default=-1) + 1
        self.done: dict[str, int] = {}
        self.last_edit = time.monotonic()   # when the last file operation ended

    def pick(self) -> int:
        return self.ids[self.rng.randrange(len(self.ids))]

    def path(self, order_id: int) -> Path:
        return self.inbox / f"{order_id}.json"

    def step(self) -> None:
        """One operation, drawn by the cumulative shares of `OPERATIONS`."""
        r = self.rng.random()
        op = "create" if not self.ids else next(name for edge, name in OPERATIONS if r < edge)
        getattr(self, op.replace(" ", "_"))()
        self.done[op] = self.done.get(op, 0) + 1
        if op != "pause":
            self.last_edit = time.monotonic()

    def create(self) -> None:
        self.path(self.next_id).write_text(order_text(self.rng))
        self.ids.append(self.next_id)
        self.next_id += 1

    def edit(self) -> None:
        self.path(self.pick()).write_text(order_text(self.rng))

    def atomic_edit(self) -> None:
        target = self.path(self.pick())
        tmp = self.inbox / f".{target.name}.tmp{self.rng.getrandbits(16)}"
        tmp.write_text(order_text(self.rng))
        os.replace(tmp, target)

    def delete(self) -> None:
        order_id = self.pick()
        self.path(order_id).unlink()
        self.ids.remove(order_id)

    def rename(self) -> None:
        order_id = self.pick()
        self.path(order_id).rename(self.path(self.next_id))
        self.ids.remove(order_id)
        self.ids.append(self.next_id)
        self.next_id += 1

    def vim_save(self) -> None:
        target = self.path(self.pick())
        swap, backup = self.inbox / f".{target.name}.swp", self.inbox / f"{target.name}~"
        swap.write_text("vim")
        target.rename(backup)
        target.write_text(order_text(self.rng))
        backup.unlink()
        swap.unlink()

    def burst(self) -> None:
        for _ in range(self.rng.randint(20, 200)):
            self.rng.choice([self.edit, self.edit, self.create, self.delete])()

    def pause(self) -> None:
        time.sleep(self.rng.uniform(0.3, 1.5))

    def new_prices(self) -> dict[str, float]:
        prices = dict(self.prices)
        for sku in self.rng.sample(list(prices), k=min(5, len(prices))):
            prices[sku] = round(self.rng.uniform(1, 100), 2)
        if self.rng.random() < 0.3 and len(prices) > 40:
            del prices[self.rng.choice(list(prices))]
        if self.rng.random() < 0.3:
            prices[self.rng.choice(SKUS)] = round(self.rng.uniform(1, 100), 2)
        self.prices = prices
        return prices

    def excel_save(self) -> None:
        lock = self.base / f"~${self.book.name}"
        tmp, old = (self.base / f"{self.rng.getrandbits(32):08X}" for _ in range(2))
        lock.write_text("someone")
        write_prices(tmp, self.new_prices())
        self.book.rename(old)
        time.sleep(0.02)
        tmp.rename(self.book)
        old.unlink()
        lock.unlink()

    def libreoffice_save(self) -> None:
        lock = self.base / f".~lock.{self.book.name}#"
        osl = self.base / f"{self.book.name}.osl-tmp"
        lock.write_text("someone,host,now")
        self.book.rename(osl)
        write_prices(self.book, self.new_prices())
        osl.unlink()
        lock.unlink()


# --- the daemon -----------------------------------------------------------------------------

class Daemon:
    """``filepipe watch`` as a subprocess; each log line with the time it arrived, copied
    to ``watch.log`` in the project folder as ``filepipe watch | tee watch.log`` would."""

    def __init__(self, base: Path) -> None:
        self.log_file = (base / "watch.log").open("a")
        self.proc = subprocess.Popen(filepipe_cmd() + ["-p", str(base / "pipeline.py"), "watch"],
                                     cwd=base, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: list[tuple[float, str]] = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.peak_rss_kb = 0

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.log_file.write(line)
            self.log_file.flush()
            with self.cond:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_line(self, text: str) -> None:
        with self.cond:
            ok = self.cond.wait_for(lambda: any(text in ln for _, ln in self.lines)
                                    or self.proc.poll() is not None, WAIT)
        if not ok or self.proc.poll() is not None:
            raise SystemExit(f"no {text!r} from the daemon; log:\n" + self.log())

    def wait_quiet(self, quiet: float) -> None:
        """Until no line came for `quiet` seconds (bounded by WAIT)."""
        deadline = time.monotonic() + WAIT
        with self.cond:
            while time.monotonic() < deadline:
                last = self.lines[-1][0] if self.lines else 0.0
                if time.monotonic() - last >= quiet:
                    return
                self.cond.wait(quiet - (time.monotonic() - last))
        raise SystemExit("the daemon never went quiet; log tail:\n" + self.log(20))

    def stop(self) -> None:
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
            self.peak_rss_kb = int(next(ln.split()[1] for ln in status.splitlines()
                                        if ln.startswith("VmHWM:")))
        except (OSError, StopIteration):
            pass
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(WAIT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
        self.reader.join(5)
        self.log_file.close()
        if not self.peak_rss_kb:  # no /proc: the largest child so far (this one)
            self.peak_rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss

    def cycle_lines(self) -> list[tuple[float, str]]:
        return [(t, ln) for t, ln in self.lines if " | rows: " in ln]

    def log(self, tail: int = 60) -> str:
        return "\n".join(ln for _, ln in self.lines[-tail:])


# --- comparing ------------------------------------------------------------------------------

def compare(watched: Path, fresh: Path) -> list[str]:
    """Differences between the outputs of the two projects (empty: equal)."""
    diffs = []
    a, b = watched / "out" / "priced", fresh / "out" / "priced"
    names_a = {p.name for p in a.glob("*.json")}
    names_b = {p.name for p in b.glob("*.json")}
    for name in sorted(names_a - names_b, key=_num)[:5]:
        diffs.append(f"out/priced/{name}: only in the watched project: {(a / name).read_text()!r}")
    for name in sorted(names_b - names_a, key=_num)[:5]:
        diffs.append(f"out/priced/{name}: missing in the watched project; fresh: "
                     f"{(b / name).read_text()!r}")
    if len(names_a ^ names_b) > 10:
        diffs.append(f"... {len(names_a - names_b)} file(s) only in the watched project, "
                     f"{len(names_b - names_a)} only in the fresh one")
    differing = [n for n in sorted(names_a & names_b, key=_num)
                 if json.loads((a / n).read_text()) != json.loads((b / n).read_text())]
    for name in differing[:5]:
        diffs.append(f"out/priced/{name}: watched {(a / name).read_text()!r} != "
                     f"fresh {(b / name).read_text()!r}")
    if len(differing) > 5:
        diffs.append(f"... {len(differing)} priced file(s) differ")
    got, want = (pd.read_excel(p / "out" / "report.xlsx", sheet_name="Customers",
                               engine="openpyxl").sort_values("customer").reset_index(drop=True)
                 for p in (watched, fresh))
    both = got.merge(want, on="customer", how="outer", suffixes=("_watched", "_fresh"),
                     indicator=True)
    bad = both["_merge"] != "both"
    for col in ("orders", "items", "revenue"):
        bad |= (both[f"{col}_watched"] - both[f"{col}_fresh"]).abs().fillna(1) > 1e-6
    if bad.any():
        diffs.append(f"out/report.xlsx[Customers]: {int(bad.sum())} row(s) differ, the first:\n"
                     + both[bad].head(5).to_string(index=False))
    return diffs


def _num(name: str) -> int:
    return int(name.split(".")[0])


# --- main -----------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=10_000, help="order files in inbox/")
    ap.add_argument("--seconds", type=float, default=60.0, help="how long the editor edits")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the temp projects and say where")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="filepipe-soak-"))
    try:
        soak(tmp, args, rng)
    finally:
        if args.keep:
            print(f"projects kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def soak(tmp: Path, args: argparse.Namespace, rng: random.Random) -> None:
    watched, fresh = tmp / "watched", tmp / "fresh"
    watched.mkdir()
    t0 = time.perf_counter()
    prices = make_project(watched, args.files, rng)
    daemon = Daemon(watched)
    daemon.wait_line("startup: full sync")
    print(f"project: {args.files} order files + prices.xlsx; made and first synced by the "
          f"daemon in {time.perf_counter() - t0:.1f} s")

    editor = Editor(watched, prices, rng)
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        editor.step()
        time.sleep(min(rng.expovariate(1 / 0.02), 0.2))
    last_edit = editor.last_edit
    print("operations: " + ", ".join(f"{k} {v}" for k, v in sorted(editor.done.items())))

    daemon.wait_quiet(QUIET)
    daemon.stop()
    cycles = daemon.cycle_lines()
    after = [t for t, _ in cycles if t > last_edit]
    problems = {k: sum(f"|   {k} " in ln for _, ln in daemon.lines)
                for k in ("UNREADABLE", "FAILED", "NOT SYNCED", "MISSING", "CHANGED BY HAND")}
    print(f"cycles: {len(cycles)} (startup included), {len(after)} after the last edit; "
          "problems logged: " + ", ".join(f"{k} {v}" for k, v in problems.items()))
    ms = sorted(int(ln.rsplit("| ", 1)[1].split()[0]) for _, ln in cycles)
    print(f"cycle time: median {statistics.median(ms)} ms, max {ms[-1]} ms")
    print(f"daemon peak RSS: {daemon.peak_rss_kb / 1024:.0f} MB")
    print(f"last edit -> last cycle ended: {after[-1] - last_edit:.2f} s" if after else
          "last edit -> last cycle ended: NO cycle ended after the last edit (missed event?)")
    if daemon.proc.returncode != 0:
        print(f"daemon exit code {daemon.proc.returncode}; stderr:\n{daemon.proc.stderr.read()}")

    fresh.mkdir()
    shutil.copy2(watched / "pipeline.py", fresh)
    shutil.copy2(watched / "prices.xlsx", fresh)
    shutil.copytree(watched / "inbox", fresh / "inbox")
    t1 = time.perf_counter()
    ran = subprocess.run(filepipe_cmd() + ["-p", str(fresh / "pipeline.py"), "run"], cwd=fresh,
                         capture_output=True, text=True, timeout=600)
    print(f"fresh recompute: exit {ran.returncode} in {time.perf_counter() - t1:.1f} s")
    diffs = compare(watched, fresh)
    if diffs or ran.returncode != 0 or daemon.proc.returncode != 0:
        print("FAIL: the watched outputs differ from a fresh recompute" if diffs else "FAIL")
        for d in diffs:
            print("  " + d)
        print("daemon log tail:\n" + daemon.log(30))
        sys.exit(1)
    print("PASS: every output equals a fresh recompute")


if __name__ == "__main__":
    main()
