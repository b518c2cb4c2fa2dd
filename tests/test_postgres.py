"""PostgreSQL as the metadata index: the writer lock across working copies (real `filepipe`
processes on a real server), and the bulk SQL paths (COPY into a temporary table, array
parameters) against the row-by-row ones SQLite and small batches take.

The engine suite itself runs on PostgreSQL too (tests marked ``backends("sqlite",
"postgresql")``, see conftest.py); this module holds what only PostgreSQL has.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from test_cli_subprocess import FILEPIPE

from filepipe import DBConn, sql
from filepipe.app import FilepipeApp, load_app
from filepipe.errors import LockedError

pytestmark = pytest.mark.backends("postgresql")

HOST = os.uname().nodename
PIPELINE = textwrap.dedent('''
    import os, time
    from pathlib import Path
    from filepipe import BatchTransform, Catalog, FilepipeApp, Pipeline, Table
    from filepipe.stores import TableStoreCSV, TableStoreFiledir

    SHARED = Path({shared!r})  # the data both working copies see (a shared drive)

    def totals(orders):
        hold = os.environ.get("FILEPIPE_TEST_HOLD")  # a folder: say "started", then wait
        if hold:
            Path(hold, "started").write_text(str(os.getpid()))
            deadline = time.monotonic() + 60
            while not Path(hold, "release").exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        return orders.groupby("customer", as_index=False)["amount"].sum()

    catalog = Catalog({{
        "orders": Table(TableStoreFiledir(SHARED / "inbox/{{order_id}}.json")),
        "totals": Table(TableStoreCSV(SHARED / "out/totals.csv", primary_keys=["customer"])),
    }})
    app = FilepipeApp(catalog, Pipeline([
        BatchTransform(totals, inputs=["orders"], outputs=["totals"], transform_keys=["customer"]),
    ]), meta={url!r})
''')


def _write_order(shared: Path, order_id: int, customer: str, amount: float) -> None:
    path = shared / "inbox" / f"{order_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"customer": customer, "amount": amount}))
    st = path.stat()  # older than the 2 s "racy" window: a no-op run reads nothing
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - 10_000_000_000))


def _expected(shared: Path) -> dict[str, float]:
    rows = [json.loads(p.read_text()) for p in (shared / "inbox").glob("*.json")]
    return pd.DataFrame(rows).groupby("customer")["amount"].sum().to_dict()


def _totals(shared: Path) -> dict[str, float]:
    df = pd.read_csv(shared / "out/totals.csv")
    return dict(zip(df["customer"], df["amount"]))


@pytest.fixture
def copies(tmp_path: Path, meta_url: str) -> tuple[Path, Path, Path]:
    """Two working copies of one project (`a`, `b`) whose index is one PostgreSQL database
    and whose data is one shared folder; the shared folder holds 4 orders."""
    shared = tmp_path / "shared"
    for i, (customer, amount) in enumerate([("x", 1.0), ("y", 2.0), ("x", 4.0), ("z", 8.0)]):
        _write_order(shared, i, customer, amount)
    found = []
    for name in ("a", "b"):
        root = tmp_path / name
        root.mkdir()
        (root / "pipeline.py").write_text(PIPELINE.format(shared=str(shared), url=meta_url))
        found.append(root)
    return found[0], found[1], shared


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FILEPIPE, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})})


@pytest.fixture
def holding(tmp_path: Path) -> Iterator[object]:
    """Starts `filepipe run` in a working copy and returns once its step is running (it
    holds the writer lock then, and waits for `release()`); kills it at the end if alive."""
    started: list[subprocess.Popen[str]] = []

    class Holder:
        def start(self, root: Path) -> subprocess.Popen[str]:
            hold = tmp_path / f"hold{len(started)}"
            hold.mkdir()
            self.hold = hold
            proc = subprocess.Popen([*FILEPIPE, "run"], cwd=root, text=True, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE,
                                    env={**os.environ, "FILEPIPE_TEST_HOLD": str(hold)})
            started.append(proc)
            deadline = time.monotonic() + 60
            while not (hold / "started").exists():
                assert proc.poll() is None, f"the holder ended early: {proc.communicate()}"
                assert time.monotonic() < deadline, "the holder's step did not start within 60 s"
                time.sleep(0.02)
            return proc

        def release(self) -> None:
            (self.hold / "release").touch()

    yield Holder()
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=60)


def test_a_second_writer_from_another_working_copy_exits_2_naming_the_holder(copies, holding, meta_url) -> None:
    a, b, shared = copies
    proc = holding.start(a)
    second = _cli("run", cwd=b)
    assert second.returncode == 2, second.stdout + second.stderr
    assert second.stdout == ""
    index = sa.engine.make_url(meta_url).render_as_string(hide_password=True)
    assert second.stderr == (f"Error: another filepipe is already running on {b.resolve()}'s index, {index} "
                             f"(pid {proc.pid} on {HOST}); wait for it to finish or stop it\n")
    assert not (shared / "out/totals.csv").exists()  # the second one wrote nothing

    holding.release()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    assert _totals(shared) == _expected(shared) == {"x": 5.0, "y": 2.0, "z": 8.0}
    # right afterwards the other working copy writes; the holder's run left it nothing to do
    after = _cli("run", cwd=b)
    assert after.returncode == 0, after.stdout + after.stderr
    assert after.stdout.startswith("nothing to do in "), after.stdout


def test_a_killed_holder_frees_the_lock_at_once(copies, holding) -> None:
    a, b, shared = copies
    assert _cli("run", cwd=a).returncode == 0
    _write_order(shared, 4, "y", 16.0)
    proc = holding.start(a)  # a run with work to do, killed in the middle of its step
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    killed = time.monotonic()
    app = load_app(str(b / "pipeline.py"))
    while True:  # the server ends the killed session as its socket closes
        try:
            with app.lock(wait=0):
                break
        except LockedError:
            assert time.monotonic() - killed < 2.0, "the lock outlived its holder by 2 s"
            time.sleep(0.01)
    after = _cli("run", cwd=b)
    assert after.returncode == 0, after.stdout + after.stderr
    assert _totals(shared) == _expected(shared) == {"x": 5.0, "y": 18.0, "z": 8.0}
    assert _cli("run", cwd=a).stdout.startswith("nothing to do in ")


def _app(meta_url: str, root: Path) -> FilepipeApp:
    from filepipe import Catalog, Pipeline

    return FilepipeApp(Catalog({}), Pipeline([]), meta=meta_url, root=root)


def test_lock_wait_semantics(meta_url: str, tmp_path: Path) -> None:
    first, second = _app(meta_url, tmp_path / "a"), _app(meta_url, tmp_path / "b")
    with first.lock():
        start = time.monotonic()
        with pytest.raises(LockedError, match=rf"'s index, .* \(pid {os.getpid()} on {HOST}\); wait for"):
            with second.lock(wait=0.5):
                pass
        assert 0.45 <= time.monotonic() - start < 5
        start = time.monotonic()
        with pytest.raises(LockedError):
            with second.lock(wait=0):
                pass
        assert time.monotonic() - start < 2  # no wait
    with second.lock(wait=0):  # released on leaving the block
        pass

    # a holder that finishes while another waits: the waiter gets the lock
    import threading

    release = threading.Event()
    held = threading.Event()

    def hold() -> None:
        with first.lock():
            held.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(30)
    threading.Timer(0.3, release.set).start()
    start = time.monotonic()
    with second.lock(wait=20):
        waited = time.monotonic() - start
    thread.join(30)
    assert 0.2 <= waited < 10


def test_two_indexes_on_one_server_have_two_locks(meta_url: str, new_db, tmp_path: Path) -> None:
    other = new_db()
    with _app(meta_url, tmp_path / "a").lock(), _app(other, tmp_path / "b").lock():
        pass  # neither waits for the other


def test_the_sqlite_index_keeps_its_lock_file(tmp_path: Path) -> None:
    app = _app(f"sqlite:///{tmp_path / '.filepipe/meta.sqlite'}", tmp_path)
    with app.lock():
        assert (tmp_path / ".filepipe/lock").read_text() == f"pid {os.getpid()} on {HOST}"


# --- the bulk paths --------------------------------------------------------------------------


def _table(conn: DBConn) -> sa.Table:
    table = sa.Table("t", sa.MetaData(), sa.Column("k", sa.String, primary_key=True),
                     sa.Column("n", sa.BigInteger), sa.Column("x", sa.Float),
                     sa.Column("doc", sa.JSON), sa.Column("at", sa.DateTime))
    table.create(conn.engine)
    return table


def _rows(n: int, offset: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"k": [f"k{i}" for i in range(offset, offset + n)],
                         "n": [float(i) if i % 7 else None for i in range(offset, offset + n)],  # ints with NaN
                         "x": [i / 3 for i in range(offset, offset + n)],
                         "doc": [{"i": i, "s": "é\"'\\\t"} if i % 5 else "text" for i in range(offset, offset + n)],
                         "at": pd.date_range("2026-01-01", periods=n, freq="s")})


@pytest.mark.backends("sqlite", "postgresql")
def test_bulk_upsert_update_delete_and_lookup_read_back_exactly(dbconn: DBConn) -> None:
    n = sql.COPY_ROWS * 3 + 11  # above COPY_ROWS: COPY on PostgreSQL
    table = _table(dbconn)
    df = _rows(n)
    with dbconn.begin() as conn:
        sql.upsert(conn, table, df, ["k"])
        # an upsert of the same keys again, with a key given twice: the last one wins
        again = pd.concat([df.iloc[:n // 2], df.iloc[[0]]], ignore_index=True).assign(x=-1.0)
        again.loc[len(again) - 1, "x"] = -2.0
        sql.upsert(conn, table, again, ["k"])
    with dbconn.begin() as conn:
        back = sql.select_where_in(conn, table, ["k", "n", "x", "doc", "at"], df[["k"]], ["k"])
    back = back.set_index("k").loc[df["k"]]
    assert back["n"].isna().tolist() == df["n"].isna().tolist()
    assert back["n"].dropna().astype("int64").tolist() == df["n"].dropna().astype("int64").tolist()
    assert back["x"].iloc[0] == -2.0 and (back["x"].iloc[1:n // 2] == -1.0).all()
    assert back["x"].iloc[n // 2:].tolist() == df["x"].iloc[n // 2:].tolist()
    assert back["doc"].tolist() == df["doc"].tolist()
    assert (back["at"].to_numpy() == df["at"].to_numpy()).all()

    with dbconn.begin() as conn:
        gone = df.iloc[::2]
        sql.delete_keys(conn, table, gone[["k"]], ["k"])
        sql.update_by_keys(conn, table, df.iloc[1::2][["k"]].assign(x=7.5), ["k"])
    with dbconn.begin() as conn:
        left = sql.select_all(conn, table, ["k", "x"])
    assert sorted(left["k"]) == sorted(df["k"].iloc[1::2]) and (left["x"] == 7.5).all()


@pytest.mark.backends("sqlite", "postgresql")
def test_a_first_load_with_a_key_given_twice_keeps_the_last(dbconn: DBConn) -> None:
    # an empty table is loaded by COPY straight into it (PostgreSQL), unless a key repeats
    table = _table(dbconn)
    df = _rows(sql.COPY_ROWS + 50)
    df = pd.concat([df, df.iloc[[3]].assign(x=-3.0)], ignore_index=True)
    with dbconn.begin() as conn:
        sql.upsert(conn, table, df, ["k"])
        back = sql.select_all(conn, table, ["k", "x"])
    assert len(back) == len(df) - 1
    assert back.set_index("k")["x"]["k3"] == -3.0


@pytest.mark.backends("sqlite", "postgresql")
def test_lookups_of_many_and_few_keys_of_two_columns(dbconn: DBConn) -> None:
    table = sa.Table("p", sa.MetaData(), sa.Column("a", sa.Integer, primary_key=True),
                     sa.Column("b", sa.String, primary_key=True), sa.Column("v", sa.Integer))
    table.create(dbconn.engine)
    n = sql.TEMP_TABLE_ABOVE + 300
    df = pd.DataFrame({"a": [i % 50 for i in range(n)], "b": [f"b{i}" for i in range(n)], "v": range(n)})
    with dbconn.begin() as conn:
        sql.upsert(conn, table, df, ["a", "b"])
        for size in (1, 3, sql.COPY_ROWS + 1, n):  # arrays, then a temporary table
            want = df.iloc[::max(1, n // size)].head(size)
            got = sql.select_where_in(conn, table, ["a", "b", "v"], pd.concat([want, want])[["a", "b"]],
                                      ["a", "b"])
            assert sorted(got["v"]) == sorted(want["v"]), size
            one = sql.select_where_in(conn, table, ["v"], want[["a"]].drop_duplicates(), ["a"])
            assert len(one) == len(df[df["a"].isin(want["a"])])


@pytest.mark.backends("sqlite", "postgresql")
def test_long_table_and_step_names(ds) -> None:
    """PostgreSQL keeps 63 bytes of a name: meta tables and indexes of long table and step
    names (beyond it with their prefixes) get names of their own, and work across runs."""
    from filepipe import BatchTransform, Catalog, Pipeline, Table, build_compute, run_steps
    from filepipe.stores import TableStoreMemory

    long = "orders_of_every_customer_in_every_region_and_every_month_x"  # 58 characters
    assert len(f"ix_fp_rows__{long}_customer") > 63

    def totals(orders: pd.DataFrame) -> pd.DataFrame:
        return orders.groupby("customer", as_index=False)["amount"].sum()

    catalog = Catalog({
        long: Table(TableStoreMemory(["order_id"], columns=["order_id", "customer", "amount"])),
        long + "_y": Table(TableStoreMemory(["customer"], columns=["customer", "amount"])),
    })
    steps = build_compute(ds, catalog, Pipeline([
        BatchTransform(totals, inputs=[long], outputs=[long + "_y"], transform_keys=["customer"],
                       name="totals_" + long)]))
    orders = catalog.get_datatable(ds, long)
    orders.store_chunk(pd.DataFrame({"order_id": [1, 2, 3], "customer": ["a", "b", "a"], "amount": [1, 2, 4]}))
    assert run_steps(ds, steps).ok
    orders.store_chunk(pd.DataFrame({"order_id": [3], "customer": ["b"], "amount": [4]}))  # a move
    assert run_steps(ds, steps).ok
    got = catalog.get_datatable(ds, long + "_y").get_data()
    assert dict(zip(got["customer"], got["amount"])) == {"a": 1, "b": 6}
    assert not run_steps(ds, steps).changed
    names = sa.inspect(ds.meta_dbconn.engine).get_table_names()
    assert all(len(n.encode()) <= 63 for n in names) or ds.meta_dbconn.engine.dialect.name == "sqlite"
    assert len({n for n in names if n.startswith("fp_")}) == len([n for n in names if n.startswith("fp_")])


def test_servers_of_killed_sessions_are_reaped_and_live_ones_kept(tmp_path: Path) -> None:
    # tests/pgserver.py: a session killed before it could stop its server leaves a folder
    # naming its (dead) pid; the next session removes it, and never one of a live session
    from pgserver import FOLDER_PREFIX, OWNER_FILE, reap_orphans

    dead = subprocess.Popen(["true"])
    dead.wait()
    for name, owner in (("dead", dead.pid), ("live", os.getpid())):
        folder = tmp_path / f"{FOLDER_PREFIX}{name}"
        (folder / "data").mkdir(parents=True)
        (folder / OWNER_FILE).write_text(str(owner))
    reap_orphans(root=str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{FOLDER_PREFIX}live"]


def test_a_project_on_a_server_index_keeps_its_versions_in_its_own_folder(tmp_path: Path,
                                                                         project_index: str) -> None:
    """An index on PostgreSQL has no file to keep its history beside: the project's
    `.filepipe/history` does (before, such a project kept no versions at all)."""
    from test_cli import copy_sales

    from filepipe import versions

    root = copy_sales(tmp_path / "sales")
    app = load_app(str(root / "pipeline.py"))
    try:
        assert app.meta_url == project_index
        assert app.run().ok
        customers = versions.as_of(app.ds, "customers")  # refused when no history is kept
        assert len(customers) > 0
        assert sorted((root / ".filepipe" / "history").rglob("*.parquet")), "no version on disk"
    finally:
        app.ds.meta_dbconn.dispose()
