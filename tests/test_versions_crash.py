"""Crash safety of the history (issue #10): a run with history on, killed with SIGKILL at
chosen points, leaves an index whose next run (in another process) completes it, after
which the run log and the history agree with what the sources and outputs hold:

* the latest state (`versions.as_of`) of every table equals its current data;
* no version is orphaned (every row version belongs to a logged run, within its clock
  range) or missing (each table's row versions, replayed in clock order by this test,
  give its current rows); no row version is stored twice (temp files left in the
  history folder are checked on their own);
* every row version holds the content its hash (the one the meta recorded) says;
* the version that recovers the killed run's changes shows outputs consistent with the
  sources wherever the killed run had finished computing them;
* a run after that changes nothing and makes no version.

The kill points: inside the user's function (after a batch committed), after a batch's
meta write (before its commit), during `HistoryStore.append` (before a segment, and with
the segment's temp file written but not renamed), before `MetaIndex.log_run` (everything
committed, the run not logged), inside it between two segments (with the run made to write
its segments itself, `INBOX_LIMIT = 0`) and before the Excel output's file write (its meta
committed). The child runs the pipeline, then reads every table's history (as `filepipe
show --as-of` would), so that segment writes happen whether the run or the first read
writes them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from versions_helpers import age, assert_state, state

from filepipe import versions
from filepipe.app import FilepipeApp, load_app
from filepipe.hashing import hash_rows

SYSTEM = ["_fp_seq", "_fp_run", "_fp_kind", "_fp_hash"]
KEYS = {"orders": ["order_id"], "copy": ["order_id"], "totals": ["customer"]}

PIPELINE = textwrap.dedent('''
    import os, signal
    from filepipe import BatchTransform, Catalog, FilepipeApp, Pipeline, Table
    from filepipe.stores import TableStoreExcel, TableStoreFiledir

    _calls = [0]

    def copy_rows(orders):
        _calls[0] += 1
        if os.environ.get("FP_KILL_IN_FUNC") == str(_calls[0]):
            os.kill(os.getpid(), signal.SIGKILL)
        return orders[["order_id", "customer", "amount"]]

    def totals(orders):
        return orders.groupby("customer", as_index=False)["amount"].sum()

    catalog = Catalog({
        "orders": Table(TableStoreFiledir("inbox/{order_id}.json"), max_delete_share=None),
        "copy": Table(TableStoreExcel("out/report.xlsx", sheet="Orders", primary_keys=["order_id"])),
        "totals": Table(TableStoreFiledir("out/totals/{customer}.json")),
    })
    app = FilepipeApp(catalog, Pipeline([
        BatchTransform(copy_rows, inputs=["orders"], outputs=["copy"], chunk_size=3),
        BatchTransform(totals, inputs=["orders"], outputs=["totals"], transform_keys=["customer"],
                       chunk_size=2),
    ]))
''')

# argv: pipeline, target, n, when ("before"/"after" the n-th call)
CHILD = textwrap.dedent('''
    import os, signal, sys
    import pyarrow.parquet
    import filepipe.history.segments, filepipe.meta.index, filepipe.meta.rows, filepipe.stores.excel
    from filepipe import versions
    from filepipe.app import load_app

    pipeline, target, n, when = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    if os.environ.get("FP_SEGMENTS_IN_RUN"):
        import filepipe.meta.history
        filepipe.meta.history.INBOX_LIMIT = 0  # every logged run moves the inbox to Parquet
    if target == "func":
        os.environ["FP_KILL_IN_FUNC"] = str(n)
    else:
        owner, name = {
            "meta_write": (filepipe.meta.rows.RowMeta, "write"),
            "append": (filepipe.history.segments.HistoryStore, "append"),
            "parquet_write": (pyarrow.parquet, "write_table"),
            "log_run": (filepipe.meta.index.MetaIndex, "log_run"),
            "excel_write": (filepipe.stores.excel.TableStoreExcel, "write_file"),
        }[target]
        original, calls = getattr(owner, name), [0]

        def wrapped(*args, **kwargs):
            calls[0] += 1
            if calls[0] == n and when == "before":
                os.kill(os.getpid(), signal.SIGKILL)
            result = original(*args, **kwargs)
            if calls[0] == n and when == "after":
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        setattr(owner, name, wrapped)
    app = load_app(pipeline)
    report = app.run()
    for table in ("orders", "copy", "totals"):  # as `filepipe show TABLE --as-of ...` would
        versions.as_of(app.ds, table, report.run_id)
    print("NOT KILLED", report.run_id)
''')


def write_order(root: Path, order_id: int, customer: str, amount: float) -> None:
    path = root / "inbox" / f"{order_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"customer": customer, "amount": amount}))
    age(path)


def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "inbox").mkdir(parents=True)
    (root / "pipeline.py").write_text(PIPELINE)
    (root / "child.py").write_text(CHILD)
    for i in range(1, 9):
        write_order(root, i, "abc"[i % 3], float(i))
    return root


def edit(root: Path) -> None:
    """An update: an amount changed, an order deleted, one added (a new customer), one
    moved to another customer."""
    write_order(root, 2, "c", 20.0)
    (root / "inbox" / "3.json").unlink()
    write_order(root, 9, "d", 9.0)
    write_order(root, 5, "a", 5.0)


def kill_child(root: Path, target: str, n: int, when: str) -> None:
    env = dict(os.environ)
    if target.endswith("@run"):  # the run itself writes the segments (in MetaIndex.log_run)
        target = target.removesuffix("@run")
        env["FP_SEGMENTS_IN_RUN"] = "1"
    child = subprocess.run([sys.executable, str(root / "child.py"), str(root / "pipeline.py"), target, str(n), when],
                           capture_output=True, text=True, timeout=120, cwd=root, env=env)
    assert child.returncode == -signal.SIGKILL, (target, n, when, child.returncode, child.stdout, child.stderr)


def sources(root: Path) -> pd.DataFrame:
    rows = [{"order_id": p.stem, **json.loads(p.read_text())} for p in sorted((root / "inbox").glob("*.json"))]
    return pd.DataFrame(rows, columns=["order_id", "customer", "amount"])


def copy_of(orders: pd.DataFrame) -> pd.DataFrame:
    return orders[["order_id", "customer", "amount"]]


def totals_of(orders: pd.DataFrame) -> pd.DataFrame:
    sums: dict[str, float] = {}
    for rec in orders.to_dict("records"):
        sums[rec["customer"]] = sums.get(rec["customer"], 0.0) + float(rec["amount"])
    return pd.DataFrame(sorted(sums.items()), columns=["customer", "amount"])


def all_versions(app: FilepipeApp, table: str) -> pd.DataFrame:
    versions.as_of(app.ds, table)  # a read: versions waiting in the index move to Parquet first
    return app.ds.meta.history.store.read(table)


def replay(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The rows row versions leave, applied one by one in clock order."""
    live: dict[tuple, dict] = {}
    columns = [c for c in rows.columns if c not in SYSTEM]
    for rec in rows.sort_values("_fp_seq", kind="stable").to_dict("records"):
        key = tuple(rec[k] for k in keys)
        if rec["_fp_kind"] == "deleted":
            assert key in live, f"deletion of {key}, which was not live"
            del live[key]
        else:
            assert (rec["_fp_kind"] == "added") == (key not in live), f"{rec['_fp_kind']} of {key}"
            live[key] = {c: rec[c] for c in columns}
    return pd.DataFrame(list(live.values()), columns=columns)


def check_history(app: FilepipeApp, root: Path) -> dict[int, versions.Version]:
    """Log, history and data agree (see the module doc); returns the versions by id."""
    ds = app.ds
    log = {v.run_id: v for v in versions.log(ds)}
    assert all(v.finished is not None for v in log.values())
    ordered = sorted(log.values(), key=lambda v: v.run_id)
    for before, after in zip(ordered, ordered[1:]):
        assert before.seq_to <= after.seq_from, (before, after)
    expected = {"orders": sources(root)}
    expected["copy"] = copy_of(expected["orders"])
    expected["totals"] = totals_of(expected["orders"])
    for table, keys in KEYS.items():
        data = app.table(table).get_data()
        assert_state(data, expected[table], keys, f"{table}: data")
        assert_state(versions.as_of(ds, table), expected[table], keys, f"{table}: latest as_of")
        rows = all_versions(app, table)
        assert not rows.duplicated(["_fp_seq", *keys]).any(), f"{table}: a row version stored twice"
        assert not rows["_fp_seq"].duplicated().any(), f"{table}: two row versions with one clock value"
        for run_id, seqs in rows.groupby("_fp_run")["_fp_seq"]:
            assert run_id in log, f"{table}: row versions of run {run_id}, which the log does not know"
            v = log[run_id]
            assert seqs.min() > v.seq_from and seqs.max() <= v.seq_to, (table, run_id, v)
        assert_state(replay(rows, keys), expected[table], keys, f"{table}: replayed versions")
        live = rows[rows["_fp_kind"] != "deleted"]
        content = live[[c for c in live.columns if c not in SYSTEM]]
        bad = live[hash_rows(content) != live["_fp_hash"].to_numpy(dtype="int64")]
        assert bad.empty, f"{table}: row versions whose content is not what their hash says:\n{bad}"
    assert [p for p in root.rglob(".~filepipe-*") if ".filepipe" not in p.relative_to(root).parts] == []
    return log


def consistent_at(app: FilepipeApp, run_id: int, tables: list[str]) -> None:
    """At version `run_id`, `tables` hold what their step makes of the orders then."""
    orders = versions.as_of(app.ds, "orders", run_id)
    make = {"copy": copy_of, "totals": totals_of}
    for t in tables:
        assert_state(versions.as_of(app.ds, t, run_id), make[t](orders), KEYS[t], f"{t} as of {run_id}")


SCENARIOS = [
    # phase, target, n, when, tables the killed run had finished computing
    pytest.param("load", "func", 2, "before", [], id="load-in-user-function"),
    pytest.param("update", "func", 2, "before", [], id="update-in-user-function"),
    pytest.param("update", "meta_write", 3, "after", [], id="after-a-batch-meta-write"),
    pytest.param("update", "append", 2, "before", ["copy", "totals"], id="before-a-history-segment"),
    pytest.param("update", "parquet_write", 1, "after", ["copy", "totals"], id="segment-temp-file-written"),
    pytest.param("update", "log_run", 1, "before", ["copy", "totals"], id="before-log-run"),
    pytest.param("update", "append@run", 2, "after", ["copy", "totals"], id="in-log-run-between-segments"),
    pytest.param("load", "log_run", 1, "before", ["copy", "totals"], id="load-before-log-run"),
    pytest.param("update", "excel_write", 1, "before", ["copy"], id="before-the-excel-output-write"),
]


@pytest.mark.parametrize("phase,target,n,when,finished", SCENARIOS)
def test_killed_run_leaves_log_and_history_consistent(tmp_path: Path, phase: str, target: str, n: int,
                                                       when: str, finished: list[str]) -> None:
    root = project(tmp_path)
    pipeline = str(root / "pipeline.py")
    before: dict[int, pd.DataFrame] = {}
    if phase == "update":
        app = load_app(pipeline)
        try:
            report = app.run()
            assert report.ok and report.run_id == 1
            before = {1: sources(root)}
        finally:
            app.ds.meta_dbconn.dispose()
        edit(root)
    kill_child(root, target, n, when)

    app = load_app(pipeline)
    try:
        report = app.run()
        assert report.ok, report.summary()
        log = check_history(app, root)
        killed = [r for r in log if r not in before]
        assert killed, "no version after the killed run"
        # the versions before the crash are intact
        for run_id, orders in before.items():
            assert_state(versions.as_of(app.ds, "orders", run_id), orders, ["order_id"], f"orders as of {run_id}")
            consistent_at(app, run_id, ["copy", "totals"])
        # the first version after them holds what the killed run committed
        consistent_at(app, min(killed), finished)
        for run_id in killed:
            prev = max([r for r in log if r < run_id], default=None)
            for t, keys in KEYS.items():
                old = state(versions.as_of(app.ds, t, prev), keys) if prev else {}
                new = state(versions.as_of(app.ds, t, run_id), keys)
                d = versions.diff(app.ds, t, run=run_id).counts
                assert d == {"added": len(set(new) - set(old)), "deleted": len(set(old) - set(new)),
                             "changed": sum(1 for k in set(old) & set(new) if old[k] != new[k])}, (t, run_id)
        again = app.run()
        assert again.run_id is None and not again.changed, again.summary()
    finally:
        app.ds.meta_dbconn.dispose()


def test_a_killed_segment_write_leaves_no_temp_file(tmp_path: Path) -> None:
    root = project(tmp_path)
    kill_child(root, "parquet_write", 1, "after")
    app = load_app(str(root / "pipeline.py"))
    try:
        assert app.run().ok
        for table in KEYS:
            versions.as_of(app.ds, table)
        history = app.ds.meta.history.root
        assert history is not None and history.is_dir()
        assert list(history.rglob(".~filepipe-*")) == [], "temp files left in the history folder"
    finally:
        app.ds.meta_dbconn.dispose()


def test_log_names_the_tables_a_recovered_version_changed(tmp_path: Path) -> None:
    root = project(tmp_path)
    kill_child(root, "log_run", 1, "before")
    app = load_app(str(root / "pipeline.py"))
    try:
        assert app.run().ok
        for table in KEYS:
            runs = sorted(set(all_versions(app, table)["_fp_run"]))
            assert [v.run_id for v in versions.log(app.ds, table=table)] == runs[::-1], table
    finally:
        app.ds.meta_dbconn.dispose()


# --- a crash loses no version of any table, whichever tables the next process opens -------

DB_PIPELINE = textwrap.dedent('''
    import os, signal, sys
    import pandas as pd
    from sqlalchemy import Column, Integer, String
    from filepipe import BatchTransform, Catalog, DataStore, DBConn, Pipeline, Table, build_compute, run_steps
    from filepipe.stores import TableStoreDB

    calls = [0]

    def per_user(events):
        calls[0] += 1
        if os.environ.get("FP_KILL_IN_FUNC") == str(calls[0]):
            os.kill(os.getpid(), signal.SIGKILL)
        return events.groupby("user", as_index=False).agg(total=("v", "sum"))

    def open_index(root):
        db = DBConn(f"sqlite:///{root}/db.sqlite")
        catalog = Catalog({
            "events": Table(TableStoreDB("events", db, [Column("user", String, primary_key=True),
                                                       Column("event_id", Integer, primary_key=True),
                                                       Column("v", Integer)])),
            "users": Table(TableStoreDB("users", db, [Column("user", String, primary_key=True),
                                                     Column("total", Integer)])),
        })
        return db, catalog, DataStore(db)

    def run(root, factor):
        """Write the events (v = factor * i), then run the step."""
        db, catalog, ds = open_index(root)
        steps = build_compute(ds, catalog, Pipeline([BatchTransform(per_user, inputs=["events"],
                                                                    outputs=["users"], chunk_size=2)]))
        catalog.get_datatable(ds, "events").store_chunk(pd.DataFrame(
            {"user": list("aabbccdd"), "event_id": [0, 1] * 4, "v": [factor * i for i in range(8)]}))
        run_steps(ds, steps)
        db.dispose()

    if __name__ == "__main__":  # the run killed in its second batch
        os.environ["FP_KILL_IN_FUNC"] = "2"
        run(sys.argv[1], 2)
''')


def test_a_process_opening_one_table_does_not_lose_other_tables_versions(tmp_path: Path) -> None:
    import importlib.util
    import sqlite3

    script = tmp_path / "db_pipeline.py"
    script.write_text(DB_PIPELINE)
    spec = importlib.util.spec_from_file_location("versions_crash_db_pipeline", script)
    assert spec is not None and spec.loader is not None
    pipeline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pipeline)

    pipeline.run(tmp_path, 1)
    killed = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True,
                            timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # another process only feeds the source: it opens no other table
    db, catalog, ds = pipeline.open_index(tmp_path)
    catalog.get_datatable(ds, "events").store_chunk(pd.DataFrame({"user": ["z"], "event_id": [0], "v": [1]}))
    db.dispose()
    pipeline.run(tmp_path, 2)  # the whole pipeline again: completes `users`

    con = sqlite3.connect(tmp_path / "db.sqlite")
    try:
        users = pd.read_sql("SELECT user, total FROM users", con)
        events = pd.read_sql("SELECT user, event_id, v FROM events", con)
    finally:
        con.close()
    assert_state(users, events.groupby("user", as_index=False).agg(total=("v", "sum")), ["user"], "users")
    db, _, ds = pipeline.open_index(tmp_path)
    try:
        assert_state(versions.as_of(ds, "events"), events, ["user", "event_id"], "events: latest as_of")
        assert_state(versions.as_of(ds, "users"), users, ["user"], "users: latest as_of")
    finally:
        db.dispose()
