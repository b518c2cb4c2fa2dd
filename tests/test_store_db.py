"""TableStoreDB on a real database (SQLite and PostgreSQL): reads by a leading prefix of the
key, JSON, multi-row writes, and steps reading SQL inputs joined with their meta."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal
from sqlalchemy import JSON, Column, Integer, String

from filepipe import DBConn
from filepipe.sql import MAX_VARIABLES
from filepipe.stores import TableStoreDB

KEYS = ["user_id", "event_id"]
pytestmark = pytest.mark.backends("sqlite", "postgresql")


def events_schema() -> list[Column]:
    # the seed tutorial's events table (examples/seed_events), plus an Integer column
    return [
        Column("user_id", String(), primary_key=True),
        Column("event_id", String(), primary_key=True),
        Column("event", JSON()),
        Column("score", Integer()),
    ]


@pytest.fixture
def store(meta_url: str) -> TableStoreDB:
    conn = DBConn(meta_url)
    yield TableStoreDB(name="events", dbconn=conn, data_sql_schema=events_schema())
    conn.dispose()


def events_frame() -> pd.DataFrame:
    """Rows for several users; event ids repeat across users, "u1" is a prefix of "u10"."""
    rows = [
        ("u1", "e1", {"event_type": "click", "ip": "10.0.0.1"}, 1),
        ("u1", "e2", {"event_type": "view", "ip": "10.0.0.2", "tags": ["a", "b"]}, 2),
        ("u1", "e3", {"nested": {"x": 1.5, "y": None}}, 3),
        ("u10", "e1", {"event_type": "click", "ip": "10.0.0.10"}, 10),
        ("u2", "e1", {"event_type": "view"}, 20),
        ("u2", "e9", [1, 2, 3], 21),
        ("u3", "e2", {"event_type": "click", "ip": "::1"}, 30),
        ("ü4 x", "e1", {"unicode": "é"}, 40),
    ]
    return pd.DataFrame(rows, columns=["user_id", "event_id", "event", "score"])


def by_key(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(KEYS).reset_index(drop=True)


def test_read_rows_matching_by_user_id_returns_those_users_rows(store: TableStoreDB) -> None:
    data = events_frame()
    store.upsert_rows(data)
    users = ["u1", "u2", "nobody", "u1"]  # a repeat and a user without rows

    got = store.read_rows_matching(pd.DataFrame({"user_id": users}))

    assert got is not None
    assert list(got.columns) == ["user_id", "event_id", "event", "score"]
    # exactly the rows of u1 and u2 (not u10, not the other users' e1), all columns,
    # each row once, JSON decoded back to the values written
    expected = by_key(data[data["user_id"].isin(["u1", "u2"])])
    assert by_key(got)[KEYS].values.tolist() == [["u1", "e1"], ["u1", "e2"], ["u1", "e3"],
                                                 ["u2", "e1"], ["u2", "e9"]]
    assert by_key(got)["event"].tolist() == expected["event"].tolist()
    assert by_key(got)["score"].tolist() == [1, 2, 3, 20, 21]
    # the same frame (values and dtypes) read_rows gives for those rows' full keys
    full = store.read_rows(expected[KEYS])
    assert_frame_equal(by_key(got), by_key(full))
    assert_frame_equal(by_key(got), by_key(store.read_rows()[lambda d: d["user_id"].isin(users)]))
    assert got["user_id"].dtype == "str" and got["score"].dtype == "int64"


def test_read_rows_matching_sees_updates_and_unicode_keys(store: TableStoreDB) -> None:
    store.upsert_rows(events_frame())
    store.upsert_rows(pd.DataFrame({"user_id": ["u3", "u3"], "event_id": ["e2", "e7"],
                                    "event": [{"changed": True}, {"new": 1}], "score": [31, 32]}))
    got = by_key(store.read_rows_matching(pd.DataFrame({"user_id": ["u3", "ü4 x"]})))
    assert got[KEYS].values.tolist() == [["u3", "e2"], ["u3", "e7"], ["ü4 x", "e1"]]
    assert got["event"].tolist() == [{"changed": True}, {"new": 1}, {"unicode": "é"}]
    assert got["score"].tolist() == [31, 32, 40]


def test_read_rows_matching_many_users_spans_several_statements(store: TableStoreDB) -> None:
    n = MAX_VARIABLES + 150  # more users than one statement binds
    data = pd.DataFrame({
        "user_id": [f"user{i}" for i in range(n) for _ in range(2)],
        "event_id": [f"ev{j}" for _ in range(n) for j in range(2)],
        "event": [{"i": i, "j": j} for i in range(n) for j in range(2)],
        "score": range(2 * n),
    })
    store.upsert_rows(data)
    wanted = [f"user{i}" for i in range(0, n, 1) if i % 7 != 3]

    got = store.read_rows_matching(pd.DataFrame({"user_id": wanted}))

    assert got is not None
    expected = by_key(data[data["user_id"].isin(wanted)])
    assert len(got) == 2 * len(wanted) and not got.duplicated(KEYS).any()
    assert_frame_equal(by_key(got), by_key(store.read_rows(expected[KEYS])))
    assert by_key(got)["event"].tolist() == expected["event"].tolist()


@pytest.mark.parametrize("columns", [["event_id"], ["event"], ["score"], ["user_id", "event"],
                                     ["event_id", "score"], []])
def test_read_rows_matching_needs_a_leading_key_prefix(store: TableStoreDB,
                                                       columns: list[str]) -> None:
    data = events_frame()
    store.upsert_rows(data)
    proj = data[columns].iloc[:3].reset_index(drop=True)
    assert store.read_rows_matching(proj) is None
    assert len(store.read_rows()) == len(data)  # (the data is there to be found)


def test_read_rows_matching_with_the_whole_key_works_like_read_rows(store: TableStoreDB) -> None:
    data = events_frame()
    store.upsert_rows(data)
    idx = pd.DataFrame({"user_id": ["u1", "u2", "u10", "u3", "u1"],
                        "event_id": ["e2", "e1", "e2", "e2", "e2"]})  # (u10, e2) is absent

    got = store.read_rows_matching(idx)

    assert got is not None
    assert by_key(got)[KEYS].values.tolist() == [["u1", "e2"], ["u2", "e1"], ["u3", "e2"]]
    assert_frame_equal(by_key(got), by_key(store.read_rows(idx)))
    assert by_key(got)["event"].tolist() == [
        {"event_type": "view", "ip": "10.0.0.2", "tags": ["a", "b"]},
        {"event_type": "view"},
        {"event_type": "click", "ip": "::1"},
    ]


def test_read_rows_matching_with_no_rows_in_the_frame(store: TableStoreDB) -> None:
    # an empty projection answers with an empty frame of the table's columns, as read_rows does
    store.upsert_rows(events_frame())
    empty = pd.DataFrame({"user_id": pd.Series([], dtype="str")})

    got = store.read_rows_matching(empty)

    assert got is not None and got.empty
    assert list(got.columns) == ["user_id", "event_id", "event", "score"]
    assert_frame_equal(got, store.read_rows(pd.DataFrame({"user_id": empty["user_id"],
                                                          "event_id": empty["user_id"]})))


def test_writes_of_many_rows_span_several_multi_row_statements(store: TableStoreDB) -> None:
    # INSERT_ROWS rows per statement: full statements, then a shorter last one; every
    # row is written once, with its own values, and an upsert replaces only its row
    from filepipe.sql import INSERT_ROWS

    n = INSERT_ROWS * 2 + 7
    df = pd.DataFrame({"user_id": [f"u{i}" for i in range(n)], "event_id": "e",
                       "event": [{"i": i} for i in range(n)], "score": range(n)})
    store.upsert_rows(df)
    store.upsert_rows(df.iloc[[3, n - 1]].assign(score=[-3, -1]))
    back = store.read_rows().sort_values("score").reset_index(drop=True)
    assert len(back) == n
    assert back["score"].tolist()[:2] == [-3, -1]
    got = dict(zip(back["user_id"], back["event"]))
    assert got["u0"] == {"i": 0} and got[f"u{n - 2}"] == {"i": n - 2}


def test_json_values_read_back_as_written(store: TableStoreDB, backend: str) -> None:
    # JSON is encoded and decoded outside SQLAlchemy's processors: same text, same values
    df = events_frame()
    # NaN is no JSON: PostgreSQL's json type refuses it (as it does SQLAlchemy's own writes)
    nan = float("nan") if backend == "sqlite" else None
    df.loc[len(df)] = ["u5", "e1", {"nan": nan, "big": 2**70}, 5]
    df.loc[len(df)] = ["u6", "e1", "just a string", 6]
    df.loc[len(df)] = ["u7", "e1", None, 7]
    store.upsert_rows(df)
    back = by_key(store.read_rows())
    nan_row = back[back["user_id"] == "u5"]["event"].iloc[0]
    assert nan_row["big"] == 2**70
    assert nan_row["nan"] != nan_row["nan"] if backend == "sqlite" else nan_row["nan"] is None
    assert back[back["user_id"] == "u6"]["event"].iloc[0] == "just a string"
    assert back[back["user_id"] == "u7"]["event"].iloc[0] is None
    ok = ~back["user_id"].isin(["u5", "u6", "u7"])
    assert back[ok]["event"].tolist() == by_key(events_frame())["event"].tolist()
    with store.dbconn.begin() as conn:  # stored as SQLAlchemy's JSON type stores it
        text = conn.exec_driver_sql(
            "SELECT CAST(event AS TEXT) FROM events WHERE user_id = 'u1' AND event_id = 'e1'").scalar_one()
    assert text == '{"event_type": "click", "ip": "10.0.0.1"}'


def test_a_step_reads_rows_with_their_meta_in_one_query(meta_url: str) -> None:
    # an SQL input in the index's database is read joined with its meta: rows the meta
    # does not know (written behind filepipe's back) are not read, and rows come oldest
    # change first, so "the latest event" is the one stored last
    from filepipe import BatchTransform, Catalog, DataStore, Pipeline, Table, build_compute, run_steps
    from filepipe.table import DataTable

    db = DBConn(meta_url)
    seen: list[pd.DataFrame] = []

    def latest(events: pd.DataFrame) -> pd.DataFrame:
        seen.append(events)
        return events.groupby("user_id", as_index=False).agg(score=("score", "last"))

    catalog = Catalog({
        "events": Table(TableStoreDB("events", db, events_schema())),
        "latest": Table(TableStoreDB("latest", db, [Column("user_id", String(), primary_key=True),
                                                    Column("score", Integer())])),
    })
    ds = DataStore(db)
    steps = build_compute(ds, catalog, Pipeline([BatchTransform(latest, ["events"], ["latest"])]))
    events = catalog.get_datatable(ds, "events")
    events.store_chunk(events_frame())
    events.store_chunk(events_frame().iloc[[0]].assign(score=99))  # u1/e1 changes last
    with db.begin() as conn:
        conn.exec_driver_sql("INSERT INTO events VALUES ('u1', 'zz', NULL, 1000)")
    calls = []
    original = DataTable.live_rows_matching

    def spy(self, conn, proj):
        found = original(self, conn, proj)
        calls.append(found is not None)
        return found

    DataTable.live_rows_matching = spy
    try:
        run_steps(ds, steps)
    finally:
        DataTable.live_rows_matching = original
    assert calls and all(calls)
    got = catalog.get_datatable(ds, "latest").get_data().set_index("user_id")["score"].to_dict()
    assert got == {"u1": 99, "u10": 10, "u2": 21, "u3": 30, "ü4 x": 40}
    assert "zz" not in set(pd.concat(seen)["event_id"])


def test_a_batch_of_many_two_column_keys_reads_through_a_temporary_table(meta_url: str) -> None:
    from filepipe import BatchTransform, Catalog, DataStore, Pipeline, Table, build_compute, run_steps
    from filepipe.sql import TEMP_TABLE_ABOVE

    db = DBConn(meta_url)
    n = TEMP_TABLE_ABOVE + 500
    catalog = Catalog({
        "events": Table(TableStoreDB("events", db, events_schema())),
        "copy": Table(TableStoreDB("copy", db, events_schema())),
    })
    ds = DataStore(db)
    steps = build_compute(ds, catalog, Pipeline([
        BatchTransform(lambda df: df.assign(score=df["score"] * 2), ["events"], ["copy"],
                       chunk_size=n, name="double")]))
    df = pd.DataFrame({"user_id": [f"u{i % 7}" for i in range(n)], "event_id": [f"e{i}" for i in range(n)],
                       "event": [{"i": i} for i in range(n)], "score": range(n)})
    catalog.get_datatable(ds, "events").store_chunk(df)
    run_steps(ds, steps)
    got = by_key(catalog.get_datatable(ds, "copy").get_data())
    assert_frame_equal(got, by_key(df.assign(score=df["score"] * 2)), check_dtype=False)


def test_an_output_row_deleted_then_made_again_counts_as_added(meta_url: str) -> None:
    # the step reads its outputs' meta under the batch's keys, deleted rows included, and
    # looks nothing up again: a row made again after its deletion is new, not an update
    from filepipe import BatchTransform, Catalog, DataStore, Pipeline, Table, build_compute, run_steps

    db = DBConn(meta_url)
    catalog = Catalog({
        "events": Table(TableStoreDB("events", db, events_schema())),
        "totals": Table(TableStoreDB("totals", db, [Column("user_id", String(), primary_key=True),
                                                    Column("score", Integer())])),
    })
    ds = DataStore(db)
    steps = build_compute(ds, catalog, Pipeline([BatchTransform(
        lambda df: df.groupby("user_id", as_index=False).agg(score=("score", "sum")),
        ["events"], ["totals"])]))
    events = catalog.get_datatable(ds, "events")
    totals = catalog.get_datatable(ds, "totals")
    events.store_chunk(events_frame())
    assert run_steps(ds, steps).tables["totals"] == {"added": 5, "updated": 0, "deleted": 0}
    u2 = events_frame()[events_frame()["user_id"] == "u2"]
    events.delete_by_idx(u2[KEYS])
    assert run_steps(ds, steps).tables["totals"] == {"added": 0, "updated": 0, "deleted": 1}
    first_created = totals.get_metadata(include_deleted=True).set_index("user_id")["create_ts"]["u2"]
    events.store_chunk(u2.assign(score=[5, 6]))
    assert run_steps(ds, steps).tables["totals"] == {"added": 1, "updated": 0, "deleted": 0}
    meta = totals.get_metadata().set_index("user_id")
    assert meta.loc["u2", "create_ts"] > first_created
    assert totals.get_data().set_index("user_id")["score"].to_dict()["u2"] == 11


def test_json_integers_beyond_64_bits_read_back_exactly(store: TableStoreDB) -> None:
    store.upsert_rows(pd.DataFrame({"user_id": ["u"], "event_id": ["e"],
                                    "event": [{"n": 2**70, "s": "x"}], "score": [1]}))
    assert store.read_rows()["event"].iloc[0] == {"n": 2**70, "s": "x"}


@pytest.mark.backends("sqlite", reason="SQLite's own bound-variable limit, set on its connection")
def test_writes_fit_a_database_that_binds_999_values_at_most(tmp_path: Path) -> None:
    # SQLite before 3.32 binds at most 999 values per statement: statements are sized
    # from the connection's own limit
    import sqlite3

    from sqlalchemy import event

    conn = DBConn(f"sqlite:///{tmp_path / 'old.sqlite'}")

    @event.listens_for(conn.engine, "connect")
    def _old_limit(dbapi_conn, _record) -> None:
        dbapi_conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)

    store = TableStoreDB(name="events", dbconn=conn, data_sql_schema=events_schema())
    n = 600
    store.upsert_rows(pd.DataFrame({"user_id": [f"u{i}" for i in range(n)], "event_id": "e",
                                    "event": [{"i": i} for i in range(n)], "score": range(n)}))
    assert len(store.read_rows()) == n
    conn.dispose()


def test_a_value_shared_by_every_row_is_stored_exactly(meta_url: str) -> None:
    # constant columns (a batch's timestamps) are bound once per statement, not written as
    # SQL literals, which SQLite may parse one unit in the last place off
    import sqlalchemy as sa

    from filepipe import sql

    conn = DBConn(meta_url)
    table = sa.Table("t", sa.MetaData(), sa.Column("k", sa.Integer, primary_key=True),
                     sa.Column("ts", sa.Float), sa.Column("gone", sa.Float))
    table.create(conn.engine)
    ts = 1746641118.5363941
    df = pd.DataFrame({"k": range(3), "ts": [ts] * 3, "gone": [float("nan")] * 3})
    with conn.begin() as c:
        sql.upsert(c, table, df, ["k"], same=["ts", "gone"])
    with conn.begin() as c:
        rows = c.exec_driver_sql("SELECT ts, gone FROM t").all()
    assert rows == [(ts, None)] * 3
    conn.dispose()
