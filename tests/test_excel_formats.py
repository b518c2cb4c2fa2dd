"""Output workbooks that look like reports, and keep the look the user gives them (issue #11,
section 1): number formats and widths declared in the pipeline, readable defaults, and the
user's formatting of filepipe's own sheet kept across rewrites without counting as a hand
edit; LibreOffice shows the formatted text.

Every workbook is a real file written through filepipe (the store, a pipeline run over a
real SQLite index, or ``write_sheet``), formatted by openpyxl as a user's program would, and
read back with openpyxl, calamine or LibreOffice.
"""

from __future__ import annotations

import datetime as dt
import shutil
import zipfile
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import openpyxl
import pandas as pd
import pytest
from conftest import age
from excel_format_helpers import (
    BLUE,
    CSV_AS_SHOWN,
    MONEY,
    PDFTOTEXT,
    YELLOW,
    change_orders,
    column,
    edit_sheet,
    fill_rgb,
    format_like_a_user,
    lines_steps,
    pdf_text,
    seed,
    sheet_look,
    soffice_export,
    write_order,
)
from openpyxl.styles import Font, PatternFill
from test_xlsx import SOFFICE

from filepipe import run_steps
from filepipe.errors import KeyNameError, NotWritableError
from filepipe.hashing import hash_rows
from filepipe.stores import TableStoreExcel
from filepipe.xlsx import SheetError, read_sheet, write_sheet

FLOAT_FMT = "#,##0.00######"  # 9 -> 9.00, 6.75 -> 6.75, 1/3 -> 0.33333333
INT_FMT = "0"
needs_soffice = pytest.mark.skipif(SOFFICE is None, reason="LibreOffice (soffice) is not installed")


def sheet_comment(path: Path, part: str = "xl/worksheets/sheet1.xml") -> bytes:
    with zipfile.ZipFile(path) as z:
        return z.getinfo(part).comment


def report_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "sku": ["a-1", "b-2", "c-3"],
        "name": ["Widget", "Gadget with a long name", "Nut"],
        "qty": np.array([7, 12, 1500], dtype=np.int64),
        "price": [9.0, 6.75, 1234.5],
        "avg": [1 / 3, 2 / 3, 0.1 + 0.2],
        "whole": [1.0, np.nan, 3.0],
        "tiny": [1e-9, 2.5e-10, np.nan],
        "day": [dt.date(2024, 1, 5), dt.date(2024, 2, 1), None],
        "when": pd.to_datetime(["2024-01-05 10:15:00", "2024-02-01 08:00:30", None]),
        "ok": [True, False, True],
    })


# --------------------------------------------------------------------------- formats= and widths=


def test_formats_and_widths_given_to_the_store_are_written(in_tmp: Path) -> None:
    store = TableStoreExcel("out.xlsx", "Out", ["sku"], formats={"price": "#,##0.00", "day": "dd.mm.yyyy"},
                            widths={"name": 30})
    assert "formats={'price': '#,##0.00', 'day': 'dd.mm.yyyy'}" in repr(store)
    df = report_frame()
    store.upsert_rows(df)
    store.flush()
    wb, ws = sheet_look(in_tmp / "out.xlsx", "Out")
    try:
        assert [c.number_format for c in column(ws, "D")] == ["#,##0.00"] * 3
        assert ws["H2"].number_format == "dd.mm.yyyy" and ws["H2"].value == dt.datetime(2024, 1, 5)
        assert ws.column_dimensions["B"].width == 30
        assert ws["D4"].value == 1234.5  # the value is the number, only its look changed
    finally:
        wb.close()
    back = TableStoreExcel("out.xlsx", "Out", ["sku"]).read_rows()  # as a fresh process reads it
    assert hash_rows(back).tolist() == hash_rows(store.normalize(df)).tolist()


def test_formats_and_widths_are_checked_and_errors_name_store_and_column(in_tmp: Path) -> None:
    with pytest.raises(ValueError, match=r"TableStoreExcel\(.*out\.xlsx\).*formats\['price'\].*quote"):
        TableStoreExcel("out.xlsx", "Out", ["sku"], formats={"price": '"$#,##0.00'})
    with pytest.raises(ValueError, match=r"formats\['price'\].*text code"):
        TableStoreExcel("out.xlsx", "Out", ["sku"], formats={"price": 2})
    with pytest.raises(ValueError, match=r"widths\['name'\] is 0"):
        TableStoreExcel("out.xlsx", "Out", ["sku"], widths={"name": 0})
    with pytest.raises(ValueError, match="more than 0 and at most 255"):
        TableStoreExcel("out.xlsx", "Out", ["sku"], widths={"name": 300})
    with pytest.raises(KeyNameError, match=r"formats=\{'2019': '0'\}"):
        TableStoreExcel("out.xlsx", "Out", ["sku"], formats={2019: "0"})
    with pytest.raises(TypeError, match="formats must map column names"):
        TableStoreExcel("out.xlsx", "Out", ["sku"], formats=["#,##0.00"])

    store = TableStoreExcel("out.xlsx", "Out", ["sku"], formats={"prce": "#,##0.00"})
    with pytest.raises(NotWritableError) as err:
        store.check_writable(report_frame())
    msg = str(err.value)
    assert "out.xlsx[Out]" in msg and "'prce'" in msg and "'price'" in msg
    store = TableStoreExcel("out.xlsx", "Out", ["sku"], widths={"nme": 20})
    with pytest.raises(NotWritableError, match=r"widths names column 'nme'"):
        store.check_writable(report_frame())
    # a number format on dates (or a date format on numbers) would read back as the other kind
    store = TableStoreExcel("out.xlsx", "Out", ["sku"], formats={"when": "0.00"})
    with pytest.raises(NotWritableError, match=r"formats\['when'\].*holds dates"):
        store.check_writable(report_frame())
    store = TableStoreExcel("out.xlsx", "Out", ["sku"], formats={"qty": "yyyy-mm-dd"})
    with pytest.raises(NotWritableError, match=r"formats\['qty'\].*holds numbers"):
        store.check_writable(report_frame())
    assert not (in_tmp / "out.xlsx").exists()
    with pytest.raises(SheetError, match=r"formats\['x'\].*four sections"):
        write_sheet(in_tmp / "w.xlsx", "W", report_frame(), formats={"x": "0;0;0;0;0"})


def test_a_misspelt_format_column_fails_the_batch_with_a_clear_error(ds, in_tmp: Path) -> None:
    seed(in_tmp)
    steps, out = lines_steps(ds, in_tmp, formats={"amuont": "#,##0.00"})
    report = run_steps(ds, steps)
    assert not report.ok and not out.exists()
    assert report.steps["lines"].failed == 3
    assert any("formats names column 'amuont'" in e for e in report.steps["lines"].errors)


# --------------------------------------------------------------------------- defaults


def test_default_formats_show_values_readably_and_keep_them_exact(tmp_path: Path) -> None:
    path = tmp_path / "d.xlsx"
    df = report_frame().assign(huge=[1e20, 2.0, 3.5])
    write_sheet(path, "D", df)
    wb, ws = sheet_look(path, "D")
    try:
        fmt = {ws.cell(1, j).value: ws.cell(2, j).number_format for j in range(1, df.shape[1] + 1)}
        assert fmt == {"sku": "General", "name": "General", "qty": INT_FMT, "price": FLOAT_FMT,
                       "avg": FLOAT_FMT, "whole": INT_FMT, "tiny": "General", "day": "yyyy-mm-dd",
                       "when": "yyyy-mm-dd hh:mm:ss", "ok": "General", "huge": "General"}
        assert isinstance(ws["H2"].value, dt.datetime) and isinstance(ws["I2"].value, dt.datetime)
        # a header over numbers is right-aligned, over text it is not; all are bold
        align = {ws.cell(1, j).value: ws.cell(1, j).alignment.horizontal for j in range(1, 12)}
        assert {k for k, v in align.items() if v == "right"} == {
            "qty", "price", "avg", "whole", "tiny", "day", "when", "huge"}
        assert all(ws.cell(1, j).font.b for j in range(1, 12))
        widths = {ws.cell(1, j).value: ws.column_dimensions[ws.cell(1, j).column_letter].width
                  for j in range(1, 12)}
        assert widths["name"] >= len("Gadget with a long name") and widths["qty"] < 10
        assert widths["price"] >= len("1,234.50") and widths["avg"] >= len("0.33333333")
    finally:
        wb.close()
    back = read_sheet(path, "D")  # the stored values stay exact (15 digits, as before)
    assert back["avg"].tolist() == [0.333333333333333, 0.666666666666667, 0.3]
    assert back["price"].tolist() == [9, 6.75, 1234.5] and back["qty"].tolist() == [7, 12, 1500]


# --------------------------------------------------------------------------- the user's look


def test_the_users_formatting_survives_rewrites_that_add_change_and_delete_rows(ds, in_tmp: Path) -> None:
    seed(in_tmp)
    steps, out = lines_steps(ds, in_tmp, formats={"price": "#,##0.00"})
    assert run_steps(ds, steps).ok
    assert sheet_comment(out) == b"filepipe"
    edit_sheet(out, format_like_a_user)
    before = out.read_bytes()
    report = run_steps(ds, steps)  # only the look changed: nothing to do
    assert report.ok and report.tables == {} and report.backups == {}
    assert out.read_bytes() == before and list(in_tmp.glob("*.bak.xlsx")) == []

    change_orders(in_tmp)  # 1 deleted, 3 changed, 4 and 5 added
    report = run_steps(ds, steps)
    assert report.ok and report.backups == {}
    assert report.tables["lines"] == {"added": 2, "updated": 1, "deleted": 1}
    assert sheet_comment(out) == b"filepipe:cells,tail"  # the next write reads them back
    wb, ws = sheet_look(out)
    try:
        assert [c.value for c in column(ws, "A")] == ["2", "3", "4", "5"]
        amounts = column(ws, "E")  # the column's look applies to the new rows too
        assert [c.value for c in amounts] == [13.5, 90, 4938, 2.5]
        assert [c.number_format for c in amounts] == [MONEY] * 4
        assert [fill_rgb(c) for c in amounts] == [YELLOW] * 4
        assert ws.column_dimensions["E"].width == 25
        assert fill_rgb(ws["A1"]) == BLUE and ws["A1"].font.b
        # bob's cell and row keep their look by key: he is row 2 now
        assert [bool(c.font.i) for c in column(ws, "B")] == [True, False, False, False]
        assert ws.row_dimensions[2].height == 30 and ws.row_dimensions[3].height in (None, 15)
        assert [c.number_format for c in column(ws, "C")] == ["#,##0.00"] * 4
        assert [str(cf.sqref) for cf in ws.conditional_formatting] == ["D2:D5"]
        assert [str(v.sqref) for v in ws.data_validations.dataValidation] == ["D2:D5"]
        assert str(ws.sheet_properties.tabColor.rgb).endswith("FF0000")
        assert ws.sheet_view.zoomScale == 85 and ws.freeze_panes == "A2"
    finally:
        wb.close()
    with zipfile.ZipFile(out) as z:  # the carried pieces are well-formed XML, in schema order
        root = ET.fromstring(z.read("xl/worksheets/sheet1.xml"))
    order = [el.tag.rsplit("}", 1)[-1] for el in root]
    assert order == ["sheetPr", "dimension", "sheetViews", "sheetFormatPr", "cols", "sheetData",
                     "autoFilter", "conditionalFormatting", "dataValidations", "pageMargins"]

    write_order(in_tmp, 6, "fay", 3.0, 2, "2024-06-01")  # and again, from filepipe's own write
    assert run_steps(ds, steps).ok
    wb, ws = sheet_look(out)
    try:
        assert [fill_rgb(c) for c in column(ws, "E")] == [YELLOW] * 5
        assert [bool(c.font.i) for c in column(ws, "B")] == [True] + [False] * 4
        assert [str(cf.sqref) for cf in ws.conditional_formatting] == ["D2:D6"]
    finally:
        wb.close()
    assert read_sheet(out, "Lines")["amount"].tolist() == [13.5, 90, 4938, 2.5, 6]


def test_a_style_set_on_the_column_applies_to_every_row(ds, in_tmp: Path) -> None:
    seed(in_tmp)
    steps, out = lines_steps(ds, in_tmp)
    assert run_steps(ds, steps).ok

    def format_column(ws):  # the column's own style only (as openpyxl sets it): no cell changed
        ws.column_dimensions["D"].fill = PatternFill("solid", fgColor=YELLOW)
        ws.column_dimensions["D"].number_format = "0.0"
    edit_sheet(out, format_column)
    change_orders(in_tmp)
    assert run_steps(ds, steps).ok
    wb, ws = sheet_look(out)
    try:
        qty = column(ws, "D")
        assert [c.value for c in qty] == [2, 3, 4, 1]
        assert [(fill_rgb(c), c.number_format) for c in qty] == [(YELLOW, "0.0")] * 4
        assert ws["E2"].number_format == FLOAT_FMT and fill_rgb(ws["E2"]) is None
    finally:
        wb.close()


def test_formatting_only_edits_are_no_hand_edit_even_when_dates_show_as_numbers(ds, in_tmp: Path) -> None:
    """A user giving the date column a number format (reading back as numbers) and a bold
    font: no backup, no warning, nothing recomputed; the next rewrite keeps the font and
    shows the dates as dates again (a number format would make them numbers)."""
    seed(in_tmp)
    steps, out = lines_steps(ds, in_tmp)
    assert run_steps(ds, steps).ok

    def restyle(ws):
        for row in range(2, 5):
            ws.cell(row, 6).number_format = "0.00"
            ws.cell(row, 6).font = Font(bold=True)
        ws.column_dimensions["B"].width = 40
    edit_sheet(out, restyle)
    before = out.read_bytes()
    report = run_steps(ds, steps)
    assert report.ok and report.tables == {} and report.backups == {}
    assert out.read_bytes() == before

    write_order(in_tmp, 4, "dee", 1.5, 4, "2024-04-01")
    report = run_steps(ds, steps)
    assert report.ok and report.backups == {} and report.tables["lines"]["added"] == 1
    wb, ws = sheet_look(out)
    try:
        days = column(ws, "F")
        assert [c.value for c in days][-1] == dt.datetime(2024, 4, 1)
        assert [c.number_format for c in days] == ["yyyy-mm-dd"] * 4 and all(c.font.b for c in days)
        assert ws.column_dimensions["B"].width == 40
    finally:
        wb.close()
    report = run_steps(ds, steps)
    assert report.ok and report.tables == {} and report.backups == {}
    assert list(in_tmp.glob("*.bak.xlsx")) == []


def test_declared_formats_win_the_others_are_the_users(ds, in_tmp: Path) -> None:
    seed(in_tmp)
    steps, out = lines_steps(ds, in_tmp, formats={"price": "#,##0.00"})
    assert run_steps(ds, steps).ok

    def restyle(ws):
        for row in range(2, 5):
            ws.cell(row, 3).number_format = "0.000"  # price: the pipeline declares its format
            ws.cell(row, 3).fill = PatternFill("solid", fgColor=YELLOW)
            ws.cell(row, 4).number_format = "0.0"  # qty: the user's say
    edit_sheet(out, restyle)
    change_orders(in_tmp)
    assert run_steps(ds, steps).ok
    wb, ws = sheet_look(out)
    try:
        assert [(c.number_format, fill_rgb(c)) for c in column(ws, "C")] == [("#,##0.00", YELLOW)] * 4
        assert [c.number_format for c in column(ws, "D")] == ["0.0"] * 4
    finally:
        wb.close()


def test_filepipe_widths_follow_the_content_the_users_stay(ds, in_tmp: Path) -> None:
    seed(in_tmp)
    steps, out = lines_steps(ds, in_tmp)
    assert run_steps(ds, steps).ok
    wb, ws = sheet_look(out)
    narrow = ws.column_dimensions["B"].width
    wb.close()
    edit_sheet(out, lambda ws: setattr(ws.column_dimensions["C"], "width", 33))
    write_order(in_tmp, 4, "a customer with a much longer name", 1.5, 4, "2024-04-01")
    assert run_steps(ds, steps).ok
    wb, ws = sheet_look(out)
    try:
        assert ws.column_dimensions["B"].width > max(narrow, len("a customer with a much longer name"))
        assert ws.column_dimensions["C"].width == 33
    finally:
        wb.close()


def test_a_sheet_filepipe_wrote_is_not_scanned_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The zip member comment says what the sheet carries: a plain sheet of filepipe's is
    read no further than its header row (the cost of a rewrite does not grow)."""
    from filepipe.xlsx import oldsheet

    path = tmp_path / "m.xlsx"
    write_sheet(path, "M", report_frame())
    assert sheet_comment(path) == b"filepipe"

    def no_scan(*args, **kwargs):
        raise AssertionError("the rows of a plain sheet of filepipe's were scanned")
    monkeypatch.setattr(oldsheet, "_scan_rows", no_scan)
    write_sheet(path, "M", report_frame().head(2), widths={"sku": 12})
    wb, ws = sheet_look(path, "M")
    assert ws.column_dimensions["A"].width == 12 and ws.max_row == 3
    wb.close()


def test_ranges_move_with_their_columns_and_stretch_with_the_data() -> None:
    from filepipe.xlsx.look import remap_sqref

    colmap = {0: 0, 2: 3, 4: 4}  # column C moved to D, B and D gone
    assert remap_sqref("C2:C61", colmap, 61, 71) == "D2:D71"
    assert remap_sqref("C2:C61", colmap, 61, 41) == "D2:D41"
    assert remap_sqref("A1:E61 C5", colmap, 61, 71) == "A1:E71 D5"  # a single cell stays
    assert remap_sqref("C2:C100", colmap, 61, 71) == "D2:D100"  # beyond the data: kept
    assert remap_sqref("C2:C100", colmap, 61, 171) == "D2:D171"
    assert remap_sqref("B2:B61 D2:D61", colmap, 61, 71) == ""  # their columns are gone
    assert remap_sqref("C:C 1:1", colmap, 61, 71) == "D:D 1:1"
    assert remap_sqref("A60:A61", colmap, 61, 31) == ""  # rows all deleted


# --------------------------------------------------------------------------- LibreOffice


@needs_soffice
def test_libreoffice_shows_money_and_dates_formatted_in_a_pdf(in_tmp: Path) -> None:
    if PDFTOTEXT is None:
        pytest.skip("pdftotext (poppler-utils) is not installed")
    store = TableStoreExcel("report.xlsx", "Report", ["sku"], formats={"price": "#,##0.00",
                                                                         "day": "dd.mm.yyyy"})
    store.upsert_rows(report_frame()[["sku", "qty", "price", "avg", "day", "when"]])
    store.flush()
    text = pdf_text(soffice_export(in_tmp / "report.xlsx", "pdf", in_tmp / "lo", in_tmp / "profile",
                                   SOFFICE))
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.strip()}
    assert rows["a-1"][:5] == ["a-1", "7", "9.00", "0.33333333", "05.01.2024"]
    assert rows["b-2"][:5] == ["b-2", "12", "6.75", "0.66666667", "01.02.2024"]
    assert rows["c-3"] == ["c-3", "1500", "1,234.50", "0.30"]
    # the last column, on this page or (on narrower paper) one of its own
    assert "2024-01-05 10:15:00" in text and "2024-02-01 08:00:30" in text
    assert "0.333333333333333" not in text


@needs_soffice
def test_libreoffice_csv_of_the_shown_text(in_tmp: Path) -> None:
    """The same check through LibreOffice's CSV export of the text cells show (needs no
    pdftotext)."""
    write_sheet(in_tmp / "r.xlsx", "R", report_frame()[["sku", "qty", "price", "avg", "day", "when"]],
                formats={"day": "d mmm yyyy"})
    csv = soffice_export(in_tmp / "r.xlsx", CSV_AS_SHOWN, in_tmp / "lo", in_tmp / "profile", SOFFICE)
    lines = csv.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "sku,qty,price,avg,day,when"
    assert lines[1] == "a-1,7,9.00,0.33333333,5 Jan 2024,2024-01-05 10:15:00"
    assert lines[3] == 'c-3,1500,"1,234.50",0.30,,'


@needs_soffice
def test_the_look_survives_a_libreoffice_re_save(ds, in_tmp: Path) -> None:
    seed(in_tmp)
    steps, out = lines_steps(ds, in_tmp, formats={"price": "#,##0.00"})
    assert run_steps(ds, steps).ok
    edit_sheet(out, format_like_a_user)
    shutil.copy(soffice_export(out, "xlsx", in_tmp / "lo", in_tmp / "profile", SOFFICE), out)
    age(out)
    report = run_steps(ds, steps)  # re-saved, formatted: still not a hand edit
    assert report.ok and report.tables == {} and report.backups == {}
    change_orders(in_tmp)
    report = run_steps(ds, steps)
    assert report.ok and report.backups == {}
    wb, ws = sheet_look(out)
    try:
        amounts = column(ws, "E")
        assert [c.value for c in amounts] == [13.5, 90, 4938, 2.5]
        assert [fill_rgb(c) for c in amounts] == [YELLOW] * 4
        assert all(c.number_format.replace("\\", "").replace('"', "") == "$#,##0.00" for c in amounts)
        assert fill_rgb(ws["A1"]) == BLUE
        assert [bool(c.font.i) for c in column(ws, "B")] == [True, False, False, False]
        assert [str(cf.sqref) for cf in ws.conditional_formatting] == ["D2:D5"]
        assert ws.column_dimensions["E"].width == pytest.approx(25, abs=0.5)
        assert [c.number_format for c in column(ws, "F")] == ["yyyy-mm-dd"] * 4
    finally:
        wb.close()
    assert run_steps(ds, steps).tables == {}  # and it reads back as written
    # LibreOffice opens what filepipe wrote over its save, and shows it formatted
    shown = soffice_export(out, CSV_AS_SHOWN, in_tmp / "csv", in_tmp / "profile", SOFFICE)
    assert shown.read_text(encoding="utf-8").splitlines()[3] == '4,dee,"1,234.50",4,"$4,938.00",2024-04-01'


def test_widths_of_a_sheet_an_earlier_filepipe_wrote_still_follow_the_content(tmp_path: Path) -> None:
    """Sheets written before filepipe marked its widths: untouched since, their widths are
    filepipe's (recomputed); saved by another program, they are the user's (kept)."""
    import re

    path = tmp_path / "old.xlsx"
    write_sheet(path, "S", pd.DataFrame({"k": [1, 2], "name": ["x", "y"]}))

    def as_an_earlier_filepipe_wrote_it(src: Path, dst: Path) -> None:  # plain widths, no mark
        with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
            for info in zin.infolist():
                data = zin.read(info)
                if info.filename == "xl/worksheets/sheet1.xml":
                    data = re.sub(rb'width="[\d.]+"', b'width="6.5"', data)
                zout.writestr(info.filename, data)

    as_an_earlier_filepipe_wrote_it(path, tmp_path / "legacy.xlsx")
    shutil.copy(tmp_path / "legacy.xlsx", path)
    assert sheet_comment(path) == b""
    longer = pd.DataFrame({"k": [1, 2], "name": ["x", "a customer with a long name"]})
    write_sheet(path, "S", longer)
    wb, ws = sheet_look(path, "S")
    assert ws.column_dimensions["B"].width > len("a customer with a long name")
    wb.close()

    shutil.copy(tmp_path / "legacy.xlsx", path)
    wb = openpyxl.load_workbook(path)  # saved by another program: the widths are the user's
    wb.save(path)
    wb.close()
    write_sheet(path, "S", longer)
    wb, ws = sheet_look(path, "S")
    assert ws.column_dimensions["B"].width == 6.5
    wb.close()
