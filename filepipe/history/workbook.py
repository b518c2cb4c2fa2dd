"""The change workbook: a diff people open in Excel or LibreOffice.

A "Summary" sheet first (the frame the caller gives), then one sheet per table: a
``change`` column (added / deleted / changed), the keys and the columns; added rows filled
green, deleted rows red, changed cells yellow holding ``old → new``. Every sheet has its
header row frozen, an autofilter and readable column widths.
"""

from __future__ import annotations

import datetime as dt
import math
import numbers
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import FilepipeError
from .diff import ACTION, ADDED, DELETED

if TYPE_CHECKING:
    import pandas as pd

    from .diff import TableDiff

Worksheet = Any  # xlsxwriter's classes; it ships no type information
Format = Any

SUMMARY = "Summary"
ARROW = " → "
CHANGE_COLUMN = "change"
GREEN, RED, YELLOW, HEADER_GREY = "#C6EFCE", "#FFC7CE", "#FFEB9C", "#D9D9D9"
_FILLS = {"added": GREEN, "deleted": RED, "changed": YELLOW}
_MAX_ROWS, _MAX_COLUMNS, _MAX_NAME = 1_048_576, 16_384, 31
_MIN_WIDTH, _MAX_WIDTH = 6, 60
_BAD_NAME = re.compile(r"[\[\]:*?/\\]")
_EXACT_INT = 2**53  # larger integers are written as text: Excel numbers are doubles
DATETIME_FORMAT, DATE_FORMAT = "yyyy-mm-dd hh:mm:ss", "yyyy-mm-dd"


def write_diff_workbook(path: str | Path, diffs: Mapping[str, TableDiff], summary: pd.DataFrame) -> None:
    """Write the change workbook of `diffs` (table name → diff) to `path`, atomically."""
    import xlsxwriter  # type: ignore[import-untyped]

    from ..fileutil import atomic_write

    sheets = sheet_names([SUMMARY, *diffs])
    for name, diff in diffs.items():
        _check_fits(f"table {name!r}", len(diff.added) + len(diff.deleted) + len(diff.changed),
                    1 + len(diff.keys) + len(diff.columns))
    _check_fits("the summary", len(summary), len(summary.columns))

    def write(tmp: Path) -> None:
        with xlsxwriter.Workbook(str(tmp), {"remove_timezone": True}) as book:
            formats = _Formats(book)
            _write_summary(book.add_worksheet(sheets[0]), summary, formats)
            for sheet, diff in zip(sheets[1:], diffs.values()):
                _write_table(book.add_worksheet(sheet), diff, formats)

    atomic_write(Path(path), write)


def sheet_names(names: list[str]) -> list[str]:
    """Valid, distinct sheet names for `names`, in order: no ``[]:*?/\\``, at most 31
    characters, no apostrophe at either end, not "History" (Excel reserves it), distinct
    ignoring case (a repeat gains ``~2``, ``~3``...)."""
    taken: set[str] = set()
    out = []
    for name in names:
        base = _BAD_NAME.sub("_", name).strip("'")[:_MAX_NAME] or "Sheet"
        if base.lower() == "history":
            base += "_"
        candidate, n = base, 1
        while candidate.lower() in taken:
            n += 1
            suffix = f"~{n}"
            candidate = base[:_MAX_NAME - len(suffix)] + suffix
        taken.add(candidate.lower())
        out.append(candidate)
    return out


def _check_fits(what: str, rows: int, columns: int) -> None:
    if rows + 1 > _MAX_ROWS or columns > _MAX_COLUMNS:
        raise FilepipeError(f"the change workbook cannot hold {what}: {rows:,} rows and {columns:,} "
                            f"columns, where a sheet holds {_MAX_ROWS - 1:,} rows and {_MAX_COLUMNS:,} "
                            "columns; write the diff as CSV instead")


class _Formats:
    """The workbook's cell formats, each made once: the header's, and one per fill (none,
    green, red, yellow) and number format (none, date, date and time)."""

    def __init__(self, book: Any) -> None:
        self.header = book.add_format({"bold": True, "bg_color": HEADER_GREY, "border": 1})
        self._book = book
        self._cells: dict[tuple[str | None, str | None], Format] = {}

    def cell(self, fill: str | None, num_format: str | None = None) -> Format:
        key = (fill, num_format)
        if key not in self._cells:
            spec = {"bg_color": fill, "num_format": num_format}
            self._cells[key] = self._book.add_format({k: v for k, v in spec.items() if v})
        return self._cells[key]


def _write_summary(ws: Worksheet, summary: pd.DataFrame, formats: _Formats) -> None:
    header = [str(c) for c in summary.columns]
    values = summary.to_numpy(dtype=object)
    ws.write_row(0, 0, header, formats.header)
    for r, row in enumerate(values, start=1):
        for c, v in enumerate(row):
            _write_cell(ws, r, c, v, None, formats)
    _finish(ws, header, [values[:, c] for c in range(len(header))], len(values))


def _write_table(ws: Worksheet, diff: TableDiff, formats: _Formats) -> None:
    frame, marks = diff.flat(ARROW)
    header = [CHANGE_COLUMN, *map(str, diff.keys), *map(str, diff.columns)]
    kinds = ["added" if a == ADDED else "deleted" if a == DELETED else "changed" for a in frame[ACTION]]
    values = frame.drop(columns=ACTION).to_numpy(dtype=object)
    first_data = len(diff.keys)
    ws.write_row(0, 0, header, formats.header)
    for r, (kind, row, changed) in enumerate(zip(kinds, values, marks), start=1):
        row_fill = None if kind == "changed" else _FILLS[kind]
        _write_cell(ws, r, 0, kind, _FILLS[kind], formats)
        for c, v in enumerate(row):
            fill = YELLOW if c >= first_data and changed[c - first_data] else row_fill
            _write_cell(ws, r, c + 1, v, fill, formats)
    _finish(ws, header, [kinds, *(values[:, c] for c in range(values.shape[1]))], len(values))


def _finish(ws: Worksheet, header: list[str], columns: list[Any], rows: int) -> None:
    """Freeze the header row, add the autofilter, size each column to its text."""
    ws.freeze_panes(1, 0)
    if header:
        ws.autofilter(0, 0, rows, len(header) - 1)
    for c, (name, cells) in enumerate(zip(header, columns)):
        longest = max([len(name) + 2, *(len(_shown(v)) for v in cells)])
        ws.set_column(c, c, min(max(longest + 1, _MIN_WIDTH), _MAX_WIDTH))


def _write_cell(ws: Worksheet, row: int, col: int, value: Any, fill: str | None, formats: _Formats) -> None:
    """One cell: a number, bool or date as such, a null blank, anything else as text."""
    v = _excel_value(value)
    if v is None:
        ws.write_blank(row, col, None, formats.cell(fill))
    elif isinstance(v, dt.datetime):
        ws.write_datetime(row, col, v, formats.cell(fill, DATETIME_FORMAT))
    elif isinstance(v, dt.date):
        ws.write_datetime(row, col, v, formats.cell(fill, DATE_FORMAT))
    elif isinstance(v, bool):
        ws.write_boolean(row, col, v, formats.cell(fill))
    elif isinstance(v, (int, float)):
        ws.write_number(row, col, v, formats.cell(fill))
    else:
        ws.write_string(row, col, v, formats.cell(fill))


def _excel_value(v: Any) -> Any:
    """`v` as a value Excel keeps: None for a null; a bool, an exact number, a date or a
    naive datetime as such; anything else as its text."""
    import numpy as np
    import pandas as pd

    if isinstance(v, str):
        return v
    if pd.api.types.is_scalar(v) and pd.isna(v):
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, numbers.Integral):
        return int(v) if abs(int(v)) <= _EXACT_INT else str(v)
    if isinstance(v, numbers.Real):
        return float(v) if math.isfinite(float(v)) else str(v)
    if isinstance(v, dt.datetime):
        return v.replace(tzinfo=None)
    if isinstance(v, dt.date):
        return v
    return str(v)


def _shown(v: Any) -> str:
    """About what a cell shows, to size its column."""
    x = _excel_value(v)
    if isinstance(x, dt.datetime):
        return DATETIME_FORMAT
    if isinstance(x, dt.date):
        return DATE_FORMAT
    return "" if x is None else str(x)
