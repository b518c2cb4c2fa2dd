"""TableStoreExcel: one sheet of a real .xlsx workbook as a keyed table.

Workbooks "made by people" are written with openpyxl, as another program would; the
store reads them with calamine and writes its own sheets with filepipe.xlsx.
"""

from __future__ import annotations

import datetime as dt
import posixpath
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest
from conftest import age
from openpyxl.styles import Font, PatternFill

from filepipe import BatchTransform, Catalog, Pipeline, Table, build_compute, run_steps
from filepipe.errors import DuplicateKeysError, FilepipeError, MissingColumnsError
from filepipe.hashing import hash_rows
from filepipe.stores import TableStoreExcel
from filepipe.stores.excel import EmptyKeyError, SheetNotFoundError, sheet_for_stem
from filepipe.xlsx import read_sheet, sheet_names, write_sheet

# --- helpers ------------------------------------------------------------------------------


def make_workbook(path: Path, sheets: dict[str, list[list]], aged: bool = True) -> Path:
    """An .xlsx written by openpyxl (first list of each sheet = header row)."""
    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    for name, rows in sheets.items():
        ws = wb.create_sheet(name)
        for row in rows:
            ws.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)
    if aged:
        age(path)
    return path


def edit_workbook(path: Path, edit, aged: bool = True) -> None:
    """Load with openpyxl, apply `edit(wb)`, save: what a user's spreadsheet program does."""
    wb = openpyxl.load_workbook(path)
    edit(wb)
    wb.save(path)
    if aged:
        age(path)


def set_cell(sheet: str, cell: str, value) -> Callable[[openpyxl.Workbook], None]:
    def edit(wb):
        wb[sheet][cell] = value
    return edit


def sheet_part_bytes(path: Path, sheet: str) -> bytes:
    """Uncompressed bytes of a worksheet's XML part, found through workbook.xml."""
    with zipfile.ZipFile(path) as z:
        wb_xml = z.read("xl/workbook.xml").decode()
        rels = z.read("xl/_rels/workbook.xml.rels").decode()
        m = re.search(r'<sheet\b[^>]*\bname="' + re.escape(sheet) + r'"[^>]*>', wb_xml)
        assert m, f"no sheet {sheet!r} in {path}"
        rid = re.search(r'r:id="([^"]+)"', m.group(0)).group(1)
        rel = re.search(r'<Relationship\b[^>]*\bId="' + rid + r'"[^>]*>', rels) or \
            re.search(r'<Relationship\b[^>]*Id="' + rid + r'"[^>]*/>', rels)
        target = re.search(r'Target="([^"]+)"', rel.group(0)).group(1)
        part = target.lstrip("/") if target.startswith("/") else posixpath.join("xl", target)
        return z.read(posixpath.normpath(part))


def mtime(path: Path) -> int:
    return path.stat().st_mtime_ns


def store_frame(store: TableStoreExcel) -> pd.DataFrame:
    """What a fresh store (another process) reads from the file."""
    fresh = TableStoreExcel(store.path, store.sheet, store.primary_keys, store.dtypes)
    return fresh.read_rows().sort_values(store.primary_keys, ignore_index=True)


def write_via_store(store: TableStoreExcel, df: pd.DataFrame) -> None:
    store.upsert_rows(df)
    store.flush()


# --- the store on its own -----------------------------------------------------------------

MIXED = pd.DataFrame({
    "id": [3, 1, 2, 4],
    "name": ["Zoë 😀", "北京", None, "a < b & c"],
    "qty": [10, -2, 0, 2**40],
    "price": [1.5, np.nan, 2.0, 1e-7],
    "score": pd.array([1, None, 3, 4], dtype="Int64"),
    "day": pd.to_datetime(["2024-01-31", "1999-12-31", None, "2030-06-01"]),
    "at": pd.to_datetime(["2024-01-31 10:11:12.345", "2024-02-01 00:00:01", None,
                          "2024-03-01 23:59:59"], format="ISO8601"),
    "ok": [True, False, True, True],
    "mixed": [1, "x", 2.5, None],
})


def test_round_trip_of_mixed_dtypes(in_tmp: Path) -> None:
    store = TableStoreExcel("out/data.xlsx", "Data", ["id"])
    write_via_store(store, MIXED)
    back = store_frame(store)
    expected = MIXED.sort_values("id", ignore_index=True)
    assert list(back.columns) == list(MIXED.columns)
    assert back["name"].isna().tolist() == [False, True, False, False]
    assert back["name"].dropna().tolist() == ["北京", "Zoë 😀", "a < b & c"]
    assert back["qty"].tolist() == expected["qty"].tolist()
    np.testing.assert_array_equal(back["price"].to_numpy(), expected["price"].to_numpy())
    assert back["day"].tolist() == expected["day"].tolist()
    assert back["at"].tolist() == expected["at"].tolist()
    assert back["ok"].tolist() == expected["ok"].tolist()
    assert back["mixed"].tolist()[:3] == expected["mixed"].tolist()[:3] == ["x", 2.5, 1]
    # the row hashes agree: a re-read of our own file is not a change
    assert hash_rows(back).tolist() == hash_rows(expected).tolist()
    # rows are written sorted by key
    assert read_sheet(store.path, "Data")["id"].tolist() == [1, 2, 3, 4]


def test_normalize_predicts_what_a_reread_gives(in_tmp: Path) -> None:
    """Values Excel cannot keep exactly: the buffered frame holds what the file will give."""
    df = pd.DataFrame({
        "id": [1, 2, 3, 4],
        "blank": ["", "x", None, ""],
        "d": [dt.date(2024, 1, 2), dt.date(1999, 12, 31), None, dt.date(2024, 2, 29)],
        "tz": pd.to_datetime(["2024-01-01 10:00", None, "2024-06-01 11:00",
                              "2024-12-01 12:00"]).tz_localize("Europe/Paris"),
        "us": pd.to_datetime(["2024-01-01 10:11:12.123456", "2024-01-01 10:11:12.9996", None,
                              "2024-01-01"], format="ISO8601"),
        "js": [{"b": 1, "a": [1, 2]}, [1, "é"], None, "plain"],
        "inf": [np.inf, 1.5, -np.inf, np.nan],
        "big": [2**53 + 1, 1, 2, -(2**60) - 1],
    })
    store = TableStoreExcel("n.xlsx", "N", ["id"])
    write_via_store(store, df)
    back = store_frame(store)
    predicted = store.normalize(df)
    assert hash_rows(back).tolist() == hash_rows(predicted).tolist()
    # and in-process reads (the buffered frame) equal the file's
    assert hash_rows(store.read_rows().sort_values("id")).tolist() == hash_rows(back).tolist()
    # key columns are never changed
    assert store.normalize(df)["id"].tolist() == [1, 2, 3, 4]


def test_round_trip_booleans_with_empty_cells(in_tmp: Path) -> None:
    df = pd.DataFrame({"id": [1, 2, 3], "ok": [True, None, False]})
    store = TableStoreExcel("b.xlsx", "B", ["id"])
    write_via_store(store, df)
    back = store_frame(store)
    assert back["ok"].tolist()[0] is True
    assert hash_rows(back).tolist() == hash_rows(df).tolist()


def test_round_trip_of_numeric_looking_text(in_tmp: Path) -> None:
    df = pd.DataFrame({"zip": ["01234", "10115", "00501"], "code": ["1.10", "2", "1e5"]})
    store = TableStoreExcel("z.xlsx", "Z", ["zip"])
    write_via_store(store, df)
    back = store_frame(store)
    assert back["zip"].tolist() == ["00501", "01234", "10115"]
    assert back["code"].tolist() == ["1e5", "1.10", "2"]


def test_upsert_delete_and_read_by_keys(in_tmp: Path) -> None:
    path = make_workbook(in_tmp / "t.xlsx", {
        "Other": [["keep me"]],
        "T": [["k", "v"], [1, "one"], [2, "two"], [3, "three"]],
    })
    other = sheet_part_bytes(path, "Other")
    store = TableStoreExcel(path, sheet="T", primary_keys=["k"])
    assert store.read_rows(pd.DataFrame({"k": [3, 1, 99]})).sort_values("k")["v"].tolist() == \
        ["one", "three"]
    store.upsert_rows(pd.DataFrame({"k": [2, 4], "v": ["TWO", "four"]}))
    store.delete_rows(pd.DataFrame({"k": [1, 99]}))
    assert read_sheet(path, "T")["v"].tolist() == ["one", "two", "three"]  # buffered until flush
    store.flush()
    assert read_sheet(path, "T").to_dict("list") == {"k": [2, 3, 4], "v": ["TWO", "three", "four"]}
    assert store_frame(store)["v"].tolist() == ["TWO", "three", "four"]
    assert sheet_part_bytes(path, "Other") == other
    assert sheet_names(path) == ["Other", "T"]


def test_empty_table(in_tmp: Path) -> None:
    store = TableStoreExcel("e.xlsx", "E", ["k"], dtypes={"v": "float64"})
    assert store.read_rows().empty and list(store.read_rows().columns) == ["k", "v"]
    write_via_store(store, pd.DataFrame({"k": [1, 2], "v": [0.5, 1.5]}))
    store.delete_rows(pd.DataFrame({"k": [1, 2]}))
    store.flush()
    assert read_sheet(store.path, "E").columns.tolist() == ["k", "v"]  # the header stays
    back = store_frame(store)
    assert back.empty and list(back.columns) == ["k", "v"]
    # a sheet with no cell at all is an empty table too
    make_workbook(in_tmp / "blank.xlsx", {"B": []})
    assert TableStoreExcel("blank.xlsx", "B", ["k"]).read_files([str(in_tmp / "blank.xlsx")])[
        str(in_tmp / "blank.xlsx")].empty


def test_duplicate_keys_name_file_sheet_and_keys(in_tmp: Path) -> None:
    path = make_workbook(in_tmp / "dup.xlsx", {
        "Orders": [["order_id", "region", "amount"], [1, "n", 5], [2, "s", 6], [1, "n", 7],
                   [3, "s", 8], [3, "s", 9]],
    })
    store = TableStoreExcel(path, "Orders", ["order_id", "region"])
    with pytest.raises(DuplicateKeysError) as err:
        store.read_files([str(path)])
    msg = str(err.value)
    assert "dup.xlsx[Orders]" in msg
    assert "order_id=1, region='n'" in msg and "order_id=3, region='s'" in msg
    assert "order_id=2" not in msg


def test_missing_key_column_names_file_and_sheet(in_tmp: Path) -> None:
    path = make_workbook(in_tmp / "report.xlsx", {"Summary": [["customer_name", "total"],
                                                               ["a", 1]]})
    store = TableStoreExcel(path, "Summary", ["customer"])
    with pytest.raises(MissingColumnsError) as err:
        store.read_files([str(path)])
    assert "report.xlsx[Summary]" in str(err.value)
    assert "'customer'" in str(err.value) and "'customer_name'" in str(err.value)
    assert store.describe().endswith("report.xlsx[Summary]")


def test_missing_or_renamed_sheet(in_tmp: Path) -> None:
    path = make_workbook(in_tmp / "book.xlsx", {"Orders": [["id"], [1]], "Notes": [["x"]]})
    store = TableStoreExcel(path, "Orders", ["id"])
    assert len(store.read_files([str(path)])[str(path)]) == 1
    edit_workbook(path, lambda wb: setattr(wb["Orders"], "title", "Orders 2024"))
    with pytest.raises(SheetNotFoundError) as err:
        store.read_files([str(path)])
    msg = str(err.value)
    assert "book.xlsx" in msg and "'Orders'" in msg and "'Orders 2024', 'Notes'" in msg
    assert isinstance(err.value, FilepipeError)  # bad data: the sync does not retry it
    # never heard of: same error
    with pytest.raises(SheetNotFoundError, match="'Nope' not found"):
        TableStoreExcel(path, "Nope", ["id"]).read_files([str(path)])


def test_an_output_sheet_not_yet_written_is_empty(in_tmp: Path) -> None:
    path = make_workbook(in_tmp / "book.xlsx", {"Orders": [["id"], [1]]})
    out = TableStoreExcel(path, "Totals", ["id"])
    assert out.read_rows().empty
    write_via_store(out, pd.DataFrame({"id": [7]}))
    assert sheet_names(path) == ["Orders", "Totals"]


def test_sheet_matches_case_insensitively(in_tmp: Path) -> None:
    path = make_workbook(in_tmp / "c.xlsx", {"Summary": [["k", "v"], [1, 2]]})
    store = TableStoreExcel(path, "summary", ["k"])
    assert store.read_rows()["v"].tolist() == [2]
    write_via_store(store, pd.DataFrame({"k": [1], "v": [3]}))
    assert sheet_names(path) == ["Summary"]  # the user's sheet, its name kept as it was
    assert read_sheet(path, "Summary")["v"].tolist() == [3]


def test_sheet_none(in_tmp: Path) -> None:
    # a new workbook: the sheet is named after the file
    store = TableStoreExcel("out/My Report.xlsx", primary_keys=["k"])
    write_via_store(store, pd.DataFrame({"k": [1], "v": ["a"]}))
    assert sheet_names(store.path) == ["My Report"]
    assert store.describe().endswith("My Report.xlsx[My Report]")
    # someone adds a sheet in front of it: the store keeps its own sheet
    write_sheet(store.path, "Cover", pd.DataFrame({"note": ["hello"]}))
    edit_workbook(store.path, lambda wb: wb.move_sheet("Cover", offset=-1))
    assert sheet_names(store.path) == ["Cover", "My Report"]
    fresh = TableStoreExcel("out/My Report.xlsx", primary_keys=["k"])
    assert fresh.read_rows()["v"].tolist() == ["a"]
    # a source someone else made: the first sheet
    path = make_workbook(in_tmp / "prices.xlsx", {"Jan": [["k", "p"], [1, 9]], "Feb": [["k"]]})
    assert TableStoreExcel(path, primary_keys=["k"]).read_files([str(path)])[str(path)][
        "p"].tolist() == [9]
    assert sheet_for_stem("a/b[1]:x*.xlsx") == "b_1__x_"
    assert sheet_for_stem("h/" + "x" * 40 + ".xlsx") == "x" * 31


def test_constructor_checks_and_repr(in_tmp: Path) -> None:
    with pytest.raises(TypeError, match=r"primary_keys=\['id'\]"):
        TableStoreExcel("x.xlsx", ["id"])
    with pytest.raises(ValueError, match="invalid sheet name"):
        TableStoreExcel("x.xlsx", "a/b", ["id"])
    with pytest.raises(ValueError, match="primary_keys"):
        TableStoreExcel("x.xlsx", "S")
    store = TableStoreExcel(path="x.xlsx", sheet="S", primary_keys=["id"], dtypes={"id": "str"})
    assert repr(store) == (f"TableStoreExcel({str(in_tmp / 'x.xlsx')!r}, sheet='S', "
                           "primary_keys=['id'], dtypes={'id': 'str'})")


def test_keys_typed_by_people(in_tmp: Path) -> None:
    """Numbers and 'numbers stored as text' in one key column are read as text keys."""
    path = make_workbook(in_tmp / "k.xlsx", {"S": [["sku", "v"], [1001, "a"], ["A-7", "b"],
                                                   [12.0, "c"]]})
    df = TableStoreExcel(path, "S", ["sku"]).read_files([str(path)])[str(path)]
    assert df["sku"].tolist() == ["1001", "A-7", "12"]
    # the same key as number and as text is a duplicate
    make_workbook(path, {"S": [["sku", "v"], [1001, "a"], ["1001", "b"], ["x", "c"]]})
    with pytest.raises(DuplicateKeysError, match="sku='1001'"):
        TableStoreExcel(path, "S", ["sku"]).read_files([str(path)])
    # dtypes={"zip": "str"}: numbers typed into a text column, without '.0'
    make_workbook(path, {"S": [["zip", "city"], [10115, "Berlin"], [None, "?"], [75001, "Paris"]]})
    df = TableStoreExcel(path, "S", ["city"], dtypes={"zip": "str"}).read_rows()
    assert df["zip"].tolist()[::2] == ["10115", "75001"] and pd.isna(df["zip"][1])


def test_empty_key_cells_are_an_error(in_tmp: Path) -> None:
    path = make_workbook(in_tmp / "k.xlsx", {"S": [["id", "v"], [1, "a"], [None, "total"]]})
    with pytest.raises(EmptyKeyError) as err:
        TableStoreExcel(path, "S", ["id"]).read_files([str(path)])
    assert "k.xlsx[S]" in str(err.value) and "'total'" in str(err.value)


def test_blank_rows_and_unnamed_empty_columns_are_skipped(in_tmp: Path) -> None:
    path = make_workbook(in_tmp / "b.xlsx", {"S": [["id", "v"], [1, "a"], [None, None],
                                                   [2, "b"]]})

    def format_far_cell(wb):
        wb["S"]["E7"].fill = PatternFill("solid", fgColor="FFFF00")  # in the used range, empty
    edit_workbook(path, format_far_cell)
    df = TableStoreExcel(path, "S", ["id"]).read_rows()
    assert df.to_dict("list") == {"id": [1, 2], "v": ["a", "b"]}


# --- through the engine -------------------------------------------------------------------

def double(orders: pd.DataFrame) -> pd.DataFrame:
    return orders.assign(double=orders["amount"] * 2)[["order_id", "customer", "double"]]


def totals(orders: pd.DataFrame) -> pd.DataFrame:
    out = orders.groupby("customer", as_index=False)["amount"].sum()
    return out.rename(columns={"amount": "total"})


def order_rows(n: int) -> list[list]:
    return [["order_id", "customer", "amount", "note"]] + [
        [i, f"c{i % 100:03d}", float(i % 997) / 4, f"nöte {i}"] for i in range(1, n + 1)]


def per_row_pipeline(ds, src: Path, out: Path):
    catalog = Catalog({
        "orders": Table(TableStoreExcel(src, "Orders", ["order_id"])),
        "doubled": Table(TableStoreExcel(out, "Doubled", ["order_id"])),
    })
    return build_compute(ds, catalog, Pipeline([BatchTransform(double, ["orders"], ["doubled"])]))


def test_engine_ten_thousand_rows_edit_resave_delete(ds, in_tmp: Path) -> None:
    src = make_workbook(in_tmp / "orders.xlsx", {"Orders": order_rows(10_000)})
    out = in_tmp / "out" / "doubled.xlsx"
    steps = per_row_pipeline(ds, src, out)

    report = run_steps(ds, steps)
    assert report.ok and report.tables["orders"] == {"added": 10_000, "updated": 0, "deleted": 0}
    assert report.tables["doubled"]["added"] == 10_000
    written = read_sheet(out, "Doubled")
    assert len(written) == 10_000 and written["double"].iloc[4] == (5 % 997) / 2

    # one cell edited with openpyxl: exactly one key changes, in the source and downstream
    edit_workbook(src, set_cell("Orders", "C6", 1234.5))  # order 5
    report = run_steps(ds, steps)
    assert report.tables == {"orders": {"added": 0, "updated": 1, "deleted": 0},
                             "doubled": {"added": 0, "updated": 1, "deleted": 0}}
    written = read_sheet(out, "Doubled").set_index("order_id")
    assert written.loc[5, "double"] == 2469.0 and written.loc[6, "double"] == 3.0

    # re-saved with identical content: nothing downstream, the output is not rewritten
    before = mtime(out)
    edit_workbook(src, lambda wb: None)
    report = run_steps(ds, steps)
    assert report.tables == {} and report.ok and not report.changed
    assert mtime(out) == before

    # a row deleted: deleted downstream
    edit_workbook(src, lambda wb: wb["Orders"].delete_rows(11))  # order 10
    report = run_steps(ds, steps)
    assert report.tables == {"orders": {"added": 0, "updated": 0, "deleted": 1},
                             "doubled": {"added": 0, "updated": 0, "deleted": 1}}
    ids = read_sheet(out, "Doubled")["order_id"]
    assert len(ids) == 9_999 and 10 not in set(ids) and 11 in set(ids)


@pytest.mark.parametrize("damage", ["rename_sheet", "drop_key_column", "duplicate_key",
                                    "empty_key"])
def test_engine_bad_source_is_reported_and_loses_nothing(ds, in_tmp: Path, damage: str) -> None:
    src = make_workbook(in_tmp / "orders.xlsx", {"Orders": order_rows(50)})
    out = in_tmp / "doubled.xlsx"
    steps = per_row_pipeline(ds, src, out)
    assert run_steps(ds, steps).ok
    orders, doubled = steps[0].inputs[0], steps[0].outputs[0]
    meta_before = (orders.get_metadata(include_deleted=True),
                   doubled.get_metadata(include_deleted=True))
    out_bytes = out.read_bytes()

    edit = {
        "rename_sheet": lambda wb: setattr(wb["Orders"], "title", "Orders (old)"),
        "drop_key_column": lambda wb: wb["Orders"].delete_cols(1),
        "duplicate_key": lambda wb: wb["Orders"].cell(row=3, column=1, value=1),
        "empty_key": set_cell("Orders", "A3", None),
    }[damage]
    edit_workbook(src, edit)
    report = run_steps(ds, steps)

    assert not report.ok and list(report.source_errors) == [str(src)]
    msg = report.source_errors[str(src)]
    assert "orders.xlsx" in msg
    assert {"rename_sheet": "'Orders (old)'", "drop_key_column": "'order_id'",
            "duplicate_key": "order_id=1", "empty_key": "'c002'"}[damage] in msg
    if damage != "rename_sheet":
        assert "orders.xlsx[Orders]" in msg
    assert report.tables == {}
    assert out.read_bytes() == out_bytes
    for before, after in zip(meta_before, (orders.get_metadata(include_deleted=True),
                                           doubled.get_metadata(include_deleted=True))):
        pd.testing.assert_frame_equal(before, after)

    # fixed: the next run picks the file up again
    make_workbook(src, {"Orders": order_rows(50)})
    report = run_steps(ds, steps)
    assert report.ok and report.tables == {}


def test_engine_input_and_output_sheets_in_one_workbook(ds, in_tmp: Path) -> None:
    """Orders (input), Totals (output) and Notes (the user's) share one workbook."""
    book = in_tmp / "book.xlsx"
    rows = [["order_id", "customer", "amount"], [1, "ann", 10.0], [2, "bob", 5.0],
            [3, "ann", 2.5]]
    make_workbook(book, {"Orders": rows, "Notes": [["Remember"], ["to smile"]]}, aged=False)

    def decorate(wb):
        ws = wb["Notes"]
        ws["A1"].font = Font(bold=True, italic=True, color="FF0000")
        ws["A2"].fill = PatternFill("solid", fgColor="FFFF00")
        ws.column_dimensions["A"].width = 42
        ws["B2"] = "=LEN(A2)"
    edit_workbook(book, decorate)

    catalog = Catalog({
        "orders": Table(TableStoreExcel(book, "Orders", ["order_id"])),
        "totals": Table(TableStoreExcel(book, "Totals", ["customer"])),
    })
    steps = build_compute(ds, catalog, Pipeline([
        BatchTransform(totals, ["orders"], ["totals"], transform_keys=["customer"])]))

    def run_keeping_notes():
        notes = sheet_part_bytes(book, "Notes")
        report = run_steps(ds, steps)
        assert sheet_part_bytes(book, "Notes") == notes
        assert report.ok, report.summary()
        return report

    report = run_keeping_notes()
    assert report.tables["totals"] == {"added": 2, "updated": 0, "deleted": 0}
    assert sheet_names(book) == ["Orders", "Notes", "Totals"]
    assert read_sheet(book, "Totals").to_dict("list") == {"customer": ["ann", "bob"],
                                                          "total": [12.5, 5.0]}
    styled = openpyxl.load_workbook(book)["Notes"]
    assert styled["A1"].font.bold and styled["A2"].fill.fgColor.rgb.endswith("FFFF00")
    assert styled["B2"].value == "=LEN(A2)"

    for _ in range(2):  # writing Totals changed the workbook: the next runs change nothing
        report = run_keeping_notes()
        assert report.tables == {} and report.backups == {}

    # the user edits the input sheet (an order moves to bob) and adds an order
    def edit(wb):
        wb["Orders"]["B4"] = "bob"
        wb["Orders"].append([4, "cy", 1.0])
    edit_workbook(book, edit)
    report = run_keeping_notes()
    assert report.backups == {}  # the other sheet was edited: not a conflict on Totals
    assert report.tables["orders"] == {"added": 1, "updated": 1, "deleted": 0}
    assert report.tables["totals"] == {"added": 1, "updated": 2, "deleted": 0}
    assert read_sheet(book, "Totals").to_dict("list") == {"customer": ["ann", "bob", "cy"],
                                                          "total": [10.0, 7.5, 1.0]}
    assert sheet_names(book) == ["Orders", "Notes", "Totals"]


def test_engine_output_edited_by_hand_is_backed_up_and_rebuilt(ds, in_tmp: Path) -> None:
    src = make_workbook(in_tmp / "orders.xlsx", {"Orders": order_rows(20)})
    out = in_tmp / "out" / "doubled.xlsx"
    steps = per_row_pipeline(ds, src, out)
    assert run_steps(ds, steps).ok
    computed = read_sheet(out, "Doubled")

    edit_workbook(out, set_cell("Doubled", "C3", -1))  # order 2's value
    report = run_steps(ds, steps)
    assert list(report.backups) == ["doubled"]
    backup = Path(report.backups["doubled"])
    assert backup.parent == out.parent and backup.name.startswith("doubled.")
    assert backup.name.endswith(".bak.xlsx")
    assert read_sheet(backup, "Doubled")["double"][1] == -1  # the user's edit is kept there
    pd.testing.assert_frame_equal(read_sheet(out, "Doubled"), computed)

    # the run after that changes nothing
    report = run_steps(ds, steps)
    assert report.backups == {} and report.tables == {}


def test_engine_output_with_another_sheet_edited_is_no_conflict(ds, in_tmp: Path) -> None:
    src = make_workbook(in_tmp / "orders.xlsx", {"Orders": order_rows(20)})
    out = in_tmp / "doubled.xlsx"
    steps = per_row_pipeline(ds, src, out)
    assert run_steps(ds, steps).ok

    def add_notes(wb):
        wb.create_sheet("My notes")["A1"] = "looks right"
    edit_workbook(out, add_notes)
    report = run_steps(ds, steps)
    assert report.backups == {} and report.tables == {} and report.ok
    assert list(out.parent.glob("*.bak.xlsx")) == []
    assert read_sheet(out, "My notes").columns.tolist() == ["looks right"]

    edit_workbook(out, set_cell("My notes", "A2", "still right"))
    before = mtime(out)
    report = run_steps(ds, steps)
    assert report.backups == {} and mtime(out) == before

    # the output sheet is rewritten: the user's sheet stays
    notes = sheet_part_bytes(out, "My notes")
    edit_workbook(src, set_cell("Orders", "C2", 50.0))
    report = run_steps(ds, steps)
    assert report.tables["doubled"] == {"added": 0, "updated": 1, "deleted": 0}
    assert mtime(out) != before and read_sheet(out, "Doubled")["double"][0] == 100.0
    assert sheet_part_bytes(out, "My notes") == notes
    assert sheet_names(out) == ["Doubled", "My notes"]


def test_engine_two_output_sheets_of_one_workbook(ds, in_tmp: Path) -> None:
    """One step writing two sheets of one workbook: each write changes the file the other
    output's fingerprint was taken of; that must not look like an edit by hand."""
    src = make_workbook(in_tmp / "orders.xlsx", {"Orders": order_rows(30)})

    def split(orders: pd.DataFrame):
        small = orders[orders["amount"] < 3]
        return double(small), double(orders.drop(small.index))
    catalog = Catalog({
        "orders": Table(TableStoreExcel(src, "Orders", ["order_id"])),
        "small": Table(TableStoreExcel("report.xlsx", "Small", ["order_id"])),
        "large": Table(TableStoreExcel("report.xlsx", "Large", ["order_id"])),
    })
    steps = build_compute(ds, catalog, Pipeline([
        BatchTransform(split, ["orders"], ["small", "large"])]))
    report = run_steps(ds, steps)
    assert report.ok and report.tables["small"]["added"] + report.tables["large"]["added"] == 30
    for _ in range(2):
        report = run_steps(ds, steps)
        assert report.backups == {} and report.tables == {}
    edit_workbook(src, set_cell("Orders", "C21", 0.0))  # order 20 (5.0) moves to small
    report = run_steps(ds, steps)
    assert report.backups == {}
    assert report.tables["small"] == {"added": 1, "updated": 0, "deleted": 0}
    assert report.tables["large"] == {"added": 0, "updated": 0, "deleted": 1}
    assert 20 in set(read_sheet(in_tmp / "report.xlsx", "Small")["order_id"])
    assert 20 not in set(read_sheet(in_tmp / "report.xlsx", "Large")["order_id"])


def test_engine_half_written_source_is_retried_then_reported(ds, in_tmp: Path,
                                                             monkeypatch) -> None:
    import filepipe.sync

    monkeypatch.setattr(filepipe.sync, "RETRY_DELAYS", (0.01, 0.01, 0.01))
    a = make_workbook(in_tmp / "a.xlsx", {"Orders": order_rows(30)})
    b = make_workbook(in_tmp / "b.xlsx", {"Orders": order_rows(30)})
    catalog = Catalog({
        "a": Table(TableStoreExcel(a, "Orders", ["order_id"])),
        "b": Table(TableStoreExcel(b, "Orders", ["order_id"])),
        "a2": Table(TableStoreExcel("out.xlsx", "A", ["order_id"])),
        "b2": Table(TableStoreExcel("out.xlsx", "B", ["order_id"])),
    })
    steps = build_compute(ds, catalog, Pipeline([
        BatchTransform(double, ["a"], ["a2"]), BatchTransform(double, ["b"], ["b2"])]))
    assert run_steps(ds, steps).ok

    good = a.read_bytes()
    a.write_bytes(good[: len(good) // 2])  # a program is still saving it
    age(a)
    edit_workbook(b, set_cell("Orders", "C2", 99.0))
    calls: list[str] = []
    real = TableStoreExcel.read_file

    def counting(self, path):
        calls.append(Path(path).name)
        return real(self, path)
    monkeypatch.setattr(TableStoreExcel, "read_file", counting)

    report = run_steps(ds, steps)  # does not raise
    assert calls.count("a.xlsx") == 5  # all files at once, then alone: first try + 3 retries
    assert list(report.source_errors) == [str(a)]
    assert "a.xlsx" in str(report.source_errors) or "BadZipFile" in report.source_errors[str(a)]
    assert report.tables["b"] == {"added": 0, "updated": 1, "deleted": 0}
    assert report.tables["b2"] == {"added": 0, "updated": 1, "deleted": 0}
    assert "a" not in report.tables and "a2" not in report.tables
    assert len(read_sheet(in_tmp / "out.xlsx", "A")) == 30

    # the program finished saving (with one more order): picked up
    wb_rows = order_rows(30) + [[31, "c031", 4.0, "late"]]
    make_workbook(a, {"Orders": wb_rows})
    report = run_steps(ds, steps)
    assert report.ok and report.tables["a"] == {"added": 1, "updated": 0, "deleted": 0}
    assert len(read_sheet(in_tmp / "out.xlsx", "A")) == 31


def test_engine_noop_run_does_not_open_or_rewrite(ds, in_tmp: Path, monkeypatch) -> None:
    src = make_workbook(in_tmp / "orders.xlsx", {"Orders": order_rows(100)})
    out = in_tmp / "doubled.xlsx"
    steps = per_row_pipeline(ds, src, out)
    assert run_steps(ds, steps).ok
    before = (mtime(src), mtime(out), out.read_bytes())

    opened: list[Path] = []
    real = TableStoreExcel.read_file

    def counting(self, path):
        opened.append(path)
        return real(self, path)
    monkeypatch.setattr(TableStoreExcel, "read_file", counting)

    import filepipe.xlsx
    real_names = filepipe.xlsx.sheet_names

    def names_counting(path):
        opened.append(path)
        return real_names(path)
    monkeypatch.setattr(filepipe.xlsx, "sheet_names", names_counting)

    for _ in range(2):
        report = run_steps(ds, steps)
        assert report.ok and report.tables == {} and not report.changed
    assert opened == []
    assert (mtime(src), mtime(out), out.read_bytes()) == before


# --- engine behaviour around Excel outputs -------------------------------------------------

def shared_book_pipeline(ds, book: Path, func):
    make_workbook(book, {"Orders": order_rows(5)})
    catalog = Catalog({"orders": Table(TableStoreExcel(book, "Orders", ["order_id"])),
                       "out": Table(TableStoreExcel(book, "Out", ["order_id"]))})
    return build_compute(ds, catalog, Pipeline([BatchTransform(func, ["orders"], ["out"])]))


def test_values_excel_cannot_keep_are_no_false_conflict(ds, in_tmp: Path) -> None:
    def with_odd_values(orders: pd.DataFrame) -> pd.DataFrame:
        return orders.assign(blank="", day=dt.date(2024, 1, 2),
                             at=pd.Timestamp("2024-01-01 10:00:00.123456"))[
            ["order_id", "blank", "day", "at"]]
    book = in_tmp / "book.xlsx"
    steps = shared_book_pipeline(ds, book, with_odd_values)
    assert run_steps(ds, steps).ok
    edit_workbook(book, set_cell("Orders", "C2", 99.0))  # the input sheet, not the output
    report = run_steps(ds, steps)
    assert report.backups == {}


def test_rebuild_drops_rows_added_by_hand(ds, in_tmp: Path) -> None:
    src = make_workbook(in_tmp / "orders.xlsx", {"Orders": order_rows(5)})
    out = in_tmp / "doubled.xlsx"
    steps = per_row_pipeline(ds, src, out)
    assert run_steps(ds, steps).ok
    edit_workbook(out, lambda wb: wb["Doubled"].append([99, "zz", 1.0]))
    report = run_steps(ds, steps)
    assert list(report.backups) == ["doubled"]
    assert 99 not in set(read_sheet(out, "Doubled")["order_id"])


@pytest.mark.parametrize("damage", ["drop_key_column", "duplicate_key"])
def test_output_broken_by_hand_is_backed_up_and_rebuilt(ds, in_tmp: Path, damage: str) -> None:
    src = make_workbook(in_tmp / "orders.xlsx", {"Orders": order_rows(5)})
    out = in_tmp / "doubled.xlsx"
    steps = per_row_pipeline(ds, src, out)
    assert run_steps(ds, steps).ok
    computed = read_sheet(out, "Doubled")
    edit_workbook(out, {"drop_key_column": lambda wb: wb["Doubled"].delete_cols(1),
                        "duplicate_key": lambda wb: wb["Doubled"].append([1, "x", 0.0])}[damage])
    report = run_steps(ds, steps)
    assert list(report.backups) == ["doubled"]
    pd.testing.assert_frame_equal(read_sheet(out, "Doubled"), computed)


def test_text_typed_into_a_numeric_key_column_is_reported(ds, in_tmp: Path) -> None:
    src = make_workbook(in_tmp / "orders.xlsx", {"Orders": order_rows(5)})
    steps = per_row_pipeline(ds, src, in_tmp / "doubled.xlsx")
    assert run_steps(ds, steps).ok
    edit_workbook(src, set_cell("Orders", "A3", "X-2"))
    report = run_steps(ds, steps)
    assert list(report.source_errors) == [str(src)]
    assert "order_id" in report.source_errors[str(src)]
