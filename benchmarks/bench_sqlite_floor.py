"""The floor under `bench_seed.py`'s initial load: a complete engine's work in bare sqlite3.

What is measured: the seed workload's initial load (``examples/seed_events``: N events, 10 per
user, `events` → step ``parse_clicks_ip_step`` → `click_count` and `ip`, keyed by user_id,
1000 transform keys per batch) done with everything filepipe's design writes and reads, each
in the fastest plain-``sqlite3`` form found, and nothing else. The user function is not part
of it: it runs between the timers and its time is left out, as the engine's figure leaves
out the time inside the function. The tables are those filepipe creates (data tables as the
user declared them, ``fp_rows__<table>`` meta with an index on `seq`, ``fp_keys__<step>``,
``fp_clock``, ``fp_steps``, ``fp_step_inputs``, ``fp_runs``), in one WAL database with the
engine's PRAGMAs (journal_mode=WAL, synchronous=NORMAL, busy_timeout).

Phases, as `store_chunk(events)` then `run_steps` do them:

load (one transaction, like `store_chunk`)
  frame to rows       the user's DataFrame as Python column lists (the engine gets a frame too)
  hash rows           xxh3_64 of each row's bytes: the row as a JSON array (orjson),
                      an unambiguous encoding; as signed int64
  diff against meta   read the stored meta of the chunk's keys (one scan: the chunk is the
                      whole table); on the initial load none is found, so every row is new
  encode JSON         the `event` column is SQL type JSON: its values are stored JSON-encoded
  write data          upsert the N events
  write meta          take N clock values, insert the N meta rows
  commit
run_steps
  changed keys        step state, the clock, the indexed range scan ``seq > hwm AND seq <= clock``
                      over the input meta for its distinct user_ids; live output keys (a full
                      run drops outputs of vanished keys); create the step's keys table
  per batch of 1000 user_ids, one transaction each:
  read batch          the live input rows under the batch's keys, oldest change first
  input frame         decode the JSON column, build the DataFrame the function gets
  (function)          excluded
  output rows         the function's frames as column lists, xxh3 per row
  output meta lookup  stored meta of the outputs under the batch's keys (none on a first run)
  write outputs       take clock values, upsert each output's rows, insert their meta rows
  step-key rows       upsert the batch's rows in ``fp_keys__<step>`` (status ok, done_seq)
  commit
  step state          ``fp_steps``, ``fp_step_inputs`` (high-water mark), ``fp_runs``

The database it leaves equals the engine's (data, outputs, meta keys and seqs, step-key rows,
clock, high-water mark; only the hash function differs). Forms chosen, each measured against
the alternatives on this machine at N = 100,000:
- Writes: multi-row ``INSERT … VALUES (…),(…)``, 200 rows a statement, parameters laid out
  column by column: about 25 % faster than `executemany` of a one-row statement (which steps
  the statement once per row). The whole floor takes the same time with 50 to 200 rows a
  statement, 2 % more with 500, 5 % with 1000, 10 % with 2000.
  Data rows are upserts (the data table may hold rows the meta does not know, after a lost
  index). Meta rows of keys the diff found new are plain INSERTs, which cost the same as an
  upsert on an empty table and check the frame's keys for free: a duplicate key fails.
- Meta constants inline: on the initial load every meta row has ``create_ts = update_ts = now``
  and NULL `delete_ts` and `file_id`; these are SQL literals in the VALUES rows, so 4 values
  are bound per meta row instead of 8: the meta write takes 40 % less (105 ms against 175 ms).
- Meta and keys tables are ``WITHOUT ROWID`` with the keys as primary key: two B-trees per meta
  row (keys, seq index) instead of three. Writing them costs the same as rowid tables here
  (within the ±3 % noise: the random-order insert into the key B-tree dominates either way);
  reading a row by key takes one B-tree search instead of two. The data tables stay as the
  user declared them, the keys table keeps its index on `status`.
- Changed keys: ``SELECT DISTINCT user_id … WHERE seq > ? AND seq <= ?`` (covering seq index,
  distinct in SQLite): 18 ms against 33 ms for fetching 100k (user_id, seq) rows and
  de-duplicating in Python; a first run needs no per-key latest seq (nothing is done yet).
- Batch read: one JOIN of data and live meta, the user_ids bound in one ``IN (…)`` list (1000
  values; SQLite allows 32,766), sorted by `seq` in Python: about 25 % faster than two queries
  and a match in Python, 10 % faster than ``ORDER BY seq``; ``IN (SELECT value FROM
  json_each(?))`` costs the same as the bound list.
- Frames: string columns built through Arrow (``pa.array`` → pandas `str` dtype), twice as fast
  as ``pd.Series(values, dtype="str")``.
- Clock: ``UPDATE fp_clock … RETURNING seq``, one statement per reservation.
- JSON: orjson (decoding 100k values takes 12 ms, the stdlib's json 95 ms).
Left as the engine has them: the garbage collector stays on (it takes about 10 % of the
floor's time), SQLite's page cache keeps its default size. The per-row hash (26 ms per 100k
rows) is slower than filepipe's column-wise `hash_rows` on this frame (15 ms: it hashes each
distinct value once, and the events repeat theirs), so that one phase is no floor.

Usage: ``python benchmarks/bench_sqlite_floor.py [N ...]`` (default 100000) prints each phase;
``floor_seconds(n)`` returns the time comparable with `bench_seed.py`'s engine figure.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa
import xxhash

STEP = "parse_clicks_ip_step"
CHUNK_SIZE = 1000  # transform keys per batch, BatchTransform's default
ROWS_PER_STATEMENT = 200
META = ("hash BIGINT NOT NULL, create_ts FLOAT NOT NULL, update_ts FLOAT NOT NULL, "
        "delete_ts FLOAT, seq BIGINT NOT NULL, file_id INTEGER")
_xxh3 = xxhash.xxh3_64_intdigest


# --- the workload -------------------------------------------------------------------------

def seed_events(n: int) -> pd.DataFrame:
    """The events `bench_seed.py` loads: 10 per user, `event` a JSON text."""
    return pd.DataFrame({
        "user_id": [str(i // 10) for i in range(n)],
        "event_id": [str(i % 10) for i in range(n)],
        "event": [json.dumps({"event_type": "click" if i % 3 else "view",
                              "ip": f"10.0.{i % 256}.{i % 7}"}) for i in range(n)],
    })


def clicks_and_ip(events: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The step's results (clicks per user, ip of the user's latest event), vectorised.

    Stands in for the user function: its time is not part of the floor.
    """
    parsed = pd.DataFrame([json.loads(e) for e in events["event"]])
    parsed["user_id"] = events["user_id"].to_numpy()
    parsed["click"] = parsed["event_type"] == "click"
    groups = parsed.groupby("user_id", sort=False)
    return (groups["click"].sum().astype("int64").rename("click_count").reset_index(),
            groups["ip"].last().reset_index())


# --- plain sqlite3, fastest forms ---------------------------------------------------------

def hash_rows(columns: Sequence[list]) -> list[int]:
    """xxh3_64 of each row encoded as a JSON array, as signed 64-bit ints (SQLite's INTEGER)."""
    return [h - (1 << 64) if h >= 1 << 63 else h for h in map(_xxh3, map(orjson.dumps, zip(*columns)))]


def insert(db: sqlite3.Connection, table: str, columns: dict[str, list],
           constants: dict[str, str] | None = None, update_on: Sequence[str] = ()) -> None:
    """Insert rows given column by column, in multi-row VALUES statements; with `update_on`
    (the keys), an upsert.

    `constants`: columns with one value for every row, as SQL literals written into the
    statement (not bound).
    """
    constants = constants or {}
    names = list(columns) + list(constants)
    values = list(columns.values())
    width, rows = len(values), len(values[0])
    one = "(" + ",".join(["?"] * width + list(constants.values())) + ")"
    head = f"INSERT INTO {table} ({', '.join(names)}) VALUES "
    tail = ""
    if update_on:
        sets = ", ".join(f"{c} = excluded.{c}" for c in names if c not in update_on)
        tail = f" ON CONFLICT ({', '.join(update_on)}) DO UPDATE SET {sets}"
    full = head + ",".join([one] * ROWS_PER_STATEMENT) + tail
    for start in range(0, rows, ROWS_PER_STATEMENT):
        end = min(start + ROWS_PER_STATEMENT, rows)
        flat: list[Any] = [None] * ((end - start) * width)
        for i, column in enumerate(values):
            flat[i::width] = column[start:end]
        sql = full if end - start == ROWS_PER_STATEMENT else head + ",".join([one] * (end - start)) + tail
        db.execute(sql, flat)


def take_seq(db: sqlite3.Connection, n: int) -> int:
    """Reserve `n` values of the change clock; returns the first."""
    (last,) = db.execute("UPDATE fp_clock SET seq = seq + ? WHERE id = 1 RETURNING seq", (n,)).fetchone()
    return last - n + 1


def in_list(n: int) -> str:
    return "(" + ",".join("?" * n) + ")"


def str_column(values: list) -> pd.Series:
    """Strings as pandas' `str` dtype, as the engine types a String column (through Arrow:
    twice as fast as ``pd.Series(values, dtype="str")``)."""
    return pd.Series(pd.array(pa.array(values, type=pa.large_string()), dtype="str"))


def create_tables(db: sqlite3.Connection) -> None:
    """What filepipe has created before the first store_chunk (the keys table comes later)."""
    db.executescript(f"""
        CREATE TABLE events (user_id VARCHAR NOT NULL, event_id VARCHAR NOT NULL, event JSON,
                             PRIMARY KEY (user_id, event_id));
        CREATE TABLE click_count (user_id VARCHAR NOT NULL PRIMARY KEY, click_count INTEGER);
        CREATE TABLE ip (user_id VARCHAR NOT NULL PRIMARY KEY, ip VARCHAR);
        CREATE TABLE fp_clock (id INTEGER PRIMARY KEY, seq BIGINT NOT NULL);
        INSERT INTO fp_clock VALUES (1, 0);
        CREATE TABLE fp_steps (name VARCHAR PRIMARY KEY, code_version VARCHAR, transform_keys JSON);
        CREATE TABLE fp_step_inputs (step VARCHAR, input VARCHAR, hwm BIGINT NOT NULL,
                                     PRIMARY KEY (step, input));
        CREATE TABLE fp_runs (run_id INTEGER PRIMARY KEY, started FLOAT NOT NULL, finished FLOAT,
                              "trigger" VARCHAR, seq_from BIGINT, seq_to BIGINT, summary JSON);
        CREATE TABLE fp_rows__events (user_id VARCHAR NOT NULL, event_id VARCHAR NOT NULL, {META},
                                      PRIMARY KEY (user_id, event_id)) WITHOUT ROWID;
        CREATE INDEX ix_fp_rows__events_seq ON fp_rows__events (seq);
        CREATE TABLE fp_rows__click_count (user_id VARCHAR NOT NULL PRIMARY KEY, {META}) WITHOUT ROWID;
        CREATE INDEX ix_fp_rows__click_count_seq ON fp_rows__click_count (seq);
        CREATE TABLE fp_rows__ip (user_id VARCHAR NOT NULL PRIMARY KEY, {META}) WITHOUT ROWID;
        CREATE INDEX ix_fp_rows__ip_seq ON fp_rows__ip (seq);
    """)


# --- the floor ----------------------------------------------------------------------------

class Floor:
    """One initial load in a fresh database; `phases` holds seconds per phase."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)  # BEGIN/COMMIT by hand
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=60000")
        create_tables(self.db)
        self.phases: dict[str, float] = defaultdict(float)
        self.in_function = 0.0

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] += time.perf_counter() - t

    def store_events(self, df: pd.DataFrame) -> None:
        """`store_chunk(df)` on the empty `events` table."""
        db = self.db
        with self.phase("load: frame to rows"):
            users, event_ids, events = (df[c].tolist() for c in ("user_id", "event_id", "event"))
        with self.phase("load: hash rows"):
            hashes = hash_rows([users, event_ids, events])
        with self.phase("load: diff against meta"):
            db.execute("BEGIN")
            stored = db.execute("SELECT user_id, event_id, hash, delete_ts FROM fp_rows__events").fetchall()
            assert not stored, "the floor measures the initial load: the meta must be empty"
        with self.phase("load: encode JSON"):
            encoded = [orjson.dumps(e).decode() for e in events]
        with self.phase("load: write data"):
            insert(db, "events", {"user_id": users, "event_id": event_ids, "event": encoded},
                   update_on=["user_id", "event_id"])
        with self.phase("load: write meta"):
            first = take_seq(db, len(users))
            now = repr(time.time())
            insert(db, "fp_rows__events",  # new keys: a duplicate key in the frame fails here
                   {"user_id": users, "event_id": event_ids, "hash": hashes,
                    "seq": list(range(first, first + len(users)))},
                   {"create_ts": now, "update_ts": now, "delete_ts": "NULL", "file_id": "NULL"})
        with self.phase("load: commit"):
            db.execute("COMMIT")

    def run_step(self) -> None:
        """`run_steps`: the step's first full run over every changed user_id."""
        db = self.db
        started = time.time()
        with self.phase("run: changed keys"):
            db.execute("BEGIN")
            state = db.execute("SELECT code_version, transform_keys FROM fp_steps WHERE name = ?",
                               (STEP,)).fetchone()
            hwm = dict(db.execute("SELECT input, hwm FROM fp_step_inputs WHERE step = ?", (STEP,)))
            (snap,) = db.execute("SELECT seq FROM fp_clock WHERE id = 1").fetchone()
            lo = hwm.get("events", 0)
            pending = [u for (u,) in db.execute(  # in order of first change
                "SELECT DISTINCT user_id FROM fp_rows__events WHERE seq > ? AND seq <= ?", (lo, snap))]
            seen = set(pending)
            for out in ("click_count", "ip"):  # a full run also redoes keys only outputs hold
                live = db.execute(f"SELECT user_id FROM fp_rows__{out} WHERE delete_ts IS NULL")
                pending += [u for (u,) in live if u not in seen]
            assert state is None, "the floor measures a step's first run"
            db.execute(f"CREATE TABLE fp_keys__{STEP} (user_id VARCHAR NOT NULL PRIMARY KEY, "
                       "status VARCHAR NOT NULL, error TEXT, attempts INTEGER NOT NULL, "
                       "done_seq BIGINT, update_ts FLOAT NOT NULL) WITHOUT ROWID")
            db.execute(f"CREATE INDEX ix_fp_keys__{STEP}_status ON fp_keys__{STEP} (status)")
            db.execute("COMMIT")
        for start in range(0, len(pending), CHUNK_SIZE):
            self.run_batch(pending[start:start + CHUNK_SIZE], snap)
        with self.phase("run: step state"):
            db.execute("BEGIN")
            db.execute("INSERT INTO fp_steps VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                       "code_version = excluded.code_version, transform_keys = excluded.transform_keys",
                       (STEP, "v1", '["user_id"]'))
            db.execute("INSERT INTO fp_step_inputs VALUES (?, 'events', ?) ON CONFLICT (step, input) "
                       "DO UPDATE SET hwm = excluded.hwm", (STEP, snap))
            db.execute('INSERT INTO fp_runs (started, finished, "trigger", seq_from, seq_to, summary) '
                       "VALUES (?, ?, 'run', ?, ?, '{}')", (started, time.time(), lo, snap))
            db.execute("COMMIT")

    def run_batch(self, batch: list[str], done_seq: int) -> None:
        """Read the batch's events, call the function, write its outputs and the keys' status."""
        db = self.db
        with self.phase("batch: read batch"):
            db.execute("BEGIN")
            rows = db.execute(
                "SELECT m.seq, e.user_id, e.event_id, e.event FROM fp_rows__events m "
                f"JOIN events e USING (user_id, event_id) WHERE m.user_id IN {in_list(len(batch))} "
                "AND m.delete_ts IS NULL", batch).fetchall()
            rows.sort()  # oldest change first (seq is unique)
        with self.phase("batch: input frame"):
            _, users, event_ids, events = zip(*rows)
            frame = pd.DataFrame({"user_id": str_column(list(users)),
                                  "event_id": str_column(list(event_ids)),
                                  "event": str_column(list(map(orjson.loads, events)))})
        t = time.perf_counter()
        results = clicks_and_ip(frame)
        self.in_function += time.perf_counter() - t
        with self.phase("batch: output rows"):
            outputs = {}
            for name, df in zip(("click_count", "ip"), results):
                columns = {c: df[c].tolist() for c in df.columns}
                outputs[name] = (columns, hash_rows(list(columns.values())))
        with self.phase("batch: output meta lookup"):
            for name in outputs:
                stored = db.execute(f"SELECT user_id, hash, create_ts, delete_ts FROM fp_rows__{name} "
                                    f"WHERE user_id IN {in_list(len(batch))}", batch).fetchall()
                assert not stored, "the floor measures a step's first run"
        with self.phase("batch: write outputs"):
            seq = take_seq(db, sum(len(h) for _, h in outputs.values()))
            now = repr(time.time())
            for name, (columns, hashes) in outputs.items():
                insert(db, name, columns, update_on=["user_id"])
                insert(db, f"fp_rows__{name}",
                       {"user_id": columns["user_id"], "hash": hashes,
                        "seq": list(range(seq, seq + len(hashes)))},
                       {"create_ts": now, "update_ts": now, "delete_ts": "NULL", "file_id": "NULL"})
                seq += len(hashes)
        with self.phase("batch: step-key rows"):
            insert(db, f"fp_keys__{STEP}", {"user_id": batch},
                   {"status": "'ok'", "error": "NULL", "attempts": "0", "done_seq": str(int(done_seq)),
                    "update_ts": repr(time.time())}, update_on=["user_id"])
        with self.phase("batch: commit"):
            db.execute("COMMIT")

    def check(self, n: int) -> None:
        """The database holds what the engine's would (row counts, one step-key row per user)."""
        users = n // 10
        for table, rows in (("events", n), ("fp_rows__events", n), ("click_count", users),
                            ("fp_rows__click_count", users), ("ip", users), ("fp_rows__ip", users),
                            (f"fp_keys__{STEP}", users)):
            (found,) = self.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
            assert found == rows, (table, found, rows)
        (seq,) = self.db.execute("SELECT seq FROM fp_clock").fetchone()
        assert seq == n + 2 * users, seq


def measure(n: int) -> tuple[float, Floor]:
    """Run the initial load of `n` events once in a temporary directory: (wall seconds minus
    the function's, the Floor with its phases)."""
    df = seed_events(n)
    with tempfile.TemporaryDirectory() as tmp:
        floor = Floor(Path(tmp) / "floor.sqlite")
        t = time.perf_counter()
        floor.store_events(df)
        floor.run_step()
        wall = time.perf_counter() - t
        floor.check(n)
        floor.db.close()
    return wall - floor.in_function, floor


def floor_seconds(n: int) -> float:
    """Seconds of the floor's initial load of `n` events, the function's time excluded."""
    return measure(n)[0]


def main(argv: list[str]) -> None:
    for n in [int(a) for a in argv] or [100_000]:
        seconds, floor = measure(n)
        for name, spent in floor.phases.items():
            print(f"N={n:>9,} {name:<28} {spent * 1000:8.1f} ms")
        load = sum(v for k, v in floor.phases.items() if k.startswith("load"))
        print(f"N={n:>9,} {'(function, excluded)':<28} {floor.in_function * 1000:8.1f} ms")
        print(f"N={n:>9,} {'total':<28} {seconds * 1000:8.1f} ms  (load {load * 1000:.1f} ms, "
              f"run {(seconds - load) * 1000:.1f} ms)  floor {n / seconds:,.0f} events/s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
