"""Batches through each executor the way the engine runs them: a CPU-bound pure-Python step
function of about 20 ms per batch, 500 batches, at most ``slots`` batches in flight, results
consumed in submission order. Wall time and speedup over in-process (medians of interleaved
repeats), the executor's start-up apart; then the overhead per batch (a function that does
nothing) and the cost of pickling a batch's frames there and back.

The step function lives in a pipeline file in a temporary folder, loaded by path as
``filepipe run`` loads one, so it travels to the workers by value.

Run from the repository root: ``python benchmarks/bench_executor.py [--batches 500] [--ms 20]
[--repeats 3] [--rows 1000] [--executors inline,processes:2,dask:local:2]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd

from filepipe.app import _import_file
from filepipe.executor import BatchExecutor, _cloudpickle, executor_from

PIPELINE = '''
def burn(df, *, loops):
    """Pure-Python work (holds the GIL), then a small result frame."""
    acc = 0
    for i in range(loops):
        acc = (acc * 31 + i) % 1000003
    return df.assign(score=df["amount"] * 2 + acc % 7)


def nothing(df):
    return df


def pid(df):
    import os
    import time
    time.sleep(0.01)
    return os.getpid()
'''


def load_pipeline(folder: Path) -> ModuleType:
    path = folder / "pipeline.py"
    path.write_text(PIPELINE)
    return _import_file(path.resolve())


def batch_frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "order": np.arange(seed * rows, (seed + 1) * rows, dtype=np.int64),
        "customer": pd.Series([f"c{i % 97:03d}" for i in range(rows)], dtype="str"),
        "amount": rng.normal(100, 30, rows),
        "at": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 10**6, rows), "s"),
    })


def run(ex: BatchExecutor, func: Any, batches: list[pd.DataFrame], kwargs: dict[str, Any]) -> tuple[float, float]:
    """Wall seconds to run every batch as the engine does (`slots` in flight, consumed in order),
    and the CPU seconds this process (every thread of it) spent meanwhile."""
    start, cpu = time.perf_counter(), time.process_time()
    pending: deque[Any] = deque()
    slots = ex.slots
    for batch in batches:
        pending.append(ex.submit(func, [batch], kwargs))
        if len(pending) >= slots:
            pending.popleft().result()
    while pending:
        pending.popleft().result()
    return time.perf_counter() - start, time.process_time() - cpu


def worker_pids(ex: BatchExecutor, pipeline: ModuleType) -> set[int]:
    """The worker processes of `ex` (none in-process): those that answer a few small batches."""
    if ex.slots == 1:
        return set()
    return {f.result() for f in [ex.submit(pipeline.pid, [batch_frame(1, 0)], {}) for _ in range(8 * ex.slots)]}


def cpu_seconds(pids: set[int]) -> float:
    """CPU seconds the processes `pids` have used (Linux's /proc; 0 elsewhere)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
    return total / os.sysconf("SC_CLK_TCK") if pids else 0.0


def calibrate(burn: Any, ms: float) -> int:
    """Loops of `burn` that take about `ms` milliseconds here (the median of a few tries)."""
    df = batch_frame(10, 0)
    loops = 100_000
    for _ in range(3):
        times = []
        for _ in range(5):
            t = time.perf_counter()
            burn(df, loops=loops)
            times.append(time.perf_counter() - t)
        loops = max(1000, int(loops * ms / 1000 / statistics.median(times)))
    return loops


def pickling_ms(rows: int) -> float:
    """Milliseconds to send one batch's frame to a worker and its result back (cloudpickle)."""
    cloudpickle = _cloudpickle()
    df = batch_frame(rows, 1)
    t = time.perf_counter()
    n = 200
    for _ in range(n):
        frames, _ = cloudpickle.loads(cloudpickle.dumps(([df], {"loops": 1}), protocol=5))
        cloudpickle.loads(cloudpickle.dumps(frames[0], protocol=5))
    return (time.perf_counter() - t) / n * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--ms", type=float, default=20.0, help="CPU time per batch in-process")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=1000, help="rows of each batch's frame")
    parser.add_argument("--executors", default="inline,processes:2,dask:local:2")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        pipeline = load_pipeline(Path(tmp))
        loops = calibrate(pipeline.burn, args.ms)
        batches = [batch_frame(args.rows, i) for i in range(args.batches)]
        specs = args.executors.split(",")
        executors: dict[str, BatchExecutor] = {}
        startup: dict[str, float] = {}
        pids: dict[str, set[int]] = {}
        slots: dict[str, int] = {}
        for spec in specs:
            t = time.perf_counter()
            ex = executor_from(None if spec == "inline" else spec)
            run(ex, pipeline.nothing, batches[:4 * ex.slots], {})  # workers up, function loaded
            startup[spec] = time.perf_counter() - t
            executors[spec] = ex
            pids[spec] = worker_pids(ex, pipeline)
            slots[spec] = ex.slots
        try:
            times: dict[str, list[float]] = {s: [] for s in specs}
            cpu: dict[str, list[float]] = {s: [] for s in specs}
            workers_cpu: dict[str, list[float]] = {s: [] for s in specs}
            overhead: dict[str, list[float]] = {s: [] for s in specs}
            for _ in range(args.repeats):  # interleaved: each repeat runs every executor once
                for spec, ex in executors.items():
                    before = cpu_seconds(pids[spec])
                    wall, used = run(ex, pipeline.burn, batches, {"loops": loops})
                    times[spec].append(wall)
                    cpu[spec].append(used)
                    workers_cpu[spec].append(cpu_seconds(pids[spec]) - before)
                    overhead[spec].append(run(ex, pipeline.nothing, batches, {})[0])
        finally:
            for ex in executors.values():
                ex.close()

    base = statistics.median(times[specs[0]])
    print(f"{args.batches} batches of {args.rows} rows, ~{args.ms:g} ms of pure-Python CPU each "
          f"({loops} loops); medians of {args.repeats} interleaved runs; speedup vs {specs[0]}; "
          f"CPU: this process's, all threads (the coordinator; with dask:local, the scheduler "
          f"and nannies too), and the worker processes' (Linux); 2-core bound: 2 x in-process CPU / "
          f"(caller + workers) CPU, the speedup this CPU cost allows on 2 idle cores")
    print(f"{'executor':<16}{'slots':>6}{'start-up s':>12}{'wall s':>9}{'min..max s':>14}"
          f"{'speedup':>9}{'incl. start-up':>16}{'CPU ms/batch: caller':>22}{'workers':>9}"
          f"{'2-core bound':>14}{'no-op ms/batch':>16}")
    inline_cpu = statistics.median(cpu[specs[0]]) / args.batches * 1000
    for spec in specs:
        wall = statistics.median(times[spec])
        caller = statistics.median(cpu[spec]) / args.batches * 1000
        workers = statistics.median(workers_cpu[spec]) / args.batches * 1000
        # the speedup two idle cores would allow, given the CPU each batch costs in all
        bound = min(2.0, 2 * inline_cpu / (caller + workers)) if workers else 1.0
        print(f"{spec:<16}{slots[spec]:>6}{startup[spec]:>12.2f}{wall:>9.2f}"
              f"{min(times[spec]):>7.2f}..{max(times[spec]):<5.2f}{base / wall:>9.2f}"
              f"{base / (wall + startup[spec]):>16.2f}"
              f"{caller:>22.2f}{workers:>9.2f}{bound:>14.2f}"
              f"{statistics.median(overhead[spec]) / args.batches * 1000:>16.2f}")
    print(f"pickling one batch's frame there and its result back (cloudpickle, {args.rows} rows): "
          f"{pickling_ms(args.rows):.2f} ms")


if __name__ == "__main__":
    main()
