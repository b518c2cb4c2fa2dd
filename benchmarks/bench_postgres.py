"""The seed workload (bench_seed.py) with its index and tables on PostgreSQL, against SQLite.

N events, 10 per user, stored in the index's own database (TableStoreDB, as the tutorial
does), one step writing two tables. Each round is one fresh process per backend, SQLite
then PostgreSQL, so both see the same load on a shared machine. A process times:

* the initial load: `store_chunk` of the N events, then `run_steps`;
* a no-op `run_steps`, REPEAT times;
* a one-event update (`store_chunk` of one changed event, then `run_steps`), REPEAT
  times on different users.

Each process prints its figures (the one-row phases as the median of REPEAT); the summary
gives per backend the median over the rounds. Times are wall times, the user function's
included; the initial load's rate is also given without it (the engine's own, as
bench_seed.py reports it: the tutorial's function parses every event with json.loads).

PostgreSQL is a throwaway server (tests/pgserver.py: initdb in a temporary folder, a unix
socket, durability off as in the tests, so the figures are the engine's and the protocol's,
not the disk's), or the server of ``--url postgresql://user@host/postgres`` (a database is
made on it and dropped). The history is kept on both (the SQLite default), in a folder.

Usage: ``python benchmarks/bench_postgres.py [N] [--rounds R]`` (default N 100000, R 5).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
REPEAT = 7
RESULT = "@result "
PHASES = ["initial load + run_steps", "no-op run_steps", "update 1 event + run_steps"]
ENGINE = "initial load, engine only"


def engine(url: str, n: int, folder: str) -> dict[str, float]:
    """The phases on the index at `url`; seconds per phase (one-row ones: median of REPEAT)."""
    import pandas as pd
    from bench_sqlite_floor import seed_events

    from examples.seed_events import pipeline as seed
    from filepipe import BatchTransform, Catalog, DataStore, DBConn, Pipeline, Table, build_compute, run_steps
    from filepipe.stores import TableStoreDB

    inside = [0.0]

    def parse(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        t = time.perf_counter()
        try:
            return seed.parse_clicks_ip_step(df)
        finally:
            inside[0] += time.perf_counter() - t

    parse.__name__ = "parse_clicks_ip_step"
    db = DBConn(url)
    catalog = Catalog({
        "events": Table(TableStoreDB("events", db, seed.events_schema)),
        "click_count": Table(TableStoreDB("click_count", db, seed.click_count_schema)),
        "ip": Table(TableStoreDB("ip", db, seed.ip_schema)),
    })
    ds = DataStore(db, history=Path(folder) / "history")
    steps = build_compute(ds, catalog, Pipeline([
        BatchTransform(parse, inputs=["events"], outputs=["click_count", "ip"])]))
    events = catalog.get_datatable(ds, "events")
    df = seed_events(n)
    found: dict[str, float] = {}

    def timed(name: str, fn, repeat: int = 1) -> None:
        walls = []
        for i in range(repeat):
            t = time.perf_counter()
            fn(i)
            walls.append(time.perf_counter() - t)
        found[name] = statistics.median(walls)
        spread = f"  (min {min(walls) * 1000:.1f}, max {max(walls) * 1000:.1f} ms of {repeat})" if repeat > 1 else ""
        print(f"  {db.engine.dialect.name:<10} N={n:,} {name:<28} {found[name] * 1000:9.1f} ms{spread}", flush=True)

    def initial(_: int) -> None:
        events.store_chunk(df)
        run_steps(ds, steps)

    def one(i: int) -> pd.DataFrame:  # another user's event each time, as a live feed
        return df.iloc[[(n // 2 + 997 * i) % n]].assign(event=json.dumps({"event_type": "view", "ip": f"9.9.9.{i}"}))

    def update(i: int) -> None:
        events.store_chunk(one(i))
        run_steps(ds, steps)

    timed(PHASES[0], initial)
    found[ENGINE] = found[PHASES[0]] - inside[0]
    timed(PHASES[1], lambda _: run_steps(ds, steps), REPEAT)
    timed(PHASES[2], update, REPEAT)
    assert len(catalog.get_datatable(ds, "click_count").get_data()) == n // 10
    db.dispose()
    return found


def child(backend: str, n: int, url: str) -> dict[str, float]:
    """One measurement in a fresh process; its figures."""
    figures = None
    args = [sys.executable, __file__, str(n), "--child", backend, "--url", url]
    with subprocess.Popen(args, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(RESULT):
                figures = json.loads(line[len(RESULT):])
            else:
                print(line, end="", flush=True)
    if proc.returncode or figures is None:
        raise SystemExit(f"{backend} failed (exit code {proc.returncode})")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=100_000, help="number of events (default 100000)")
    parser.add_argument("--rounds", type=int, default=5, help="processes per backend (default 5)")
    parser.add_argument("--url", help="a PostgreSQL server's URL (default: a throwaway server)")
    parser.add_argument("--child", choices=["sqlite", "postgresql"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite:///{folder}/bench.sqlite" if args.child == "sqlite" else args.url
            print(f"{RESULT}{json.dumps(engine(url, args.n, folder))}", flush=True)
        return

    import os

    from pgserver import ENV_URL, PGServer

    if args.url:
        os.environ[ENV_URL] = args.url
    server = PGServer.start()
    results: dict[str, list[dict[str, float]]] = {"sqlite": [], "postgresql": []}
    try:
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds}", flush=True)
            for backend in results:
                name = server.create_database() if backend == "postgresql" else ""
                try:
                    results[backend].append(child(backend, args.n, server.url(name) if name else ""))
                finally:
                    if name:
                        server.drop_database(name)
    finally:
        server.stop()
    print(f"\nN={args.n:,}: medians over {args.rounds} processes per backend (one-row phases: each the "
          f"median of {REPEAT} in its process)")
    print(f"{'phase':<30}{'SQLite':>12}{'PostgreSQL':>14}")
    for phase in [PHASES[0], ENGINE, *PHASES[1:]]:
        lite, pg = (statistics.median(f[phase] for f in results[b]) * 1000 for b in results)
        rate = (f"  ({args.n / lite * 1000:,.0f} / {args.n / pg * 1000:,.0f} events/s)"
                if phase in (PHASES[0], ENGINE) else "")
        print(f"{phase:<30}{lite:>9.1f} ms{pg:>11.1f} ms{rate}")


if __name__ == "__main__":
    main()
