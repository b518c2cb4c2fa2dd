"""filepipe.xlsx on real files: round trips through calamine and openpyxl, keeping the other
sheets of a workbook byte for byte, atomic replacement, and LibreOffice opening the result."""

from __future__ import annotations

import datetime as dt
import decimal
import os
import shutil
import stat
import struct
import subprocess
import zipfile
import zlib
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import openpyxl
import pandas as pd
import pytest
from openpyxl.chart import BarChart, Reference
from openpyxl.styles import Font, PatternFill
from openpyxl.workbook.defined_name import DefinedName
from python_calamine import CalamineWorkbook

from filepipe import xlsx
from filepipe.xlsx import SheetError, read_sheet, sheet_names, write_sheet

NS = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
SOFFICE = shutil.which("soffice") or shutil.which("libreoffice")


# --------------------------------------------------------------------------- helpers


def mixed_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "text": ["héllo wörld 😀", "  leading spaces", "trailing ", "a & b <c> \"q\"", None,
                 "line\nbreak", "日本語", "plain"],
        "int": np.array([1, -2, 3, 2**40, 0, 5, 6, -7], dtype=np.int64),
        "float": [0.1, np.nan, 1e20, -2.5, 1 / 3, 1234.5678, 2.0, None],
        "date": [dt.date(2024, 1, 2), dt.date(1999, 12, 31), None, dt.date(2000, 2, 29),
                 dt.date(1900, 3, 1), dt.date(2024, 6, 30), dt.date(9999, 12, 31), dt.date(1970, 1, 1)],
        "when": pd.to_datetime(["2024-01-02 03:04:05", "2020-02-29 23:59:59", None,
                                "1999-12-31 00:00:01", "2024-06-30 12:00:00", "2001-01-01 00:00:00",
                                "2030-05-05 05:05:05", "1970-01-01 00:00:00"]),
        "flag": [True, False, True, True, False, False, True, False],
    })


def openpyxl_rows(path: Path, sheet: str) -> list[tuple]:
    wb = openpyxl.load_workbook(path)
    try:
        return [tuple(r) for r in wb[sheet].iter_rows(values_only=True)]
    finally:
        wb.close()


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def assert_well_formed(path: Path) -> None:
    """Every XML part parses; the zip's CRCs are right."""
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
        for name in z.namelist():
            if name.endswith((".xml", ".rels")):
                ET.fromstring(z.read(name))


def no_temp_files(directory: Path) -> bool:
    return not [p for p in os.listdir(directory) if p.startswith(".~filepipe-")]


def png_bytes() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"\x00\xff\x00\x00"  # one red pixel
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def notes_workbook(path: Path) -> None:
    """Sheets Notes (hand-made: formatting, merge, formulas, defined name, chart), Out, Tail."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Notes"
    ws["A1"] = "Note"
    ws["A1"].font = Font(bold=True)
    ws["A1"].fill = PatternFill("solid", fgColor="FFFF00")
    for i in range(2, 6):
        ws.cell(i, 1, f"n{i}")
        ws.cell(i, 2, i * 10)
    ws["C1"] = "=SUM(B2:B5)"
    ws["C2"] = "=SUM(Out!B:B)"
    ws.merge_cells("D1:E2")
    wb.defined_names["Total"] = DefinedName("Total", attr_text="Notes!$C$1")
    chart = BarChart()
    chart.add_data(Reference(ws, min_col=2, min_row=2, max_row=5))
    ws.add_chart(chart, "G2")
    out = wb.create_sheet("Out")
    out["A1"] = "old content"
    old_chart = BarChart()  # the old Out has its own drawing + chart: they must go
    old_chart.add_data(Reference(ws, min_col=2, min_row=2, max_row=5))
    out.add_chart(old_chart, "C3")
    wb.create_sheet("Tail")["A1"] = "tail"
    wb.save(path)


def part_of(path: Path, sheet: str) -> str:
    """Zip member of a sheet, found through workbook.xml and its rels (as Excel does)."""
    with zipfile.ZipFile(path) as z:
        wb = ET.fromstring(z.read("xl/workbook.xml"))
        rels = ET.fromstring(z.read("xl/_rels/workbook.xml.rels"))
    rid = next(s.get("{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id")
               for s in wb.iter(f"{NS}sheet") if s.get("name") == sheet)
    target = next(r.get("Target") for r in rels if r.get("Id") == rid)
    return target.lstrip("/") if target.startswith("/") else "xl/" + target


# --------------------------------------------------------------------------- round trip


def test_round_trip_calamine(tmp_path: Path) -> None:
    df = mixed_frame()
    path = tmp_path / "out.xlsx"
    write_sheet(path, "Data", df)
    back = read_sheet(path)

    assert list(back.columns) == list(df.columns)
    assert back["text"].tolist()[:4] == df["text"].tolist()[:4]
    assert pd.isna(back["text"][4])
    assert back["text"].tolist()[5:] == df["text"].tolist()[5:]
    assert back["int"].dtype == np.int64 and back["int"].tolist() == df["int"].tolist()
    assert back["float"].dtype == np.float64  # 15 significant digits, as Excel keeps them
    np.testing.assert_array_equal(back["float"].to_numpy(),
                                  xlsx.excel_floats(df["float"].to_numpy(dtype=float)))
    assert back["float"][4] == 0.333333333333333
    # python dates come back as datetimes (midnight)
    assert pd.api.types.is_datetime64_any_dtype(back["date"])
    expected_dates = pd.to_datetime(pd.Series(df["date"], dtype=object))
    assert back["date"].tolist() == expected_dates.tolist()
    assert pd.api.types.is_datetime64_any_dtype(back["when"])
    assert back["when"].tolist() == df["when"].tolist()
    assert back["flag"].dtype == bool and back["flag"].tolist() == df["flag"].tolist()


def test_round_trip_openpyxl_and_layout(tmp_path: Path) -> None:
    df = mixed_frame()
    path = tmp_path / "out.xlsx"
    write_sheet(path, "Data", df)

    rows = openpyxl_rows(path, "Data")
    assert rows[0] == tuple(df.columns)
    assert len(rows) == len(df) + 1
    for got, (_, want) in zip(rows[1:], df.iterrows()):
        text, i, f, d, w, flag = got
        assert text == (None if pd.isna(want["text"]) else want["text"])
        assert type(i) is int and i == want["int"]
        if pd.isna(want["float"]):
            assert f is None
        else:
            assert type(f) is float and f == float(f"{want['float']:.15g}")
        if want["date"] is None:
            assert d is None
        else:
            assert isinstance(d, dt.datetime) and d == dt.datetime.combine(want["date"], dt.time())
        if pd.isna(want["when"]):
            assert w is None
        else:
            assert isinstance(w, dt.datetime) and w == want["when"].to_pydatetime()
        assert type(flag) is bool and flag == want["flag"]

    wb = openpyxl.load_workbook(path)
    ws = wb["Data"]
    assert ws.freeze_panes == "A2"
    assert all(ws.cell(1, c).font.b for c in range(1, df.shape[1] + 1))
    assert not ws["A2"].font.b
    assert ws.auto_filter.ref == f"A1:F{len(df) + 1}"
    # LibreOffice shows an autofilter only with this hidden name
    wb_xml = members(path)["xl/workbook.xml"].decode()
    assert (f'<definedName name="_xlnm._FilterDatabase" localSheetId="0" hidden="1">'
            f"'Data'!$A$1:$F${len(df) + 1}</definedName>") in wb_xml
    widths = {letter: ws.column_dimensions[letter].width for letter in "ABCDEF"}
    assert all(w and w > 0 for w in widths.values())
    assert widths["A"] > widths["F"]  # "  leading spaces" is longer than "FALSE"
    assert ws["D2"].number_format == "yyyy-mm-dd"
    assert ws["E2"].number_format == "yyyy-mm-dd hh:mm:ss"
    wb.close()


def test_column_widths_follow_content_and_are_capped(tmp_path: Path) -> None:
    df = pd.DataFrame({"short": ["a", "b"], "x": ["y" * 40, "z"], "huge": ["w" * 500, ""],
                       "a_rather_long_header_name": [1, 2]})
    path = tmp_path / "w.xlsx"
    write_sheet(path, "W", df)
    wb = openpyxl.load_workbook(path)
    ws = wb["W"]
    w = [ws.column_dimensions[c].width for c in "ABCD"]
    wb.close()
    assert w[0] < 10
    assert 40 <= w[1] < 45
    assert w[2] == pytest.approx(60)
    assert w[3] >= len("a_rather_long_header_name")


def test_special_values(tmp_path: Path) -> None:
    df = pd.DataFrame({
        "obj": [{"k": [1, 2], "é": None}, [1, "a"], decimal.Decimal("1.10"), dt.time(12, 30),
                np.int64(7), 2.5, "s", None],
        "inf": [np.inf, -np.inf, 1.0, np.nan, 0.0, 1.5, 2.0, 3.0],
        "escapes": ["_x0041_", "_x0041__x0042_", "ctl\x01\x1fchars", "cr\rlf", "\ttab", "ok\n",
                    "x" * 32_767, pd.NA],
        "tz": pd.to_datetime(["2024-01-01 12:00"] * 8).tz_localize("Europe/Paris"),
        "nullable": pd.array([1, None, 3, 4, 5, 6, 7, 8], dtype="Int64"),
        "cat": pd.Categorical(["a", "b", None, "a", "b", "a", "b", "a"]),
    })
    path = tmp_path / "s.xlsx"
    write_sheet(path, "S", df)
    assert_well_formed(path)
    back = read_sheet(path, "S")
    assert back["obj"].tolist()[:4] == ['{"k":[1,2],"é":null}', '[1,"a"]', "1.10", dt.time(12, 30)]
    assert back["obj"].tolist()[4:7] == [7, 2.5, "s"]
    assert pd.isna(back["obj"][7])
    assert back["escapes"].tolist()[:6] == ["_x0041_", "_x0041__x0042_", "ctlchars", "cr\nlf",
                                            "\ttab", "ok\n"]
    assert len(back["escapes"][6]) == 32_767
    # tz-aware: converted to UTC, timezone dropped
    assert back["tz"].tolist() == [pd.Timestamp("2024-01-01 11:00")] * 8
    assert pd.isna(back["nullable"][1]) and back["nullable"][2] == 3
    assert back["cat"].tolist()[:2] == ["a", "b"] and pd.isna(back["cat"][2])
    rows = openpyxl_rows(path, "S")
    assert [r[1] for r in rows[1:4]] == ["#NUM!", "#NUM!", 1.0]  # Excel has no infinity
    assert rows[4][1] is None
    # openpyxl and LibreOffice re-save a CR as LF: it is written as LF
    assert rows[4][2] == "cr\nlf"


def test_empty_frames(tmp_path: Path) -> None:
    path = tmp_path / "e.xlsx"
    write_sheet(path, "HeaderOnly", pd.DataFrame({"a": pd.Series([], dtype=int), "b": []}))
    write_sheet(path, "Nothing", pd.DataFrame())
    assert_well_formed(path)
    assert sheet_names(path) == ["HeaderOnly", "Nothing"]
    h = read_sheet(path, "HeaderOnly")
    assert list(h.columns) == ["a", "b"] and len(h) == 0
    n = read_sheet(path, "Nothing")
    assert n.shape == (0, 0)
    assert openpyxl_rows(path, "HeaderOnly") == [("a", "b")]
    wb = openpyxl.load_workbook(path)
    assert wb["Nothing"].max_row == 1 and wb["Nothing"]["A1"].value is None
    wb.close()


def test_index_not_written_and_names_are_strings(tmp_path: Path) -> None:
    df = pd.DataFrame({1: [1, 2], ("a", "b"): ["x", "y"]}, index=["r1", "r2"])
    path = tmp_path / "n.xlsx"
    write_sheet(path, "N", df)
    assert openpyxl_rows(path, "N")[0] == ("1", "('a', 'b')")


# --------------------------------------------------------------------------- other sheets kept


def test_other_sheets_kept_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / "book.xlsx"
    notes_workbook(path)
    before = members(path)
    notes_part = part_of(path, "Notes")
    out_part = part_of(path, "Out")
    charts_before = sorted(n for n in before if n.startswith("xl/charts/"))
    assert len(charts_before) == 2

    df1 = pd.DataFrame({"name": ["x", "y", "z"], "value": [1.5, 2.0, 3.25]})
    df2 = pd.DataFrame({"name": ["p"], "value": [10], "extra": [dt.datetime(2024, 5, 6, 7, 8, 9)]})
    write_sheet(path, "Out", df1)
    write_sheet(path, "Out", df2)
    after = members(path)
    assert_well_formed(path)

    # order kept, Out replaced in the middle
    assert sheet_names(path) == ["Notes", "Out", "Tail"]
    # one autofilter name for Out (a duplicate makes Excel repair the file), for the new range
    wb_xml = after["xl/workbook.xml"].decode()
    assert wb_xml.count("_xlnm._FilterDatabase") == 1
    assert ('localSheetId="1" hidden="1">\'Out\'!$A$1:$C$2</definedName>') in wb_xml
    assert part_of(path, "Out") == out_part
    # Notes: its sheet XML, its drawing and its chart are byte-identical
    assert after[notes_part] == before[notes_part]
    notes_rels = notes_part.replace("worksheets/", "worksheets/_rels/") + ".rels"
    assert after[notes_rels] == before[notes_rels]
    kept_charts = [n for n in after if n.startswith("xl/charts/")]
    assert len(kept_charts) == 1 and after[kept_charts[0]] == before[kept_charts[0]]
    # everything else that was not ours to change is byte-identical too
    allowed = {"xl/workbook.xml", "xl/_rels/workbook.xml.rels", "[Content_Types].xml",
               "xl/styles.xml", out_part}
    for name, data in before.items():
        if name in after and name not in allowed:
            assert after[name] == data, name
    # the old Out's own relationships (drawing + chart) are gone, nothing else
    gone = set(before) - set(after)
    assert out_part.replace("worksheets/", "worksheets/_rels/") + ".rels" in gone
    assert all(n.startswith(("xl/drawings/", "xl/charts/", "xl/worksheets/_rels/")) for n in gone)

    wb = openpyxl.load_workbook(path)
    notes = wb["Notes"]
    assert notes["A1"].font.b
    assert notes["A1"].fill.fgColor.rgb.endswith("FFFF00")
    assert "D1:E2" in {str(r) for r in notes.merged_cells.ranges}
    assert notes["C1"].value == "=SUM(B2:B5)"
    assert notes["C2"].value == "=SUM(Out!B:B)"
    assert "Total" in wb.defined_names
    assert len(notes._charts) == 1
    assert len(wb["Out"]._charts) == 0
    assert wb["Tail"]["A1"].value == "tail"
    wb.close()
    assert openpyxl_rows(path, "Out") == [("name", "value", "extra"),
                                          ("p", 10, dt.datetime(2024, 5, 6, 7, 8, 9))]
    back = read_sheet(path, "Out")
    pd.testing.assert_frame_equal(back, df2, check_dtype=False)


def test_unchanged_members_are_copied_without_recompressing(tmp_path: Path) -> None:
    path = tmp_path / "book.xlsx"
    notes_workbook(path)
    with zipfile.ZipFile(path) as z:
        before = {i.filename: (i.CRC, i.compress_size, i.compress_type) for i in z.infolist()}
    write_sheet(path, "Out", mixed_frame())
    with zipfile.ZipFile(path) as z:
        after = {i.filename: (i.CRC, i.compress_size, i.compress_type) for i in z.infolist()}
    notes = part_of(path, "Notes")
    assert after[notes] == before[notes]
    assert after["xl/theme/theme1.xml"] == before["xl/theme/theme1.xml"]


def test_members_with_data_descriptors_are_copied(tmp_path: Path) -> None:
    """Streaming zip writers (e.g. Apache POI's SXSSF) put sizes after the data (flag bit 3)."""
    import io

    class NoSeek(io.RawIOBase):
        def __init__(self, f):
            self.f = f

        def writable(self):
            return True

        def write(self, b):
            return self.f.write(b)

    path = tmp_path / "dd.xlsx"
    notes_workbook(path)
    src = members(path)
    with open(path, "wb") as raw, zipfile.ZipFile(NoSeek(raw), "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in src.items():
            z.writestr(name, data)
    with zipfile.ZipFile(path) as z:
        assert all(i.flag_bits & 0x08 for i in z.infolist())
    write_sheet(path, "Out", mixed_frame())
    assert_well_formed(path)
    after = members(path)
    notes = part_of(path, "Notes")
    assert after[notes] == src[notes]
    assert read_sheet(path, "Out")["int"].tolist() == mixed_frame()["int"].tolist()


def test_prefixed_spreadsheetml_is_edited_in_its_own_prefix(tmp_path: Path) -> None:
    """Some generators (OpenXML SDK) write <x:workbook xmlns:x=...>: keep to that prefix."""
    path = tmp_path / "prefixed.xlsx"
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    parts = {
        "[Content_Types].xml":
            '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/'
            'package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.'
            'openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="'
            'application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.'
            'openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/'
            'worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.'
            'spreadsheetml.worksheet+xml"/><Override PartName="/xl/styles.xml" ContentType="'
            'application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/></Types>',
        "_rels/.rels":
            '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.'
            'openxmlformats.org/package/2006/relationships"><Relationship Id="R1" Type="'
            f'{rel}/officeDocument" Target="/xl/workbook.xml"/></Relationships>',
        "xl/workbook.xml":
            f'<?xml version="1.0" encoding="UTF-8"?><x:workbook xmlns:x="{main}" xmlns:rr="{rel}">'
            '<x:bookViews><x:workbookView/></x:bookViews><x:sheets><x:sheet name="Keep" sheetId="1" '
            'rr:id="R1"/></x:sheets></x:workbook>',
        "xl/_rels/workbook.xml.rels":
            '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.'
            f'openxmlformats.org/package/2006/relationships"><Relationship Id="R1" Type="{rel}/'
            f'worksheet" Target="/xl/worksheets/sheet1.xml"/><Relationship Id="R2" Type="{rel}/'
            'styles" Target="/xl/styles.xml"/></Relationships>',
        "xl/worksheets/sheet1.xml":
            f'<?xml version="1.0" encoding="UTF-8"?><x:worksheet xmlns:x="{main}"><x:sheetData>'
            '<x:row r="1"><x:c r="A1" t="inlineStr"><x:is><x:t>kept</x:t></x:is></x:c></x:row>'
            '</x:sheetData></x:worksheet>',
        "xl/styles.xml":
            f'<?xml version="1.0" encoding="UTF-8"?><x:styleSheet xmlns:x="{main}">'
            '<x:fonts count="1"><x:font><x:sz val="11"/><x:name val="Arial"/></x:font></x:fonts>'
            '<x:fills count="1"><x:fill><x:patternFill patternType="none"/></x:fill></x:fills>'
            '<x:borders count="1"><x:border/></x:borders>'
            '<x:cellStyleXfs count="1"><x:xf numFmtId="0" fontId="0" fillId="0" borderId="0"/>'
            '</x:cellStyleXfs><x:cellXfs count="1"><x:xf numFmtId="0" fontId="0" fillId="0" '
            'borderId="0" xfId="0"/></x:cellXfs><x:cellStyles count="1"><x:cellStyle name="Normal" '
            'xfId="0" builtinId="0"/></x:cellStyles></x:styleSheet>',
    }
    with zipfile.ZipFile(path, "w") as z:
        for name, text in parts.items():
            z.writestr(name, text)
    write_sheet(path, "New", mixed_frame())
    write_sheet(path, "New", mixed_frame())
    assert_well_formed(path)
    assert sheet_names(path) == ["Keep", "New"]
    wb_xml = members(path)["xl/workbook.xml"].decode()
    assert '<x:sheet name="New"' in wb_xml and "rr:id=" in wb_xml
    styles = members(path)["xl/styles.xml"].decode()
    assert "<x:numFmts" in styles and "<x:b/>" in styles and "<numFmt " not in styles
    assert read_sheet(path, "Keep").columns.tolist() == ["kept"]
    back = read_sheet(path, "New")
    assert back["when"].tolist() == mixed_frame()["when"].tolist()
    wb = openpyxl.load_workbook(path)
    assert wb["New"]["A1"].font.b and wb["New"]["E2"].number_format == "yyyy-mm-dd hh:mm:ss"
    wb.close()


def test_new_sheet_goes_last_and_replace_is_case_insensitive(tmp_path: Path) -> None:
    path = tmp_path / "book.xlsx"
    notes_workbook(path)
    write_sheet(path, "New", pd.DataFrame({"a": [1]}))
    assert sheet_names(path) == ["Notes", "Out", "Tail", "New"]
    with zipfile.ZipFile(path) as z:  # two selected tabs would open as a sheet group in Excel
        assert b"tabSelected" not in z.read(part_of(path, "New"))
    write_sheet(path, "out", pd.DataFrame({"b": [2]}))  # Excel: same sheet as "Out"
    assert sheet_names(path) == ["Notes", "out", "Tail", "New"]
    assert read_sheet(path, "out")["b"].tolist() == [2]
    assert read_sheet(path, "OUT")["b"].tolist() == [2]
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == ["Notes", "out", "Tail", "New"]
    wb.close()
    assert_well_formed(path)


def test_shared_image_survives_replacing_a_sheet_that_used_it(tmp_path: Path) -> None:
    """xlsxwriter stores an image used on two sheets once: dropping one sheet's drawing
    must not delete the media the other sheet still shows."""
    import xlsxwriter

    img = tmp_path / "dot.png"
    img.write_bytes(png_bytes())
    path = tmp_path / "img.xlsx"
    wb = xlsxwriter.Workbook(str(path))
    a = wb.add_worksheet("Pics")
    a.insert_image("B2", str(img))
    out = wb.add_worksheet("Out")
    out.insert_image("C3", str(img))
    out.add_table("A10:B12", {"columns": [{"header": "h1"}, {"header": "h2"}]})
    out.write_comment("A1", "a comment")
    wb.close()
    before = members(path)
    media = [n for n in before if n.startswith("xl/media/")]
    assert len(media) == 1

    write_sheet(path, "Out", pd.DataFrame({"v": [1, 2]}))
    after = members(path)
    assert_well_formed(path)
    assert after[media[0]] == before[media[0]]
    assert not [n for n in after if n.startswith(("xl/tables/", "xl/comments"))]
    with zipfile.ZipFile(path) as z:
        ct = z.read("[Content_Types].xml").decode()
    assert "/xl/tables/" not in ct and "comments" not in ct
    wb2 = openpyxl.load_workbook(path)
    assert len(wb2["Pics"]._images) == 1 or "xl/drawings/drawing1.xml" in after
    wb2.close()
    assert read_sheet(path, "Out")["v"].tolist() == [1, 2]


def test_calc_chain_removed(tmp_path: Path) -> None:
    path = tmp_path / "calc.xlsx"
    notes_workbook(path)
    # add a calcChain the way Excel stores it
    src = members(path)
    src["xl/calcChain.xml"] = (b'<?xml version="1.0" encoding="UTF-8"?><calcChain xmlns="'
                               b'http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
                               b'<c r="C1" i="1"/><c r="C2"/></calcChain>')
    src["xl/_rels/workbook.xml.rels"] = src["xl/_rels/workbook.xml.rels"].replace(
        b"</Relationships>",
        b'<Relationship Id="rId99" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
        b'relationships/calcChain" Target="calcChain.xml"/></Relationships>')
    src["[Content_Types].xml"] = src["[Content_Types].xml"].replace(
        b"</Types>", b'<Override PartName="/xl/calcChain.xml" ContentType="application/vnd.'
        b'openxmlformats-officedocument.spreadsheetml.calcChain+xml"/></Types>')
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in src.items():
            z.writestr(name, data)

    write_sheet(path, "Out", pd.DataFrame({"a": [1]}))
    after = members(path)
    assert "xl/calcChain.xml" not in after
    assert b"calcChain" not in after["xl/_rels/workbook.xml.rels"]
    assert b"calcChain" not in after["[Content_Types].xml"]
    assert b'fullCalcOnLoad="1"' in after["xl/workbook.xml"]
    assert_well_formed(path)
    openpyxl.load_workbook(path).close()


def test_styles_appended_once(tmp_path: Path) -> None:
    path = tmp_path / "book.xlsx"
    notes_workbook(path)
    df = mixed_frame()
    write_sheet(path, "Out", df)
    first = members(path)["xl/styles.xml"]
    write_sheet(path, "Out", df)
    write_sheet(path, "Other", df)
    assert members(path)["xl/styles.xml"] == first
    # the hand-made bold+fill format of Notes is still index 1 and unchanged
    wb = openpyxl.load_workbook(path)
    assert wb["Notes"]["A1"].fill.fgColor.rgb.endswith("FFFF00")
    wb.close()


def test_xml_of_every_changed_part_is_well_formed(tmp_path: Path) -> None:
    path = tmp_path / "book.xlsx"
    notes_workbook(path)
    before = members(path)
    write_sheet(path, "Out", mixed_frame())
    write_sheet(path, "Tricky 'name' & <co>", mixed_frame())
    after = members(path)
    changed = [n for n, d in after.items() if before.get(n) != d]
    assert {"xl/workbook.xml", "xl/styles.xml", "[Content_Types].xml",
            "xl/_rels/workbook.xml.rels"} <= set(changed)
    for name in changed:
        ET.fromstring(after[name])
    assert sheet_names(path)[-1] == "Tricky 'name' & <co>"
    assert read_sheet(path, "Tricky 'name' & <co>").shape == mixed_frame().shape


# --------------------------------------------------------------------------- atomicity


def test_failure_midway_leaves_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "book.xlsx"
    notes_workbook(path)
    original = path.read_bytes()
    n = 5_000
    df = pd.DataFrame({"id": range(n), "text": ["ok"] * (n - 1) + ["x" * 32_768]})
    with pytest.raises(SheetError) as err:
        write_sheet(path, "Out", df)
    msg = str(err.value)
    assert "'Out'" in msg and f"row {n + 1}" in msg and "'text'" in msg and "32,768" in msg
    assert path.read_bytes() == original
    assert no_temp_files(tmp_path)

    new = tmp_path / "new.xlsx"
    with pytest.raises(SheetError):
        write_sheet(new, "Out", df)
    assert not new.exists() and no_temp_files(tmp_path)


def test_failure_at_replace_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "book.xlsx"
    notes_workbook(path)
    original = path.read_bytes()

    def boom(src: str, dst: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(xlsx.os, "replace", boom)
    with pytest.raises(OSError, match="disk on fire"):
        write_sheet(path, "Out", mixed_frame())
    assert path.read_bytes() == original
    assert no_temp_files(tmp_path)


def test_concurrent_change_is_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "book.xlsx"
    write_sheet(path, "A", pd.DataFrame({"a": [1]}))
    real_verify = xlsx._verify_zip

    def user_saves_meanwhile(f, expected):  # another program saves while filepipe writes
        real_verify(f, expected)
        write_sheet_unpatched(path)

    def write_sheet_unpatched(p: Path) -> None:
        monkeypatch.setattr(xlsx, "_verify_zip", real_verify)
        write_sheet(p, "B", pd.DataFrame({"b": [2]}))

    monkeypatch.setattr(xlsx, "_verify_zip", user_saves_meanwhile)
    with pytest.raises(SheetError, match="changed while"):
        write_sheet(path, "C", pd.DataFrame({"c": [3]}))
    assert sheet_names(path) == ["A", "B"]  # the other program's save is not overwritten
    assert no_temp_files(tmp_path)


def test_permissions_kept_and_symlink_written_through(tmp_path: Path) -> None:
    path = tmp_path / "book.xlsx"
    write_sheet(path, "A", pd.DataFrame({"a": [1]}))
    os.chmod(path, 0o640)
    write_sheet(path, "A", pd.DataFrame({"a": [2]}))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    link = tmp_path / "link.xlsx"
    link.symlink_to(path)
    write_sheet(link, "B", pd.DataFrame({"b": [3]}))
    assert link.is_symlink()
    assert sheet_names(path) == ["A", "B"]


# --------------------------------------------------------------------------- names, errors


@pytest.mark.parametrize("bad", ["", "x" * 32, "a[b]", "a:b", "a*b", "a?b", "a/b", "a\\b",
                                 "'quoted'", "History", 42])
def test_invalid_sheet_names(tmp_path: Path, bad: object) -> None:
    with pytest.raises(SheetError, match="sheet name"):
        write_sheet(tmp_path / "x.xlsx", bad, pd.DataFrame({"a": [1]}))  # type: ignore[arg-type]
    assert not (tmp_path / "x.xlsx").exists()


def test_valid_unusual_sheet_names(tmp_path: Path) -> None:
    path = tmp_path / "x.xlsx"
    names = ["x" * 31, "Ünïcødé 😀", "with space", "a'b", "semi;colon & amp"]
    for n in names:
        write_sheet(path, n, pd.DataFrame({"a": [n]}))
    assert sheet_names(path) == names
    for n in names:
        assert read_sheet(path, n)["a"].tolist() == [n]
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == names
    wb.close()


def test_read_missing_sheet_lists_existing(tmp_path: Path) -> None:
    path = tmp_path / "book.xlsx"
    notes_workbook(path)
    with pytest.raises(SheetError) as err:
        read_sheet(path, "Nope")
    msg = str(err.value)
    assert "book.xlsx" in msg and "'Nope'" in msg
    assert "'Notes'" in msg and "'Out'" in msg and "'Tail'" in msg


def test_read_first_sheet_and_strings_that_look_missing(tmp_path: Path) -> None:
    path = tmp_path / "b.xlsx"
    write_sheet(path, "First", pd.DataFrame({"s": ["NA", "null", "None", "nan", "", None, "z"]}))
    write_sheet(path, "Second", pd.DataFrame({"t": [1]}))
    back = read_sheet(path)
    assert back["s"].tolist()[:4] == ["NA", "null", "None", "nan"]
    assert pd.isna(back["s"][4]) and pd.isna(back["s"][5])  # an empty string is an empty cell


def test_half_written_workbook_is_reported_not_overwritten(tmp_path: Path) -> None:
    """A workbook another program is still saving is not a zip yet: the caller retries."""
    path = tmp_path / "book.xlsx"
    write_sheet(path, "A", pd.DataFrame({"a": [1]}))
    half = path.read_bytes()[:200]
    path.write_bytes(half)
    with pytest.raises(zipfile.BadZipFile):
        write_sheet(path, "A", pd.DataFrame({"a": [2]}))
    assert path.read_bytes() == half and no_temp_files(tmp_path)


def test_read_keeps_cell_types(tmp_path: Path) -> None:
    """Text that looks like a number stays text; bools with a gap stay bools; dates are
    datetimes even in mixed columns; header names are text, made unique like pandas does."""
    path = tmp_path / "t.xlsx"
    df = pd.DataFrame({
        "zip": ["01234", "10115", "00501"],
        "code": ["1.10", "2", "1e5"],
        "ok": [True, None, False],
        "mixed": [dt.date(2020, 1, 2), "x", 3.0],
        "blank": [None, None, None],
        "n": [1, 2, 3],
    })
    with pytest.raises(SheetError, match="columns 'zip' and 'zip' would both be headed 'zip'"):
        write_sheet(path, "T", df.set_axis(["zip", "code", "ok", "mixed", "blank", "zip"], axis=1))
    df.columns = ["zip", "code", "ok", "mixed", "blank", "zip.1"]
    write_sheet(path, "T", df)
    back = read_sheet(path, "T")
    assert list(back.columns) == ["zip", "code", "ok", "mixed", "blank", "zip.1"]
    assert back.iloc[:, 0].tolist() == ["01234", "10115", "00501"]
    assert back["code"].tolist() == ["1.10", "2", "1e5"]
    assert back["ok"].tolist() == [True, None, False]
    assert back["ok"].tolist()[0] is True
    assert back["mixed"].tolist() == [dt.datetime(2020, 1, 2), "x", 3]
    assert back["blank"].dtype == np.float64 and back["blank"].isna().all()
    assert back["zip.1"].dtype == np.int64
    # headers typed by people: repeated, numbers, booleans, dates, empty
    wb = openpyxl.Workbook()
    wb.active.append(["a", "a", 2019, "2019", True, dt.date(2026, 11, 30), None, 1e20])
    wb.active.append([1, 2, 3, 4, 5, 6, 7, 8])
    wb.save(path)
    assert list(read_sheet(path).columns) == ["a", "a.1", "2019", "2019.1", "TRUE", "2026-11-30",
                                              "Unnamed: 6", "1e+20"]


def test_read_matches_pandas_on_plain_columns(tmp_path: Path) -> None:
    path = tmp_path / "p.xlsx"
    df = pd.DataFrame({"i": [1, 2, 3], "f": [1.5, None, 2.0], "s": ["a", "b", None],
                       "d": pd.to_datetime(["2020-01-01", None, "2021-02-03 04:05:06"], format="ISO8601"),
                       "b": [True, False, True]})
    write_sheet(path, "P", df)
    ours = read_sheet(path, "P")
    theirs = pd.read_excel(path, sheet_name="P", engine="calamine")
    pd.testing.assert_frame_equal(ours, theirs)


def test_too_many_rows_is_refused_before_writing(tmp_path: Path) -> None:
    df = pd.DataFrame({"a": np.zeros(xlsx.MAX_ROWS, dtype=np.int8)})
    with pytest.raises(SheetError, match="1,048,576"):
        write_sheet(tmp_path / "big.xlsx", "Big", df)
    assert not (tmp_path / "big.xlsx").exists() and no_temp_files(tmp_path)


def test_chart_sheet_is_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "c.xlsx"
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append([1])
    ws.append([2])
    cs = wb.create_chartsheet("Chart")
    chart = BarChart()
    chart.add_data(Reference(ws, min_col=1, min_row=1, max_row=2))
    cs.add_chart(chart)
    wb.save(path)
    original = path.read_bytes()
    with pytest.raises(SheetError, match="chartsheet"):
        write_sheet(path, "Chart", pd.DataFrame({"a": [1]}))
    assert path.read_bytes() == original


def test_large_frame_streams_in_chunks(tmp_path: Path) -> None:
    n = 25_000
    df = pd.DataFrame({"i": np.arange(n), "s": pd.Series(np.arange(n)).astype(str) + " & x",
                       "f": np.arange(n) / 7, "d": pd.date_range("2020-01-01", periods=n, freq="min")})
    path = tmp_path / "l.xlsx"
    write_sheet(path, "L", df)
    back = read_sheet(path, "L")
    assert back["i"].tolist() == df["i"].tolist()
    assert back["s"].tolist() == df["s"].tolist()
    np.testing.assert_array_equal(back["f"].to_numpy(), xlsx.excel_floats(df["f"].to_numpy()))
    assert back["d"].tolist() == df["d"].tolist()
    sheet = CalamineWorkbook.from_path(str(path)).get_sheet_by_name("L")
    assert len(sheet.to_python()) == n + 1


# --------------------------------------------------------------------------- LibreOffice


def soffice_convert(src: Path, fmt: str, outdir: Path, profile: Path) -> Path:
    outdir.mkdir(exist_ok=True)
    proc = subprocess.run(
        [SOFFICE, f"-env:UserInstallation=file://{profile}", "--headless", "--norestore",
         "--convert-to", fmt, "--outdir", str(outdir), str(src)],
        capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    out = outdir / (src.stem + "." + fmt.split(":")[0])
    assert out.exists(), (proc.stdout, proc.stderr)
    return out


@pytest.mark.skipif(SOFFICE is None, reason="LibreOffice (soffice) is not installed")
def test_libreoffice_opens_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "book.xlsx"
    notes_workbook(path)
    df = mixed_frame()
    write_sheet(path, "Out", df)  # replaced in the middle
    write_sheet(path, "Last", df)  # added
    profile = tmp_path / "lo-profile"

    re_saved = soffice_convert(path, "xlsx", tmp_path / "lo", profile)
    assert sheet_names(re_saved) == ["Notes", "Out", "Tail", "Last"]
    for name in ("Out", "Last"):
        ours, theirs = read_sheet(path, name), read_sheet(re_saved, name)
        pd.testing.assert_frame_equal(theirs, ours, check_dtype=False)
    wb = openpyxl.load_workbook(re_saved)
    out = wb["Out"]
    # (a headless conversion has no view, so LibreOffice drops every file's frozen panes,
    # xlsxwriter's too: not checked here)
    assert out["A1"].font.b
    assert out.auto_filter.ref == f"A1:F{len(df) + 1}"
    assert wb["Notes"]["C1"].value == "=SUM(B2:B5)"
    wb.close()

    ods = soffice_convert(path, "ods", tmp_path / "lo", profile)
    with zipfile.ZipFile(ods) as z:
        content = z.read("content.xml").decode()
    assert "Out.A1:Out.F9" in content.replace("'", "").replace("$", "")  # autofilter range kept

    csv = soffice_convert(path, "csv", tmp_path / "lo", profile)  # first sheet: Notes
    assert csv.read_text(encoding="utf-8", errors="replace").splitlines()[0].startswith("Note,")


# --------------------------------------------------------------------------- what a cell keeps


def test_excel_floats_are_the_15_digit_values_vectorised() -> None:
    rng = np.random.default_rng(7)
    values = np.concatenate([
        rng.normal(size=20_000) * 10.0 ** rng.integers(-12, 40, 20_000),
        10.0 ** np.arange(-20, 30), np.nextafter(10.0 ** np.arange(-20, 30), 0),
        rng.integers(0, 10**17, 2_000).astype(float) / 100,
        [29.799999999999997, 0.1 + 0.2, 1e-300, 5e-324, 0.5, 2.5, 123456789012345.5, -0.0]])
    got = xlsx.excel_floats(values)
    assert got.tolist() == [float(f"{v:.15g}") for v in values.tolist()]
    np.testing.assert_array_equal(xlsx.excel_floats(got), got)  # idempotent
    special = xlsx.excel_floats(np.array([np.nan, np.inf, -np.inf, 1.7976931348623157e308]))
    assert np.isnan(special[0]) and special[1:3].tolist() == [np.inf, -np.inf]
    assert special[3] == 1.79769313486231e308  # stays finite
    assert xlsx.excel_floats(np.array([0.1], dtype=np.float32)).tolist() == [0.1]


def test_cell_text_is_what_the_cell_shows() -> None:
    cases = [("x", "x"), (2019, "2019"), (2019.0, "2019"), (2019.5, "2019.5"), (True, "TRUE"),
             (np.False_, "FALSE"), (0.1 + 0.2, "0.3"), (1e20, "1e+20"), (np.int64(7), "7"),
             (1234567890123456789, "1.23456789012346e+18"), (np.inf, "#NUM!"),
             (dt.date(2026, 11, 30), "2026-11-30"), (pd.Timestamp("2026-11-30"), "2026-11-30"),
             (dt.datetime(2026, 11, 30, 10, 15), "2026-11-30 10:15:00"),
             (dt.time(13, 30), "13:30:00"), (dt.timedelta(days=1, hours=12), "36:00:00"),
             (pd.Timedelta(milliseconds=-1500), "-0:00:01.5"), (("a", 1), "('a', 1)")]
    assert [xlsx.cell_text(v) for v, _ in cases] == [text for _, text in cases]
    assert xlsx.cell_text(None) is None and xlsx.cell_text(np.nan) is None


def test_sheet_values_is_what_reading_gives_and_is_idempotent(tmp_path: Path) -> None:
    from filepipe.hashing import hash_rows

    df = mixed_frame().assign(
        obj=[{"k": 1}, decimal.Decimal("1.10"), dt.time(1, 2, 3, 456789), dt.timedelta(hours=30),
             np.inf, "", "a\x01\r\nb", 10**20],
        td=pd.to_timedelta(["1s", None, "1 day", "-1ms", "0s", "2h", "3h", "1.0004s"]),
        old=pd.to_datetime(["1899-12-31", "1900-01-01", None, "1900-02-28 12:00", "1700-01-01",
                            "2024-01-01 00:00:00.0015", "1900-03-01", "1900-02-28"],
                           format="ISO8601"))
    write_sheet(tmp_path / "v.xlsx", "V", df)
    back = read_sheet(tmp_path / "v.xlsx", "V")
    predicted = xlsx.sheet_values(df)
    assert hash_rows(back).tolist() == hash_rows(predicted).tolist()
    assert hash_rows(xlsx.sheet_values(predicted)).tolist() == hash_rows(predicted).tolist()
    assert hash_rows(xlsx.sheet_values(back)).tolist() == hash_rows(back).tolist()
    assert back["obj"].tolist()[2:4] == [dt.time(1, 2, 3, 457000), pd.Timedelta(hours=30)]
    assert back["old"].tolist()[:2] == ["1899-12-31", pd.Timestamp("1900-01-01")]
