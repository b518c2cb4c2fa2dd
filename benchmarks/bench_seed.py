"""The seed tutorial's workload at scale: N events, 10 per user, SQLite; engine against floor.

For each N, `--rounds` rounds, each two fresh processes: the floor's initial load
(`bench_sqlite_floor.py`: the same writes and reads in bare sqlite3), then the engine's
(`store_chunk` of the N events, then `run_steps`). Floor, engine, floor, engine, …: on a
shared machine both see the same load. The first engine process goes on through the other
phases: a no-op run, a one-event update by run_steps and by change list, a delete; each
phase prints its wall time, the time inside the user's function and peak RSS, and phases after
the initial load run REPEAT times (on different rows) and print their median. Each round
prints both figures; the last line per N gives the medians and their ratio.
Events/s, engine and floor alike, is N / (wall time - time inside the user's function).

Usage: ``python benchmarks/bench_seed.py [N ...] [--rounds R] [--no-floor]``
(default N: 10000 100000; R: 5). With `--no-floor` only the engine runs.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
REPEAT = 5
RESULT = "@result "  # prefix of the line a child process reports its figure on


def run(n: int, tmp: str, all_phases: bool = True, history: bool = True) -> float:
    """Run the engine on N events in directory `tmp` (keeping versions unless not
    `history`); returns the initial load's seconds minus the function's."""
    import pandas as pd
    from bench_sqlite_floor import seed_events

    # the engine's modules a run imports on first use are loaded before the timer, as the
    # floor's imports are: the figure is the work, not the loading (or compiling) of code
    import filepipe.hashing
    import filepipe.history
    import filepipe.outputs
    import filepipe.sync  # noqa: F401
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
    catalog, ds, steps = seed.make_pipeline(f"sqlite:///{tmp}/bench.sqlite", history=history)
    label = "" if history else " [no history]"
    events = catalog.get_datatable(ds, "events")
    users = n // 10
    df = seed_events(n)

    def phase(name: str, fn, repeat: int = 1) -> float:
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
        print(f"N={n:>9,} {name + label:<47} {wall * 1000:9.1f} ms  (in func {func * 1000:8.1f} ms)"
              f"  peak RSS {rss:6.0f} MB{rate}{spread}", flush=True)
        return wall - func

    def initial(_: int) -> None:
        events.store_chunk(df)
        run_steps(ds, steps)

    if not all_phases:
        inside[0] = 0.0
        t = time.perf_counter()
        initial(0)
        return time.perf_counter() - t - inside[0]
    engine_seconds = phase("initial load + run_steps", initial)
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
    return engine_seconds


def child(args: list[str]) -> float:
    """Run `args` of this script in a fresh process, echoing its lines; returns its figure."""
    figure = None
    with subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(RESULT):
                figure = float(line[len(RESULT):])
            else:
                print(line, end="", flush=True)
    if proc.returncode or figure is None:
        raise SystemExit(f"{' '.join(args)} failed (exit code {proc.returncode})")
    return figure


def compare(n: int, rounds: int, floor: bool) -> None:
    """The per-phase engine runs (without and with history), then rounds of floor,
    engine and engine keeping history, alternating; the summary."""
    engine_s: list[float] = []
    history_s: list[float] = []
    floor_s: list[float] = []
    for r in range(rounds):
        if floor:
            floor_s.append(child(["--floor", str(n)]))
        phases = ["--all-phases"] if r == 0 else []
        engine_s.append(child(["--engine", str(n), "--no-history", *phases]))
        history_s.append(child(["--engine", str(n), *phases]))
        shown = f"floor {n / floor_s[-1]:,.0f} events/s, " if floor else ""
        print(f"N={n:>9,} round {r + 1}/{rounds}: {shown}engine {n / engine_s[-1]:,.0f} events/s, "
              f"with history {n / history_s[-1]:,.0f} events/s", flush=True)
    engine = n / statistics.median(engine_s)
    kept = statistics.median(history_s) / statistics.median(engine_s) - 1
    of = f"medians of {rounds}" if rounds > 1 else "1 run"
    if floor:
        ceiling = n / statistics.median(floor_s)
        print(f"N={n:,} initial load: engine {engine:,.0f} events/s, floor {ceiling:,.0f} events/s, "
              f"ratio {engine / ceiling:.2f}; history adds {kept:+.0%} ({of}, interleaved)", flush=True)
    else:
        print(f"N={n:,} initial load: engine {engine:,.0f} events/s; history adds {kept:+.0%} ({of})",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="*", type=int, default=[10_000, 100_000], help="numbers of events")
    parser.add_argument("--rounds", type=int, default=5, help="initial-load runs of each (default 5)")
    parser.add_argument("--no-floor", action="store_true", help="run the engine only")
    # in a child process: one measurement, reported on a RESULT line
    parser.add_argument("--engine", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--all-phases", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--floor", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-history", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_intermixed_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.engine or args.floor:
        (n,) = args.n
        if args.floor:
            from bench_sqlite_floor import floor_seconds
            seconds = floor_seconds(n)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                seconds = run(n, tmp, args.all_phases, history=not args.no_history)
        print(f"{RESULT}{seconds!r}", flush=True)
        return
    for n in args.n:
        compare(n, args.rounds, not args.no_floor)


if __name__ == "__main__":
    main()
