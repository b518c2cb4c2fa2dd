"""Crash safety: a run killed with SIGKILL at any point leaves an index the next run completes.

A child process runs a two-step pipeline (SQL tables in the index database, SQLite or
PostgreSQL, and a CSV output) and kills itself at the N-th call of a chosen function; the
next run must finish with outputs equal to a from-scratch computation, no row lost or
duplicated, and a run after that must process nothing.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = textwrap.dedent('''
    import os, signal, sys
    import pandas as pd
    from sqlalchemy import Column, Integer, String
    from filepipe import BatchTransform, Catalog, DataStore, DBConn, Pipeline, Table, build_compute, run_steps
    from filepipe.stores import TableStoreCSV, TableStoreDB

    root, url, phase, kill_at, kill_n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])

    def killer(obj, name):
        original = getattr(obj, name)
        calls = [0]
        def wrapped(*a, **k):
            calls[0] += 1
            if calls[0] == kill_n:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(*a, **k)
        setattr(obj, name, wrapped)

    def per_user(events):
        out = events.groupby("user_id", as_index=False).agg(n=("event_id", "count"), total=("v", "sum"))
        return out

    def per_group(users):
        users = users.assign(grp=users["user_id"].str[:1])
        return users.groupby("grp", as_index=False).agg(total=("total", "sum"))

    db = DBConn(url)
    catalog = Catalog({
        "events": Table(TableStoreDB("events", db, [Column("user_id", String, primary_key=True),
                                                   Column("event_id", Integer, primary_key=True),
                                                   Column("v", Integer)])),
        "users": Table(TableStoreDB("users", db, [Column("user_id", String, primary_key=True),
                                                 Column("n", Integer), Column("total", Integer)])),
        "groups": Table(TableStoreCSV(f"{root}/groups.csv", primary_keys=["grp"])),
    })
    ds = DataStore(db, history=f"{root}/db.history")
    steps = build_compute(ds, catalog, Pipeline([
        BatchTransform(per_user, inputs=["events"], outputs=["users"], chunk_size=7),
        BatchTransform(per_group, inputs=["users"], outputs=["groups"], transform_keys=[]),
    ]))
    events = catalog.get_datatable(ds, "events")
    if phase == "load":
        df = pd.DataFrame({"user_id": [f"{c}{i}" for c in "abc" for i in range(20) for _ in range(3)],
                           "event_id": list(range(3)) * 60, "v": range(180)})
    else:  # an update: change some, delete some, add some
        df = events.get_data()
        df = df[df["event_id"] != 2].assign(v=lambda d: d["v"] * 2)
        df = pd.concat([df, pd.DataFrame({"user_id": ["d1", "d2"], "event_id": [0, 0], "v": [5, 6]})])
    if kill_at != "none":
        import filepipe.meta.rows, filepipe.stores.db, filepipe.stores.csv, filepipe.table
        target = {"read": (filepipe.table.DataTable, "live_rows_matching"),
                  "meta_write": (filepipe.meta.rows.RowMeta, "write"),
                  "data_write": (filepipe.stores.db.TableStoreDB, "upsert_rows"),
                  "flush": (filepipe.stores.csv.TableStoreCSV, "write_file"),
                  "func": (sys.modules[__name__], "per_user")}[kill_at]
        killer(*target)
        if kill_at == "func":
            steps[0].func = per_user
    if phase != "rerun":
        events.store_chunk(df, processed_idx=events.get_metadata()[["user_id", "event_id"]]
                           if phase == "update" else None)
    report = run_steps(ds, steps)
    print("PROCESSED", sum(s.processed for s in report.steps.values()), "FAILED", report.failed)
''')


pytestmark = pytest.mark.backends("sqlite", "postgresql")


def _child(root: Path, url: str, phase: str, kill_at: str = "none", n: int = 1) -> subprocess.CompletedProcess:
    script = root / "child.py"
    script.write_text(SCRIPT)
    return subprocess.run([sys.executable, str(script), str(root), url, phase, kill_at, str(n)],
                          capture_output=True, text=True, timeout=120)


def _expected(url: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    con = engine.connect()
    events = pd.read_sql("SELECT * FROM events", con)
    users = events.groupby("user_id", as_index=False).agg(n=("event_id", "count"), total=("v", "sum"))
    groups = users.assign(grp=users["user_id"].str[:1]).groupby("grp", as_index=False).agg(
        total=("total", "sum"))
    got_users = pd.read_sql("SELECT * FROM users", con)
    con.close()
    engine.dispose()
    return users, groups, got_users


def _check_consistent(root: Path, url: str) -> None:
    users, groups, got_users = _expected(url)
    pd.testing.assert_frame_equal(got_users.sort_values("user_id").reset_index(drop=True),
                                  users.sort_values("user_id").reset_index(drop=True),
                                  check_dtype=False)
    got_groups = pd.read_csv(root / "groups.csv").sort_values("grp").reset_index(drop=True)
    pd.testing.assert_frame_equal(got_groups, groups.sort_values("grp").reset_index(drop=True),
                                  check_dtype=False)


@pytest.mark.parametrize("phase,kill_at,n", [
    ("load", "read", 2),          # while reading a batch's input rows
    ("load", "func", 3),          # inside the user's function
    ("load", "meta_write", 3),    # after a batch's data was written, before its meta
    ("update", "data_write", 2),
    ("update", "func", 2),
    ("update", "flush", 1),       # meta committed, CSV output not yet written
])
def test_killed_run_is_completed_by_the_next(tmp_path: Path, meta_url: str, phase: str, kill_at: str,
                                             n: int) -> None:
    if phase == "update":
        done = _child(tmp_path, meta_url, "load")
        assert done.returncode == 0, done.stderr
    killed = _child(tmp_path, meta_url, phase, kill_at, n)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    rerun = _child(tmp_path, meta_url, "rerun")
    assert rerun.returncode == 0, rerun.stderr
    _check_consistent(tmp_path, meta_url)
    again = _child(tmp_path, meta_url, "rerun")
    assert again.returncode == 0, again.stderr
    assert "PROCESSED 0 FAILED 0" in again.stdout
