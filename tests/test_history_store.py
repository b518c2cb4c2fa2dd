"""The history store (#10): row versions in Parquet segments, states as of a clock value,
one row's versions, compaction, gc, diffs between states and the change workbook.

Every test works on real files in a temporary folder and checks the store against states
the test computes itself, edit by edit.
"""

from __future__ import annotations

import datetime as dt
import decimal
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import openpyxl
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from filepipe.errors import DuplicateKeysError, FilepipeError, MissingColumnsError
from filepipe.hashing import hash_rows
from filepipe.history import HistoryStore, diff_states, write_diff_workbook
from filepipe.history import segments as segments_module
from filepipe.history.workbook import sheet_names

KEYS = ["id"]
SYSTEM = ["_fp_seq", "_fp_run", "_fp_kind", "_fp_hash"]
MIXED = [1, "two", dt.date(2024, 1, 3), {"k": [1, 2.5], "n": None}, [1, "x", (2, 3)],
         decimal.Decimal("1.10"), 2.5, True, dt.datetime(2024, 5, 1, 12, 30),
         pd.Timestamp("2024-05-01 12:30:00.000000001", tz="UTC"), b"\x00\xff",
         dt.timedelta(days=1, microseconds=3), dt.time(7, 45), float("inf"), 10**20]


# --- an independent model: states edit by edit -------------------------------------------


class Recorder:
    """Turns edits into row-version frames (one clock value per edit) and remembers the
    state of the table after every clock value, without filepipe."""

    def __init__(self) -> None:
        self.seq = 0
        self.run = 0
        self.state: dict[Any, dict[str, Any]] = {}
        self.states: dict[int, dict[Any, dict[str, Any]]] = {0: {}}

    def edits(self, edits: list[tuple[str, dict[str, Any]]]) -> pd.DataFrame:
        """`edits`: ("put", row) or ("delete", {"id": key}); the versions they make."""
        if not edits:
            return pd.DataFrame()
        self.run += 1
        rows = []
        for op, row in edits:
            self.seq += 1
            key = row["id"]
            if op == "delete":
                del self.state[key]
                version = {"id": key, "_fp_kind": "deleted", "_fp_hash": None}
            else:
                kind = "updated" if key in self.state else "added"
                self.state[key] = dict(row)
                version = {**row, "_fp_kind": kind, "_fp_hash": 0}
            rows.append({**version, "_fp_seq": self.seq, "_fp_run": self.run})
            self.states[self.seq] = {k: dict(v) for k, v in self.state.items()}
        df = pd.DataFrame(rows)
        data = [c for c in df.columns if c not in SYSTEM]
        alive = df["_fp_kind"] != "deleted"
        df["_fp_hash"] = pd.array(np.where(alive, hash_rows(df, data), 0), dtype="Int64")
        df.loc[~alive, "_fp_hash"] = pd.NA
        return df

    def state_at(self, seq: int) -> dict[Any, dict[str, Any]]:
        return self.states[max(s for s in self.states if s <= seq)]


def py(v: Any) -> Any:
    """A cell as a plain Python value; every kind of null is None."""
    if isinstance(v, (list, dict, tuple, np.ndarray)):
        return v
    if pd.isna(v):
        return None
    return v.item() if isinstance(v, np.generic) else v


def as_state(df: pd.DataFrame) -> dict[Any, dict[str, Any]]:
    """A state frame as {key: {column: value}}, null cells left out (a column a row never
    had and a null are the same to filepipe)."""
    return {row["id"]: {c: py(v) for c, v in row.items() if py(v) is not None}
            for row in df.to_dict("records")}


def expected(state: dict[Any, dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    return {k: {c: py(v) for c, v in row.items() if py(v) is not None} for k, row in state.items()}


def typed(state: dict[Any, dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    """Cells with their types, so 1 and 1.0 (or "1") differ."""
    return {k: {c: (type(v).__name__, v) for c, v in row.items()} for k, row in state.items()}


def scenario(store: HistoryStore, table: str = "orders") -> Recorder:
    """Four runs: adds; an update, a delete and an add; a column added later and an int
    column turned float; a delete, a re-add and updates, with mixed values throughout."""
    rec = Recorder()
    t0 = pd.Timestamp("2024-01-01 09:00")
    store.append(table, rec.edits([
        ("put", {"id": i, "name": f"n{i}", "amount": i * 10, "mixed": MIXED[i],
                 "at": t0 + pd.Timedelta(hours=i), "note": None}) for i in range(1, 6)]))
    store.append(table, rec.edits([
        ("put", {"id": 2, "name": "n2", "amount": 21, "mixed": MIXED[5], "at": t0, "note": "x"}),
        ("delete", {"id": 3}),
        ("put", {"id": 6, "name": None, "amount": 60, "mixed": MIXED[6], "at": pd.NaT, "note": np.nan}),
    ]))
    store.append(table, rec.edits([
        ("put", {"id": 1, "name": "n1", "amount": 10.5, "mixed": MIXED[7], "at": t0, "note": None,
                 "extra": "new column"}),
        ("put", {"id": 4, "name": "n4", "amount": 40.0, "mixed": MIXED[8], "at": t0, "note": None,
                 "extra": None}),
    ]))
    store.append(table, rec.edits([
        ("delete", {"id": 6}),
        ("put", {"id": 3, "name": "back", "amount": 3.25, "mixed": MIXED[9], "at": t0, "note": "re-added",
                 "extra": "e3"}),
        ("put", {"id": 2, "name": "n2", "amount": 22, "mixed": MIXED[10], "at": t0, "note": "x", "extra": "e2"}),
        ("put", {"id": 5, "name": "n5", "amount": 50, "mixed": MIXED[11], "at": t0, "note": None}),
    ]))
    return rec


def check_every_state(store: HistoryStore, rec: Recorder, table: str = "orders") -> None:
    for seq in range(rec.seq + 2):
        got = store.as_of(table, KEYS, seq)
        assert as_state(got) == expected(rec.state_at(seq)), f"state at seq {seq}"
        assert got["id"].is_monotonic_increasing
        assert not set(SYSTEM) & set(got.columns)


@pytest.fixture
def store(tmp_path: Path) -> HistoryStore:
    return HistoryStore(tmp_path / "history")


# --- append and read ---------------------------------------------------------------------


def test_a_segment_is_one_parquet_file_others_can_read(store: HistoryStore) -> None:
    rec = Recorder()
    path = store.append("orders", rec.edits([("put", {"id": 1, "name": "a", "amount": 5})]))
    assert path is not None and path.parent == store.root / "orders"
    assert path.name.startswith("000000000001-000000000001-") and path.suffix == ".parquet"
    plain = pq.read_table(path).to_pandas()  # no filepipe needed
    assert plain.columns.tolist() == ["id", "name", "amount", *SYSTEM]
    assert plain.iloc[0].tolist()[:5] == [1, "a", 5, 1, 1]
    assert store.append("orders", rec.edits([])) is None
    assert store.tables() == ["orders"]
    assert store.size_bytes() == store.size_bytes("orders") == path.stat().st_size


def test_mixed_object_columns_round_trip_exactly(store: HistoryStore) -> None:
    values = [*MIXED, None, dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=2))), ("t",),
              {1: "int key", (1, 2): "tuple key"}, [float("nan")], np.array([1, 2], dtype=np.int16), np.int64(7)]
    n = len(values)
    df = pd.DataFrame({"id": range(n), "mixed": pd.Series(values, dtype=object),
                       "ints": pd.Series([1, None] * (n // 2), dtype=object),
                       "texts": pd.Series(["a", None] * (n // 2), dtype=object)})
    path = store.append("t", df.assign(_fp_seq=range(1, n + 1), _fp_run=1, _fp_kind="added", _fp_hash=0))
    assert path is not None
    assert pq.read_schema(path).metadata[b"filepipe.json_columns"] == b'["mixed"]'
    back = store.read("t")
    for want, have in zip(values, back["mixed"]):
        if isinstance(want, np.ndarray):
            assert have.dtype == want.dtype and have.tolist() == want.tolist()
        elif isinstance(want, list) and want and isinstance(want[0], float):
            assert isinstance(have, list) and np.isnan(have[0])
        else:
            plain = want.item() if isinstance(want, np.generic) else want
            assert type(have) is type(plain) and have == plain, (want, have)
    assert pq.read_schema(path).field("ints").type == "int64"  # one type: stored natively...
    for name in ("ints", "texts"):  # ...and read back as the object column it was
        assert back[name].dtype == object
        assert [(type(v), v) for v in back[name]] == [(type(v), v) for v in df[name]]


def test_read_returns_the_versions_of_a_clock_range(store: HistoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = scenario(store)
    every = store.read("orders")
    assert every["_fp_seq"].tolist() == list(range(1, rec.seq + 1))
    assert every.columns.tolist()[-4:] == SYSTEM
    assert every["amount"].dtype == "float64"  # ints in early segments, floats later: the union
    assert "extra" in every.columns and every["extra"].iloc[:8].isna().all()
    opened: list[str] = []
    real = segments_module.HistoryStore._read_segment
    monkeypatch.setattr(segments_module.HistoryStore, "_read_segment",
                        lambda self, s, lo=None, hi=None: opened.append(s.path.name) or real(self, s, lo, hi))
    part = store.read("orders", 6, 10)
    assert part["_fp_seq"].tolist() == [7, 8, 9, 10]
    assert part.columns.tolist() == every.columns.tolist() and (part.dtypes == every.dtypes).all()
    assert len(opened) == 2  # of four segments: (5, 8] and (8, 12]; the names tell
    assert store.read("orders", 100).empty and store.read("nothing").columns.tolist() == SYSTEM


def test_as_of_matches_the_state_after_every_edit(store: HistoryStore) -> None:
    rec = scenario(store)
    check_every_state(store, rec)
    last = store.as_of("orders", KEYS, rec.seq)
    assert typed(as_state(last))[2]["mixed"] == ("bytes", MIXED[10])  # exact types, not text
    assert typed(as_state(last))[5]["mixed"] == ("timedelta", MIXED[11])
    assert last["at"].dtype.kind == "M"
    assert store.as_of("nothing", KEYS, 5).columns.tolist() == ["id"]


def test_as_of_some_keys_is_the_state_of_those_keys(store: HistoryStore) -> None:
    # what a diff of a few changed keys reads: the state of those keys only, at every seq
    rec = scenario(store)
    for wanted in ([2], [3, 6], [1, 4, 5, 99], []):
        keys = pd.DataFrame({"id": pd.Series(wanted, dtype="int64")})
        for seq in range(rec.seq + 2):
            got = store.as_of_keys("orders", KEYS, seq, keys)
            want = {k: v for k, v in expected(rec.state_at(seq)).items() if k in wanted}
            assert as_state(got) == want, f"keys {wanted} at seq {seq}"


def test_as_of_some_keys_reads_only_the_row_groups_holding_them(store: HistoryStore,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segments_module, "ROW_GROUP_ROWS", 100)
    rec = Recorder()
    store.append("big", rec.edits([("put", {"id": i, "v": f"v{i}"}) for i in range(1000)]))
    reads: list[list[int]] = []
    real = pq.ParquetFile.read_row_groups
    monkeypatch.setattr(pq.ParquetFile, "read_row_groups",
                        lambda self, groups, columns=None, **kw: reads.append(list(groups))
                        or real(self, groups, columns=columns, **kw))
    got = store.as_of_keys("big", KEYS, rec.seq, pd.DataFrame({"id": [420, 421, 999]}))
    assert got["v"].tolist() == ["v420", "v421", "v999"]
    assert reads == [[4, 9], [4, 9]]  # key columns of the groups that may hold them, then those


def test_versions_of_one_row(store: HistoryStore) -> None:
    scenario(store)
    v = store.versions("orders", KEYS, {"id": 2})
    assert v["_fp_seq"].tolist() == [2, 6, 13]
    assert v["_fp_kind"].tolist() == ["added", "updated", "updated"]
    assert v["amount"].tolist() == [20, 21, 22]
    assert v.columns.tolist()[-4:] == SYSTEM
    gone = store.versions("orders", KEYS, {"id": 3})
    assert gone["_fp_kind"].tolist() == ["added", "deleted", "added"]
    assert pd.isna(gone["name"].iloc[1])  # a deletion carries the keys only
    assert store.versions("orders", KEYS, {"id": 99}).empty
    assert store.versions("orders", KEYS, {"id": "2"}).empty  # text is not a number
    with pytest.raises(FilepipeError, match="one value per key column"):
        store.versions("orders", KEYS, {"name": "n2"})


def test_versions_reads_only_the_row_groups_that_may_hold_the_row(store: HistoryStore,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segments_module, "ROW_GROUP_ROWS", 100)
    rec = Recorder()
    store.append("big", rec.edits([("put", {"id": i, "v": f"v{i}"}) for i in range(1000)]))
    store.append("big", rec.edits([("put", {"id": 420, "v": "changed"})]))
    reads: list[tuple[list[int], Any]] = []
    real = pq.ParquetFile.read_row_groups
    monkeypatch.setattr(pq.ParquetFile, "read_row_groups",
                        lambda self, groups, columns=None, **kw: reads.append((list(groups), columns))
                        or real(self, groups, columns=columns, **kw))
    v = store.versions("big", KEYS, {"id": 420})
    assert v["v"].tolist() == ["v420", "changed"]
    assert reads == [([4], ["id"]), ([4], None), ([0], ["id"]), ([0], None)]


def test_keys_of_mixed_types_work_as_well(store: HistoryStore) -> None:
    rec = Recorder()
    store.append("t", rec.edits([("put", {"id": 1, "v": "int"}), ("put", {"id": "1", "v": "text"}),
                                 ("put", {"id": dt.date(2024, 1, 1), "v": "date"})]))
    store.append("t", rec.edits([("put", {"id": "1", "v": "text 2"}), ("delete", {"id": 1})]))
    assert pq.read_schema(store.segments("t")[0].path).metadata[b"filepipe.json_columns"] == b'["id"]'
    for seq in range(rec.seq + 1):
        assert typed(as_state(store.as_of("t", KEYS, seq))) == typed(expected(rec.state_at(seq)))
    assert store.versions("t", KEYS, {"id": "1"})["v"].tolist() == ["text", "text 2"]
    assert store.versions("t", KEYS, {"id": 1})["_fp_kind"].tolist() == ["added", "deleted"]


# --- crashes, compaction, gc -------------------------------------------------------------


def snapshot(store: HistoryStore, rec: Recorder, table: str = "orders") -> dict[str, Any]:
    return {"read": store.read(table), "states": {s: store.as_of(table, KEYS, s) for s in range(rec.seq + 1)},
            "versions": {k: store.versions(table, KEYS, {"id": k}) for k in range(1, 7)}}


def assert_same(store: HistoryStore, rec: Recorder, before: dict[str, Any], table: str = "orders") -> None:
    after = snapshot(store, rec, table)
    pd.testing.assert_frame_equal(after["read"], before["read"])
    for s, state in before["states"].items():
        pd.testing.assert_frame_equal(after["states"][s], state)
    for k, versions in before["versions"].items():
        pd.testing.assert_frame_equal(after["versions"][k], versions)


def test_rows_stored_twice_after_a_crash_are_read_once(store: HistoryStore, tmp_path: Path) -> None:
    rec = scenario(store)
    before = snapshot(store, rec)
    parts = store.segments("orders")
    kept = tmp_path / "kept"
    kept.mkdir()
    for s in parts:
        shutil.copy2(s.path, kept / s.path.name)
    assert store.compact("orders", max_segments=1) == 4
    for s in parts:  # killed after the merged file was written, before the parts were deleted
        shutil.copy2(kept / s.path.name, s.path)
    assert len(store.segments("orders")) == 5
    assert_same(store, rec, before)
    first = parts[0].path  # and a segment written twice
    shutil.copy2(kept / first.name, first.with_name(first.name.replace(first.name.split("-")[2], "abcdef.parquet")))
    assert_same(store, rec, before)
    assert store.compact("orders", max_segments=1) == 6  # the next compaction cleans up
    assert len(store.segments("orders")) == 1 and len(store.read("orders")) == rec.seq
    assert_same(store, rec, before)


def test_a_read_survives_a_segment_replaced_under_it(store: HistoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = scenario(store)
    real = segments_module.HistoryStore._read_segment
    calls = []

    def compact_midway(self: HistoryStore, s: Any, lo: Any = None, hi: Any = None) -> pd.DataFrame:
        calls.append(s)
        if len(calls) == 2:  # another process compacts between our listing and our reads
            self.compact("orders", max_segments=1)
        return real(self, s, lo, hi)

    monkeypatch.setattr(segments_module.HistoryStore, "_read_segment", compact_midway)
    assert store.read("orders")["_fp_seq"].tolist() == list(range(1, rec.seq + 1))


def test_compact_bounds_the_file_count_and_keeps_every_state(store: HistoryStore,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segments_module, "SMALL_SEGMENT_BYTES", 8_000)
    rec = Recorder()
    store.append("orders", rec.edits([("put", {"id": i, "v": i, "w": "x" * 40}) for i in range(1000)]))
    big = store.segments("orders")[0]
    assert big.tier > 0
    reference = HistoryStore(store.root.parent / "reference")  # the same appends, never compacted
    reference.append("orders", store.read("orders"))
    counts = []
    for i in range(60):
        edit = ("delete", {"id": i}) if i % 7 == 3 else ("put", {"id": i % 13, "v": i * 1.5, "w": f"r{i}"})
        versions = rec.edits([edit])
        store.append("orders", versions)
        reference.append("orders", versions)
        store.compact("orders", max_segments=4)
        counts.append(len(store.segments("orders")))
    assert max(counts) <= 4 and len(reference.segments("orders")) == 61
    assert big in store.segments("orders")  # the large first segment was never rewritten
    pd.testing.assert_frame_equal(store.read("orders"), reference.read("orders"))
    for seq in [0, 1, 999, 1000, *range(1001, rec.seq + 2)]:
        got = store.as_of("orders", KEYS, seq)
        assert as_state(got) == expected(rec.state_at(seq)), f"state at {seq}"
        if seq % 10 == 0:
            pd.testing.assert_frame_equal(got, reference.as_of("orders", KEYS, seq))
    assert store.compact("orders", max_segments=4) == 0


def test_gc_keeps_exactly_the_states_asked_for(store: HistoryStore) -> None:
    rec = scenario(store)
    before = {s: store.as_of("orders", KEYS, s) for s in range(rec.seq + 2)}
    tagged, keep_from = 4, 13
    dropped = store.gc("orders", KEYS, keep_from, keep_seqs=[tagged])
    left = store.read("orders")
    assert dropped == rec.seq - len(left) == 4
    for s in [tagged, *range(keep_from, rec.seq + 2)]:
        pd.testing.assert_frame_equal(store.as_of("orders", KEYS, s), before[s], obj=f"state at {s}")
    # per key, the version live at the tag and the one live at keep_from; the deletion of 6
    # (seq 11) goes with the version it deleted (seq 8)
    assert left.loc[left["_fp_seq"] <= keep_from, "_fp_seq"].tolist() == [1, 2, 3, 4, 5, 9, 10, 12, 13]
    assert as_state(store.as_of("orders", KEYS, 7)) != expected(rec.state_at(7))  # untagged: gone
    assert store.gc("orders", KEYS, keep_from, keep_seqs=[tagged]) == 0
    assert store.versions("orders", KEYS, {"id": 2})["_fp_seq"].tolist() == [2, 13]


def test_gc_drops_deletions_nothing_needs_and_survives_a_crash(store: HistoryStore, tmp_path: Path) -> None:
    rec = scenario(store)
    before = {s: store.as_of("orders", KEYS, s) for s in range(11, rec.seq + 1)}
    originals = {s.path: s.path.read_bytes() for s in store.segments("orders")}
    store.gc("orders", KEYS, 11)
    left = store.read("orders")
    assert "deleted" not in left.loc[left["_fp_seq"] <= 11, "_fp_kind"].tolist()
    assert left.loc[left["_fp_seq"] <= 11, "_fp_seq"].tolist() == [5, 6, 9, 10]
    for path, data in originals.items():  # killed after writing the copies, before deleting
        path.write_bytes(data)
    for s, state in before.items():
        pd.testing.assert_frame_equal(store.as_of("orders", KEYS, s), state)
    store.gc("orders", KEYS, 11)
    assert store.read("orders")["_fp_seq"].tolist() == left["_fp_seq"].tolist()


# --- names and checks --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a/b", "..", ".hidden", "x y%", "é", "sales.2024-Q1"])
def test_any_table_name_is_one_safe_folder(store: HistoryStore, name: str) -> None:
    store.append(name, Recorder().edits([("put", {"id": 1})]))
    folders = os.listdir(store.root)
    assert len(folders) == 1 and "/" not in folders[0] and not folders[0].startswith(".")
    assert all(c.isascii() and (c.isalnum() or c in "_.-%") for c in folders[0])
    assert store.tables() == [name]
    assert store.as_of(name, KEYS, 1)["id"].tolist() == [1]


def test_append_refuses_what_it_cannot_store(store: HistoryStore) -> None:
    ok = Recorder().edits([("put", {"id": 1, "v": 1})])
    with pytest.raises(MissingColumnsError, match="_fp_run"):
        store.append("t", ok.drop(columns="_fp_run"))
    with pytest.raises(FilepipeError, match="_fp_kind must be one of"):
        store.append("t", ok.assign(_fp_kind="changed"))
    with pytest.raises(FilepipeError, match="history cannot store"):
        store.append("t", ok.assign(v=pd.Series([object()], dtype=object)))
    with pytest.raises(FilepipeError, match="not text"):
        store.append("t", ok.rename(columns={"v": 5}))
    with pytest.raises(FilepipeError, match="cannot be empty"):
        store.append("", ok)
    assert store.tables() == []


# --- diffs ---------------------------------------------------------------------------------


OLD = pd.DataFrame({"id": [1, 2, 3, 4, 5], "price": [1, 2.5, 3, None, 5],
                    "label": pd.Series(["a", "b", "c", "d", 1], dtype=object), "gone": ["g"] * 5})
NEW = pd.DataFrame({"id": [1, 2, 3, 5, 6], "price": [1.0, 2.5, 4, 5, 6],
                    "label": pd.Series(["a", "b->c", "c", "1", "f"], dtype=object), "more": [None, None, 7, None, 8]})


def test_diff_states_finds_added_deleted_and_changed_rows() -> None:
    d = diff_states(OLD, NEW, ["id"])
    assert d.counts == {"added": 1, "deleted": 1, "changed": 4}
    assert d.added["id"].tolist() == [6] and d.deleted["id"].tolist() == [4]
    assert d.columns == ["price", "label", "more", "gone"]
    assert d.added_columns == ["more"] and d.removed_columns == ["gone"]
    assert d.changed.index.tolist() == [1, 2, 3, 5]
    # 1 == 1.0 and None == NaN are no change; a column one state lacks is null there
    assert d.changed_columns == [["gone"], ["label", "gone"], ["price", "more", "gone"], ["label", "gone"]]
    assert d.changed.loc[3, ("price", "old")] == 3 and d.changed.loc[3, ("price", "new")] == 4
    assert d.changed.loc[5, ("label", "old")] == 1 and d.changed.loc[5, ("label", "new")] == "1"
    assert not d.is_empty and diff_states(OLD, OLD.sample(frac=1), ["id"]).is_empty
    with pytest.raises(DuplicateKeysError):
        diff_states(OLD, pd.concat([NEW, NEW]), ["id"])


def test_to_text_follows_the_daff_highlighter_format() -> None:
    d = diff_states(OLD.drop(columns="gone"), NEW.drop(columns="more"), ["id"])
    assert d.to_text() == (
        "@@,id,price,label\n"
        "-->,2,2.5,b-->b->c\n"
        "->,3,3.0->4.0,c\n"
        "---,4,,d\n"
        "->,5,5.0,1->1\n"
        "+++,6,6.0,f\n"
    )
    frame = d.to_frame()
    assert frame.columns.tolist() == ["@@", "id", "price", "label"]
    assert frame["@@"].tolist() == ["-->", "->", "---", "->", "+++"]
    nulls = diff_states(pd.DataFrame({"id": [1, 2], "v": ["NULL", None]}),
                        pd.DataFrame({"id": [1, 2], "v": [None, "x"]}), ["id"])
    assert nulls.to_text() == "@@,id,v\n->,1,_NULL->NULL\n->,2,NULL->x\n"
    schema = diff_states(OLD, NEW, ["id"]).to_text().splitlines()
    assert schema[:2] == ["!,,,,+++,---", "@@,id,price,label,more,gone"]


# --- the change workbook -----------------------------------------------------------------


def fill(cell: Any) -> str | None:
    return cell.fill.fgColor.rgb if cell.fill.fill_type == "solid" else None


def test_the_change_workbook_reads_back_with_its_colours(tmp_path: Path) -> None:
    d = diff_states(OLD, NEW, ["id"])
    when = pd.DataFrame({"id": [1], "at": [pd.Timestamp("2024-01-01")]})
    dates = diff_states(when, when.assign(at=pd.Timestamp("2024-02-01")), ["id"])
    summary = pd.DataFrame({"table": ["prices", "a/b:c"], "added": [1, 0], "deleted": [1, 0], "changed": [4, 1]})
    path = tmp_path / "changes.xlsx"
    write_diff_workbook(path, {"prices": d, "a/b:c": dates}, summary)
    book = openpyxl.load_workbook(path)
    assert book.sheetnames == ["Summary", "prices", "a_b_c"]
    s = book["Summary"]
    assert [c.value for c in s[1]] == ["table", "added", "deleted", "changed"] and s["A3"].value == "a/b:c"
    ws = book["prices"]
    assert ws.freeze_panes == "A2" and ws.auto_filter.ref == "A1:F7"
    assert [c.value for c in ws[1]] == ["change", "id", "price", "label", "more", "gone"]
    rows = {r[1].value: r for r in ws.iter_rows(min_row=2)}
    assert rows[6][0].value == "added" and {fill(c) for c in rows[6]} == {"FFC6EFCE"}
    assert rows[4][0].value == "deleted" and {fill(c) for c in rows[4]} == {"FFFFC7CE"}
    changed = rows[3]
    assert changed[0].value == "changed" and changed[2].value == "3.0 → 4.0" and fill(changed[2]) == "FFFFEB9C"
    assert fill(changed[3]) is None and changed[3].value == "c"  # unchanged cell: its value, no fill
    assert changed[4].value == "NULL → 7.0" and changed[5].value == "g → NULL"
    assert rows[2][3].value == "b → b->c" and fill(rows[2][3]) == "FFFFEB9C"
    assert ws.column_dimensions["D"].width >= len("b → b->c")
    assert book["a_b_c"]["C2"].value == "2024-01-01 00:00:00 → 2024-02-01 00:00:00"
    assert not list(tmp_path.glob(".~filepipe-*"))


def test_sheet_names_are_valid_and_distinct() -> None:
    names = sheet_names(["Summary", "summary", "x" * 40, "x" * 40, "'quoted'", "History", "", "a[1]*?"])
    assert names == ["Summary", "summary~2", "x" * 31, "x" * 29 + "~2", "quoted", "History_", "Sheet", "a_1___"]
    assert all(len(n) <= 31 for n in names)


# --- the property: any edits, any compaction, every earlier state ----------------------

VALUES = st.one_of(st.none(), st.integers(-3, 3), st.floats(-2, 2, allow_nan=False, width=16),
                   st.text(alphabet="ab1é->", max_size=3), st.dates(dt.date(2024, 1, 1), dt.date(2024, 1, 3)))
EDIT = st.tuples(st.sampled_from(["put", "put", "delete"]), st.integers(0, 5),
                 st.fixed_dictionaries({"a": VALUES, "b": VALUES}))
PROPERTY = settings(max_examples=int(os.environ.get("FILEPIPE_PROPERTY_EXAMPLES", "40")), deadline=None,
                    database=None, derandomize=not os.environ.get("FILEPIPE_PROPERTY_RANDOM"),
                    suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(runs=st.lists(st.lists(EDIT, max_size=6), min_size=1, max_size=8),
       max_segments=st.integers(1, 4), keep=st.data())
def test_every_earlier_state_is_rebuilt_exactly(runs: list[list[tuple[str, int, dict[str, Any]]]],
                                                max_segments: int, keep: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = HistoryStore(tmp)
        rec = Recorder()
        for run in runs:
            alive = set(rec.state)
            edits = []
            for op, key, values in run:
                if op == "delete" and key not in alive:
                    continue
                edits.append(("delete", {"id": key}) if op == "delete" else ("put", {"id": key, **values}))
                alive = alive - {key} if op == "delete" else alive | {key}
            store.append("t", rec.edits(edits))
            store.compact("t", max_segments=max_segments)
            assert len(store.segments("t")) <= max_segments
        for seq in range(rec.seq + 1):
            assert as_state(store.as_of("t", KEYS, seq)) == expected(rec.state_at(seq)), f"seq {seq}"
        keep_from = keep.draw(st.integers(0, rec.seq), label="keep_from_seq")
        tags = keep.draw(st.lists(st.integers(0, rec.seq), max_size=3), label="tags")
        store.gc("t", KEYS, keep_from, tags)
        for seq in [*tags, *range(keep_from, rec.seq + 1)]:
            assert as_state(store.as_of("t", KEYS, seq)) == expected(rec.state_at(seq)), f"after gc, seq {seq}"
