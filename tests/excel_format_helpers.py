"""Fixtures of the Excel-format tests: a small order-lines pipeline writing a workbook, the
formatting a user gives its sheet with openpyxl, and what a cell shows."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import openpyxl
import pandas as pd
from conftest import age
from openpyxl.formatting.rule import CellIsRule
from openpyxl.styles import Font, PatternFill
from openpyxl.worksheet.datavalidation import DataValidation

from filepipe import BatchTransform, Catalog, Pipeline, Table, build_compute
from filepipe.stores import TableStoreExcel, TableStoreFiledir

PDFTOTEXT = shutil.which("pdftotext")
YELLOW = "FFFF00"
BLUE = "00B0F0"
MONEY = '"$"#,##0.00'


def write_order(root: Path, order_id: int, customer: str, price: float, qty: int, day: str) -> None:
    path = root / "inbox" / f"{order_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"customer": customer, "price": price, "qty": qty, "day": day}))
    age(path)


FIRST_ORDERS = [(1, "ann", 9, 1, "2024-01-05"), (2, "bob", 6.75, 2, "2024-02-01"),
                (3, "cy", 23.7, 3, "2024-03-09")]


def seed(root: Path) -> None:
    for order in FIRST_ORDERS:
        write_order(root, *order)


def change_orders(root: Path) -> None:
    """Order 1 deleted, order 3 changed, orders 4 and 5 added: rows 2-4 become rows 2-5."""
    (root / "inbox" / "1.json").unlink()
    write_order(root, 3, "cy", 30, 3, "2024-03-09")
    write_order(root, 4, "dee", 1234.5, 4, "2024-04-01")
    write_order(root, 5, "eve", 2.5, 1, "2024-05-01")


def lines(orders: pd.DataFrame) -> pd.DataFrame:
    out = orders.assign(day=pd.to_datetime(orders["day"]), amount=orders["price"] * orders["qty"])
    return out[["order_id", "customer", "price", "qty", "amount", "day"]]


def lines_steps(ds, root: Path, **store_options: Any) -> tuple[list, Path]:
    """inbox/{order_id}.json → out.xlsx[Lines], keyed by order_id (text, from the path)."""
    out = root / "out.xlsx"
    catalog = Catalog({
        "orders": Table(TableStoreFiledir(root / "inbox/{order_id}.json")),
        "lines": Table(TableStoreExcel(out, "Lines", ["order_id"], **store_options)),
    })
    steps = build_compute(ds, catalog, Pipeline([BatchTransform(lines, ["orders"], ["lines"])]))
    return steps, out


def edit_sheet(path: Path, edit, sheet: str = "Lines") -> None:
    """Load with openpyxl, `edit(ws)`, save: a user formatting the sheet."""
    wb = openpyxl.load_workbook(path)
    edit(wb[sheet])
    wb.save(path)
    age(path)


def format_like_a_user(ws) -> None:
    """What an analyst does to the Lines sheet (3 data rows, keys 1-3): money format and a
    fill on every amount cell, a wider amount column, a blue header cell, bob's name in
    italics and his row taller, a rule and a validation on the quantities, a red tab, zoom."""
    ws.column_dimensions["E"].width = 25
    for row in range(2, 5):
        ws.cell(row, 5).number_format = MONEY
        ws.cell(row, 5).fill = PatternFill("solid", fgColor=YELLOW)
    ws["A1"].fill = PatternFill("solid", fgColor=BLUE)
    ws["B3"].font = Font(italic=True)
    ws.row_dimensions[3].height = 30
    ws.conditional_formatting.add("D2:D4", CellIsRule(operator="greaterThan", formula=["2"],
                                                      font=Font(color="9C0006")))
    dv = DataValidation(type="whole", operator="between", formula1="0", formula2="100")
    ws.add_data_validation(dv)
    dv.add("D2:D4")
    ws.sheet_properties.tabColor = "FF0000"
    ws.sheet_view.zoomScale = 85


def fill_rgb(cell) -> str | None:
    """The solid fill colour of a cell (last six hex digits), None when it has none."""
    if cell.fill is None or cell.fill.fill_type != "solid":
        return None
    return str(cell.fill.fgColor.rgb)[-6:]


def column(ws, letter: str) -> list:
    """The data cells (row 2 on) of a column."""
    return [ws[f"{letter}{r}"] for r in range(2, ws.max_row + 1)]


def sheet_look(path: Path, sheet: str = "Lines"):
    """The workbook (to close) and the sheet, loaded with openpyxl."""
    wb = openpyxl.load_workbook(path)
    return wb, wb[sheet]


def soffice_export(src: Path, fmt: str, outdir: Path, profile: Path, soffice: str) -> Path:
    """`src` converted by LibreOffice headless (`fmt` as --convert-to takes it)."""
    outdir.mkdir(exist_ok=True)
    env = {**os.environ, "LC_ALL": "en_US.UTF-8", "LANG": "en_US.UTF-8"}  # 1,234.50 and Jan
    proc = subprocess.run(
        [soffice, f"-env:UserInstallation=file://{profile}", "--headless", "--norestore",
         "--convert-to", fmt, "--outdir", str(outdir), str(src)],
        capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr
    out = outdir / (src.stem + "." + fmt.split(":")[0])
    assert out.exists(), (proc.stdout, proc.stderr)
    return out


def pdf_text(pdf: Path) -> str:
    assert PDFTOTEXT is not None
    proc = subprocess.run([PDFTOTEXT, "-layout", str(pdf), "-"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


#: LibreOffice's CSV filter: comma, double quote, UTF-8, first line 1, no column types,
#: language default, quote text cells no, detect special numbers yes, save cell contents
#: *as shown* yes (the ninth token)
CSV_AS_SHOWN = "csv:Text - txt - csv (StarCalc):44,34,76,1,,0,false,true,true"
