"""The seed tutorial's workload at scale: N events, 10 per user, SQLite.

Prints each phase's wall time, the time spent inside the user's function, and peak RSS.
Phases after the initial load run REPEAT times (on different rows) and print the median.
Usage: ``python benchmarks/bench_seed.py [N ...]`` (default 10000 100000).
Each N runs in a fresh subprocess so peak RSS is per N.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
REPEAT = 5


def run(n: int) -> None:
    from examples.seed_events import pipeline as seed
    from filepipe import ChangeList, run_steps, run_steps_changelist

    inside = [0.0]
    original = seed.parse_clicks_ip_step

    def timed(df):
        t = time.perf_counter()
        try:
            return original(df)
        finally:
            inside[0] += time.perf_counter() - t

    seed.parse_clicks_ip_step = timed
    tmp = tempfile.mkdtemp()
    catalog, ds, steps = seed.make_pipeline(f"sqlite:///{tmp}/bench.sqlite")
    events = catalog.get_datatable(ds, "events")
    users = n // 10
    df = pd.DataFrame({
        "user_id": [str(i // 10) for i in range(n)],
        "event_id": [str(i % 10) for i in range(n)],
        "event": [json.dumps({"event_type": "click" if i % 3 else "view",
                              "ip": f"10.0.{i % 256}.{i % 7}"}) for i in range(n)],
    })

    def phase(name: str, fn, repeat: int = 1) -> None:
        walls, insides = [], []
        for i in range(repeat):
            inside[0] = 0.0
            t = time.perf_counter()
            fn(i)
            walls.append(time.perf_counter() - t)
            insides.append(inside[0])
        wall, func = statistics.median(walls), statistics.median(insides)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rate = f"  engine {n / (wall - func):,.0f} events/s" if name.startswith("initial") else ""
        spread = f"  (max of {repeat}: {max(walls) * 1000:.1f} ms)" if repeat > 1 else ""
        print(f"N={n:>9,} {name:<34} {wall * 1000:9.1f} ms  (in func {func * 1000:8.1f} ms)"
              f"  peak RSS {rss:6.0f} MB{rate}{spread}", flush=True)

    def initial(_: int) -> None:
        events.store_chunk(df)
        run_steps(ds, steps)

    phase("initial load + run_steps", initial)
    phase("no-op run_steps", lambda _: run_steps(ds, steps), REPEAT)

    # each repetition touches another user's event, as a live feed would
    def one(i: int, event: dict) -> pd.DataFrame:
        return df.iloc[[(n // 2 + 997 * i) % n]].assign(event=json.dumps(event))

    def update_run(i: int) -> None:
        events.store_chunk(one(i, {"event_type": "view", "ip": "1.2.3.4"}))
        run_steps(ds, steps)

    phase("update 1 event + run_steps", update_run, REPEAT)

    def update_changelist(i: int) -> None:
        cl = ChangeList()
        cl.append("events", events.store_chunk(one(i, {"event_type": "click", "ip": "5.6.7.8"})))
        run_steps_changelist(ds, steps, cl)

    phase("update 1 event + changelist", update_changelist, REPEAT)
    phase("no-op run_steps after changelist", lambda _: run_steps(ds, steps), REPEAT)

    def delete_run(i: int) -> None:
        events.delete_by_idx(one(i, {})[["user_id", "event_id"]])
        run_steps(ds, steps)

    phase("delete 1 event + run_steps", delete_run, REPEAT)
    assert len(catalog.get_datatable(ds, "click_count").get_data()) == users


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--one":
        run(int(sys.argv[2]))
    else:
        for n in [int(a) for a in sys.argv[1:]] or [10_000, 100_000]:
            subprocess.run([sys.executable, __file__, "--one", str(n)], check=True)
