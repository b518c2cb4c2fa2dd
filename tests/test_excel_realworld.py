"""Excel workbooks as people really have them (issue #8): values a sheet cannot hold, output
paths that are folders, workbooks re-saved by openpyxl and LibreOffice, key and header cells
of odd types, times and durations, encrypted and old .xls files.

Every workbook here is a real file, written by filepipe or by openpyxl (as another program
would) and read back; pipelines run through the real engine over a real SQLite index.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest
from conftest import age
from test_store_excel import edit_workbook, make_workbook
from test_xlsx import SOFFICE, soffice_convert

from filepipe import BatchTransform, Catalog, Pipeline, Table, build_compute, run_steps
from filepipe.errors import FilepipeError
from filepipe.hashing import hash_rows
from filepipe.stores import TableStoreExcel
from filepipe.xlsx import SheetError, read_sheet, sheet_names, write_sheet

needs_soffice = pytest.mark.skipif(SOFFICE is None, reason="LibreOffice (soffice) is not installed")


def hashes(store: TableStoreExcel, df: pd.DataFrame) -> list[int]:
    """Row hashes of `df` as the engine computes them for this store, in key order."""
    return hash_rows(store.normalize(df).sort_values(store.primary_keys, ignore_index=True)).tolist()


def fresh_rows(path: Path, sheet: str, keys: list[str]) -> tuple[TableStoreExcel, pd.DataFrame]:
    store = TableStoreExcel(path, sheet, keys)
    return store, store.read_rows()


def double(orders: pd.DataFrame) -> pd.DataFrame:
    return orders.assign(double=orders["amount"] * 2)[[orders.columns[0], "double"]]


# --------------------------------------------------------------------------- 2/7: check_writable


def test_text_longer_than_a_cell_is_refused_before_writing(in_tmp: Path) -> None:
    store = TableStoreExcel("out/report.xlsx", "Out", ["id"])
    df = pd.DataFrame({"id": [1, 2, 3], "note": ["ok", "x" * 40_000, None],
                       "js": [{"a": 1}, None, ["y" * 32_765, 1]]})
    with pytest.raises(FilepipeError) as err:
        store.check_writable(df)
    msg = str(err.value)
    assert "report.xlsx[Out]" in msg and "'note'" in msg and "id=2" in msg
    assert "40,000" in msg and "32,767" in msg
    assert not (in_tmp / "out").exists()  # nothing written, not even the folder
    # a dict/list cell is written as JSON text: its length counts too
    with pytest.raises(FilepipeError, match=r"'js'.*id=3"):
        store.check_writable(df.assign(note="fine"))
    store.check_writable(df.assign(note="fine", js=None))  # fits: no error


def test_rows_and_columns_a_sheet_cannot_hold_are_refused(in_tmp: Path) -> None:
    store = TableStoreExcel("big.xlsx", "Big", ["id"])
    store.upsert_rows(pd.DataFrame({"id": np.arange(1_000_000)}))  # buffered, not flushed
    store.check_writable(pd.DataFrame({"id": np.arange(48_575)}))  # existing keys only: fits
    store.check_writable(pd.DataFrame({"id": np.arange(1_000_000, 1_048_575)}))  # exactly full
    with pytest.raises(FilepipeError) as err:
        store.check_writable(pd.DataFrame({"id": np.arange(1_000_000, 1_048_576)}))
    msg = str(err.value)
    assert "big.xlsx[Big]" in msg and "1,048,576" in msg and "1,048,577" in msg

    wide = TableStoreExcel("wide.xlsx", "W", ["id"])
    wide.upsert_rows(pd.DataFrame({"id": [1], **{f"a{i}": [i] for i in range(10_000)}}))
    with pytest.raises(FilepipeError, match=r"16,385 columns.*16,384"):
        wide.check_writable(pd.DataFrame({"id": [2], **{f"b{i}": [i] for i in range(6_384)}}))


@pytest.mark.parametrize("keys, bad", [
    ([0.1 + 0.2, 1.5], "0.30000000000000004"),
    ([1234567890123456789, 1], "1234567890123456789"),
    (pd.to_datetime(["2024-01-01 10:00:00.000001", "2024-01-02"], format="ISO8601"),
     "2024-01-01 10:00:00.000001"),
    (["a", ""], "''"),
    (["a\x01b", "c"], "'a\\x01b'"),
    ([123, True], "True"),
])
def test_keys_a_sheet_would_not_give_back_are_refused(in_tmp: Path, keys, bad: str) -> None:
    store = TableStoreExcel("k.xlsx", "K", ["k"])
    with pytest.raises(FilepipeError) as err:
        store.check_writable(pd.DataFrame({"k": keys, "v": [1, 2]}))
    msg = str(err.value)
    assert "k.xlsx[K]" in msg and "'k'" in msg and bad in msg


def test_column_names_that_cannot_be_headers_are_refused(in_tmp: Path) -> None:
    store = TableStoreExcel("h.xlsx", "H", ["id"])
    with pytest.raises(FilepipeError, match=r"2019.*'2019'.*both"):
        store.check_writable(pd.DataFrame({"id": [1], 2019: [1], "2019": [2]}))
    with pytest.raises(FilepipeError, match="empty"):
        store.check_writable(pd.DataFrame({"id": [1], "": [1]}))
    with pytest.raises(FilepipeError, match="control"):
        store.check_writable(pd.DataFrame({"id": [1], "a\x07b": [1]}))
    store.check_writable(pd.DataFrame({"id": [1], 2019: [1], True: [2]}))  # become "2019", "TRUE"


# --------------------------------------------------------------------------- 11: bad output paths


def test_output_path_that_is_a_folder_or_under_a_file(in_tmp: Path) -> None:
    (in_tmp / "report.xlsx").mkdir()
    store = TableStoreExcel("report.xlsx", "Out", ["id"])
    df = pd.DataFrame({"id": [1], "v": [2]})
    for attempt in (lambda: store.check_writable(df), lambda: (store.upsert_rows(df), store.flush())):
        with pytest.raises(FilepipeError) as err:
            attempt()
        assert "report.xlsx" in str(err.value) and "a folder" in str(err.value)
        assert "zipfile" not in str(err.value)
    store.discard()
    with pytest.raises(SheetError, match="is a folder"):
        write_sheet(in_tmp / "report.xlsx", "Out", df)

    (in_tmp / "notes.txt").write_text("a file, not a folder")
    under = TableStoreExcel("notes.txt/report.xlsx", "Out", ["id"])
    for attempt in (lambda: under.check_writable(df),
                    lambda: (under.upsert_rows(df), under.flush())):
        with pytest.raises(FilepipeError) as err:
            attempt()
        assert "notes.txt" in str(err.value) and "not a folder" in str(err.value)
    assert (in_tmp / "notes.txt").read_text() == "a file, not a folder"


# --------------------------------------------------------------------------- 12: re-saved outputs

RESAVE = pd.DataFrame({
    "id": [1, 2, 3, 4, 5, 6],
    "f": [29.799999999999997, 0.1 + 0.2, 1e-300, 1 / 3, 2.5, 1.7976931348623157e308],
    "big": [1234567890123456, 9007199254740993, -(2**62), 7, 0, 10**15],
    "f32": np.array([0.1, 1 / 3, 2.5, 1e10, -7.25, 3.0], dtype=np.float32),
    "t": ["ctl\x01x", "vt\x0bx", "\x1f", "line\nbreak", "tab\there", "cr\r\nlf\rx"],
    "edge": ["  lead", "trail  ", "_x0041_", "a & <b>", "😀", "\u00a0"],
})


def test_normalize_is_what_every_re_save_gives_back(in_tmp: Path) -> None:
    """filepipe's write, openpyxl load+save and LibreOffice re-save all read back as
    normalize(df); normalize is idempotent."""
    store = TableStoreExcel("out.xlsx", "Out", ["id"])
    store.upsert_rows(RESAVE)
    store.flush()
    expected = hashes(store, RESAVE)
    norm = store.normalize(RESAVE)
    assert hash_rows(store.normalize(norm)).tolist() == hash_rows(norm).tolist()  # idempotent
    edit_workbook(shutil.copy(in_tmp / "out.xlsx", in_tmp / "py.xlsx"), lambda wb: None)
    copies = [in_tmp / "out.xlsx", in_tmp / "py.xlsx"]
    if SOFFICE:
        copies.append(soffice_convert(in_tmp / "out.xlsx", "xlsx", in_tmp / "lo", in_tmp / "profile"))
    for path in copies:
        reader, back = fresh_rows(path, "Out", ["id"])
        assert hashes(reader, back) == expected, path
        assert hash_rows(back.sort_values("id", ignore_index=True)).tolist() == expected, path
    _, back = fresh_rows(in_tmp / "out.xlsx", "Out", ["id"])
    assert back["f"].tolist()[:2] == [29.8, 0.3] and back["t"].tolist()[5] == "cr\nlf\nx"
    assert back["big"].tolist()[:2] == [1234567890123460, 9007199254740990]


def resave_pipeline(ds, in_tmp: Path):
    src = make_workbook(in_tmp / "orders.xlsx", {"Orders": [
        ["order_id", "amount", "note"], [1, 14.9, "a"], [2, 0.15, "x\ny"], [3, 1e-300, "tab\tz"]]})

    def compute(orders: pd.DataFrame) -> pd.DataFrame:  # 29.8, 0.049999999999999996, ...
        return orders.assign(double=orders["amount"] * 2, third=orders["amount"] / 3,
                             label=orders["note"] + "\x01\x0b|\r\n|\x1f")

    catalog = Catalog({
        "orders": Table(TableStoreExcel(src, "Orders", ["order_id"])),
        "out": Table(TableStoreExcel("report.xlsx", "Out", ["order_id"])),
    })
    return build_compute(ds, catalog, Pipeline([BatchTransform(compute, ["orders"], ["out"])]))


@pytest.mark.parametrize("how", ["openpyxl", "libreoffice", "own_sheet"])
def test_output_re_saved_unchanged_is_not_a_hand_edit(ds, in_tmp: Path, how: str) -> None:
    if how == "libreoffice" and SOFFICE is None:
        pytest.skip("LibreOffice (soffice) is not installed")
    steps = resave_pipeline(ds, in_tmp)
    assert run_steps(ds, steps).ok
    out = in_tmp / "report.xlsx"
    if how == "openpyxl":
        edit_workbook(out, lambda wb: None)
    elif how == "libreoffice":
        shutil.copy(soffice_convert(out, "xlsx", in_tmp / "lo", in_tmp / "profile"), out)
        age(out)
    else:
        edit_workbook(out, lambda wb: wb.create_sheet("Mine").append(["my notes"]))
    report = run_steps(ds, steps)
    assert report.backups == {} and report.ok
    assert list(in_tmp.glob("*.bak.xlsx")) == []


# --------------------------------------------------------------------------- 18: key cell types


def test_key_column_of_numbers_and_booleans_is_read_as_text_keys(ds, in_tmp: Path) -> None:
    src = make_workbook(in_tmp / "src.xlsx", {"S": [["code", "amount"], [123, 1.0], [True, 2.0],
                                                    [7.0, 3.0]]})
    catalog = Catalog({"src": Table(TableStoreExcel(src, "S", ["code"])),
                       "out": Table(TableStoreExcel("out.xlsx", "Out", ["code"]))})
    calls: list[list] = []

    def compute(df: pd.DataFrame) -> pd.DataFrame:
        calls.append(sorted(df["code"]))
        return double(df)
    steps = build_compute(ds, catalog, Pipeline([BatchTransform(compute, ["src"], ["out"])]))
    report = run_steps(ds, steps)
    assert report.ok and calls == [["123", "7", "TRUE"]]
    back = read_sheet(in_tmp / "out.xlsx", "Out")
    assert sorted(back["code"]) == ["123", "7", "TRUE"] and sorted(back["double"]) == [2, 4, 6]
    assert run_steps(ds, steps).tables == {}  # and nothing to do the next run


def test_time_of_day_key_column_round_trips(ds, in_tmp: Path) -> None:
    src = make_workbook(in_tmp / "src.xlsx", {"S": [["slot", "amount"], [dt.time(9, 0), 1.0],
                                                    [dt.time(13, 30, 15), 2.0]]})
    catalog = Catalog({"src": Table(TableStoreExcel(src, "S", ["slot"])),
                       "out": Table(TableStoreExcel("out.xlsx", "Out", ["slot"]))})
    steps = build_compute(ds, catalog, Pipeline([BatchTransform(double, ["src"], ["out"])]))
    report = run_steps(ds, steps)
    assert report.ok and report.tables["out"]["added"] == 2
    back = read_sheet(in_tmp / "out.xlsx", "Out")
    assert back.to_dict("list") == {"slot": ["09:00:00", "13:30:15"], "double": [2, 4]}
    report = run_steps(ds, steps)
    assert report.tables == {} and report.backups == {}


# --------------------------------------------------------------------------- 19: header cells


def test_header_cells_are_read_as_the_text_they_show(in_tmp: Path) -> None:
    path = make_workbook(in_tmp / "h.xlsx", {"S": [
        [2019, 2019.5, True, dt.datetime(2026, 11, 30), dt.time(13, 30), "name"],
        [1, 2, 3, 4, 5, "x"]]})
    df = read_sheet(path, "S")
    assert list(df.columns) == ["2019", "2019.5", "TRUE", "2026-11-30", "13:30:00", "name"]
    assert all(type(c) is str for c in df.columns)
    # a key column headed by a number is named by its text
    rows = TableStoreExcel(path, "S", ["2019"]).read_rows()
    assert rows["2019"].tolist() == [1]


def test_primary_keys_must_be_header_text(in_tmp: Path) -> None:
    with pytest.raises(FilepipeError, match=r"primary_keys=\['id', '2019'\]"):
        TableStoreExcel("h.xlsx", "S", ["id", 2019])
    with pytest.raises(FilepipeError, match=r"dtypes=\{'2019': 'str'\}"):
        TableStoreExcel("h.xlsx", "S", ["id"], dtypes={2019: "str"})


def test_non_text_column_names_are_written_as_text_headers(in_tmp: Path) -> None:
    df = pd.DataFrame({"id": [1, 2], 2019: [1.5, 2.5], True: ["a", "b"],
                       pd.Timestamp("2026-11-30"): [3, 4], 2019.5: [5, 6]})
    store = TableStoreExcel("w.xlsx", "W", ["id"])
    store.upsert_rows(df)
    store.flush()
    wb = openpyxl.load_workbook(in_tmp / "w.xlsx")
    header = [c.value for c in wb["W"][1]]
    types = [c.data_type for c in wb["W"][1]]
    wb.close()
    assert header == ["id", "2019", "TRUE", "2026-11-30", "2019.5"] and set(types) == {"s"}
    _, back = fresh_rows(in_tmp / "w.xlsx", "W", ["id"])
    assert list(back.columns) == header
    assert hash_rows(back).tolist() == hashes(store, df)


def test_number_headed_key_column_through_a_pipeline(ds, in_tmp: Path) -> None:
    src = make_workbook(in_tmp / "src.xlsx", {"S": [[2019, "amount"], [1, 1.0], [2, 2.0]]})
    catalog = Catalog({"src": Table(TableStoreExcel(src, "S", ["2019"])),
                       "out": Table(TableStoreExcel("out.xlsx", "Out", ["2019"]))})
    steps = build_compute(ds, catalog, Pipeline([BatchTransform(double, ["src"], ["out"])]))
    report = run_steps(ds, steps)
    assert report.ok, report.summary()
    assert read_sheet(in_tmp / "out.xlsx", "Out").to_dict("list") == {"2019": [1, 2],
                                                                      "double": [2, 4]}


# --------------------------------------------------------------------------- 20: times, durations


def test_times_durations_and_early_dates_are_real_excel_values(in_tmp: Path) -> None:
    df = pd.DataFrame({
        "id": [1, 2, 3, 4],
        "at": [dt.time(13, 30, 55, 200000), dt.time(0, 0), None, dt.time(23, 59, 59, 999600)],
        "took": [dt.timedelta(days=1, hours=12), dt.timedelta(seconds=-5),
                 dt.timedelta(milliseconds=1), None],
        "td64": pd.to_timedelta(["36:00:00", "00:00:01.5", None, "1000 days"]),
        "day": pd.to_datetime(["1900-01-01", "1900-02-28", "1900-03-01", "1900-01-01 12:00"],
                              format="ISO8601"),
        "old": [dt.date(1899, 12, 31), dt.date(1900, 1, 1), None, dt.date(1800, 5, 6)],
    })
    store = TableStoreExcel("t.xlsx", "T", ["id"])
    store.upsert_rows(df)
    store.flush()
    wb = openpyxl.load_workbook(in_tmp / "t.xlsx")
    ws = wb["T"]
    assert ws["B2"].value == dt.time(13, 30, 55, 200000) and ws["B2"].number_format.startswith("hh:mm:ss")
    assert ws["C2"].value == dt.timedelta(days=1, hours=12) and ws["C2"].number_format.startswith("[h]")
    assert ws["D2"].value == dt.timedelta(hours=36)
    assert ws["E2"].value == dt.datetime(1900, 1, 1) and ws["E3"].value == dt.datetime(1900, 2, 28)
    assert ws["E2"].data_type == "d" and ws["E5"].value == dt.datetime(1900, 1, 1, 12)
    assert ws["F2"].value == "1899-12-31" and ws["F3"].value == dt.datetime(1900, 1, 1)
    wb.close()
    back = read_sheet(in_tmp / "t.xlsx", "T")
    assert back["at"].tolist()[:2] == [dt.time(13, 30, 55, 200000), dt.time(0, 0)]
    assert back["at"][3] == dt.time(23, 59, 59, 999000)  # milliseconds, never the next day
    assert back["took"].tolist()[:3] == [pd.Timedelta(days=1, hours=12), pd.Timedelta(seconds=-5),
                                         pd.Timedelta(milliseconds=1)]
    assert back["td64"][0] == pd.Timedelta(hours=36) and back["td64"][3] == pd.Timedelta(days=1000)
    assert back["day"].tolist() == df["day"].tolist()
    assert back["old"].tolist()[:2] == ["1899-12-31", pd.Timestamp("1900-01-01")]
    _, rows = fresh_rows(in_tmp / "t.xlsx", "T", ["id"])
    assert hash_rows(rows).tolist() == hashes(store, df)


@needs_soffice
def test_times_durations_and_early_dates_survive_libreoffice(in_tmp: Path) -> None:
    df = pd.DataFrame({
        "id": [1, 2, 3],
        "at": [dt.time(13, 30, 55, 200000), dt.time(7, 0), dt.time(0, 0, 0, 1000)],
        "took": pd.to_timedelta(["36:00:00", "00:00:01.5", "-00:00:05"]),
        "day": pd.to_datetime(["1900-01-01", "1900-02-28 06:00", "2024-02-29 10:11:12.345"],
                              format="ISO8601"),
    })
    store = TableStoreExcel("t.xlsx", "T", ["id"])
    store.upsert_rows(df)
    store.flush()
    lo = soffice_convert(in_tmp / "t.xlsx", "xlsx", in_tmp / "lo", in_tmp / "profile")
    reader, back = fresh_rows(lo, "T", ["id"])
    assert hashes(reader, back) == hashes(store, df)


# --------------------------------------------------------------------------- 21: not an .xlsx


def cfb_file(path: Path, encrypted: bool) -> Path:
    """A Compound File Binary (OLE2) container as Office writes: the 8-byte signature,
    a 512-byte header, and a directory sector naming the streams."""
    header = bytes.fromhex("D0CF11E0A1B11AE1") + bytes(16) + b"\x3e\x00\x03\x00\xfe\xff\x09\x00"
    header += bytes(512 - len(header))

    def entry(name: str) -> bytes:
        raw = name.encode("utf-16-le") + b"\x00\x00"
        return raw + bytes(64 - len(raw)) + bytes(64)  # name, length, type... (zeros)
    names = (["Root Entry", "EncryptionInfo", "EncryptedPackage"] if encrypted
             else ["Root Entry", "Workbook", "\x05SummaryInformation"])
    directory = b"".join(entry(n) for n in names)
    path.write_bytes(header + directory + bytes(512 - len(directory) % 512))
    age(path)
    return path


@pytest.mark.parametrize("encrypted", [True, False])
def test_encrypted_or_old_xls_workbook_is_named_as_such(ds, in_tmp: Path, encrypted: bool) -> None:
    path = cfb_file(in_tmp / "prices.xlsx", encrypted)
    expected = "password-protected (encrypted)" if encrypted else "old .xls workbook"
    for read in (sheet_names, read_sheet, lambda p: write_sheet(p, "Out", pd.DataFrame({"a": [1]}))):
        with pytest.raises(SheetError, match=re.escape(expected)) as err:
            read(path)
        assert "prices.xlsx" in str(err.value) and isinstance(err.value, FilepipeError)
    catalog = Catalog({"src": Table(TableStoreExcel(path, "Prices", ["sku"])),
                       "out": Table(TableStoreExcel("out.xlsx", "Out", ["sku"]))})
    steps = build_compute(ds, catalog, Pipeline([BatchTransform(lambda d: d, ["src"], ["out"])]))
    report = run_steps(ds, steps)
    msg = report.source_errors[str(path)]
    assert expected in msg and ("without a password" if encrypted else "save it as .xlsx") in msg
    assert "BadZipFile" not in msg


def test_too_long_text_fails_the_batch_on_every_run_until_fixed(ds, in_tmp: Path) -> None:
    src = make_workbook(in_tmp / "src.xlsx", {"S": [["id", "amount", "n"], [1, 1.0, 10],
                                                    [2, 2.0, 40_000], [3, 3.0, 10]]})

    def notes(df: pd.DataFrame) -> pd.DataFrame:
        return df.assign(note=["x" * n for n in df["n"]])[["id", "note"]]
    catalog = Catalog({"src": Table(TableStoreExcel(src, "S", ["id"])),
                       "out": Table(TableStoreExcel("out.xlsx", "Out", ["id"]))})
    steps = build_compute(ds, catalog, Pipeline([BatchTransform(notes, ["src"], ["out"])]))
    for _ in range(2):  # the second run does not take the keys for done
        report = run_steps(ds, steps)
        assert not report.ok and report.steps["notes"].failed
        error = " ".join(report.steps["notes"].errors)
        assert "'note'" in error and "id=2" in error and "40,000" in error
        assert not (in_tmp / "out.xlsx").exists() or read_sheet(in_tmp / "out.xlsx", "Out").empty
    edit_workbook(src, lambda wb: wb["S"].cell(3, 3, 20))
    report = run_steps(ds, steps)
    assert report.ok and read_sheet(in_tmp / "out.xlsx", "Out")["note"].str.len().tolist() == [10, 20, 10]
