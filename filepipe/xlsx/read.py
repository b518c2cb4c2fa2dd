"""Reading workbooks: the sheet names (from the package), and a sheet as a DataFrame (with
calamine), cell types kept as the file stores them."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import numpy as np
import pandas as pd

from .limits import SheetError
from .package import open_package
from .paths import check_workbook_file
from .values import cell_text


def sheet_names(path: str | os.PathLike) -> list[str]:
    """Names of all sheets of the workbook at `path` (worksheets and chart sheets), in tab order."""
    path_s = os.fspath(path)
    zf, pkg = open_package(path_s)
    with zf:
        return [s.name for s in pkg.sheets]


def read_sheet(path: str | os.PathLike, sheet: str | None = None) -> pd.DataFrame:
    """Read one sheet (the first worksheet when None) with the calamine engine.

    The first row gives the column names (an empty one becomes ``"Unnamed: i"``, a repeated
    one ``"name.1"``, as pandas does). Cell types are kept as the file stores them: text
    stays text even when it looks like a number ("01234" is not 1234); numbers are ints when
    integral, else floats; cells with a date format come back as datetimes; only empty cells
    are missing. Column dtypes follow from the values as in ``pd.Series(list)``, except
    that a numeric column with an empty cell is float64 and an all-empty one float64 NaN.
    A sheet name that matches only case-insensitively is accepted, as in Excel.
    """
    from python_calamine import CalamineWorkbook, SheetTypeEnum

    path_s = os.fspath(path)
    try:
        wb = CalamineWorkbook.from_path(path_s)
    except Exception:
        check_workbook_file(path_s)
        raise
    try:
        names = [m.name for m in wb.sheets_metadata if m.typ == SheetTypeEnum.WorkSheet]
        name = _worksheet_name(names, sheet, path_s)
        rows = wb.get_sheet_by_name(name).to_python(skip_empty_area=False)
    finally:
        close = getattr(wb, "close", None)
        if close is not None:
            close()
    return _frame_from_cells(rows)


def _worksheet_name(names: list[str], sheet: str | None, path: str) -> str:
    """The worksheet of `names` that `sheet` names (the first when None; matched
    case-insensitively when not exactly)."""
    if sheet is None:
        if not names:
            raise SheetError(f"{path}: the workbook has no worksheet")
        return names[0]
    if sheet in names:
        return sheet
    folded = [n for n in names if n.casefold() == str(sheet).casefold()]
    if not folded:
        listed = ", ".join(repr(n) for n in names) or "none"
        raise SheetError(f"{path}: sheet {sheet!r} not found; worksheets: {listed}")
    return folded[0]


def _header_names(header: list[Any]) -> list[str]:
    """Column names from the header cells: the text each shows (`cell_text`)."""
    names: list[str] = []
    seen: set[str] = set()
    for i, cell in enumerate(header):
        v = cell_text(cell)
        if v is None or v == "":
            v = f"Unnamed: {i}"
        base, k = v, 0
        while v in seen:  # pandas' mangling of repeated names: a, a.1, a.2
            k += 1
            v = f"{base}.{k}"
        seen.add(v)
        names.append(v)
    return names


def _frame_from_cells(rows: list[list[Any]]) -> pd.DataFrame:
    """DataFrame from calamine's rows of typed cells (first row = names)."""
    if not rows:
        return pd.DataFrame()
    names = _header_names(rows[0])
    body = rows[1:]
    if not body:
        return pd.DataFrame({n: pd.Series([], dtype=object) for n in names}, columns=names)
    width = len(names)
    grid = np.empty((len(body), width), dtype=object)
    try:
        grid[:] = body
    except ValueError:  # ragged rows (calamine's are rectangular; be safe)
        grid[:] = [list(r[:width]) + [None] * (width - len(r)) for r in body]
    return pd.DataFrame({n: _series_from_cells(grid[:, j].copy()) for j, n in enumerate(names)},
                        columns=names)


def _series_from_cells(arr: np.ndarray) -> pd.Series:
    """Series from one column of typed cells (object array, modified in place)."""
    types = np.frompyfunc(type, 1, 1)(arr)
    is_str = types == str
    missing = np.zeros(len(arr), dtype=bool)
    if is_str.any():
        missing[is_str] = arr[is_str] == ""  # calamine gives "" for empty (and error) cells
    missing |= types == type(None)
    present = set(pd.unique(types[~missing]))
    if not present:
        return pd.Series(np.full(len(arr), np.nan))
    if present <= {float, int}:
        return _numbers_series(arr, missing, int in present)
    if present <= {dt.datetime, dt.date}:
        arr[missing] = None
        return pd.Series(pd.to_datetime(pd.Series(arr, dtype=object))).astype("datetime64[us]")
    arr[missing] = None
    floats = np.flatnonzero(types == float)
    if len(floats):  # 1.0 -> 1 in mixed columns, as pandas' readers do
        arr[floats] = [int(v) if v.is_integer() else v for v in arr[floats]]
    dates = np.flatnonzero(types == dt.date)
    if len(dates):  # date-only cells are datetimes at midnight, as in a date column
        arr[dates] = [dt.datetime(v.year, v.month, v.day) for v in arr[dates]]
    return pd.Series(arr.tolist())


def _numbers_series(arr: np.ndarray, missing: np.ndarray, has_ints: bool) -> pd.Series:
    """A column of numbers: int64 when all are present and integral, else float64."""
    vals = np.full(len(arr), np.nan)
    vals[~missing] = arr[~missing].astype(float)
    ok = vals[~missing]
    if (not missing.any() and np.all(np.mod(ok, 1) == 0)
            and np.all(np.abs(ok) < 2.0**63)):
        if has_ints:  # exact ints (xls/ods) stay exact
            return pd.Series(arr.astype(np.int64))
        return pd.Series(ok.astype(np.int64))
    return pd.Series(vals)
