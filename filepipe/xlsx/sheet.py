"""The worksheet XML of a DataFrame: its columns prepared for writing (slot filler and
display width each), the frozen bold header with an autofilter, and the rows in chunks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd

from .cellxml import (
    Ctx,
    Slots,
    datetime_style,
    escape_strings,
    fraction_style,
    int_text,
    put_bools,
    put_datetimes,
    put_durations,
    put_floats,
    put_numbers,
    put_objects,
    put_strings,
    str_mids,
)
from .limits import MAX_COLS, MAX_ROWS, SheetError, col_letter, sheet_ref
from .styles import StyleIds
from .values import cell_values, header_texts, obj_array
from .xmltext import NS_MAIN, NS_R, XML_DECL

MAX_COL_WIDTH = 60.0
_ROW_CELL_BUDGET = 150_000  # cells generated per chunk (bounds memory)

Fill = Callable[[slice, Slots, Ctx], None]
"""Fills the cells of the rows `slice` of one column into its slots."""


# --------------------------------------------------------------------------- columns


class Column:
    """One DataFrame column prepared for writing: a slot filler and a display width."""

    def __init__(self, name: str, letter: str, series: pd.Series, ctx: Ctx):
        self.name = name
        self.prefix = f'<c r="{letter}'
        styles = ctx.styles
        assert styles is not None
        converted = cell_values(series, read=False)
        s = series if converted is None else converted
        self._fill, self.width_chars = _preparer(s.dtype)(s, styles)

    def fill(self, sl: slice, grid: np.ndarray, j: int, rowstr: np.ndarray, ctx: Ctx) -> None:
        ctx.column = self.name
        self._fill(sl, Slots(grid, j, self.prefix, rowstr), ctx)

    def width(self) -> float:
        header = len(self.name) + 2.5  # room for the autofilter button
        content = min(float(self.width_chars), MAX_COL_WIDTH) + 1.5
        return round(min(MAX_COL_WIDTH, max(header, content, 6.0)), 2)


def _preparer(dtype: Any) -> Callable[[pd.Series, StyleIds], tuple[Fill, float]]:
    """The function that prepares a column of `dtype` (as `cell_values` made it)."""
    if pd.api.types.is_bool_dtype(dtype):
        return _bool_column
    if pd.api.types.is_integer_dtype(dtype):
        return _int_column
    if pd.api.types.is_float_dtype(dtype):
        return _float_column
    if pd.api.types.is_datetime64_dtype(dtype):
        return _datetime_column
    if pd.api.types.is_timedelta64_dtype(dtype):
        return _duration_column
    if isinstance(dtype, pd.StringDtype):
        return _string_column
    return _object_column  # cell by cell type


def _masked(values: np.ndarray, mask: np.ndarray,
            put: Callable[[Slots, np.ndarray | None, np.ndarray], None]) -> Fill:
    """A filler that puts the `values` that `mask` does not mark missing."""
    def fill(sl: slice, slots: Slots, ctx: Ctx) -> None:
        m = mask[sl]
        if not m.any():
            put(slots, None, values[sl])
        else:
            keep = np.flatnonzero(~m)
            if len(keep):
                put(slots, keep, values[sl][keep])
    return fill


def _bool_column(s: pd.Series, styles: StyleIds) -> tuple[Fill, float]:
    mask = s.isna().to_numpy()
    bools = s.to_numpy(dtype=bool, na_value=False)
    return _masked(bools, mask, put_bools), 5


def _int_column(s: pd.Series, styles: StyleIds) -> tuple[Fill, float]:
    mask = s.isna().to_numpy()
    np_dtype = getattr(s.dtype, "numpy_dtype", s.dtype)
    ints = s.to_numpy(dtype=np_dtype, na_value=0) if mask.any() else s.to_numpy(dtype=np_dtype)
    width = 0
    if (~mask).any():
        v = ints[~mask]
        width = max(len(str(v.min())), len(str(v.max())))
    return _masked(ints, mask, lambda sl, i, v: put_numbers(sl, i, int_text(v))), width


def _float_column(s: pd.Series, styles: StyleIds) -> tuple[Fill, float]:
    floats = s.to_numpy(dtype=np.float64, na_value=np.nan)
    return (lambda sl, slots, ctx: put_floats(slots, None, floats[sl])), _float_width(floats)


def _float_width(vals: np.ndarray) -> float:
    """Characters Excel's General format shows of the widest of the floats `vals`."""
    finite = vals[np.isfinite(vals)]
    if not len(finite):
        return 6 if np.isinf(vals).any() else 0
    lo, hi = float(finite.min()), float(finite.max())
    big = max(abs(lo), abs(hi))
    if big >= 1e11:
        return 11  # Excel's General format switches to 1.23457E+11
    int_digits = len(str(int(big))) + (1 if lo < 0 else 0)
    for decimals in range(0, 5):
        scaled = finite * 10.0**decimals
        if np.all(np.abs(scaled - np.round(scaled)) < 1e-6 * np.maximum(1.0, np.abs(scaled))):
            return min(11, int_digits + (decimals + 1 if decimals else 0))
    return 11  # General shows at most ~11 characters


def _datetime_column(s: pd.Series, styles: StyleIds) -> tuple[Fill, float]:
    stamps = s.to_numpy()
    valid = ~np.isnat(stamps)
    us = stamps[valid].astype("datetime64[us]").view("int64")
    style = datetime_style(us, styles) if valid.any() else styles.date
    width = {styles.date: 10, styles.datetime: 19, styles.datetime_ms: 23}[style]
    return (lambda sl, slots, ctx: put_datetimes(slots, None, stamps[sl], style)), width


def _duration_column(s: pd.Series, styles: StyleIds) -> tuple[Fill, float]:
    spans = s.to_numpy()
    us = spans[~np.isnat(spans)].view(np.int64)
    style = fraction_style(us, styles.duration, styles.duration_ms)
    width = 10 if style == styles.duration else 14
    return (lambda sl, slots, ctx: put_durations(slots, None, spans[sl], style)), width


def _string_column(s: pd.Series, styles: StyleIds) -> tuple[Fill, float]:
    mask = s.isna().to_numpy()

    def fill(sl: slice, slots: Slots, ctx: Ctx) -> None:
        part, m = s.iloc[sl], mask[sl]
        if not m.any():
            put_strings(slots, None, part, ctx)
        else:
            keep = np.flatnonzero(~m)
            put_strings(slots, keep, part.iloc[keep], ctx)

    return fill, float(s.str.len().max()) if (~mask).any() else 0


def _object_column(s: pd.Series, styles: StyleIds) -> tuple[Fill, float]:
    objs = s.to_numpy(dtype=object)
    try:
        lens = pd.Series(objs, dtype=object).str.len()  # strings only (approximate)
        width = float(lens.max()) if lens.notna().any() else 10
    except (AttributeError, TypeError):
        width = 10
    return (lambda sl, slots, ctx: put_objects(slots, objs[sl], ctx)), width


def check_shape(df: pd.DataFrame, ctx: Ctx) -> list[str]:
    """Raise SheetError when `df` does not fit in a sheet; returns the header texts."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"write_sheet expects a pandas DataFrame, got {type(df).__name__}")
    n_rows, n_cols = df.shape
    if n_rows + 1 > MAX_ROWS:
        raise SheetError(f"{ctx.path}: sheet {ctx.sheet!r}: {n_rows:,} rows plus the header do not "
                         f"fit in an Excel sheet ({MAX_ROWS:,} rows)")
    if n_cols > MAX_COLS:
        raise SheetError(f"{ctx.path}: sheet {ctx.sheet!r}: {n_cols:,} columns do not fit in an "
                         f"Excel sheet ({MAX_COLS:,} columns)")
    return header_texts(df.columns, f"{ctx.path}: sheet {ctx.sheet!r}")


def prepare_columns(df: pd.DataFrame, names: list[str], ctx: Ctx) -> list[Column]:
    """The columns of `df`, headed `names`, prepared for writing."""
    return [Column(name, col_letter(i), df.iloc[:, i], ctx) for i, name in enumerate(names)]


# --------------------------------------------------------------------------- sheet XML


def sheet_xml(df: pd.DataFrame, columns: list[Column], ctx: Ctx,
              tab_selected: bool) -> Iterator[bytes]:
    """Yield the worksheet XML in pieces of a few MB."""
    ref = sheet_ref(len(df), len(columns))
    yield _sheet_head(columns, ctx, ref, tab_selected)
    if columns and len(df):
        yield from _sheet_rows(df, columns, ctx)
    tail = ["</sheetData>"]
    if columns:
        tail.append(f'<autoFilter ref="{ref}"/>')
    tail.append('<pageMargins left="0.7" right="0.7" top="0.75" bottom="0.75" header="0.3" footer="0.3"/>')
    tail.append("</worksheet>")
    yield "".join(tail).encode("utf-8")


def _sheet_head(columns: list[Column], ctx: Ctx, ref: str, tab_selected: bool) -> bytes:
    """The worksheet XML up to the data rows: dimension, frozen view, column widths and the
    bold header row."""
    styles = ctx.styles
    assert styles is not None
    sel = ' tabSelected="1"' if tab_selected else ""
    parts = [
        XML_DECL,
        f'<worksheet xmlns="{NS_MAIN}" xmlns:r="{NS_R}">',
        f'<dimension ref="{ref}"/>',
        f'<sheetViews><sheetView{sel} workbookViewId="0">'
        '<pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" state="frozen"/>'
        '<selection pane="bottomLeft" activeCell="A2" sqref="A2"/>'
        "</sheetView></sheetViews>",
        '<sheetFormatPr defaultRowHeight="15"/>',
    ]
    if columns:
        parts.append("<cols>")
        for i, col in enumerate(columns, start=1):
            parts.append(f'<col min="{i}" max="{i}" width="{col.width()}" customWidth="1"/>')
        parts.append("</cols>")
    parts.append("<sheetData>")
    if columns:
        ctx.rows, ctx.labels, ctx.column = np.array([1]), None, "(header)"
        text, preserve = escape_strings(obj_array([c.name for c in columns]), ctx, None)
        plain, pres = str_mids(styles.header)
        parts.append('<row r="1">')
        for col, t, p in zip(columns, text, preserve):
            parts.append(f"{col.prefix}1{pres if p else plain}{t}</t></is></c>")
        parts.append("</row>")
    return "".join(parts).encode("utf-8")


def _sheet_rows(df: pd.DataFrame, columns: list[Column], ctx: Ctx) -> Iterator[bytes]:
    """The data rows, a chunk of rows (at most `_ROW_CELL_BUDGET` cells) at a time."""
    n_rows, n_cols = len(df), len(columns)
    chunk = max(1_000, _ROW_CELL_BUDGET // n_cols)
    index = df.index
    for lo in range(0, n_rows, chunk):
        hi = min(n_rows, lo + chunk)
        rownums = np.arange(lo + 2, hi + 2)
        rowstr = int_text(rownums)
        ctx.rows, ctx.labels = rownums, index[lo:hi]
        grid = np.empty((hi - lo, 4 + 5 * n_cols), dtype=object)
        grid[...] = ""
        grid[:, 0] = '<row r="'
        grid[:, 1] = rowstr
        grid[:, 2] = '">'
        grid[:, -1] = "</row>"
        for j, col in enumerate(columns):
            col.fill(slice(lo, hi), grid, j, rowstr, ctx)
        yield "".join(grid.ravel().tolist()).encode("utf-8")
