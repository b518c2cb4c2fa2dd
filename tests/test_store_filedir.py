"""TableStoreFiledir: a folder of files, one row per file, the keys in the path."""

from __future__ import annotations

import builtins
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import age
from test_fileutil import promptly

from filepipe import BatchTransform, Catalog, Pipeline, Table, build_compute, run_steps
from filepipe.errors import DuplicateKeysError, FileDecodeError, FilepipeError
from filepipe.stores import TableStoreFiledir, TableStoreMemory
from filepipe.sync import sync_table

# --- helpers -----------------------------------------------------------------------------


def write_json(path: Path, obj: object, aged: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    if aged:
        age(path)
    return path


def plain(value: object) -> object:
    """A cell as a plain Python value (NaN/NA → None, numpy scalars → Python)."""
    if isinstance(value, (dict, list, bytes, str)):
        return value
    if value is None or pd.isna(value):
        return None
    return value.item() if hasattr(value, "item") else value


def records(df: pd.DataFrame, keys: list[str]) -> dict[tuple, dict]:
    """Rows by key, each a dict of plain values, null cells left out."""
    out = {}
    for row in df.to_dict("records"):
        row = {k: plain(v) for k, v in row.items()}
        out[tuple(row[k] for k in keys)] = {k: v for k, v in row.items() if v is not None}
    return out


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file and folder under `root` with its (size, mtime_ns, inode)."""
    result = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(folder, name)
            st = os.stat(p)
            result[p] = (st.st_size if name in files else 0, st.st_mtime_ns, st.st_ino)
    return result


class OpenSpy:
    """Counts `open()` calls on paths under a folder (installed with monkeypatch)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, under: Path) -> None:
        self.under = str(under)
        self.opened: list[str] = []
        real = builtins.open

        def spy(file, *args, **kwargs):
            if isinstance(file, (str, os.PathLike)) and os.fspath(file).startswith(self.under):
                self.opened.append(os.fspath(file))
            return real(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", spy)


# --- the pattern -------------------------------------------------------------------------


def test_pattern_gives_root_keys_and_description(in_tmp: Path) -> None:
    s = TableStoreFiledir("events/{user_id}/{event_id}.json")
    assert s.primary_keys == ["user_id", "event_id"]
    assert s.root == in_tmp / "events"
    assert s.watch_paths() == [in_tmp / "events"]
    assert s.describe() == str(in_tmp / "events" / "{user_id}" / "{event_id}.json")
    assert TableStoreFiledir("data/order_{id}.json").root == in_tmp / "data"
    assert TableStoreFiledir("{id}.txt", adapter="text").root == in_tmp
    assert TableStoreFiledir(str(in_tmp / "abs" / "{id}.json")).root == in_tmp / "abs"
    swapped = TableStoreFiledir("e/{a}/{b}.json", primary_keys=["b", "a"])
    assert swapped.primary_keys == ["b", "a"]
    swapped.upsert_rows(pd.DataFrame({"a": ["x"], "b": ["y"], "v": [1]}))
    assert json.loads((in_tmp / "e" / "x" / "y.json").read_text()) == {"v": 1}
    assert swapped.read_rows().columns.tolist() == ["b", "a", "v"]
    assert s.list_files() is not None  # file-backed even before the folder exists


@pytest.mark.parametrize("pattern, kwargs, message", [
    ("inbox/orders.json", {}, "names no key field"),
    ("inbox/{a}{b}.json", {}, "put a separator"),
    ("inbox/{}.json", {}, "bad field"),
    ("inbox/{a.json", {}, "unbalanced brace"),
    ("inbox/{a}/../{b}.json", {}, "'..'"),
    ("inbox/{a}/.{b}.json", {}, "hidden"),
    ("inbox/{a}.json", {"primary_keys": ["a", "b"]}, "exactly the pattern's fields"),
    ("inbox/{a}.json", {"adapter": "yaml"}, "unknown adapter"),
    ("inbox/{text}.txt", {"adapter": "text"}, "cannot be named 'text'"),
])
def test_bad_patterns_are_refused(in_tmp: Path, pattern: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TableStoreFiledir(pattern, **kwargs)


# --- round trips per adapter -------------------------------------------------------------


def test_json_round_trip(in_tmp: Path) -> None:
    s = TableStoreFiledir("orders/{order_id}.json")
    df = pd.DataFrame({
        "order_id": ["a1", "ü2"],
        "customer": ["Zoë Ünal", "李雷"],
        "qty": [3, -7],
        "price": [2.5, 1e-3],
        "note": [None, "—"],
        "paid": [True, False],
        "meta": [{"tags": ["x", "é"], "n": 1, "deep": {"k": None}}, {}],
    })
    s.upsert_rows(df)
    text = (in_tmp / "orders" / "a1.json").read_text(encoding="utf-8")
    # deterministic: column order kept, keys left out, indent 2, no \u escapes, NaN → null
    assert text == json.dumps({"customer": "Zoë Ünal", "qty": 3, "price": 2.5, "note": None,
                               "paid": True, "meta": {"tags": ["x", "é"], "n": 1,
                                                      "deep": {"k": None}}},
                              ensure_ascii=False, indent=2) + "\n"
    back = s.read_rows()
    assert list(back.columns) == list(df.columns)
    assert back["order_id"].tolist() == ["a1", "ü2"]
    assert back["qty"].dtype == "int64" and back["paid"].dtype == bool
    assert records(back, ["order_id"]) == records(df, ["order_id"])
    # the same through read_files (one file, one row)
    one = s.read_files([str(in_tmp / "orders" / "ü2.json")])
    assert records(one[str(in_tmp / "orders" / "ü2.json")], ["order_id"]) == \
        {("ü2",): records(df, ["order_id"])[("ü2",)]}


def test_json_values_written_deterministically(in_tmp: Path) -> None:
    s = TableStoreFiledir("out/{k}.json")
    df = pd.DataFrame({
        "k": ["1", "2"],
        "x": [np.nan, 1.5],
        "when": pd.to_datetime(["2026-01-02 03:04:05", None]),
        "day": [pd.Timestamp("2026-05-01").date(), None],
        "n": pd.array([1, None], dtype="Int64"),
        "arr": [np.array([1, 2]), (3, 4)],
    })
    s.upsert_rows(df)
    first = json.loads((in_tmp / "out" / "1.json").read_text())
    assert first == {"x": None, "when": "2026-01-02T03:04:05", "day": "2026-05-01", "n": 1,
                     "arr": [1, 2]}
    assert list(first) == ["x", "when", "day", "n", "arr"]
    assert json.loads((in_tmp / "out" / "2.json").read_text())["when"] is None
    with pytest.raises(FilepipeError, match="'x'.*infinite"):
        s.upsert_rows(pd.DataFrame({"k": ["3"], "x": [math.inf]}))
    with pytest.raises(FilepipeError, match="'blob'.*adapter='bytes'"):
        s.upsert_rows(pd.DataFrame({"k": ["3"], "blob": [b"\x00"]}))
    assert not (in_tmp / "out" / "3.json").exists()


def test_text_round_trip(in_tmp: Path) -> None:
    s = TableStoreFiledir("notes/{topic}/{day}.txt", adapter="text")
    df = pd.DataFrame({"topic": ["ru", "ru", "mix"], "day": ["1", "2", "1"],
                       "text": ["Привет, мир\n", "", "line1\r\nline2 ✓ no newline"]})
    s.upsert_rows(df)
    assert (in_tmp / "notes" / "mix" / "1.txt").read_bytes() == "line1\r\nline2 ✓ no newline".encode()
    back = s.read_rows()
    assert list(back.columns) == ["topic", "day", "text"]
    assert records(back, ["topic", "day"]) == records(df, ["topic", "day"]) | \
        {("ru", "2"): {"topic": "ru", "day": "2", "text": ""}}
    with pytest.raises(FilepipeError, match="exactly one column 'text'"):
        s.upsert_rows(df.assign(extra=1))
    with pytest.raises(FilepipeError, match="must hold str"):
        s.upsert_rows(pd.DataFrame({"topic": ["x"], "day": ["1"], "text": [None]}))


def test_bytes_round_trip(in_tmp: Path) -> None:
    s = TableStoreFiledir("blobs/{name}.bin", adapter="bytes")
    payload = bytes(range(256)) * 3
    s.upsert_rows(pd.DataFrame({"name": ["all", "empty"], "data": [payload, b""]}))
    assert (in_tmp / "blobs" / "all.bin").read_bytes() == payload
    back = s.read_rows()
    assert back["data"].tolist() == [payload, b""]
    assert back["name"].tolist() == ["all", "empty"]
    with pytest.raises(FilepipeError, match="must hold bytes"):
        s.upsert_rows(pd.DataFrame({"name": ["s"], "data": ["text"]}))


# --- listing -----------------------------------------------------------------------------


def test_list_files_only_matching_files(in_tmp: Path) -> None:
    s = TableStoreFiledir("events/{user_id}/{event_id}.json")
    good = [write_json(in_tmp / "events" / "1" / "a.json", {"v": 1}),
            write_json(in_tmp / "events" / "2" / "b.json", {"v": 2})]
    ignored = [
        "events/1/b.txt", "events/1/sub/c.json", "events/x.json", "events/.hidden/d.json",
        "events/1/.e.json", "events/1/~$f.json", "events/1/.~lock.g.json#",
        "events/1/.~filepipe-abc.json", "events/1/h.json.tmp", "events/~$u/i.json",
        "other/1/j.json",
    ]
    for rel in ignored:
        write_json(in_tmp / rel, {"v": 0})
    (in_tmp / "events" / "1" / "dir.json").mkdir()  # a folder named like a file
    listed = s.list_files()
    assert list(listed.columns) == ["path", "size", "mtime_ns", "inode"]
    assert sorted(listed["path"]) == sorted(map(str, good))
    assert [str(t) for t in listed.dtypes[1:]] == ["int64", "int64", "int64"]
    for _, row in listed.iterrows():
        st = os.stat(row["path"])
        assert (row["size"], row["mtime_ns"], row["inode"]) == (st.st_size, st.st_mtime_ns, st.st_ino)
    assert sorted(s.read_rows()["event_id"]) == ["a", "b"]


def test_repeated_field_must_agree(in_tmp: Path) -> None:
    s = TableStoreFiledir("logs/{year}/{year}-{month}.txt", adapter="text")
    assert s.primary_keys == ["year", "month"]
    for rel in ("logs/2026/2026-01.txt", "logs/2026/2025-12.txt"):
        (in_tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (in_tmp / rel).write_text("x")
    assert s.list_files()["path"].tolist() == [str(in_tmp / "logs/2026/2026-01.txt")]
    s.upsert_rows(pd.DataFrame({"year": ["2027"], "month": ["02"], "text": ["y"]}))
    assert (in_tmp / "logs/2027/2027-02.txt").read_text() == "y"


def test_empty_and_missing_folder(in_tmp: Path) -> None:
    s = TableStoreFiledir("inbox/{order_id}.json", dtypes={"order_id": "int64"})
    for _ in range(2):  # missing, then empty
        listed = s.list_files()
        assert listed.empty and list(listed.columns) == ["path", "size", "mtime_ns", "inode"]
        rows = s.read_rows()
        assert rows.empty and list(rows.columns) == ["order_id"]
        assert rows["order_id"].dtype == "int64"
        assert s.read_rows(pd.DataFrame({"order_id": [1]})).empty
        s.delete_rows(pd.DataFrame({"order_id": [1]}))  # absent keys are ignored
        (in_tmp / "inbox").mkdir(exist_ok=True)
    gone = str(in_tmp / "inbox" / "5.json")
    assert s.read_files([gone])[gone].empty  # a file that vanished: no rows


# --- writing -----------------------------------------------------------------------------


def test_upsert_rewrites_only_changed_files(in_tmp: Path) -> None:
    s = TableStoreFiledir("out/{k}.json")
    df = pd.DataFrame({"k": ["a", "b", "c"], "v": [1, 2, 3]})
    s.upsert_rows(df)
    for p in (in_tmp / "out").iterdir():
        age(p)
    before = snapshot(in_tmp / "out")
    s.upsert_rows(df)  # byte-identical: nothing written
    assert snapshot(in_tmp / "out") == before
    s.upsert_rows(df.assign(v=[1, 20, 3]))
    after = snapshot(in_tmp / "out")
    changed = {p for p in after if after[p] != before[p]}
    assert changed == {str(in_tmp / "out" / "b.json")}
    assert json.loads((in_tmp / "out" / "b.json").read_text()) == {"v": 20}
    assert not [p for p in os.listdir(in_tmp / "out") if p.startswith(".")]  # no temp left


def test_delete_removes_files_and_emptied_folders(in_tmp: Path) -> None:
    s = TableStoreFiledir("out/{user}/{day}/{k}.json")
    s.upsert_rows(pd.DataFrame({"user": ["u1", "u1", "u2"], "day": ["d1", "d1", "d1"],
                                "k": ["a", "b", "c"], "v": [1, 2, 3]}))
    s.delete_rows(pd.DataFrame({"user": ["u1"], "day": ["d1"], "k": ["a"]}))
    assert not (in_tmp / "out/u1/d1/a.json").exists() and (in_tmp / "out/u1/d1/b.json").exists()
    s.delete_rows(pd.DataFrame({"user": ["u1", "u9"], "day": ["d1", "d1"], "k": ["b", "z"]}))
    assert not (in_tmp / "out/u1").exists()  # folders the pattern made, now empty
    assert (in_tmp / "out/u2/d1/c.json").exists()
    s.delete_rows(pd.DataFrame({"user": ["u2"], "day": ["d1"], "k": ["c"]}))
    assert (in_tmp / "out").is_dir() and not list((in_tmp / "out").iterdir())  # root kept
    assert s.read_rows().empty


def test_delete_keeps_folders_holding_other_files(in_tmp: Path) -> None:
    s = TableStoreFiledir("out/{user}/{k}.json")
    s.upsert_rows(pd.DataFrame({"user": ["u1"], "k": ["a"], "v": [1]}))
    (in_tmp / "out/u1/readme.md").write_text("mine")
    s.delete_rows(pd.DataFrame({"user": ["u1"], "k": ["a"]}))
    assert (in_tmp / "out/u1/readme.md").read_text() == "mine"


@pytest.mark.parametrize("pattern, key, message", [
    ("out/{k}.json", "a/b", "path separator"),
    ("out/{k}.json", "", "empty"),
    ("out/{k}.json", "..", "'..'"),
    ("out/{k}.json", ".secret", "hidden or temporary"),
    ("out/{k}.json", "~$lock", "hidden or temporary"),
    ("out/{a}-{k}.json", "y-z", "does not read back"),  # a='x' → x-y-z.json parses as a='x-y'
])
def test_keys_that_cannot_be_file_names(in_tmp: Path, pattern: str, key: str, message: str) -> None:
    s = TableStoreFiledir(pattern)
    row = {f: "x" for f in s.primary_keys} | {"k": key, "v": 1}
    with pytest.raises(FilepipeError, match=message):
        s.upsert_rows(pd.DataFrame([row]))
    assert not (in_tmp / "out").exists() or not list((in_tmp / "out").iterdir())


# --- reading by keys, typed keys, key fields in files ------------------------------------


def test_read_by_keys_opens_only_those_files(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = TableStoreFiledir("inbox/{user}/{k}.json")
    for u in range(4):
        for k in range(5):
            write_json(in_tmp / "inbox" / f"u{u}" / f"{k}.json", {"v": u * 10 + k})
    spy = OpenSpy(monkeypatch, in_tmp / "inbox")
    got = s.read_rows(pd.DataFrame({"user": ["u1", "u3", "u9", "u1"], "k": ["2", "4", "0", "2"],
                                    "extra": [1, 2, 3, 4]}))
    assert sorted(got["v"]) == [12, 34]
    # only the files of the keys asked for are tried (u9/0.json does not exist)
    assert sorted(spy.opened) == [str(in_tmp / f"inbox/{rel}.json") for rel in ("u1/2", "u3/4", "u9/0")]
    assert s.read_rows(pd.DataFrame({"user": [], "k": []})).columns.tolist()[:2] == ["user", "k"]


def test_keys_are_strings_unless_dtypes_say_otherwise(in_tmp: Path) -> None:
    for name in ("1", "2", "007"):
        write_json(in_tmp / "inbox" / f"{name}.json", {"qty": 1})
    as_text = TableStoreFiledir("inbox/{order_id}.json")
    assert sorted(as_text.read_rows()["order_id"]) == ["007", "1", "2"]
    assert isinstance(as_text.key_types()["order_id"], sa.String)

    typed = TableStoreFiledir("inbox/{order_id}.json",
                              dtypes={"order_id": "int64", "qty": "float64"})
    assert isinstance(typed.key_types()["order_id"], sa.BigInteger)
    rows = typed.read_rows()
    assert rows["order_id"].dtype == "int64" and sorted(rows["order_id"]) == [1, 2, 7]
    assert rows["qty"].dtype == "float64"
    # a key named non-canonically (007.json for 7) is still found, updated and deleted
    assert typed.read_rows(pd.DataFrame({"order_id": [7, 8]}))["order_id"].tolist() == [7]
    typed.upsert_rows(pd.DataFrame({"order_id": [7, 3], "qty": [5.0, 1.0]}))
    assert json.loads((in_tmp / "inbox" / "007.json").read_text()) == {"qty": 5.0}
    assert not (in_tmp / "inbox" / "7.json").exists() and (in_tmp / "inbox" / "3.json").exists()
    typed.delete_rows(pd.DataFrame({"order_id": [7]}))
    assert not (in_tmp / "inbox" / "007.json").exists()
    # two names for one key: a clear duplicate-key error
    write_json(in_tmp / "inbox" / "01.json", {"qty": 2})
    with pytest.raises(DuplicateKeysError, match="order_id=1"):
        typed.read_rows()
    (in_tmp / "inbox" / "01.json").unlink()
    write_json(in_tmp / "inbox" / "x.json", {"qty": 2})
    with pytest.raises(FilepipeError, match=r"x\.json.*'order_id'.*int64"):
        typed.read_rows()


def test_key_field_inside_json_must_agree_with_path(in_tmp: Path) -> None:
    s = TableStoreFiledir("inbox/{order_id}.json")
    ok = write_json(in_tmp / "inbox" / "7.json", {"order_id": 7, "qty": 1})
    ok_text = write_json(in_tmp / "inbox" / "a.json", {"order_id": "a", "qty": 2})
    rows = s.read_rows()
    assert rows.columns.tolist() == ["order_id", "qty"]
    assert records(rows, ["order_id"]) == {("7",): {"order_id": "7", "qty": 1},
                                           ("a",): {"order_id": "a", "qty": 2}}
    bad = write_json(in_tmp / "inbox" / "8.json", {"order_id": 9, "qty": 3})
    with pytest.raises(FilepipeError, match=r"8\.json.*'order_id' = 9.*disagrees.*order_id='8'"):
        s.read_files([str(bad)])
    typed = TableStoreFiledir("inbox/{order_id}.json", dtypes={"order_id": "int64"})
    assert typed.read_files([str(ok)])[str(ok)]["order_id"].tolist() == [7]
    five = write_json(in_tmp / "inbox" / "05.json", {"order_id": 6})
    with pytest.raises(FilepipeError, match=r"05\.json.*disagrees"):
        typed.read_files([str(five)])
    with pytest.raises(FilepipeError, match=r"a\.json.*cannot be read as int64"):
        typed.read_files([str(ok_text)])
    five.unlink()
    # keys are never written into the files
    s.upsert_rows(pd.DataFrame({"order_id": ["7"], "qty": [1]}))
    assert json.loads(ok.read_text()) == {"qty": 1}


def test_bad_files_raise_naming_the_path(in_tmp: Path) -> None:
    s = TableStoreFiledir("inbox/{order_id}.json")
    half = in_tmp / "inbox" / "1.json"
    half.parent.mkdir()
    half.write_text('{"qty": 1, "cust')
    with pytest.raises(FileDecodeError, match=r"1\.json: not valid JSON") as err:
        s.read_files([str(half)])
    assert err.value.retryable  # the sync retries it (it may be half-written)
    arr = write_json(in_tmp / "inbox" / "2.json", [1, 2])
    with pytest.raises(FilepipeError, match=r"2\.json: holds a JSON array, not an object"):
        s.read_files([str(arr)])
    with pytest.raises(FilepipeError, match="not a file of this folder pattern"):
        s.read_files([str(in_tmp / "elsewhere" / "3.json")])
    text = TableStoreFiledir("inbox/{name}.txt", adapter="text")
    (in_tmp / "inbox" / "latin1.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(FileDecodeError, match=r"latin1\.txt: not UTF-8"):
        text.read_rows()


def test_reads_never_write(in_tmp: Path) -> None:
    s = TableStoreFiledir("inbox/{user}/{k}.json")
    for u in range(3):
        for k in range(3):
            write_json(in_tmp / "inbox" / f"u{u}" / f"{k}.json", {"v": k})
    os.makedirs(in_tmp / "inbox" / "u9")  # an empty folder is left alone too
    before = snapshot(in_tmp)
    s.list_files()
    s.read_rows()
    s.read_rows(pd.DataFrame({"user": ["u1", "u8"], "k": ["1", "1"]}))
    s.read_files([str(in_tmp / "inbox/u0/0.json")])
    s.read_rows(pd.DataFrame({"user": [], "k": []}))
    assert snapshot(in_tmp) == before


# --- through the engine: a folder as a source --------------------------------------------


def double(orders: pd.DataFrame) -> pd.DataFrame:
    return orders.assign(amount2=orders["amount"] * 2)[["order_id", "customer", "amount2"]]


def customer_totals(orders: pd.DataFrame) -> pd.DataFrame:
    return orders.groupby("customer", as_index=False)["amount"].sum()


N_ORDERS = 1000


@pytest.fixture
def orders_pipeline(ds, in_tmp: Path):
    for i in range(N_ORDERS):
        write_json(in_tmp / "inbox" / f"{i}.json", {"customer": f"c{i % 10}", "amount": i})
    store = TableStoreFiledir("inbox/{order_id}.json")
    catalog = Catalog({
        "orders": Table(store),
        "doubled": Table(TableStoreMemory(["order_id"])),
        "totals": Table(TableStoreMemory(["customer"])),
    })
    steps = build_compute(ds, catalog, Pipeline([
        BatchTransform(double, inputs=["orders"], outputs=["doubled"]),
        BatchTransform(customer_totals, inputs=["orders"], outputs=["totals"],
                       transform_keys=["customer"]),
    ]))
    report = run_steps(ds, steps)
    assert report.ok, report.summary()
    assert report.tables["orders"] == {"added": N_ORDERS, "updated": 0, "deleted": 0}
    assert report.tables["doubled"]["added"] == N_ORDERS
    return store, catalog, steps


def _output(catalog: Catalog, name: str, key: str) -> dict:
    df = catalog.catalog[name].store.read_rows()
    return {r[key]: r for r in df.to_dict("records")}


def test_folder_source_changes_propagate_by_one_key(ds, in_tmp: Path, orders_pipeline,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    store, catalog, steps = orders_pipeline
    inbox = in_tmp / "inbox"
    total_c3 = sum(i for i in range(N_ORDERS) if i % 10 == 3)
    assert _output(catalog, "totals", "customer")["c3"]["amount"] == total_c3

    # add one file
    write_json(inbox / "1000.json", {"customer": "c3", "amount": 5})
    r = run_steps(ds, steps)
    assert r.ok and r.tables["orders"] == {"added": 1, "updated": 0, "deleted": 0}
    assert r.tables["doubled"] == {"added": 1, "updated": 0, "deleted": 0}
    assert r.tables["totals"] == {"added": 0, "updated": 1, "deleted": 0}
    assert _output(catalog, "doubled", "order_id")["1000"]["amount2"] == 10
    assert _output(catalog, "totals", "customer")["c3"]["amount"] == total_c3 + 5

    # edit one file
    write_json(inbox / "13.json", {"customer": "c3", "amount": 113})
    r = run_steps(ds, steps)
    assert r.tables == {"orders": {"added": 0, "updated": 1, "deleted": 0},
                        "doubled": {"added": 0, "updated": 1, "deleted": 0},
                        "totals": {"added": 0, "updated": 1, "deleted": 0}}
    assert _output(catalog, "doubled", "order_id")["13"]["amount2"] == 226
    assert _output(catalog, "totals", "customer")["c3"]["amount"] == total_c3 + 5 + 100

    # a no-op run opens no file
    calls = []
    real_read_files = store.read_files_frame
    monkeypatch.setattr(store, "read_files_frame", lambda paths: calls.append(paths) or real_read_files(paths))
    spy = OpenSpy(monkeypatch, inbox)
    r = run_steps(ds, steps)
    assert r.ok and r.tables == {} and r.steps == {}
    assert calls == [] and spy.opened == []

    # touching a file (new mtime, same content) is re-read but changes nothing downstream
    st = os.stat(inbox / "42.json")
    os.utime(inbox / "42.json", ns=(st.st_atime_ns, st.st_mtime_ns - 20_000_000_000))
    r = run_steps(ds, steps)
    assert calls == [[str(inbox / "42.json")]]
    assert r.ok and r.tables == {} and r.steps == {}

    # lock and temp files of other programs are ignored
    (inbox / "~$x.json").write_text("not json at all")
    (inbox / ".~lock.x.json#").write_text("lock")
    (inbox / ".~lock.x#").write_text("lock")
    calls.clear()
    r = run_steps(ds, steps)
    assert r.ok and r.tables == {} and r.source_errors == {} and calls == []


def test_folder_source_deleting_a_file_deletes_one_key(ds, in_tmp: Path,
                                                       orders_pipeline) -> None:
    store, catalog, steps = orders_pipeline
    inbox = in_tmp / "inbox"
    total_c3 = sum(i for i in range(N_ORDERS) if i % 10 == 3)
    (inbox / "23.json").unlink()
    r = run_steps(ds, steps)
    assert r.missing_files == [str(inbox / "23.json")]
    assert r.tables["orders"] == {"added": 0, "updated": 0, "deleted": 1}
    assert r.tables["totals"] == {"added": 0, "updated": 1, "deleted": 0}
    assert _output(catalog, "totals", "customer")["c3"]["amount"] == total_c3 - 23
    assert r.ok, r.summary()["steps"]  # fails here: step 'double' failed for key 23
    assert r.tables["doubled"] == {"added": 0, "updated": 0, "deleted": 1}
    assert "23" not in _output(catalog, "doubled", "order_id")


def test_folder_source_deletion_reaches_the_row_meta(ds, in_tmp: Path) -> None:
    for i in range(5):
        write_json(in_tmp / "inbox" / f"{i}.json", {"customer": "c", "amount": i})
    catalog = Catalog({"orders": Table(TableStoreFiledir("inbox/{order_id}.json"))})
    table = catalog.get_datatable(ds, "orders")
    assert len(sync_table(table).changed) == 5
    (in_tmp / "inbox" / "3.json").unlink()
    result = sync_table(table)
    assert result.missing == [str(in_tmp / "inbox" / "3.json")] and result.opened == []
    assert result.changed["order_id"].tolist() == ["3"]
    assert sorted(table.get_metadata()["order_id"]) == ["0", "1", "2", "4"]


def test_bad_file_in_source_is_reported_by_path_and_rest_goes_on(
        ds, in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("filepipe.sync.RETRY_DELAYS", (0.0, 0.0))
    for i in range(3):
        write_json(in_tmp / "inbox" / f"{i}.json", {"customer": "c", "amount": i})
    bad = in_tmp / "inbox" / "bad.json"
    bad.write_text('{"customer": "c", "amount"')
    age(bad)
    store = TableStoreFiledir("inbox/{order_id}.json")
    catalog = Catalog({"orders": Table(store)})
    table = catalog.get_datatable(ds, "orders")
    calls = []
    real_read_files = store.read_files
    monkeypatch.setattr(store, "read_files", lambda paths: calls.append(paths) or real_read_files(paths))
    result = sync_table(table)
    assert list(result.errors) == [str(bad)]
    assert "not valid JSON" in result.errors[str(bad)]
    assert calls.count([str(bad)]) == 3  # first try + the retries
    assert sorted(table.get_metadata()["order_id"]) == ["0", "1", "2"]
    # reading all rows names the bad file (a step never silently computes without it)
    with pytest.raises(FileDecodeError, match=r"bad\.json"):
        table.get_data()
    # once fixed, the file is picked up
    write_json(bad, {"customer": "c", "amount": 9})
    result = sync_table(table)
    assert result.errors == {} and result.opened == [str(bad)]
    assert len(result.changed) == 1


# --- through the engine: a folder as an output -------------------------------------------


def big_orders(orders: pd.DataFrame, threshold: int = 5) -> pd.DataFrame:
    return orders[orders["amount"] >= threshold][["order_id", "customer", "amount"]]


def _output_pipeline(ds, in_tmp: Path, kwargs: dict | None = None):
    catalog = Catalog({
        "orders": Table(TableStoreFiledir("inbox/{order_id}.json")),
        "big": Table(TableStoreFiledir("out/{customer}/{order_id}.json")),
    })
    steps = build_compute(ds, catalog, Pipeline([
        BatchTransform(big_orders, inputs=["orders"], outputs=["big"],
                       transform_keys=["order_id"], kwargs=kwargs or {})]))
    return catalog, steps


def test_folder_as_step_output(ds, in_tmp: Path) -> None:
    for i in range(10):
        write_json(in_tmp / "inbox" / f"{i}.json", {"customer": f"c{i % 2}", "amount": i})
    catalog, steps = _output_pipeline(ds, in_tmp)
    r = run_steps(ds, steps)
    assert r.ok and r.tables["big"] == {"added": 5, "updated": 0, "deleted": 0}
    out = in_tmp / "out"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json")) == \
        ["c0/6.json", "c0/8.json", "c1/5.json", "c1/7.json", "c1/9.json"]
    assert json.loads((out / "c0" / "6.json").read_text()) == {"amount": 6}
    written = snapshot(out)

    # re-running with identical outputs rewrites nothing
    r = run_steps(ds, steps)
    assert r.tables == {} and snapshot(out) == written
    # ... even when the step recomputes every key (its parameters changed)
    catalog, steps = _output_pipeline(ds, in_tmp, kwargs={"threshold": 5})
    r = run_steps(ds, steps)
    assert r.ok and r.steps["big_orders"].processed == 10
    assert r.tables.get("big", {"added": 0, "updated": 0, "deleted": 0}) == \
        {"added": 0, "updated": 0, "deleted": 0}
    assert snapshot(out) == written

    # rows the step no longer emits lose their files (and emptied folders go)
    write_json(in_tmp / "inbox" / "6.json", {"customer": "c0", "amount": 0})
    write_json(in_tmp / "inbox" / "8.json", {"customer": "c0", "amount": 1})
    write_json(in_tmp / "inbox" / "9.json", {"customer": "c1", "amount": 90})
    r = run_steps(ds, steps)
    assert r.ok and r.tables["big"] == {"added": 0, "updated": 1, "deleted": 2}
    assert not (out / "c0").exists()
    assert json.loads((out / "c1" / "9.json").read_text()) == {"amount": 90}
    now = snapshot(out)
    assert {p: now[p] for p in now if not p.endswith("9.json") and p != str(out / "c1")} == \
        {p: written[p] for p in now if not p.endswith("9.json") and p != str(out / "c1")}
    assert catalog.catalog["big"].store.read_rows()["order_id"].tolist() == ["5", "7", "9"]


def test_no_op_after_output_deletion_opens_no_output_file(
        ds, in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(10):
        write_json(in_tmp / "inbox" / f"{i}.json", {"customer": "c", "amount": i})
    catalog, steps = _output_pipeline(ds, in_tmp)
    run_steps(ds, steps)
    write_json(in_tmp / "inbox" / "7.json", {"customer": "c", "amount": 0})
    r = run_steps(ds, steps)
    assert r.tables["big"]["deleted"] == 1
    spy = OpenSpy(monkeypatch, in_tmp / "out")
    r = run_steps(ds, steps)
    assert r.tables == {}
    assert spy.opened == []


def test_hand_edited_output_file_backup_does_not_become_a_row(ds, in_tmp: Path) -> None:
    for i in range(6, 9):
        write_json(in_tmp / "inbox" / f"{i}.json", {"customer": "c", "amount": i})
    catalog, steps = _output_pipeline(ds, in_tmp)
    run_steps(ds, steps)
    edited = in_tmp / "out" / "c" / "7.json"
    edited.write_text(json.dumps({"amount": 700}))
    r = run_steps(ds, steps)
    assert r.backups  # the edit was noticed and the output rebuilt
    assert json.loads(edited.read_text()) == {"amount": 7}
    assert sorted(catalog.catalog["big"].store.read_rows()["order_id"]) == ["6", "7", "8"]


# --- entries that cannot be rows, values that cannot be files (issue #8) -----------------


def test_fifo_and_non_utf8_names_are_skipped_and_reported(in_tmp: Path) -> None:
    inbox = in_tmp / "inbox"
    write_json(inbox / "u1" / "1.json", {"v": 1})
    write_json(inbox / "u1" / os.fsdecode(b"caf\xe9.json"), {"v": 2})  # a Latin-1 name
    write_json(inbox / os.fsdecode(b"\xff") / "2.json", {"v": 3})      # a Latin-1 folder
    os.mkfifo(inbox / "u1" / "3.json")
    write_json(in_tmp / "elsewhere.json", {"v": 4})
    os.symlink(in_tmp / "elsewhere.json", inbox / "u1" / "4.json")      # a link to a file: a row
    os.symlink(in_tmp / "gone.json", inbox / "u1" / "5.json")           # a dangling link: no row
    (inbox / "u1" / "6.json").mkdir()                                   # a folder: no row
    s = TableStoreFiledir("inbox/{user}/{k}.json")
    fifo = inbox / "u1" / "3.json"
    listed = promptly(s.list_files, fifo)
    assert sorted(listed["path"]) == [str(inbox / "u1" / f"{k}.json") for k in (1, 4)]
    assert s.skipped_files() == {
        f"{inbox}/u1/caf\\xe9.json": "file name is not valid UTF-8 (rename it)",
        f"{inbox}/\\xff": "folder name is not valid UTF-8 (rename it)",
        str(fifo): "not a regular file (a FIFO): filepipe never opens it; remove it or move it away",
    }
    rows = promptly(s.read_rows, fifo)
    assert sorted(rows["v"]) == [1, 4]
    keys = pd.DataFrame({"user": ["u1"] * 3, "k": ["1", "3", "5"]})
    assert promptly(lambda: s.read_rows(keys), fifo)["v"].tolist() == [1]
    # writing over the FIFO replaces it with a file; clearing leaves the odd entries alone
    promptly(lambda: s.upsert_rows(pd.DataFrame({"user": ["u1"], "k": ["3"], "v": [30]})), fifo)
    assert json.loads(fifo.read_text()) == {"v": 30}
    promptly(s.clear, fifo)
    assert sorted(os.listdir(inbox / "u1")) == sorted(["5.json", "6.json", os.fsdecode(b"caf\xe9.json")])
    assert s.skipped_files() == {f"{inbox}/u1/caf\\xe9.json": "file name is not valid UTF-8 (rename it)",
                                 f"{inbox}/\\xff": "folder name is not valid UTF-8 (rename it)"}


def test_source_folder_with_a_fifo_and_a_non_utf8_name_syncs_the_rest(ds, in_tmp: Path) -> None:
    for i in range(3):
        write_json(in_tmp / "inbox" / f"{i}.json", {"customer": "c", "amount": i})
    write_json(in_tmp / "inbox" / os.fsdecode(b"\xe9t\xe9.json"), {"customer": "c", "amount": 9})
    fifo = in_tmp / "inbox" / "7.json"
    os.mkfifo(fifo)
    table = Catalog({"orders": Table(TableStoreFiledir("inbox/{order_id}.json"))}) \
        .get_datatable(ds, "orders")
    result = promptly(lambda: sync_table(table), fifo)
    assert sorted(result.changed["order_id"]) == ["0", "1", "2"]
    assert sorted(table.store.skipped_files()) == [str(fifo), f"{in_tmp}/inbox/\\xe9t\\xe9.json"]
    assert result.errors == table.store.skipped_files()  # the sync reports them


def test_root_that_is_a_file_is_named(ds, in_tmp: Path) -> None:
    (in_tmp / "out").write_text("a file, where the output folder should be")
    s = TableStoreFiledir("out/{k}/{n}.json")
    rows = pd.DataFrame({"k": ["a"], "n": ["1"], "v": [1]})
    message = rf"{in_tmp}/out is a file, not a folder"
    with pytest.raises(FilepipeError, match=message):
        s.check_writable(rows)
    with pytest.raises(FilepipeError, match=message):
        s.upsert_rows(rows)
    with pytest.raises(FilepipeError, match=message):  # as a source: its rows do not vanish
        s.list_files()
    assert (in_tmp / "out").read_text().startswith("a file")


@pytest.mark.parametrize("adapter, row, message", [
    ("json", {"k": "a/b"}, r"key k='a/b' cannot be part of a file name .*path separator"),
    ("json", {"k": ""}, r"key k='' cannot be part of a file name .*empty"),
    ("json", {"k": None}, r"key k=None is missing"),
    ("json", {"k": float("nan")}, r"key k=nan is missing"),
    ("json", {"k": "x" * 300}, r"keys k='xxxx.*longer than the 255 bytes"),
    ("json", {"k": "caf\udce9"}, r"key k='caf\\udce9' .*not valid Unicode"),
    ("json", {"v": object()}, r"row k='ok': column 'v' .*object value .* has no JSON form"),
    ("json", {"v": b"\x00"}, r"row k='ok': column 'v' .*adapter='bytes'"),
    ("json", {"v": math.inf}, r"row k='ok': column 'v' .*infinite"),
    ("json", {"v": [1, {"x": b"y"}]}, r"row k='ok': column 'v' .*bytes"),
    ("json", {"v": "caf\udce9"}, r"row k='ok': column 'v' .*not valid Unicode"),
    ("text", {"text": 5}, r"column 'text' must hold str values; row k='ok' holds int 5"),
    ("text", {"text": "caf\udce9"}, r"row k='ok': column 'text' .*not valid Unicode"),
], ids=["slash", "empty", "none", "nan", "too-long", "key-not-unicode", "object", "bytes",
        "infinite", "nested-bytes", "text-not-unicode", "text-not-str", "text-file-not-unicode"])
def test_check_writable_names_the_key_and_the_fix(in_tmp: Path, adapter: str, row: dict,
                                                   message: str) -> None:
    s = TableStoreFiledir("out/{k}.json" if adapter == "json" else "out/{k}.txt", adapter=adapter)
    good = {"k": "fine", "text" if adapter == "text" else "v": "x"}
    df = pd.DataFrame([good, {"k": "ok", "text" if adapter == "text" else "v": "y"} | row],
                      dtype=object)
    with pytest.raises(FilepipeError, match=message):
        s.check_writable(df)
    with pytest.raises(FilepipeError, match=message):
        s.upsert_rows(df)
    assert not (in_tmp / "out").exists() or not list((in_tmp / "out").iterdir())
    s.check_writable(df.iloc[:1])  # the good row alone is fine


def test_owns_path(in_tmp: Path) -> None:
    s = TableStoreFiledir("inbox/{user}/order_{k}.json")
    inbox = in_tmp / "inbox"
    assert s.owns_path(inbox / "u1" / "order_7.json")
    assert s.owns_path(inbox / "u1") and s.owns_path(inbox)   # folders that can hold rows
    assert not s.owns_path(inbox / "u1" / "notes.txt")
    assert not s.owns_path(inbox / "u1" / ".order_7.json")
    assert not s.owns_path(inbox / "u1" / "~$order_7.json")
    assert not s.owns_path(inbox / "u1" / "sub" / "order_7.json")
    assert not s.owns_path(inbox / ".git")
    assert not s.owns_path(in_tmp / "other" / "u1" / "order_7.json")
