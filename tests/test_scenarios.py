"""The 18 behaviour scenarios of docs/design.md, appendix B, one test each.

Every test runs on a real metadata index (the `ds` fixture), SQLite and PostgreSQL, with
TableStoreDB tables in that same database; a few are also parametrized over
TableStoreMemory. The user's functions are wrapped by a `Recorder` that keeps a copy of
every input frame they get, so the tests can assert how often a function was called and
which keys it saw.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal
from sqlalchemy import JSON, Column, Integer, String

from filepipe import (
    BatchGenerate,
    BatchTransform,
    Catalog,
    ChangeList,
    DataStore,
    DBConn,
    Pipeline,
    Table,
    build_compute,
    run_steps,
    run_steps_changelist,
)
from filepipe.errors import DuplicateKeysError
from filepipe.frames import SMALL_FRAME
from filepipe.stores import TableStoreDB, TableStoreMemory

KINDS = ["db", "memory"]
pytestmark = pytest.mark.backends("sqlite", "postgresql")


# --- helpers ------------------------------------------------------------------------------


class Env:
    """A catalog whose tables live in the DataStore's own SQLite database (or in memory)."""

    def __init__(self, ds: DataStore, kind: str = "db") -> None:
        self.ds, self.kind = ds, kind
        self.catalog = Catalog({})

    def table(self, name: str, *columns: Column):
        if self.kind == "db":
            store = TableStoreDB(name, self.ds.meta_dbconn, list(columns))
        else:
            store = TableStoreMemory([c.name for c in columns if c.primary_key],
                                     columns=[c.name for c in columns])
        self.catalog.add_datatable(name, Table(store))
        return self.catalog.get_datatable(self.ds, name)

    def dt(self, name: str):
        return self.catalog.get_datatable(self.ds, name)

    def build(self, *steps):
        return build_compute(self.ds, self.catalog, Pipeline(list(steps)))


class Recorder:
    """Wraps user functions; keeps a copy of the input frames of every call.

    `functools.wraps` keeps the wrapped function's name and source for the code version.
    """

    def __init__(self) -> None:
        self.calls: list[list[pd.DataFrame]] = []

    def wrap(self, func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(*frames: pd.DataFrame, **kwargs: Any) -> Any:
            self.calls.append([f.copy() for f in frames])
            return func(*frames, **kwargs)

        return wrapper

    def __len__(self) -> int:
        return len(self.calls)

    def reset(self) -> None:
        self.calls.clear()

    def seen(self, cols: Sequence[str] | str, i: int = 0) -> set:
        """Distinct values of `cols` (a tuple per row for several) in input `i` over all calls."""
        out: set = set()
        for frames in self.calls:
            f = frames[i]
            if isinstance(cols, str):
                out |= set(f[cols].tolist()) if len(f) else set()
            else:
                out |= set(f[list(cols)].itertuples(index=False, name=None)) if len(f) else set()
        return out


def int_pk(name: str = "id") -> Column:
    return Column(name, Integer, primary_key=True)


def sorted_rows(df: pd.DataFrame, keys: Sequence[str], columns: Sequence[str] | None = None):
    cols = list(columns) if columns is not None else list(df.columns)
    return df[cols].sort_values(list(keys)).reset_index(drop=True)


def assert_rows(dt, expected: pd.DataFrame) -> None:
    """The table's rows equal `expected` (order and dtypes aside)."""
    got = dt.get_data()
    keys = dt.primary_keys
    assert sorted(got.columns) == sorted(expected.columns), (list(got.columns), list(expected.columns))
    if expected.empty:
        assert got.empty, got
        return
    assert_frame_equal(sorted_rows(got, keys, expected.columns), sorted_rows(expected, keys),
                       check_dtype=False)


def live_meta(dt) -> pd.DataFrame:
    m = dt.get_metadata()
    return m.sort_values(dt.primary_keys).reset_index(drop=True)


def all_meta(dt) -> pd.DataFrame:
    m = dt.get_metadata(include_deleted=True)
    return m.sort_values(dt.primary_keys).reset_index(drop=True)


def meta_by_key(dt, key: str = "id") -> dict:
    """Meta rows (deleted ones too) by key, as dicts with None for nulls (NaN != NaN)."""
    return {r[key]: {k: (None if _isna(v) else v) for k, v in r.items()}
            for r in all_meta(dt).to_dict("records")}


def _isna(v: Any) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def db_snapshot(ds: DataStore, skip: Sequence[str] = ()) -> dict[str, list]:
    """Every row of every table in the database (data tables and meta alike)."""
    import sqlalchemy as sa

    with ds.meta_dbconn.engine.connect() as c:
        names = sa.inspect(c).get_table_names()
        return {n: sorted((tuple(r) for r in c.exec_driver_sql(f'SELECT * FROM "{n}"')), key=repr)
                for n in sorted(names) if n not in skip}


def processed(report) -> int:
    return sum(s.processed for s in report.steps.values())


def ids_of(df: pd.DataFrame, col: str = "id") -> set:
    return set(df[col].tolist())


def frame(rows: Iterable[dict] | dict) -> pd.DataFrame:
    return pd.DataFrame(rows)


def identity(df: pd.DataFrame) -> pd.DataFrame:
    return df


# --- 1. no-op rerun -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_s01_noop_rerun(ds: DataStore, kind: str) -> None:
    env = Env(ds, kind)
    src = env.table("src", int_pk(), Column("a", Integer))
    out = env.table("out", int_pk(), Column("a", Integer))
    rec = Recorder()
    steps = env.build(BatchTransform(rec.wrap(identity), inputs=["src"], outputs=["out"]))
    data = frame({"id": range(10), "a": range(10, 20)})
    src.store_chunk(data)

    r1 = run_steps(ds, steps)
    assert len(rec) == 1 and ids_of(rec.calls[0][0]) == set(range(10))
    assert processed(r1) == 10 and r1.ok
    assert_rows(out, data)
    assert steps[0].pending_count() == 0

    before_db = db_snapshot(ds)
    before_meta = (all_meta(src), all_meta(out))
    before_rows = out.get_data()
    rec.reset()
    r2 = run_steps(ds, steps)
    assert len(rec) == 0
    assert processed(r2) == 0 and r2.ok and not r2.changed
    assert db_snapshot(ds) == before_db  # no row meta, step meta, data or run log written
    assert_frame_equal(all_meta(src), before_meta[0])
    assert_frame_equal(all_meta(out), before_meta[1])
    assert_frame_equal(out.get_data(), before_rows)
    assert steps[0].pending_count() == 0


def test_s01_noop_rerun_writes_no_meta(ds: DataStore) -> None:
    """docs/design.md §5.12: "A no-op run writes nothing: no meta rewrite" (the whole index compared).

    (Regression: the run after a writing run used to rewrite the high-water marks.)
    """
    env = Env(ds)
    src = env.table("src", int_pk(), Column("a", Integer))
    env.table("out", int_pk(), Column("a", Integer))
    steps = env.build(BatchTransform(identity, inputs=["src"], outputs=["out"]))
    src.store_chunk(frame({"id": range(10), "a": range(10)}))
    run_steps(ds, steps)
    before = db_snapshot(ds)
    assert processed(run_steps(ds, steps)) == 0
    assert db_snapshot(ds) == before


def test_s01_full_run_after_changelist_runs_moves_its_marks(ds: DataStore) -> None:
    """Changes already handled by change-list runs are read once by the next full run,
    which moves its marks past them; they are not scanned again by every later run."""
    env = Env(ds)
    src = env.table("src", int_pk(), Column("a", Integer))
    out = env.table("out", int_pk(), Column("a", Integer))
    rec = Recorder()
    steps = env.build(BatchTransform(rec.wrap(identity), inputs=["src"], outputs=["out"]))
    src.store_chunk(frame({"id": range(10), "a": range(10)}))
    run_steps(ds, steps)
    for i in (3, 4):
        idx = src.store_chunk(frame({"id": [i], "a": [100 + i]}))
        run_steps_changelist(ds, steps, ChangeList.create("src", idx))
    assert_rows(out, frame({"id": range(10), "a": [0, 1, 2, 103, 104, 5, 6, 7, 8, 9]}))

    rec.reset()
    report = run_steps(ds, steps)
    assert processed(report) == 0 and len(rec) == 0 and not report.changed
    with ds.meta.begin() as conn:
        marks = steps[0].meta.state(conn)[2]
        assert marks == {"src": ds.meta.current_seq(conn)}
    before = db_snapshot(ds)
    assert processed(run_steps(ds, steps)) == 0
    assert db_snapshot(ds) == before


def test_code_change_after_changelist_runs_recomputes_every_key(ds: DataStore) -> None:
    """Keys a change-list run has done are redone when the step's code changes."""
    env = Env(ds)
    src = env.table("src", int_pk(), Column("a", Integer))
    out = env.table("out", int_pk(), Column("a", Integer))

    def v1(df: pd.DataFrame) -> pd.DataFrame:
        return df

    def v2(df: pd.DataFrame) -> pd.DataFrame:
        return df.assign(a=df["a"] * 100)

    steps = env.build(BatchTransform(v1, inputs=["src"], outputs=["out"], name="step"))
    idx = src.store_chunk(frame({"id": [1, 2, 3], "a": [1, 2, 3]}))
    run_steps_changelist(ds, steps, ChangeList.create("src", idx))  # the step's first run
    assert_rows(out, frame({"id": [1, 2, 3], "a": [1, 2, 3]}))

    steps = env.build(BatchTransform(v2, inputs=["src"], outputs=["out"], name="step"))
    assert steps[0].pending_count() == 3
    assert processed(run_steps(ds, steps)) == 3
    assert_rows(out, frame({"id": [1, 2, 3], "a": [100, 200, 300]}))


def test_changed_transform_keys_recompute_with_the_new_keys(ds: DataStore) -> None:
    env = Env(ds)
    src = env.table("src", int_pk(), Column("g", String), Column("a", Integer))
    out = env.table("out", Column("g", String, primary_key=True), Column("s", Integer))

    def total(df: pd.DataFrame) -> pd.DataFrame:
        return df.groupby("g", as_index=False).agg(s=("a", "sum"))

    def build(keys: list[str]) -> list:
        return env.build(BatchTransform(total, inputs=["src"], outputs=["out"], name="step",
                                        transform_keys=keys))

    src.store_chunk(frame({"id": [1, 2, 3], "g": ["x", "x", "y"], "a": [1, 2, 3]}))
    assert run_steps(ds, build(["g"])).ok
    steps = build([])  # now a whole-table step
    src.store_chunk(frame({"id": [4], "g": ["y"], "a": [10]}))
    report = run_steps(ds, steps)
    assert report.ok, report.summary()
    assert_rows(out, frame({"g": ["x", "y"], "s": [3, 13]}))
    assert processed(run_steps(ds, steps)) == 0


def test_rows_written_behind_filepipes_back_are_not_read(ds: DataStore) -> None:
    """A step reads the rows its input's meta knows as live: a row inserted into the SQL
    table directly (no meta) does not reach the function until it is stored properly."""
    env = Env(ds)
    ev = env.table("ev", Column("user_id", String, primary_key=True),
                   Column("event_id", Integer, primary_key=True), Column("v", Integer))
    out = env.table("per_user", Column("user_id", String, primary_key=True), Column("n", Integer))

    def per_user(df: pd.DataFrame) -> pd.DataFrame:
        return df.groupby("user_id", as_index=False).agg(n=("v", "size"))

    steps = env.build(BatchTransform(per_user, inputs=["ev"], outputs=["per_user"]))
    ev.store_chunk(frame({"user_id": ["u1", "u2"], "event_id": [1, 1], "v": [1, 1]}))
    run_steps(ds, steps)
    ev.delete_by_idx(frame({"user_id": ["u1"], "event_id": [1]}))
    with ds.meta.begin() as conn:
        conn.exec_driver_sql("INSERT INTO ev (user_id, event_id, v) VALUES ('u1', 2, 5)")
    report = run_steps(ds, steps)
    assert report.ok, report.summary()
    assert_rows(out, frame({"user_id": ["u2"], "n": [1]}))


# --- 2. modify values ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_s02_modify_values(ds: DataStore, kind: str) -> None:
    env = Env(ds, kind)
    src = env.table("src", int_pk(), Column("a", Integer))
    out = env.table("out", int_pk(), Column("a", Integer))
    rec = Recorder()
    steps = env.build(BatchTransform(rec.wrap(identity), inputs=["src"], outputs=["out"]))
    data = frame({"id": range(10), "a": range(10)})
    src.store_chunk(data)
    run_steps(ds, steps)

    changed = src.store_chunk(data.assign(a=data["a"] + 1))
    assert ids_of(changed) == set(range(10))
    assert steps[0].pending_count() == 10
    rec.reset()
    report = run_steps(ds, steps)
    assert processed(report) == 10
    assert rec.seen("id") == set(range(10))
    assert_rows(out, data.assign(a=data["a"] + 1))
    assert steps[0].pending_count() == 0


# --- 3. partial change, two inputs -----------------------------------------------------------


def add_inputs(in1: pd.DataFrame, in2: pd.DataFrame) -> pd.DataFrame:
    m = in1.merge(in2, on="id")
    return pd.DataFrame({"id": m["id"], "z": m["x"] + m["y"]})


def test_s03_partial_change_two_inputs(ds: DataStore) -> None:
    env = Env(ds)
    in1 = env.table("in1", int_pk(), Column("x", Integer))
    in2 = env.table("in2", int_pk(), Column("y", Integer))
    out = env.table("out", int_pk(), Column("z", Integer))
    rec = Recorder()
    steps = env.build(BatchTransform(rec.wrap(add_inputs), inputs=["in1", "in2"], outputs=["out"]))
    ids = list(range(10))
    in1.store_chunk(frame({"id": ids, "x": [i * 10 for i in ids]}))
    in2.store_chunk(frame({"id": ids, "y": ids}))
    run_steps(ds, steps)
    assert_rows(out, frame({"id": ids, "z": [i * 11 for i in ids]}))
    before = meta_by_key(out)

    time.sleep(0.01)
    changed = in2.store_chunk(frame({"id": [0, 4, 6], "y": [100, 400, 600]}))
    assert ids_of(changed) == {0, 4, 6}
    rec.reset()
    report = run_steps(ds, steps)
    assert processed(report) == 3
    assert rec.seen("id", 0) == {0, 4, 6} and rec.seen("id", 1) == {0, 4, 6}
    new_y = {0: 100, 4: 400, 6: 600}
    expected_z = {i: i * 10 + new_y.get(i, i) for i in ids}
    assert_rows(out, frame({"id": ids, "z": [expected_z[i] for i in ids]}))
    after = meta_by_key(out)
    for i in ids:
        if i in (0, 4, 6):
            assert after[i]["hash"] != before[i]["hash"]
            assert after[i]["update_ts"] > before[i]["update_ts"]
            assert after[i]["create_ts"] == before[i]["create_ts"]
        else:  # untouched rows: the very same meta (timestamps, hash, seq)
            assert after[i] == before[i], i


# --- 4. delete input rows ---------------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["int", "str"])  # str: regression (empty fetches were float64)
@pytest.mark.parametrize("kind", KINDS)
def test_s04_delete_input_rows(ds: DataStore, kind: str, key_type: str) -> None:
    env = Env(ds, kind)
    key = Column("id", Integer if key_type == "int" else String, primary_key=True)
    src = env.table("src", key, Column("a", Integer))
    out = env.table("out", key, Column("a", Integer))
    rec = Recorder()
    steps = env.build(BatchTransform(rec.wrap(identity), inputs=["src"], outputs=["out"]))
    ids = list(range(10)) if key_type == "int" else [f"k{i}" for i in range(10)]
    data = frame({"id": ids, "a": range(10)})
    src.store_chunk(data)
    run_steps(ds, steps)
    before = meta_by_key(out)

    changed = src.store_chunk(data.head(5), processed_idx=data[["id"]])
    assert ids_of(changed) == set(ids[5:])
    assert_rows(src, data.head(5))
    rec.reset()
    report = run_steps(ds, steps)
    assert report.ok, report.summary()
    assert rec.seen("id") <= set(ids[5:])  # nothing of the untouched keys is recomputed
    assert_rows(out, data.head(5))
    after = meta_by_key(out)
    for i in ids[:5]:
        assert after[i] == before[i]
    for i in ids[5:]:
        assert after[i]["delete_ts"] is not None, after[i]
    assert steps[0].pending_count() == 0


# --- 5. transform drops rows ------------------------------------------------------------------


def keep_below(df: pd.DataFrame, limit: int) -> pd.DataFrame:
    return df[df["id"] < limit]


@pytest.mark.parametrize("trigger", ["kwargs", "input_change"])
def test_s05_transform_drops_rows(ds: DataStore, trigger: str) -> None:
    env = Env(ds)
    src = env.table("src", int_pk(), Column("a", Integer))
    out = env.table("out", int_pk(), Column("a", Integer))
    data = frame({"id": range(10), "a": range(10)})
    src.store_chunk(data)
    state = {"limit": 100}

    def keep_state(df: pd.DataFrame) -> pd.DataFrame:  # reads its limit from outside its code
        return df[df["id"] < state["limit"]]

    if trigger == "kwargs":
        steps = env.build(BatchTransform(keep_below, inputs=["src"], outputs=["out"],
                                         kwargs={"limit": 100}, name="keep"))
    else:
        steps = env.build(BatchTransform(keep_state, inputs=["src"], outputs=["out"], name="keep"))
    run_steps(ds, steps)
    assert_rows(out, data)
    before = meta_by_key(out)

    if trigger == "kwargs":  # a new parameter: the function now returns only the first 5
        steps = env.build(BatchTransform(keep_below, inputs=["src"], outputs=["out"],
                                         kwargs={"limit": 5}, name="keep"))
        expected = data.head(5)
    else:  # same code; every input row changes and the function drops ids >= 5
        state["limit"] = 5
        src.store_chunk(data.assign(a=data["a"] + 1))
        expected = data.head(5).assign(a=data["a"].head(5) + 1)
    report = run_steps(ds, steps)
    assert report.ok and processed(report) == 10
    assert_rows(out, expected)
    after = meta_by_key(out)
    for i in range(5, 10):
        assert not pd.isna(after[i]["delete_ts"])
    if trigger == "kwargs":  # the 5 re-emitted rows are identical: not rewritten
        for i in range(5):
            assert after[i] == before[i]
    assert processed(run_steps(ds, steps)) == 0


def test_s05_first_run_batch_replaces_rows_an_earlier_batch_wrote_under_its_keys(ds: DataStore) -> None:
    """A first run over many keys skips the output lookup while no batch wrote outside its
    own keys. The first batch here writes a row under a key of a later batch (the victim),
    so later batches look again: the victim's batch, not returning it, deletes it."""
    env = Env(ds)
    src = env.table("src", int_pk(), Column("a", Integer))
    out = env.table("out", int_pk(), Column("a", Integer))
    n = SMALL_FRAME + 44  # more keys than the engine bothers to skip lookups for
    src.store_chunk(frame({"id": range(n), "a": range(n)}))  # three batches of 100 ids
    victim: list[int] = []

    def spill(df: pd.DataFrame) -> pd.DataFrame:
        if not victim:  # the first batch: a row under the first id of another batch
            victim.append(min(set(range(n)) - set(df["id"])))
            return pd.concat([df, frame({"id": victim, "a": [-1]})])
        return df[df["id"] != victim[0]]

    step = BatchTransform(spill, inputs=["src"], outputs=["out"], chunk_size=100)
    assert run_steps(ds, env.build(step)).ok
    kept = [i for i in range(n) if i != victim[0]]
    assert_rows(out, frame({"id": kept, "a": kept}))
    assert meta_by_key(out)[victim[0]]["delete_ts"] is not None


def test_s05_first_run_where_two_input_keys_are_one_output_key(ds: DataStore) -> None:
    """String ids "7" and "007" are two transform keys of the step and one Integer key of
    its output: the batch that comes second must see the row the first wrote, so the
    result is the one a run looking up every batch's outputs gives, in either order."""
    env = Env(ds)
    src = env.table("src", Column("id", String, primary_key=True), Column("a", Integer))
    out = env.table("out", int_pk(), Column("a", Integer))
    ids = [str(i) for i in range(SMALL_FRAME + 44)] + ["007"]
    src.store_chunk(frame({"id": ids, "a": range(len(ids))}))
    calls: list[set[str]] = []

    def as_int(df: pd.DataFrame) -> pd.DataFrame:  # "7" yields no row, "007" yields row 7
        calls.append(set(df["id"]))
        df = df[df["id"] != "7"]
        return frame({"id": df["id"].astype(int), "a": df["a"]})

    assert run_steps(ds, env.build(BatchTransform(as_int, inputs=["src"], outputs=["out"],
                                                  chunk_size=100))).ok
    first = next(i for i, seen in enumerate(calls) if seen & {"7", "007"})
    deleted = "007" in calls[first] and "7" not in calls[first]  # 7 written, then redone
    assert (7 in ids_of(out.get_data())) is not deleted
    assert len(out.get_data()) == len(ids) - 1 - deleted


# --- 6. the change set store_chunk returns -----------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_s06_store_chunk_change_set(ds: DataStore, kind: str) -> None:
    env = Env(ds, kind)
    t = env.table("t", int_pk(), Column("a", Integer))
    data = frame({"id": range(10), "a": range(10)})
    t.store_chunk(data)
    before = meta_by_key(t)

    new = frame({"id": range(1, 11), "a": list(range(1, 11))})
    new.loc[new["id"] == 1, "a"] = 100  # id 1 modified, id 10 new, 2..9 the same
    changed = t.store_chunk(new, processed_idx=frame({"id": range(11)}))
    assert sorted(changed["id"].tolist()) == [0, 1, 10]
    assert list(changed.columns) == ["id"]
    assert_rows(t, new)
    after = meta_by_key(t)
    for i in range(2, 10):
        assert after[i] == before[i]
    assert not pd.isna(after[0]["delete_ts"])
    assert after[1]["hash"] != before[1]["hash"] and after[1]["create_ts"] == before[1]["create_ts"]
    assert pd.isna(after[10]["delete_ts"])

    # the same rows again, columns reordered and as floats: nothing changed (docs/design.md §2:
    # column order and equivalent dtypes do not change a row's hash)
    same = new[["a", "id"]].astype({"a": "float64"})
    assert t.store_chunk(same, processed_idx=frame({"id": range(11)})).empty
    assert meta_by_key(t) == after


# --- 7. one-to-many, then many-to-one ---------------------------------------------------------


def explode(lists: pd.DataFrame) -> pd.DataFrame:
    rows = [{"id": r.id, "pos": pos, "value": v}
            for r in lists.itertuples() for pos, v in enumerate(r.items)]
    return pd.DataFrame(rows, columns=["id", "pos", "value"])


def pack(items: pd.DataFrame) -> pd.DataFrame:
    items = items.sort_values(["id", "pos"])
    rows = [{"id": i, "items": [int(v) for v in g["value"]]} for i, g in items.groupby("id")]
    return pd.DataFrame(rows, columns=["id", "items"])


@pytest.mark.parametrize("mode", ["run_steps", "changelist"])
@pytest.mark.parametrize("kind", KINDS)
def test_s07_one_to_many_many_to_one(ds: DataStore, kind: str, mode: str) -> None:
    env = Env(ds, kind)
    lists = env.table("lists", int_pk(), Column("items", JSON))
    items = env.table("items", int_pk(), int_pk("pos"), Column("value", Integer))
    packed = env.table("packed", int_pk(), Column("items", JSON))
    rec_ex, rec_pack = Recorder(), Recorder()
    steps = env.build(BatchTransform(rec_ex.wrap(explode), inputs=["lists"], outputs=["items"]),
                      BatchTransform(rec_pack.wrap(pack), inputs=["items"], outputs=["packed"]))
    data = frame({"id": range(10), "items": [[i * 10 + k for k in range(i % 3 + 1)]
                                              for i in range(10)]})
    lists.store_chunk(data)
    run_steps(ds, steps)
    assert len(items.get_data()) == sum(i % 3 + 1 for i in range(10))
    assert_rows(packed, data)

    def run(changed: pd.DataFrame) -> None:
        if mode == "run_steps":
            assert run_steps(ds, steps).ok
        else:
            run_steps_changelist(ds, steps, ChangeList.create("lists", changed))

    # delete parent 9: all its children and its packed row go
    rec_ex.reset(), rec_pack.reset()
    run(lists.delete_by_idx(frame({"id": [9]})))
    assert 9 not in ids_of(items.get_data())
    assert_rows(packed, data[data["id"] != 9])
    assert rec_ex.seen("id") <= {9} and rec_pack.seen("id") <= {9}

    # parent 4's list becomes empty: its children and packed row go
    rec_ex.reset(), rec_pack.reset()
    run(lists.store_chunk(frame({"id": [4], "items": [[]]})))
    assert rec_ex.seen("id") == {4}
    assert 4 not in ids_of(items.get_data())
    assert_rows(packed, data[~data["id"].isin([4, 9])])
    assert rec_pack.seen("id") <= {4}

    # a list that shrinks loses only its dropped children
    rec_ex.reset(), rec_pack.reset()
    run(lists.store_chunk(frame({"id": [2], "items": [[20]]})))
    kids = items.get_data()
    assert sorted(kids[kids["id"] == 2]["pos"].tolist()) == [0]
    assert rec_pack.seen("id") == {2}
    expected = data[~data["id"].isin([4, 9])].copy()
    expected.loc[expected["id"] == 2, "items"] = pd.Series([[20]], index=expected.index[expected["id"] == 2])
    assert_rows(packed, expected)
    assert processed(run_steps(ds, steps)) == 0


# --- 8. failure isolation and retry ------------------------------------------------------------


class Boom(RuntimeError):
    pass


def test_s08_failure_isolation_retry(ds: DataStore) -> None:
    env = Env(ds)
    src = env.table("src", int_pk(), Column("a", Integer))
    out = env.table("out", int_pk(), Column("a", Integer))
    rec = Recorder()
    state = {"fail_on": 3}

    def flaky(df: pd.DataFrame) -> pd.DataFrame:
        if state["fail_on"] in set(df["id"]):
            raise Boom(f"cannot handle id {state['fail_on']}")
        return df

    steps = env.build(BatchTransform(rec.wrap(flaky), inputs=["src"], outputs=["out"],
                                     chunk_size=1, name="flaky"))
    data = frame({"id": range(10), "a": range(10)})
    src.store_chunk(data)

    report = run_steps(ds, steps)
    assert len(rec) == 10  # one call per key
    assert_rows(out, data[data["id"] != 3])
    assert report.failed == 1 and not report.ok
    assert report.steps["flaky"].failed == 1
    assert any("cannot handle id 3" in e for e in report.steps["flaky"].errors)
    with ds.meta.begin() as conn:
        errors = steps[0].meta.errors(conn)
    assert errors["id"].tolist() == [3]
    assert "Boom" in errors["error"].iloc[0] and "cannot handle id 3" in errors["error"].iloc[0]
    assert steps[0].pending_count() == 1

    # still failing: retried (and recorded again) on every run
    rec.reset()
    report = run_steps(ds, steps)
    assert rec.seen("id") == {3} and report.failed == 1

    # the function stops raising (same code): the next run fills id 3 and only id 3
    state["fail_on"] = None
    rec.reset()
    report = run_steps(ds, steps)
    assert report.ok and processed(report) == 1
    assert len(rec) == 1 and rec.seen("id") == {3}
    assert_rows(out, data)
    with ds.meta.begin() as conn:
        assert steps[0].meta.errors(conn).empty
    assert steps[0].pending_count() == 0

    # a failing key keeps its previous output while the others move on
    before3 = meta_by_key(out)[3]
    state["fail_on"] = 3
    src.store_chunk(data.assign(a=data["a"] + 100))
    report = run_steps(ds, steps)
    assert report.failed == 1
    expected = data.assign(a=data["a"] + 100)
    expected.loc[expected["id"] == 3, "a"] = 3
    assert_rows(out, expected)
    assert meta_by_key(out)[3] == before3



@pytest.mark.parametrize("kind", ["db", "memory"])
def test_s08_failure_while_writing_leaves_outputs_untouched(ds: DataStore, kind: str) -> None:
    """The batch fails after its first output was written: both outputs keep their rows.

    (Regression: the memory output kept the failed batch's rows.)
    """
    env = Env(ds, kind)
    src = env.table("src", int_pk(), Column("a", Integer))
    o1 = env.table("o1", int_pk(), Column("a", Integer))
    o2 = env.table("o2", int_pk(), Column("a", Integer))
    state = {"bad": False}

    def two(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        second = df.copy()
        if state["bad"]:  # a key that cannot be stored as an integer: fails inside store_chunk
            second["id"] = ["x" if i == 1 else i for i in second["id"]]
        return df, second

    steps = env.build(BatchTransform(two, inputs=["src"], outputs=["o1", "o2"]))
    data = frame({"id": [1, 2], "a": [1, 2]})
    src.store_chunk(data)
    assert run_steps(ds, steps).ok
    state["bad"] = True
    src.store_chunk(data.assign(a=[10, 20]))
    report = run_steps(ds, steps)
    assert report.failed == 2
    assert_rows(o1, data)
    assert_rows(o2, data)


def test_s08_write_error_in_second_output_leaves_first_untouched(ds: DataStore) -> None:
    """o1 in memory, o2 in SQL with a NOT NULL column the function now violates.

    (Regression: o1 was written before o2's write failed and kept the failed batch's rows.)
    """
    env = Env(ds)
    src = env.table("src", int_pk(), Column("a", Integer))
    env.catalog.add_datatable("o1", Table(TableStoreMemory(["id"], columns=["id", "a"])))
    o1 = env.dt("o1")
    o2 = env.table("o2", int_pk(), Column("a", Integer, nullable=False))
    state = {"bad": False}

    def two(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        return df, (df.assign(a=None) if state["bad"] else df)

    steps = env.build(BatchTransform(two, inputs=["src"], outputs=["o1", "o2"]))
    data = frame({"id": [1, 2], "a": [1, 2]})
    src.store_chunk(data)
    assert run_steps(ds, steps).ok
    state["bad"] = True
    src.store_chunk(data.assign(a=[10, 20]))
    report = run_steps(ds, steps)
    # SQLite says "NOT NULL constraint failed", PostgreSQL "violates not-null constraint"
    assert report.failed == 2 and "NOT NULL" in report.steps["two"].errors[0].upper().replace("-", " ")
    assert_rows(o2, data)
    assert_rows(o1, data)


# --- 9. generator failure ---------------------------------------------------------------------


def test_s09_generator_failure(ds: DataStore) -> None:
    env = Env(ds)
    gen = env.table("gen", int_pk(), Column("a", Integer))
    state = {"mode": "full"}

    def produce():
        if state["mode"] == "full":
            for start in range(0, 20, 5):
                yield frame({"id": range(start, start + 5), "a": range(start, start + 5)})
        else:
            for k in range(3):  # three chunks of new rows (and one changed row), then it breaks
                ids = [100 + 2 * k, 101 + 2 * k]
                yield frame({"id": ids, "a": [0, 0]})
            yield frame({"id": [0], "a": [-1]}).iloc[0:0]  # (an empty chunk is fine too)
            raise Boom("source went away")

    steps = env.build(BatchGenerate(produce, outputs=["gen"], name="produce"))
    report = run_steps(ds, steps)
    assert report.ok
    assert ids_of(gen.get_data()) == set(range(20))
    before = meta_by_key(gen)

    state["mode"] = "broken"
    report = run_steps(ds, steps)
    assert not report.ok and report.failed >= 1
    assert any("source went away" in e for e in report.steps["produce"].errors)
    assert ids_of(gen.get_data()) == set(range(20)) | {100, 101, 102, 103, 104, 105}
    after = meta_by_key(gen)
    for i in range(20):  # nothing deleted as stale, nothing rewritten
        assert after[i] == before[i]


# --- 10. stale rows of a generator ------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_s10_generator_stale_rows(ds: DataStore, kind: str) -> None:
    env = Env(ds, kind)
    gen = env.table("gen", int_pk(), Column("a", Integer))
    state = {"start": 0}

    def window():
        ids = list(range(state["start"], state["start"] + 5))
        yield frame({"id": ids[:2], "a": [state["start"]] * 2})
        yield frame({"id": ids[2:], "a": [state["start"]] * 3})

    steps = env.build(BatchGenerate(window, outputs=["gen"]))
    previous = None
    for start in (0, 3, 10, 11, 11):
        state["start"] = start
        before = all_meta(gen) if gen.meta.exists else None
        report = run_steps(ds, steps)
        assert report.ok
        if start == previous:  # the same window again: nothing rewritten
            assert not report.changed
            assert_frame_equal(all_meta(gen), before)
        previous = start
        expected = frame({"id": range(start, start + 5), "a": [start] * 5})
        assert_rows(gen, expected)
        m = all_meta(gen)
        live = m[m["delete_ts"].isna()]
        assert ids_of(live) == set(range(start, start + 5))

    # a generator that yields nothing at all: nothing remains
    def nothing():
        yield from ()

    report = run_steps(ds, env.build(BatchGenerate(nothing, outputs=["gen"], name="window")))
    assert report.ok
    assert gen.get_data().empty and gen.get_metadata().empty


# --- 11. changelist run -----------------------------------------------------------------------


def plus_one(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(a=df["a"] + 1)


def times_two(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(a=df["a"] * 2)


def test_s11_changelist_run(ds: DataStore) -> None:
    env = Env(ds)
    src = env.table("src", int_pk(), Column("a", Integer))
    env.table("mid", int_pk(), Column("a", Integer))
    out = env.table("out", int_pk(), Column("a", Integer))
    other = env.table("other", int_pk(), Column("a", Integer))
    env.table("other_out", int_pk(), Column("a", Integer))
    r1, r2, r3 = Recorder(), Recorder(), Recorder()
    steps = env.build(BatchTransform(r1.wrap(plus_one), inputs=["src"], outputs=["mid"]),
                      BatchTransform(r2.wrap(times_two), inputs=["mid"], outputs=["out"]),
                      BatchTransform(r3.wrap(identity), inputs=["other"], outputs=["other_out"]))
    data = frame({"id": range(10), "a": range(10)})
    src.store_chunk(data)
    other.store_chunk(data)
    run_steps(ds, steps)
    before_out = meta_by_key(out)

    idx = src.store_chunk(frame({"id": [2, 3, 4], "a": [20, 30, 40]}))
    other.store_chunk(frame({"id": [7], "a": [70]}))  # not in the changelist: not processed
    r1.reset(), r2.reset(), r3.reset()
    produced = run_steps_changelist(ds, steps, ChangeList.create("src", idx))
    assert r1.seen("id") == {2, 3, 4}
    assert r2.seen("id") == {2, 3, 4}  # the downstream step, reached in the same call
    assert len(r3) == 0
    assert sorted(produced.changes) == ["mid", "out"]
    assert sorted(produced.get("mid")["id"].tolist()) == [2, 3, 4]
    assert sorted(produced.get("out")["id"].tolist()) == [2, 3, 4]
    expected = data.assign(a=(data["a"] + 1) * 2)
    expected.loc[expected["id"].isin([2, 3, 4]), "a"] = [42, 62, 82]
    assert_rows(out, expected)
    after_out = meta_by_key(out)
    for i in set(range(10)) - {2, 3, 4}:
        assert after_out[i] == before_out[i]

    # the changes were handled: a full run only picks up `other`'s change
    r1.reset(), r2.reset(), r3.reset()
    report = run_steps(ds, steps)
    assert len(r1) == 0 and len(r2) == 0 and r3.seen("id") == {7}
    assert processed(report) == 1


def test_s11_changelist_then_full_run_recomputes_nothing(ds: DataStore) -> None:
    """The seed's flow (only changelist runs), then one full run: nothing is stale.

    (Regression: changelist runs did not record the code version, so the next full run
    recomputed every key as if the code had changed.)
    """
    env = Env(ds)
    src = env.table("src", int_pk(), Column("a", Integer))
    env.table("out", int_pk(), Column("a", Integer))
    rec = Recorder()
    steps = env.build(BatchTransform(rec.wrap(identity), inputs=["src"], outputs=["out"]))
    idx = src.store_chunk(frame({"id": [1, 2, 3], "a": [1, 2, 3]}))
    run_steps_changelist(ds, steps, ChangeList.create("src", idx))
    assert rec.seen("id") == {1, 2, 3}
    rec.reset()
    assert steps[0].pending_count() == 0
    assert processed(run_steps(ds, steps)) == 0 and len(rec) == 0


def test_s11_changelist_then_full_run_deletes_stale_outputs(ds: DataStore) -> None:
    """(Regression: after changelist-only runs a full run visited live keys only.)"""
    env = Env(ds)
    src = env.table("src", int_pk(), Column("a", Integer))
    out = env.table("out", int_pk(), Column("a", Integer))
    steps = env.build(BatchTransform(identity, inputs=["src"], outputs=["out"]))
    idx = src.store_chunk(frame({"id": [1, 2], "a": [1, 2]}))
    run_steps_changelist(ds, steps, ChangeList.create("src", idx))
    src.delete_by_idx(frame({"id": [2]}))  # not fed to a changelist: the next full run's job
    assert run_steps(ds, steps).ok
    assert_rows(out, frame({"id": [1], "a": [1]}))


# --- 12. multi-output -------------------------------------------------------------------------


def clicks_and_types(events: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    counts = (events.assign(click=events["event_type"] == "click")
              .groupby("user_id", as_index=False)["click"].sum()
              .rename(columns={"click": "click_count"}))
    types = events.groupby(["user_id", "event_type"], as_index=False).size().rename(
        columns={"size": "n"})
    return counts, types


def test_s12_multi_output(ds: DataStore, new_db: Callable[[], str]) -> None:
    env = Env(ds)
    events = env.table("events", Column("user_id", String, primary_key=True),
                       Column("event_id", String, primary_key=True), Column("event_type", String))
    clicks = env.table("click_count", Column("user_id", String, primary_key=True),
                       Column("click_count", Integer))
    per_type = env.table("per_type", Column("user_id", String, primary_key=True),
                         Column("event_type", String, primary_key=True), Column("n", Integer))
    rec = Recorder()
    steps = env.build(BatchTransform(rec.wrap(clicks_and_types), inputs=["events"],
                                     outputs=["click_count", "per_type"]))
    assert steps[0].transform_keys == ["user_id"]
    events.store_chunk(frame({"user_id": ["1", "1", "1", "2"], "event_id": ["1", "2", "3", "1"],
                              "event_type": ["click", "view", "click", "click"]}))
    run_steps(ds, steps)
    assert_rows(clicks, frame({"user_id": ["1", "2"], "click_count": [2, 1]}))
    assert_rows(per_type, frame({"user_id": ["1", "1", "2"], "event_type": ["click", "view", "click"],
                                 "n": [2, 1, 1]}))
    before2 = (meta_by_key(clicks, "user_id")["2"], all_meta(per_type).query("user_id == '2'"))

    # user 1 no longer clicks: its (1, click) row of per_type goes; click_count keeps (1, 0)
    rec.reset()
    events.store_chunk(frame({"user_id": ["1", "1"], "event_id": ["1", "3"],
                              "event_type": ["view", "view"]}))
    run_steps(ds, steps)
    assert rec.seen("user_id") == {"1"}
    assert_rows(clicks, frame({"user_id": ["1", "2"], "click_count": [0, 1]}))
    assert_rows(per_type, frame({"user_id": ["1", "2"], "event_type": ["view", "click"], "n": [3, 1]}))
    assert meta_by_key(clicks, "user_id")["2"] == before2[0]
    assert_frame_equal(all_meta(per_type).query("user_id == '2'"), before2[1])

    # the seed tutorial, as its own API calls it (store_chunk + ChangeList + run_steps_changelist)
    from examples.seed_events import pipeline as seed

    catalog, sds, ssteps = seed.make_pipeline(new_db())
    seed.store_event(catalog, sds, ssteps, "1", "1", {"event_type": "click", "ip": "111.111.111.111"})
    assert_rows(catalog.get_datatable(sds, "click_count"), frame({"user_id": ["1"], "click_count": [1]}))
    assert_rows(catalog.get_datatable(sds, "ip"), frame({"user_id": ["1"], "ip": ["111.111.111.111"]}))
    seed.store_event(catalog, sds, ssteps, "1", "2", {"event_type": "click", "ip": "222.222.222.222"})
    assert_rows(catalog.get_datatable(sds, "click_count"), frame({"user_id": ["1"], "click_count": [2]}))
    assert_rows(catalog.get_datatable(sds, "ip"), frame({"user_id": ["1"], "ip": ["222.222.222.222"]}))
    seed.store_event(catalog, sds, ssteps, "1", "1", {"event_type": "clack", "ip": "333.333.333.333"})
    assert len(catalog.get_datatable(sds, "events").get_data()) == 2
    assert_rows(catalog.get_datatable(sds, "click_count"), frame({"user_id": ["1"], "click_count": [1]}))
    assert_rows(catalog.get_datatable(sds, "ip"), frame({"user_id": ["1"], "ip": ["333.333.333.333"]}))
    assert catalog.get_datatable(sds, "events").get_data()["event_id"].tolist() == ["2", "1"]
    sds.meta_dbconn.dispose()


# --- 13. code change ---------------------------------------------------------------------------


def code_v1(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(b=df["a"] * 2)


def code_v2(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(b=df["a"] * 3)


def scaled(df: pd.DataFrame, factor: int) -> pd.DataFrame:
    return df.assign(b=df["a"] * factor)


def test_s13_code_change(ds: DataStore, dbconn: DBConn) -> None:
    src_cols = [int_pk(), Column("a", Integer)]
    out_cols = [int_pk(), Column("a", Integer), Column("b", Integer)]

    def process(func: Callable, kwargs: dict | None = None):
        """A new process: fresh DBConn and DataStore on the same index, the step named "step"."""
        conn = DBConn(dbconn.url)
        pds = DataStore(conn)
        env = Env(pds)
        env.table("src", *src_cols)
        env.table("out", *out_cols)
        rec = Recorder()
        steps = env.build(BatchTransform(rec.wrap(func), inputs=["src"], outputs=["out"],
                                         kwargs=kwargs or {}, name="step"))
        return pds, env, steps, rec

    data = frame({"id": range(10), "a": range(10)})
    pds, env, steps, rec = process(code_v1)
    env.dt("src").store_chunk(data)
    run_steps(pds, steps)
    assert len(rec) == 1
    assert_rows(env.dt("out"), data.assign(b=data["a"] * 2))

    # unchanged function, new process: nothing pending
    pds, env, steps, rec = process(code_v1)
    assert steps[0].pending_count() == 0
    assert processed(run_steps(pds, steps)) == 0 and len(rec) == 0

    # changed body under the same step name: every key pending
    before = db_snapshot(pds)
    pds, env, steps, rec = process(code_v2)
    assert steps[0].pending_count() == 10
    assert db_snapshot(pds) == before  # counting what is pending writes nothing
    report = run_steps(pds, steps)
    assert processed(report) == 10 and rec.seen("id") == set(range(10))
    assert_rows(env.dt("out"), data.assign(b=data["a"] * 3))
    pds, env, steps, rec = process(code_v2)
    assert steps[0].pending_count() == 0

    # a parameter passed to the function changes: every key pending again
    pds, env, steps, rec = process(scaled, {"factor": 3})
    assert steps[0].pending_count() == 10
    run_steps(pds, steps)
    pds, env, steps, rec = process(scaled, {"factor": 3})
    assert steps[0].pending_count() == 0 and processed(run_steps(pds, steps)) == 0
    pds, env, steps, rec = process(scaled, {"factor": 5})
    assert steps[0].pending_count() == 10
    run_steps(pds, steps)
    assert rec.seen("id") == set(range(10))
    assert_rows(env.dt("out"), data.assign(b=data["a"] * 5))

    # in the same DataStore too: a second step object with another body
    env2 = Env(ds)
    env2.table("src", *src_cols)
    env2.table("out", *out_cols)
    rec = Recorder()
    steps = env2.build(BatchTransform(rec.wrap(code_v1), inputs=["src"], outputs=["out"], name="step"))
    assert steps[0].pending_count() == 10
    run_steps(ds, steps)
    assert rec.seen("id") == set(range(10))
    assert_rows(env2.dt("out"), data.assign(b=data["a"] * 2))


def test_s13_code_change_with_deleted_input(ds: DataStore) -> None:
    """A code change and a deleted input row in one run: the row's output goes.

    (Regression: a full recompute visited live input keys only.)
    """
    env = Env(ds)
    src = env.table("src", int_pk(), Column("a", Integer))
    out = env.table("out", int_pk(), Column("a", Integer), Column("b", Integer))
    src.store_chunk(frame({"id": [1, 2, 3], "a": [1, 2, 3]}))
    run_steps(ds, env.build(BatchTransform(code_v1, inputs=["src"], outputs=["out"], name="step")))
    src.delete_by_idx(frame({"id": [2]}))
    steps = env.build(BatchTransform(code_v2, inputs=["src"], outputs=["out"], name="step"))
    assert run_steps(ds, steps).ok
    assert_rows(out, frame({"id": [1, 3], "a": [1, 3], "b": [3, 9]}))  # id 2's output is stale


# --- 14. rows in last-change order -------------------------------------------------------------


def latest_per_user(events: pd.DataFrame) -> pd.DataFrame:
    last = events.groupby("user_id", as_index=False).last()
    return last[["user_id", "event_id"]].rename(columns={"event_id": "last_event"})


@pytest.mark.parametrize("kind", KINDS)
def test_s14_last_change_order(ds: DataStore, kind: str) -> None:
    env = Env(ds, kind)
    t = env.table("t", int_pk(), Column("a", String))
    t.store_chunk(frame({"id": [1], "a": ["x"]}))
    t.store_chunk(frame({"id": [2], "a": ["y"]}))
    assert t.get_data()["id"].tolist() == [1, 2]
    t.store_chunk(frame({"id": [1], "a": ["x2"]}))
    assert t.get_data()["id"].tolist() == [2, 1]
    t.store_chunk(frame({"id": [2], "a": ["y"]}))  # same content: not a change, order kept
    assert t.get_data()["id"].tolist() == [2, 1]

    # written together, then one rewritten
    u = env.table("u", int_pk(), Column("a", String))
    u.store_chunk(frame({"id": [1, 2], "a": ["x", "y"]}))
    u.store_chunk(frame({"id": [1], "a": ["z"]}))
    assert u.get_data()["id"].tolist() == [2, 1]

    # a step sees its input rows in the same order (the seed's "ip of the last event")
    ev = env.table("ev", Column("user_id", Integer, primary_key=True),
                   Column("event_id", Integer, primary_key=True), Column("ip", String))
    env.table("last", Column("user_id", Integer, primary_key=True), Column("last_event", Integer))
    rec = Recorder()
    steps = env.build(BatchTransform(rec.wrap(latest_per_user), inputs=["ev"], outputs=["last"]))
    ev.store_chunk(frame({"user_id": [1, 1], "event_id": [1, 2], "ip": ["a", "b"]}))
    ev.store_chunk(frame({"user_id": [1], "event_id": [1], "ip": ["c"]}))
    rec.reset()
    run_steps(ds, steps)
    assert rec.calls[0][0]["event_id"].tolist() == [2, 1]
    assert_rows(env.dt("last"), frame({"user_id": [1], "last_event": [1]}))


# --- 15. duplicate keys ------------------------------------------------------------------------


def duplicate_id(df: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([df, df[df["id"] == 2]], ignore_index=True)


def test_s15_duplicate_keys(ds: DataStore) -> None:
    env = Env(ds)
    t = env.table("t", int_pk(), Column("a", Integer))
    data = frame({"id": range(5), "a": range(5)})
    t.store_chunk(data)
    before = (db_snapshot(ds), all_meta(t))

    with pytest.raises(DuplicateKeysError, match=r"id=3"):
        t.store_chunk(frame({"id": [0, 3, 3, 7], "a": [9, 9, 8, 7]}))
    assert db_snapshot(ds) == before[0]
    assert_frame_equal(all_meta(t), before[1])
    assert_rows(t, data)

    # composite key: every key column named
    c = env.table("c", Column("user_id", String, primary_key=True),
                  Column("event_id", Integer, primary_key=True), Column("x", Integer))
    with pytest.raises(DuplicateKeysError) as err:
        c.store_chunk(frame({"user_id": ["u", "u", "v"], "event_id": [5, 5, 5], "x": [1, 2, 3]}))
    assert "user_id='u'" in str(err.value) and "event_id=5" in str(err.value)
    assert c.get_data().empty

    # a step returning a duplicated key: that batch fails with the key named, outputs unchanged
    out = env.table("out", int_pk(), Column("a", Integer))
    steps = env.build(BatchTransform(identity, inputs=["t"], outputs=["out"], name="ok"))
    run_steps(ds, steps)
    before_out = all_meta(out)
    t.store_chunk(data.assign(a=data["a"] + 1))
    steps = env.build(BatchTransform(duplicate_id, inputs=["t"], outputs=["out"], name="ok"))
    report = run_steps(ds, steps)
    assert report.failed == 5 and not report.ok
    assert any("id=2" in e and "Duplicate" in e for e in report.steps["ok"].errors), report.steps["ok"].errors
    assert_frame_equal(all_meta(out), before_out)
    assert_rows(out, data)
    with ds.meta.begin() as conn:
        errors = steps[0].meta.errors(conn)
    assert sorted(errors["id"].tolist()) == list(range(5))
    assert all("id=2" in e for e in errors["error"])


# --- 16. explicit transform keys over inputs sharing no key ------------------------------------


def cross(left: pd.DataFrame, right: pd.DataFrame) -> pd.DataFrame:
    m = left.merge(right, how="cross")
    return pd.DataFrame({"left_id": m["left_id"], "right_id": m["right_id"],
                         "prod": m["l"] * m["r"]})


@pytest.mark.parametrize("chunk_size", [1, 1000])
def test_s16_cross_product_keys(ds: DataStore, chunk_size: int) -> None:
    env = Env(ds)
    left = env.table("left", int_pk("left_id"), Column("l", Integer))
    right = env.table("right", int_pk("right_id"), Column("r", Integer))
    out = env.table("out", int_pk("left_id"), int_pk("right_id"), Column("prod", Integer))
    rec = Recorder()
    steps = env.build(BatchTransform(rec.wrap(cross), inputs=["left", "right"], outputs=["out"],
                                     transform_keys=["left_id", "right_id"], chunk_size=chunk_size))
    left.store_chunk(frame({"left_id": [0, 1, 2], "l": [1, 2, 3]}))
    right.store_chunk(frame({"right_id": [10, 11, 12, 13], "r": [1, 10, 100, 1000]}))
    report = run_steps(ds, steps)
    assert processed(report) == 12
    assert len(out.get_data()) == 12

    def expected() -> pd.DataFrame:
        return cross(left.get_data(), right.get_data())

    before = all_meta(out)
    rec.reset()
    left.store_chunk(frame({"left_id": [3], "l": [4]}))
    report = run_steps(ds, steps)
    assert processed(report) == 4  # one key per right row
    assert rec.seen("left_id", 0) == {3}
    if chunk_size == 1:
        assert len(rec) == 4
        pairs = [(f[0]["left_id"].tolist(), f[1]["right_id"].tolist()) for f in rec.calls]
        assert sorted(pairs) == [([3], [r]) for r in (10, 11, 12, 13)]
    assert_rows(out, expected())
    after = all_meta(out)
    assert_frame_equal(after[after["left_id"] != 3].reset_index(drop=True), before)

    # symmetric: one new right row recomputes one key per left row
    rec.reset()
    right.store_chunk(frame({"right_id": [14], "r": [7]}))
    report = run_steps(ds, steps)
    assert processed(report) == 4
    assert rec.seen("right_id", 1) == {14}
    assert_rows(out, expected())

    # deleting a left row removes its keys' outputs
    left.delete_by_idx(frame({"left_id": [0]}))
    report = run_steps(ds, steps)
    assert report.ok
    assert_rows(out, expected())
    assert processed(run_steps(ds, steps)) == 0



@pytest.mark.parametrize("kind", ["db", "memory"])
def test_s16_cross_product_one_side_empty(ds: DataStore, kind: str) -> None:
    """No right rows yet: no keys, no output, no crash; the first right row brings them.

    (Regression: with memory stores run_steps crashed with KeyError 'right_id'.)
    """
    env = Env(ds, kind)
    left = env.table("left", int_pk("left_id"), Column("l", Integer))
    right = env.table("right", int_pk("right_id"), Column("r", Integer))
    out = env.table("out", int_pk("left_id"), int_pk("right_id"), Column("prod", Integer))
    steps = env.build(BatchTransform(cross, inputs=["left", "right"], outputs=["out"],
                                     transform_keys=["left_id", "right_id"]))
    left.store_chunk(frame({"left_id": [0, 1], "l": [1, 2]}))
    report = run_steps(ds, steps)
    assert report.ok and out.get_data().empty
    right.store_chunk(frame({"right_id": [10], "r": [5]}))
    assert processed(run_steps(ds, steps)) == 2
    assert_rows(out, frame({"left_id": [0, 1], "right_id": [10, 10], "prod": [5, 10]}))


def test_s16_cross_product_both_sides_deleted(ds: DataStore) -> None:
    env = Env(ds)
    left = env.table("left", int_pk("left_id"), Column("l", Integer))
    right = env.table("right", int_pk("right_id"), Column("r", Integer))
    out = env.table("out", int_pk("left_id"), int_pk("right_id"), Column("prod", Integer))
    steps = env.build(BatchTransform(cross, inputs=["left", "right"], outputs=["out"],
                                     transform_keys=["left_id", "right_id"]))
    left.store_chunk(frame({"left_id": [0, 1], "l": [1, 2]}))
    right.store_chunk(frame({"right_id": [10, 11], "r": [5, 6]}))
    assert run_steps(ds, steps).ok
    left.delete_by_idx(frame({"left_id": [0]}))
    right.delete_by_idx(frame({"right_id": [10]}))
    assert run_steps(ds, steps).ok
    assert_rows(out, frame({"left_id": [1], "right_id": [11], "prod": [12]}))  # (0, 10) stays


# --- 17. group-by over a non-key column --------------------------------------------------------


def totals(orders: pd.DataFrame) -> pd.DataFrame:
    return (orders.groupby("customer", as_index=False)["amount"].sum()
            .rename(columns={"amount": "total"}))


@pytest.mark.parametrize("kind", KINDS)
def test_s17_group_by_non_key(ds: DataStore, kind: str) -> None:
    env = Env(ds, kind)
    orders = env.table("orders", int_pk("order_id"), Column("customer", String),
                       Column("amount", Integer))
    tot = env.table("totals", Column("customer", String, primary_key=True), Column("total", Integer))
    rec = Recorder()
    steps = env.build(BatchTransform(rec.wrap(totals), inputs=["orders"], outputs=["totals"],
                                     transform_keys=["customer"]))
    orders.store_chunk(frame({"order_id": [1, 2, 3, 4, 5, 6],
                              "customer": ["A", "A", "B", "B", "B", "C"],
                              "amount": [1, 2, 10, 20, 30, 100]}))
    run_steps(ds, steps)
    assert_rows(tot, frame({"customer": ["A", "B", "C"], "total": [3, 60, 100]}))

    def expected() -> pd.DataFrame:
        return totals(orders.get_data())

    # one order's amount changes: only its customer, with all of its orders
    rec.reset()
    orders.store_chunk(frame({"order_id": [4], "customer": ["B"], "amount": [21]}))
    report = run_steps(ds, steps)
    assert processed(report) == 1
    assert len(rec) == 1 and rec.seen("customer") == {"B"}
    assert sorted(rec.calls[0][0]["order_id"]) == [3, 4, 5]
    assert_rows(tot, frame({"customer": ["A", "B", "C"], "total": [3, 61, 100]}))

    # an order moves from A to B: exactly A and B
    rec.reset()
    orders.store_chunk(frame({"order_id": [2], "customer": ["B"], "amount": [2]}))
    report = run_steps(ds, steps)
    assert processed(report) == 2
    assert rec.seen("customer") == {"A", "B"}
    assert rec.seen("order_id") == {1, 2, 3, 4, 5}
    assert_rows(tot, frame({"customer": ["A", "B", "C"], "total": [1, 63, 100]}))

    # deleting C's last order deletes C's total
    rec.reset()
    orders.delete_by_idx(frame({"order_id": [6]}))
    report = run_steps(ds, steps)
    assert rec.seen("customer") <= {"C"}
    assert_rows(tot, frame({"customer": ["A", "B"], "total": [1, 63]}))
    assert not pd.isna(meta_by_key(tot, "customer")["C"]["delete_ts"])

    # moving A's last order to a new customer D: A's row goes, D's appears
    rec.reset()
    orders.store_chunk(frame({"order_id": [1], "customer": ["D"], "amount": [1]}))
    report = run_steps(ds, steps)
    assert rec.seen("customer") == {"D"}  # A has no rows left to show
    assert processed(report) == 2
    assert_rows(tot, expected())
    assert_rows(tot, frame({"customer": ["B", "D"], "total": [63, 1]}))
    assert processed(run_steps(ds, steps)) == 0


def test_s17_group_by_output_keyed_by_other_column(ds: DataStore) -> None:
    """Group by customer, but the output stays keyed by order_id (e.g. orders enriched per customer).

    (Regression: the output's row meta lacked the tracked `customer` column before its first
    write, and every batch failed with KeyError 'customer'.)
    """
    env = Env(ds)
    orders = env.table("orders", int_pk("order_id"), Column("customer", String),
                       Column("amount", Integer))
    copy = env.table("order_copy", int_pk("order_id"), Column("customer", String),
                     Column("amount", Integer))
    steps = env.build(BatchTransform(identity, inputs=["orders"], outputs=["order_copy"],
                                     transform_keys=["customer"]))
    data = frame({"order_id": [1, 2], "customer": ["A", "B"], "amount": [1, 2]})
    orders.store_chunk(data)
    report = run_steps(ds, steps)
    assert report.ok, report.steps["identity"].errors
    assert_rows(copy, data)
    orders.store_chunk(frame({"order_id": [1], "customer": ["B"], "amount": [1]}))  # moves A -> B
    assert run_steps(ds, steps).ok
    assert_rows(copy, orders.get_data())


def enrich(orders: pd.DataFrame, customers: pd.DataFrame) -> pd.DataFrame:
    region = dict(zip(customers["customer"], customers["region"]))
    names = sorted(set(orders["customer"]) | set(customers["customer"]))
    counts = orders["customer"].value_counts()
    return pd.DataFrame({"customer": names, "region": [region.get(c, "?") for c in names],
                         "n": [int(counts.get(c, 0)) for c in names]})



@pytest.mark.parametrize("kind", ["db", "memory"])
def test_s17_group_by_over_empty_input(ds: DataStore, kind: str) -> None:
    """Group by a non-key column of an input that is still empty while the other has rows.

    (Regression: with an empty TableStoreDB `orders`, run_steps crashed with
    "no such column: customer" scanning its row meta.)
    """
    env = Env(ds, kind)
    orders = env.table("orders", int_pk("order_id"), Column("customer", String),
                       Column("amount", Integer))
    customers = env.table("customers", Column("customer", String, primary_key=True),
                          Column("region", String))
    out = env.table("customer_orders", Column("customer", String, primary_key=True),
                    Column("region", String), Column("n", Integer))
    steps = env.build(BatchTransform(enrich, inputs=["orders", "customers"],
                                     outputs=["customer_orders"], transform_keys=["customer"]))
    customers.store_chunk(frame({"customer": ["A", "B"], "region": ["N", "S"]}))
    assert run_steps(ds, steps).ok
    assert_rows(out, frame({"customer": ["A", "B"], "region": ["N", "S"], "n": [0, 0]}))
    orders.store_chunk(frame({"order_id": [1, 2], "customer": ["B", "C"], "amount": [1, 1]}))
    assert run_steps(ds, steps).ok
    assert_rows(out, frame({"customer": ["A", "B", "C"], "region": ["N", "S", "?"], "n": [0, 1, 1]}))
    orders.store_chunk(frame({"order_id": [2], "customer": ["A"], "amount": [1]}))  # C -> A
    assert run_steps(ds, steps).ok
    assert_rows(out, frame({"customer": ["A", "B"], "region": ["N", "S"], "n": [1, 1]}))
    assert processed(run_steps(ds, steps)) == 0


def order_counts(orders: pd.DataFrame) -> pd.DataFrame:
    return orders.groupby("customer", as_index=False).size().rename(columns={"size": "n"})


def test_s17_two_group_by_readers_after_changelist_run(ds: DataStore) -> None:
    env = Env(ds)
    orders = env.table("orders", int_pk("order_id"), Column("customer", String),
                       Column("amount", Integer))
    tot = env.table("totals", Column("customer", String, primary_key=True), Column("total", Integer))
    cnt = env.table("counts", Column("customer", String, primary_key=True), Column("n", Integer))
    steps = env.build(BatchTransform(totals, inputs=["orders"], outputs=["totals"],
                                     transform_keys=["customer"]),
                      BatchTransform(order_counts, inputs=["orders"], outputs=["counts"],
                                     transform_keys=["customer"]))
    idx = orders.store_chunk(frame({"order_id": [1, 2], "customer": ["A", "B"], "amount": [1, 2]}))
    run_steps_changelist(ds, steps, ChangeList.create("orders", idx))  # the seed's first run
    orders.store_chunk(frame({"order_id": [1], "customer": ["B"], "amount": [1]}))  # A -> B
    assert run_steps(ds, steps).ok
    assert_rows(tot, frame({"customer": ["B"], "total": [3]}))
    assert_rows(cnt, frame({"customer": ["B"], "n": [2]}))  # fails: ("A", 1) stays


@pytest.mark.parametrize("kind", KINDS)
def test_s17_group_by_non_key_changelist(ds: DataStore, kind: str) -> None:
    """Scenario 17 driven by run_steps_changelist (the seed's API) instead of full runs."""
    env = Env(ds, kind)
    orders = env.table("orders", int_pk("order_id"), Column("customer", String),
                       Column("amount", Integer))
    tot = env.table("totals", Column("customer", String, primary_key=True), Column("total", Integer))
    rec = Recorder()
    steps = env.build(BatchTransform(rec.wrap(totals), inputs=["orders"], outputs=["totals"],
                                     transform_keys=["customer"]))
    orders.store_chunk(frame({"order_id": [1, 2, 3], "customer": ["A", "A", "B"],
                              "amount": [1, 2, 10]}))
    run_steps(ds, steps)
    assert_rows(tot, frame({"customer": ["A", "B"], "total": [3, 10]}))

    rec.reset()
    idx = orders.store_chunk(frame({"order_id": [3], "customer": ["B"], "amount": [11]}))
    produced = run_steps_changelist(ds, steps, ChangeList.create("orders", idx))
    assert rec.seen("customer") == {"B"} and sorted(rec.calls[0][0]["order_id"]) == [3]
    assert produced.get("totals")["customer"].tolist() == ["B"]

    rec.reset()
    idx = orders.store_chunk(frame({"order_id": [2], "customer": ["B"], "amount": [2]}))
    produced = run_steps_changelist(ds, steps, ChangeList.create("orders", idx))
    assert rec.seen("customer") == {"A", "B"}
    assert sorted(produced.get("totals")["customer"]) == ["A", "B"]
    assert_rows(tot, frame({"customer": ["A", "B"], "total": [1, 13]}))

    rec.reset()
    idx = orders.delete_by_idx(frame({"order_id": [1]}))
    run_steps_changelist(ds, steps, ChangeList.create("orders", idx))
    assert_rows(tot, frame({"customer": ["B"], "total": [13]}))
    assert processed(run_steps(ds, steps)) == 0


# --- 18. whole-table step ------------------------------------------------------------------------


def category_totals(items: pd.DataFrame, factors: pd.DataFrame) -> pd.DataFrame:
    scale = int(factors.loc[factors["name"] == "scale", "factor"].sum()) if len(factors) else 1
    out = items.groupby("category", as_index=False)["v"].sum()
    return pd.DataFrame({"category": out["category"], "total": out["v"] * scale})


@pytest.mark.parametrize("kind", KINDS)
def test_s18_whole_table(ds: DataStore, kind: str) -> None:
    env = Env(ds, kind)
    items = env.table("items", int_pk(), Column("category", String), Column("v", Integer))
    factors = env.table("factors", Column("name", String, primary_key=True), Column("factor", Integer))
    stats = env.table("stats", Column("category", String, primary_key=True), Column("total", Integer))
    rec = Recorder()
    steps = env.build(BatchTransform(rec.wrap(category_totals), inputs=["items", "factors"],
                                     outputs=["stats"]))
    assert steps[0].transform_keys == []
    items.store_chunk(frame({"id": range(6), "category": ["a", "a", "b", "b", "c", "c"],
                             "v": [1, 2, 3, 4, 5, 6]}))
    factors.store_chunk(frame({"name": ["scale"], "factor": [1]}))
    run_steps(ds, steps)
    assert len(rec) == 1
    assert_rows(stats, frame({"category": ["a", "b", "c"], "total": [3, 7, 11]}))

    def check_full_call() -> None:
        assert len(rec) == 1
        assert_frame_equal(sorted_rows(rec.calls[0][0], ["id"]),
                           sorted_rows(items.get_data(), ["id"]), check_dtype=False)
        assert_frame_equal(sorted_rows(rec.calls[0][1], ["name"]),
                           sorted_rows(factors.get_data(), ["name"]), check_dtype=False)

    # one changed row: the function sees every row of every input
    rec.reset()
    items.store_chunk(frame({"id": [0], "category": ["a"], "v": [10]}))
    run_steps(ds, steps)
    check_full_call()
    assert_rows(stats, frame({"category": ["a", "b", "c"], "total": [12, 7, 11]}))
    before_b = meta_by_key(stats, "category")["b"]

    # a change to the other input recomputes it too
    rec.reset()
    factors.store_chunk(frame({"name": ["scale"], "factor": [2]}))
    run_steps(ds, steps)
    check_full_call()
    assert_rows(stats, frame({"category": ["a", "b", "c"], "total": [24, 14, 22]}))

    # outputs not re-emitted are deleted; re-emitted unchanged rows are not rewritten
    rec.reset()
    items.delete_by_idx(frame({"id": [4, 5]}))
    run_steps(ds, steps)
    check_full_call()
    assert_rows(stats, frame({"category": ["a", "b"], "total": [24, 14]}))
    assert not pd.isna(meta_by_key(stats, "category")["c"]["delete_ts"])
    assert meta_by_key(stats, "category")["b"]["update_ts"] > before_b["update_ts"]  # 7 -> 14

    # a no-op run calls nothing and writes nothing
    rec.reset()
    snap = db_snapshot(ds)
    report = run_steps(ds, steps)
    assert len(rec) == 0 and processed(report) == 0
    assert db_snapshot(ds) == snap
    assert steps[0].pending_count() == 0

    # every input row gone: the outputs go too
    items.delete_by_idx(frame({"id": [0, 1, 2, 3]}))
    rec.reset()
    run_steps(ds, steps)
    assert stats.get_data().empty
