"""The `TableStore` contract, one suite over every store kind (issue #9).

Every test below runs against each kind of store, built in `tmp_path` over real files and a
real SQLite database: memory, DB (SQLite), CSV, Excel (one sheet), Parquet (one file),
Parquet (a dataset partitioned by ``region``) and a folder of JSON files.

What differs between kinds is stated once, in `KINDS` (`Kind`): whether the store is
file-backed (fingerprints, missing files, atomic file writes), whether a second store
object over the same place sees the rows (memory: no, it *is* its own place), which
`dtypes` a kind needs to be told (keys and datetimes parsed from JSON/paths), and the
low-level writer a test breaks to simulate a write failing half way. No combination is
skipped: a case a kind cannot do is `xfail` with the documented reason, and a contract
violation is `xfail(strict=True, reason="BUG: ...")`.

"Another process" is a fresh store object over the same path, told the column kinds
filepipe recorded when it wrote (`use_written_kinds`), as `DataTable` does.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from filepipe import DBConn
from filepipe.fileutil import TEMP_PREFIX
from filepipe.frames import merge_kinds, value_kinds
from filepipe.hashing import hash_rows
from filepipe.stores import (
    TableStore,
    TableStoreCSV,
    TableStoreDB,
    TableStoreExcel,
    TableStoreFiledir,
    TableStoreMemory,
    TableStoreParquet,
    TableStoreParquetDataset,
)

KEYS = ["region", "id"]
FINGERPRINT = ["path", "size", "mtime_ns", "inode"]


# --- the store kinds ---------------------------------------------------------------------

@dataclass(frozen=True)
class Kind:
    """One kind of store and what it can do (the capability matrix of this suite)."""

    name: str
    #: holds its rows in files: list_files() gives fingerprints (else it is None)
    files: bool
    #: a second store object over the same place reads the rows (memory: its own place)
    shared: bool
    #: `dtypes` the kind must be given for values its format keeps as text: keys parsed
    #: from a path, datetimes in JSON (documented in filedir.py: "Key values parsed from the
    #: path are strings unless `dtypes` names a type"; "Dates and times read back as strings
    #: unless `dtypes` says otherwise")
    dtypes: dict[str, str] = field(default_factory=dict)
    #: writes are buffered until flush() (FileStore); else they happen in upsert/delete
    buffered: bool = False


KINDS = [
    Kind("memory", files=False, shared=False),
    Kind("db", files=False, shared=True),
    Kind("csv", files=True, shared=True, buffered=True),
    Kind("excel", files=True, shared=True, buffered=True),
    Kind("parquet", files=True, shared=True, buffered=True),
    Kind("parquet_dataset", files=True, shared=True, buffered=True),
    Kind("filedir", files=True, shared=True,
         dtypes={"id": "int64", "t": "datetime64[us]"}),
]
KIND_NAMES = [k.name for k in KINDS]


def db_schema() -> list[sa.Column]:
    """Every column any frame of this suite has (rows lacking one hold NULL there)."""
    return [
        sa.Column("region", sa.String(), primary_key=True),
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("i", sa.BigInteger()),
        sa.Column("ni", sa.BigInteger()),
        sa.Column("f", sa.Float()),
        sa.Column("s", sa.String()),
        sa.Column("b", sa.Boolean()),
        sa.Column("nb", sa.Boolean()),
        sa.Column("t", sa.DateTime()),
        sa.Column("n", sa.String()),
        sa.Column("d", sa.Date()),
        sa.Column("tz", sa.DateTime(timezone=True)),
    ]


class Env:
    """Builds stores of one kind over one place in `tmp_path`."""

    def __init__(self, kind: Kind, base: Path) -> None:
        self.kind = kind
        self.base = base
        self._conns: list[DBConn] = []
        self._memory: TableStoreMemory | None = None

    def make(self, dtypes: dict[str, str] | None = None, **extra: Any) -> TableStore:
        """A new store object over this env's place (the memory store is its own place:
        the same object is returned)."""
        dtypes = self.kind.dtypes if dtypes is None else dtypes
        name, base = self.kind.name, self.base
        if name == "memory":
            if self._memory is None:
                self._memory = TableStoreMemory(KEYS)
            return self._memory
        if name == "db":
            conn = DBConn(f"sqlite:///{base / 'data.sqlite'}")
            self._conns.append(conn)
            return TableStoreDB("t", conn, db_schema())
        if name == "csv":
            return TableStoreCSV(base / "t.csv", KEYS, dtypes=dtypes or None)
        if name == "excel":
            return TableStoreExcel(base / "t.xlsx", sheet="T", primary_keys=KEYS,
                                   dtypes=dtypes or None)
        if name == "parquet":
            return TableStoreParquet(base / "t.parquet", primary_keys=KEYS, dtypes=dtypes or None)
        if name == "parquet_dataset":
            return TableStoreParquetDataset(base / "ds", primary_keys=KEYS, partition_cols=["region"],
                                     dtypes=dtypes or None)
        if name == "filedir":
            return TableStoreFiledir(str(base / "fd" / "{region}" / "{id}.json"),
                                     dtypes=dtypes or None)
        raise AssertionError(name)

    def reopen(self, *written: pd.DataFrame, dtypes: dict[str, str] | None = None) -> TableStore:
        """What another process opens: a fresh store object told the column kinds of what
        was written (as `DataTable` does from the index)."""
        store = self.make(dtypes)
        kinds: dict[str, str] = {}
        for df in written:
            kinds = merge_kinds(kinds, value_kinds(store.normalize(df)))
        if kinds:
            store.use_written_kinds(kinds)
        return store

    def close(self) -> None:
        for conn in self._conns:
            conn.dispose()


@pytest.fixture(params=KINDS, ids=KIND_NAMES)
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    e = Env(request.param, tmp_path)
    yield e
    e.close()


def write(store: TableStore, df: pd.DataFrame) -> None:
    store.upsert_rows(df)
    store.flush()


def xfail_for(request: pytest.FixtureRequest, env: Env, kinds: dict[str, str],
              strict: bool = True) -> None:
    """Mark this test xfail (strict) when env's kind is in `kinds` (kind -> reason)."""
    reason = kinds.get(env.kind.name)
    if reason is not None:
        request.applymarker(pytest.mark.xfail(strict=strict, reason=reason))


# --- frames -------------------------------------------------------------------------------

def rows(ids: list[int], i: int = 0, s: str = "x") -> pd.DataFrame:
    """Rows for `ids`: odd ids in region EU, even ones in US (two partitions, two folders)."""
    return pd.DataFrame({
        "region": ["EU" if n % 2 else "US" for n in ids],
        "id": ids,
        "i": [n * 10 + i for n in ids],
        "s": [f"{s}{n}" for n in ids],
    })


def key_frame(pairs: list[tuple[str, int]]) -> pd.DataFrame:
    """An index of keys, typed as the keys are (text, int64) even when empty."""
    return pd.DataFrame({"region": pd.Series([r for r, _ in pairs], dtype="str"),
                         "id": pd.Series([n for _, n in pairs], dtype="int64")})


def untyped_empty_index() -> pd.DataFrame:
    """The empty index the engine passes to learn a table's columns (object columns)."""
    return pd.DataFrame(columns=KEYS)


def typed_frame() -> pd.DataFrame:
    """ints, floats with NaN, text (some looking like numbers), bools, datetimes, None."""
    return pd.DataFrame({
        "region": ["EU", "EU", "US", "US", "EU", "US"],
        "id": [1, 2, 3, 4, 5, 6],
        "i": [10, -3, 2**40, 0, 7, 1],
        "ni": pd.array([1, None, 3, 4, None, 6], dtype="Int64"),
        "f": [1.5, np.nan, -0.25, 2.0, 0.1 + 0.2, 1e-300],
        "s": ["007", "abc", None, "1.50", "TRUE", "Zoë 🎉"],
        "b": [True, False, True, False, True, True],
        "nb": [True, None, False, True, None, False],
        "t": pd.to_datetime(["2024-01-01 10:00:00.123456", None, "1999-12-31", "2024-02-29",
                             "1970-01-01", "2038-01-19 03:14:08"], format="ISO8601"),
        "n": [None] * 6,
    })


def plain(value: Any) -> Any:
    if value is None or (not isinstance(value, (list, dict, str)) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def keyset(df: pd.DataFrame) -> set[tuple[str, int]]:
    return {(str(r), int(n)) for r, n in zip(df["region"], df["id"])}


def by_key(df: pd.DataFrame, cols: list[str]) -> dict[tuple[str, int], tuple]:
    """Rows as {(region, id): (plain values of cols)}."""
    out = {}
    for rec in df.to_dict("records"):
        out[(str(rec["region"]), int(rec["id"]))] = tuple(plain(rec[c]) for c in cols)
    return out


def hashes_by_key(df: pd.DataFrame) -> dict[tuple[str, int], int]:
    return dict(zip(((str(r), int(n)) for r, n in zip(df["region"], df["id"])),
                    hash_rows(df).tolist()))


def assert_has_keys_columns(df: pd.DataFrame) -> None:
    assert df.empty
    assert set(KEYS) <= set(df.columns), list(df.columns)


def store_files(store: TableStore) -> dict[str, bytes]:
    return {p: Path(p).read_bytes() for p in store.list_files()["path"]}


def temp_files(base: Path) -> list[Path]:
    return [p for p in base.rglob("*") if p.name.startswith(TEMP_PREFIX)]


# --- write / read / delete by key -----------------------------------------------------------

def test_upsert_then_read_all(env: Env) -> None:
    store = env.make()
    data = rows([1, 2, 3, 4])
    store.upsert_rows(data)
    # the writer reads its own writes, before and after flush
    assert by_key(store.read_rows(), ["i", "s"]) == by_key(data, ["i", "s"])
    store.flush()
    assert by_key(store.read_rows(), ["i", "s"]) == by_key(data, ["i", "s"])
    assert data.equals(rows([1, 2, 3, 4]))  # the frame given is not modified
    # a frame read is the caller's: changing it changes nothing in the store
    got = store.read_rows()
    got.loc[:, "s"] = "scribbled"
    part = store.read_rows(key_frame([("EU", 1)]))
    part.loc[:, "s"] = "scribbled"
    assert by_key(store.read_rows(), ["i", "s"]) == by_key(data, ["i", "s"])
    # and so does another process
    other = env.reopen(data)
    assert by_key(other.read_rows(), ["i", "s"]) == by_key(data, ["i", "s"])


def test_read_by_keys_present_absent_mixed(env: Env) -> None:
    write(env.make(), rows([1, 2, 3, 4]))
    for store in (env.make(), env.reopen(rows([1]))):
        got = store.read_rows(key_frame([("EU", 1), ("US", 4)]))
        assert by_key(got, ["i", "s"]) == {("EU", 1): (10, "x1"), ("US", 4): (40, "x4")}

        # absent keys: a key of neither region, an id in the wrong region, a new region
        absent = store.read_rows(key_frame([("EU", 99), ("US", 1), ("ZZ", 2)]))
        assert_has_keys_columns(absent)

        mixed = store.read_rows(key_frame([("EU", 3), ("EU", 98), ("US", 2), ("EU", 3)]))
        assert keyset(mixed) == {("EU", 3), ("US", 2)}
        assert len(mixed) == 2  # a key asked twice comes once

        assert_has_keys_columns(store.read_rows(key_frame([])))
        assert_has_keys_columns(store.read_rows(untyped_empty_index()))


def test_delete_by_keys_ignores_absent_keys(env: Env) -> None:
    store = env.make()
    write(store, rows([1, 2, 3, 4]))
    store.delete_rows(key_frame([("EU", 1), ("US", 4), ("EU", 77), ("US", 3), ("ZZ", 5)]))
    store.flush()
    assert keyset(store.read_rows()) == {("US", 2), ("EU", 3)}
    assert keyset(env.reopen(rows([1])).read_rows()) == {("US", 2), ("EU", 3)}
    store.delete_rows(key_frame([]))  # nothing to delete
    store.flush()
    assert keyset(env.reopen(rows([1])).read_rows()) == {("US", 2), ("EU", 3)}


def test_upsert_replaces_row_with_same_key(env: Env) -> None:
    store = env.make()
    write(store, rows([1, 2, 3]))
    store.upsert_rows(rows([2, 3, 5], i=1, s="new"))
    store.flush()
    want = {("EU", 1): (10, "x1"), ("US", 2): (21, "new2"), ("EU", 3): (31, "new3"),
            ("EU", 5): (51, "new5")}
    assert by_key(store.read_rows(), ["i", "s"]) == want
    got = env.reopen(rows([1])).read_rows()
    assert len(got) == 4  # no duplicate of a replaced key
    assert by_key(got, ["i", "s"]) == want


def test_clear_removes_every_row(env: Env) -> None:
    store = env.make()
    write(store, rows([1, 2, 3, 4]))
    store.clear()
    store.flush()
    assert store.read_rows().empty
    assert env.reopen(rows([1])).read_rows().empty
    write(store, rows([6]))  # usable afterwards
    assert keyset(env.reopen(rows([1])).read_rows()) == {("US", 6)}
    # clear() of a store that never held anything
    (env.base / "never").mkdir()
    empty = Env(env.kind, env.base / "never")
    try:
        fresh = empty.make()
        fresh.clear()
        fresh.flush()
        assert fresh.read_rows().empty
    finally:
        empty.close()


def test_a_reader_sees_what_another_store_object_wrote_since(env: Env) -> None:
    """A store object that has read (and may cache) the table sees later writes made
    through another object over the same place: added, changed and deleted rows."""
    writer = env.make()
    write(writer, rows([1, 2, 3]))
    reader = env.reopen(rows([1]))
    assert keyset(reader.read_rows()) == {("EU", 1), ("US", 2), ("EU", 3)}
    writer.upsert_rows(rows([1, 4, 6], i=3, s="later"))
    writer.delete_rows(key_frame([("EU", 3)]))
    writer.flush()
    want = {("EU", 1): (13, "later1"), ("US", 2): (20, "x2"), ("US", 4): (43, "later4"),
            ("US", 6): (63, "later6")}
    assert by_key(reader.read_rows(), ["i", "s"]) == want
    assert by_key(reader.read_rows(key_frame([("EU", 1), ("EU", 3), ("US", 6)])),
                  ["i", "s"]) == {k: want[k] for k in [("EU", 1), ("US", 6)]}


# --- the empty table ------------------------------------------------------------------------

def test_empty_table_reads_as_empty_frame_with_key_columns(env: Env) -> None:
    store = env.make()
    assert_has_keys_columns(store.read_rows())
    assert_has_keys_columns(store.read_rows(key_frame([("EU", 1)])))
    assert_has_keys_columns(store.read_rows(key_frame([])))
    assert_has_keys_columns(store.read_rows(untyped_empty_index()))
    store.delete_rows(untyped_empty_index())
    store.delete_rows(key_frame([("EU", 1), ("US", 2)]))  # absent keys of an empty table
    store.flush()
    assert_has_keys_columns(store.read_rows())
    assert_has_keys_columns(env.make().read_rows())
    if env.kind.files:
        assert store.list_files()["path"].map(lambda p: Path(p).stat().st_size).ge(0).all()


# --- types round-trip: normalise = read back --------------------------------------------------

def assert_round_trip(env: Env, df: pd.DataFrame, dtypes: dict[str, str] | None = None) -> None:
    """What another process reads hashes, row by row, as `normalize(df)` does; and
    `normalize` is idempotent."""
    store = env.make(dtypes)
    store.check_writable(df)
    normal = store.normalize(df)
    assert (hash_rows(store.normalize(normal)) == hash_rows(normal)).all(), "not idempotent"
    write(store, df)
    back = env.reopen(df, dtypes=dtypes).read_rows()
    assert len(back) == len(df)
    want, got = hashes_by_key(normal), hashes_by_key(back)
    assert got.keys() == want.keys()
    differ = [c for c in normal.columns if c not in KEYS and
              hashes_by_key(normal[KEYS + [c]]) != hashes_by_key(back.reindex(columns=KEYS + [c]))]
    assert not differ, {c: (normal[c].tolist(), back.reindex(columns=[c])[c].tolist())
                        for c in differ}
    assert got == want
    # the writer's own (buffered) view hashes the same too
    assert hashes_by_key(store.read_rows()) == want


def test_types_round_trip_through_a_fresh_store(env: Env) -> None:
    assert_round_trip(env, typed_frame())


def test_datetimes_round_trip_without_declared_dtypes(
        request: pytest.FixtureRequest, env: Env) -> None:
    """The same without `dtypes` for the datetimes (keys still typed where needed)."""
    xfail_for(request, env, {
        "filedir": "documented (filedir.py): JSON dates and times read back as strings "
                   "unless `dtypes` says otherwise -- but normalize() does not turn them "
                   "into that text either, so normalise != read back for them"})
    dtypes = {c: t for c, t in env.kind.dtypes.items() if c in KEYS}
    df = typed_frame()[KEYS + ["t"]]
    assert_round_trip(env, df, dtypes=dtypes)


def test_text_that_looks_empty_or_null_round_trips(
        request: pytest.FixtureRequest, env: Env) -> None:
    """``""`` and text such as ``"NULL"`` or ``"nan"`` (Excel documents that ``""`` reads
    back as an empty cell, and normalises it so)."""
    xfail_for(request, env, {
})
    df = pd.DataFrame({"region": ["EU", "US"] * 4, "id": range(1, 9),
                       "s": ["", " ", "NA", "N/A", "NULL", "nan", "None", None]})
    assert_round_trip(env, df)


def test_text_with_line_breaks_round_trips(request: pytest.FixtureRequest, env: Env) -> None:
    """CR LF, a lone CR, LF, tab (Excel documents CR LF / CR become LF, and normalises so)."""
    xfail_for(request, env, {
})
    df = pd.DataFrame({"region": ["EU", "US", "EU", "US"], "id": [1, 2, 3, 4],
                       "s": ["a\r\nb", "x\ry", "a\nb", "tab\tend"]})
    assert_round_trip(env, df)


def test_dates_round_trip(request: pytest.FixtureRequest, env: Env) -> None:
    """`datetime.date` values (Excel documents they come back as midnight datetimes, and
    normalises them so)."""
    xfail_for(request, env, {
        "filedir": "documented (filedir.py): JSON dates read back as strings unless `dtypes` "
                   "says otherwise (and no dtype holds datetime.date)",
        "db": "BUG: an sa.Date column reads back as datetime64 (frames.python_kind() calls "
              "Date 'datetime', sql.typed_column() applies pd.to_datetime) while "
              "TableStoreDB.normalize() keeps datetime.date, which hashes differently"})
    import datetime as dt

    df = pd.DataFrame({"region": ["EU", "US", "EU", "US"], "id": [1, 2, 3, 4],
                       "d": [dt.date(2024, 1, 1), None, dt.date(2000, 2, 29), dt.date(1999, 1, 1)]})
    assert_round_trip(env, df)


def test_timezone_aware_datetimes_round_trip(request: pytest.FixtureRequest, env: Env) -> None:
    """UTC datetimes (Excel documents they are written as UTC, and normalises so)."""
    xfail_for(request, env, {
        "filedir": "documented (filedir.py): JSON datetimes read back as strings unless "
                   "`dtypes` says otherwise",
})
    df = pd.DataFrame({"region": ["EU", "US", "EU", "US"], "id": [1, 2, 3, 4],
                       "tz": pd.to_datetime(["2024-01-01 10:00", None, "2000-01-01 00:00:01",
                                             "2024-06-01"], utc=True, format="ISO8601")})
    assert_round_trip(env, df)


def test_normalize_is_idempotent_and_keeps_keys(env: Env) -> None:
    store = env.make()
    df = typed_frame()
    once = store.normalize(df)
    twice = store.normalize(once)
    assert (hash_rows(once) == hash_rows(twice)).all()
    assert (hash_rows(once[KEYS]) == hash_rows(df[KEYS])).all()
    assert len(once) == len(df)
    assert (hash_rows(typed_frame()) == hash_rows(df)).all()  # the input is not modified


# --- atomic flush ------------------------------------------------------------------------------

class WriteFailed(OSError):
    pass


def break_writer(env: Env, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the kind's low-level writer write half its output, then raise `WriteFailed`.
    Returns a list that records each broken call (so a writer no longer used is noticed)."""
    calls: list[int] = []
    name = env.kind.name
    if name == "csv":
        original = pd.DataFrame.to_csv

        def to_csv(self: pd.DataFrame, path: Any = None, *args: Any, **kwargs: Any) -> Any:
            text = original(self, None, *args, **kwargs)
            Path(path).write_text(text[: len(text) // 2])
            calls.append(1)
            raise WriteFailed("disk full")

        monkeypatch.setattr(pd.DataFrame, "to_csv", to_csv)
    elif name in ("parquet", "parquet_dataset"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        original = pq.write_table

        def write_table(table: Any, where: Any, *args: Any, **kwargs: Any) -> None:
            sink = pa.BufferOutputStream()
            original(table, sink, *args, **kwargs)
            data = sink.getvalue().to_pybytes()
            if hasattr(where, "write"):
                where.write(data[: len(data) // 2])
            else:
                Path(where).write_bytes(data[: len(data) // 2])
            calls.append(1)
            raise WriteFailed("disk full")

        monkeypatch.setattr(pq, "write_table", write_table)
    elif name == "excel":
        original = zipfile.ZipFile.writestr

        def writestr(self: zipfile.ZipFile, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)  # one member of the new package is in the temp file
            calls.append(1)
            raise WriteFailed("disk full")

        monkeypatch.setattr(zipfile.ZipFile, "writestr", writestr)
    elif name == "filedir":
        original = Path.write_bytes

        def write_bytes(self: Path, data: bytes) -> int:
            original(self, data[: len(data) // 2])
            calls.append(1)
            raise WriteFailed("disk full")

        monkeypatch.setattr(Path, "write_bytes", write_bytes)
    elif name == "db":
        from filepipe import sql

        original = sql.upsert

        def upsert(conn: Any, table: Any, df: pd.DataFrame, keys: Any) -> None:
            original(conn, table, df.iloc[: len(df) // 2], keys)  # half the rows, then fail
            calls.append(1)
            raise WriteFailed("disk full")

        monkeypatch.setattr(sql, "upsert", upsert)
    elif name == "memory":
        def concat(*args: Any, **kwargs: Any) -> pd.DataFrame:
            calls.append(1)
            raise WriteFailed("out of memory")

        monkeypatch.setattr(pd, "concat", concat)
    else:
        raise AssertionError(name)
    return calls


def test_failed_write_leaves_previous_content(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write failing half way leaves the previous file byte-identical, and no temp file;
    SQL rolls the half written back; the memory store keeps its frame. The store still
    holds the change: the next flush writes it."""
    store = env.make()
    before_rows = rows([1, 2, 3, 4])
    write(store, before_rows)
    files_before = store_files(store) if env.kind.files else {}
    rows_before = by_key(env.reopen(before_rows).read_rows(), ["i", "s"])

    change = pd.concat([rows([1, 2, 3], i=5, s="new"), rows([7, 8])], ignore_index=True)
    calls = break_writer(env, monkeypatch)
    with pytest.raises(WriteFailed):
        store.upsert_rows(change)
        store.flush()
    assert calls, "the low-level writer was not called"
    monkeypatch.undo()

    if env.kind.files:
        assert store_files(env.make()) == files_before
        assert temp_files(env.base) == []
    assert by_key(env.reopen(before_rows).read_rows(), ["i", "s"]) == rows_before

    if env.kind.buffered:  # the change is still buffered: the next flush writes it
        store.flush()
    else:  # written in upsert_rows: a retry writes it
        store.upsert_rows(change)
    want = {**rows_before, **by_key(change, ["i", "s"])}
    assert by_key(env.reopen(before_rows).read_rows(), ["i", "s"]) == want
    assert temp_files(env.base) == []


def test_failed_first_write_leaves_nothing(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first write of a table failing half way leaves no file, no temp file, no rows."""
    store = env.make()
    if env.kind.name == "memory":
        # its first write is one assignment of a copy (no concat): nothing can fail half way
        store.upsert_rows(rows([1, 2, 3]))
        assert keyset(store.read_rows()) == {("EU", 1), ("US", 2), ("EU", 3)}
        return
    calls = break_writer(env, monkeypatch)
    with pytest.raises(WriteFailed):
        store.upsert_rows(rows([1, 2, 3]))
        store.flush()
    assert calls, "the low-level writer was not called"
    monkeypatch.undo()
    if env.kind.files:
        assert env.make().list_files().empty
        assert temp_files(env.base) == []
    if env.kind.shared:
        assert_has_keys_columns(env.make().read_rows())


def test_failed_write_inside_callers_transaction_rolls_back(env: Env) -> None:
    """`transactional` stores write through the caller's connection and roll back with it."""
    store = env.make()
    write(store, rows([1, 2]))
    if not store.transactional:
        assert env.kind.name != "db"
        return  # not transactional: nothing to roll back (asserted the flag is honest)
    assert env.kind.name == "db"
    with pytest.raises(WriteFailed), store.dbconn.begin() as conn:
        store.upsert_rows(rows([1, 2, 3], i=9, s="new"), conn=conn)
        store.delete_rows(key_frame([("EU", 1)]), conn=conn)
        raise WriteFailed("the index write failed")
    assert by_key(env.reopen().read_rows(), ["i", "s"]) == by_key(rows([1, 2]), ["i", "s"])


# --- files: missing file, fingerprints ----------------------------------------------------------

def remove_all_files(store: TableStore) -> None:
    for p in store.list_files()["path"]:
        Path(p).unlink()


def test_missing_file_reads_as_empty(env: Env) -> None:
    store = env.make()
    write(store, rows([1, 2, 3]))
    if not env.kind.files:
        assert store.list_files() is None  # not file-backed: never synced
        assert env.make().list_files() is None
        return
    assert len(store.list_files()) >= 1
    vanished = list(store.list_files()["path"])
    remove_all_files(store)
    listed = env.make().list_files()
    assert list(listed.columns) == FINGERPRINT and listed.empty
    assert store.list_files().empty
    assert_has_keys_columns(env.make().read_rows())
    assert_has_keys_columns(store.read_rows())  # the writer's cache notices the file went
    assert_has_keys_columns(env.make().read_rows(key_frame([("EU", 1)])))
    assert env.make().skipped_files() == {}
    # a source's file that vanished reads, through read_files, as an empty frame
    got = env.make().read_files(vanished)
    assert sorted(got) == sorted(vanished)
    assert all(df.empty for df in got.values())


def test_fingerprints_change_on_rewrite_not_on_read(env: Env) -> None:
    store = env.make()
    write(store, rows([1, 2, 3, 4]))
    if not env.kind.files:
        assert store.list_files() is None
        return
    fp = store.list_files()
    assert list(fp.columns) == FINGERPRINT
    assert len(fp) >= 1 and fp["path"].is_unique
    assert all(str(fp[c].dtype) == "int64" for c in ["size", "mtime_ns", "inode"])
    for p, size in zip(fp["path"], fp["size"]):
        assert Path(p).is_absolute() and Path(p).stat().st_size == size

    def current() -> dict[str, tuple]:
        return {r[0]: tuple(r[1:]) for r in env.make().list_files().itertuples(index=False)}

    first = current()
    # reads change nothing: all rows, by key, through read_files, by a fresh store
    store.read_rows()
    store.read_rows(key_frame([("EU", 1)]))
    env.make().read_rows()
    env.reopen(rows([1])).read_rows(key_frame([("US", 2), ("EU", 9)]))
    env.make().read_files(list(fp["path"]))
    assert current() == first

    # a rewrite of one row changes the fingerprint of the file holding it
    store.upsert_rows(rows([1], i=7, s="changed"))
    store.flush()
    second = current()
    holder = [p for p in second if first.get(p) != second[p]]
    assert holder, "no fingerprint changed after a rewrite"
    assert set(second) == set(first)
    got = env.make().read_files(holder)
    assert sum(len(df) for df in got.values()) >= 1
    assert ("EU", 1) in set().union(*(keyset(df) for df in got.values()))
    if len(first) > 1:  # a store of several files rewrites only the one that changed
        assert len(holder) == 1, holder


def test_check_writable_accepts_ordinary_frames(env: Env) -> None:
    store = env.make()
    for df in (rows([1, 2, 3]), typed_frame(), rows([])):
        store.check_writable(df)  # on an empty table
    write(store, rows([1, 2, 3]))
    for df in (rows([1, 4]), typed_frame(), rows([])):
        store.check_writable(df)  # over existing rows
    assert keyset(env.reopen(rows([1])).read_rows()) == {("EU", 1), ("US", 2), ("EU", 3)}


def test_skipped_files_is_a_dict(env: Env) -> None:
    store = env.make()
    assert store.skipped_files() == {}
    write(store, rows([1, 2, 3]))
    fresh = env.make()
    fresh.list_files()
    fresh.read_rows()
    for s in (store, fresh):
        assert isinstance(s.skipped_files(), dict) and s.skipped_files() == {}


def test_owns_its_files_not_an_unrelated_file_beside_them(
        request: pytest.FixtureRequest, env: Env) -> None:
    xfail_for(request, env, {
})
    store = env.make()
    write(store, rows([1, 2, 3]))
    if not env.kind.files:
        assert store.list_files() is None
        assert not store.owns_path(env.base / "data.sqlite")
        assert not store.owns_path(env.base / "unrelated.txt")
        return
    paths = [Path(p) for p in store.list_files()["path"]]
    fresh = env.make()
    for p in paths:
        assert store.owns_path(p) and fresh.owns_path(p), p
    for folder in sorted({p.parent for p in paths}):
        unrelated = folder / "notes.txt"
        unrelated.write_text("not a table\n")
        # an unrelated file does not change the table nor its listing...
        assert sorted(env.make().list_files()["path"]) == sorted(map(str, paths))
        # ...and is not the store's
        assert not store.owns_path(unrelated), unrelated
        assert not fresh.owns_path(unrelated), unrelated


def test_key_types_name_exactly_the_primary_keys(env: Env) -> None:
    store = env.make()
    assert store.primary_keys == KEYS
    types = store.key_types()
    if types is not None:
        assert set(types) == set(store.primary_keys)
        assert all(isinstance(t, sa.types.TypeEngine) for t in types.values())
