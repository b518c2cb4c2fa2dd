"""The floor under `bench_seed.py`'s initial load: the same writes and reads in bare sqlite3.

Any engine that keeps the seed's tables in SQLite and one metadata row per data row
(keys, hash, timestamps, change sequence, with an index on the sequence) must at least
insert the N events, their N meta rows, the outputs and their meta, and read the events
back (JSON-decoded, as SQLAlchemy's JSON column stores them). This does only that, with
the driver's `executemany` and no pandas, hashing or diffing, so the figure it prints is
a ceiling for any SQLite-backed engine's events/s on this machine.

Usage: ``python benchmarks/bench_sqlite_floor.py [N ...]`` (default 100000).
"""

from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

META = ("hash BIGINT NOT NULL, create_ts FLOAT NOT NULL, update_ts FLOAT NOT NULL, "
        "delete_ts FLOAT, seq BIGINT NOT NULL, file_id INTEGER")


def run(n: int) -> None:
    db = sqlite3.connect(Path(tempfile.mkdtemp()) / "floor.sqlite")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE events (user_id VARCHAR, event_id VARCHAR, event JSON, "
               "PRIMARY KEY (user_id, event_id))")
    db.execute(f"CREATE TABLE meta_events (user_id VARCHAR, event_id VARCHAR, {META}, "
               "PRIMARY KEY (user_id, event_id))")
    db.execute("CREATE INDEX ix_meta_events_seq ON meta_events (seq)")
    for out in ("click_count", "ip"):
        db.execute(f"CREATE TABLE {out} (user_id VARCHAR PRIMARY KEY, value)")
        db.execute(f"CREATE TABLE meta_{out} (user_id VARCHAR PRIMARY KEY, {META})")
        db.execute(f"CREATE INDEX ix_meta_{out}_seq ON meta_{out} (seq)")
    now = time.time()
    events = [(str(i // 10), str(i % 10),
               json.dumps(json.dumps({"event_type": "click" if i % 3 else "view",
                                      "ip": f"10.0.{i % 256}.{i % 7}"}))) for i in range(n)]
    meta = [(u, e, i * 7919, now, now, None, i, None) for i, (u, e, _) in enumerate(events)]
    users = n // 10
    phases = {}

    t = time.perf_counter()
    db.executemany("INSERT INTO events VALUES (?, ?, ?)", events)
    db.executemany("INSERT INTO meta_events VALUES (?, ?, ?, ?, ?, ?, ?, ?)", meta)
    db.commit()
    phases["insert events + meta"] = time.perf_counter() - t

    t = time.perf_counter()
    rows = db.execute("SELECT user_id, event_id, event FROM events").fetchall()
    decoded = [json.loads(r[2]) for r in rows]
    phases["read events back"] = time.perf_counter() - t
    assert len(decoded) == n

    t = time.perf_counter()
    for out in ("click_count", "ip"):
        db.executemany(f"INSERT INTO {out} VALUES (?, ?)", [(str(u), u) for u in range(users)])
        db.executemany(f"INSERT INTO meta_{out} VALUES (?, ?, ?, ?, ?, ?, ?)",
                       [(str(u), u, now, now, None, n + u, None) for u in range(users)])
    db.commit()
    phases["insert outputs + meta"] = time.perf_counter() - t

    total = sum(phases.values())
    for name, seconds in phases.items():
        print(f"N={n:>9,} {name:<24} {seconds * 1000:8.1f} ms")
    print(f"N={n:>9,} {'total':<24} {total * 1000:8.1f} ms  ceiling {n / total:,.0f} events/s")


if __name__ == "__main__":
    for n in [int(a) for a in sys.argv[1:]] or [100_000]:
        run(n)
