"""The worksheet XML of a DataFrame: its columns prepared for writing (slot filler, display
width and default cell format each), the frozen bold header with an autofilter, and the rows
in chunks, formatted as the sheet's look (:mod:`.look`) says."""

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
    restyle,
    same_xf,
    str_mids,
)
from .limits import MAX_COLS, MAX_ROWS, SheetError, col_letter, sheet_ref
from .look import MAX_WIDTH, ColumnFacts, ColumnLook, SheetLook, plan_look
from .numfmt import FLOAT_FMT_RANGE
from .styles import StyleIds
from .values import cell_values, header_texts, obj_array
from .xmltext import NS_MAIN, NS_R, XML_DECL

MAX_COL_WIDTH = 60.0
_ROW_CELL_BUDGET = 150_000  # cells generated per chunk (bounds memory)

Fill = Callable[[slice, Slots, Ctx], None]
"""Fills the cells of the rows `slice` of one column into its slots."""


# --------------------------------------------------------------------------- columns


class Column:
    """One DataFrame column prepared for writing: a slot filler, a display width, the cell
    format its values get by default, and (set by the sheet's look) how it is formatted."""

    def __init__(self, name: str, letter: str, series: pd.Series, ctx: Ctx):
        self.name = name
        self.prefix = f'<c r="{letter}'
        styles = ctx.styles
        assert styles is not None
        converted = cell_values(series, read=False)
        s = series if converted is None else converted
        prepare = _preparer(s.dtype)
        self._fill, self.width_chars, self.main_xf, self.numeric = prepare(s, styles)
        # the default formats its cells may get (a mixed column's: any; an empty cell: None)
        self.defaults: tuple[int | None, ...] = (None, self.main_xf)
        if prepare is _object_column:
            self.defaults = (None, 0, styles.int, styles.date, styles.datetime, styles.datetime_ms,
                             styles.time, styles.time_ms, styles.duration, styles.duration_ms)
        self.look: ColumnLook | None = None

    def use_look(self, look: ColumnLook) -> None:
        """Format the column as `look` says; the cell formats it needs are made now (before
        the styles part is written)."""
        self.look = look
        resolvers = [look.resolve] + (list(dict.fromkeys(look.exceptions[1])) if look.exceptions else [])
        for r in resolvers:
            for d in self.defaults:
                r(d)

    def facts(self) -> ColumnFacts:
        return ColumnFacts(self.name, self.numeric, self.main_xf, self.width())

    def fill(self, sl: slice, grid: np.ndarray, j: int, rowstr: np.ndarray, ctx: Ctx) -> None:
        ctx.column = self.name
        look = self.look
        ctx.xf = look.resolve if look is not None else same_xf
        slots = Slots(grid, j, self.prefix, rowstr)
        self._fill(sl, slots, ctx)
        if look is not None and look.exceptions is not None:
            pos, resolvers = look.exceptions
            a, b = np.searchsorted(pos, [sl.start, sl.stop])
            if b > a:
                restyle(slots, pos[a:b] - sl.start, resolvers[a:b], look.resolve.default_of)

    def width(self) -> float:
        """Characters the column needs: its widest value or its header, bounded."""
        header = len(self.name) * 1.1 + 2.5  # bold, and room for the autofilter button
        content = min(float(self.width_chars), MAX_COL_WIDTH) + 1.5
        return round(min(MAX_COL_WIDTH, max(header, content, 6.0)), 2)


Prepared = tuple[Fill, float, "int | None", bool]
"""A column's filler, its width in characters, its values' default cell format and
whether they are numbers (a header over numbers is right-aligned)."""


def _preparer(dtype: Any) -> Callable[[pd.Series, StyleIds], Prepared]:
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
            put: Callable[[Slots, np.ndarray | None, np.ndarray, Ctx], None]) -> Fill:
    """A filler that puts the `values` that `mask` does not mark missing."""
    def fill(sl: slice, slots: Slots, ctx: Ctx) -> None:
        m = mask[sl]
        if not m.any():
            put(slots, None, values[sl], ctx)
        else:
            keep = np.flatnonzero(~m)
            if len(keep):
                put(slots, keep, values[sl][keep], ctx)
    return fill


def _bool_column(s: pd.Series, styles: StyleIds) -> Prepared:
    mask = s.isna().to_numpy()
    bools = s.to_numpy(dtype=bool, na_value=False)
    return _masked(bools, mask, lambda sl, i, v, ctx: put_bools(sl, i, v, ctx.xf(None))), 5, None, False


def _int_column(s: pd.Series, styles: StyleIds) -> Prepared:
    mask = s.isna().to_numpy()
    np_dtype = getattr(s.dtype, "numpy_dtype", s.dtype)
    ints = s.to_numpy(dtype=np_dtype, na_value=0) if mask.any() else s.to_numpy(dtype=np_dtype)
    width = 0
    if (~mask).any():
        v = ints[~mask]
        width = max(len(str(v.min())), len(str(v.max())))
    style = styles.int
    return (_masked(ints, mask, lambda sl, i, v, ctx: put_numbers(sl, i, int_text(v), ctx.xf(style))),
            width, style, True)


def _float_column(s: pd.Series, styles: StyleIds) -> Prepared:
    floats = s.to_numpy(dtype=np.float64, na_value=np.nan)
    style, width = _float_look(floats, styles)
    return (lambda sl, slots, ctx: put_floats(slots, None, floats[sl], ctx.xf(style))), width, style, True


_SAMPLE = 20_000  # values looked at to size a float column's decimals


def _float_look(vals: np.ndarray, styles: StyleIds) -> tuple[int, float]:
    """The default cell format of the floats `vals` and the characters it shows of the
    widest: whole numbers as integers; others with two to eight decimals (FLOAT_FMT) when
    they lie in FLOAT_FMT_RANGE, else in General (which Excel shows in at most 11)."""
    finite = vals[np.isfinite(vals)]
    if not len(finite):
        return styles.float, (6 if np.isinf(vals).any() else 0)
    mags = np.abs(finite)
    big = float(mags.max())
    nonzero = mags[mags > 0]
    small = float(nonzero.min()) if len(nonzero) else 1.0
    sample = finite if len(finite) <= _SAMPLE else finite[:: len(finite) // _SAMPLE]
    neg = 1 if float(finite.min()) < 0 else 0
    lo, hi = FLOAT_FMT_RANGE
    if big < hi and np.all(sample == np.round(sample)) and np.all(finite == np.round(finite)):
        return styles.int, len(str(int(big))) + neg
    if not (lo <= small and big < hi):
        return 0, 11  # General
    int_digits = len(str(int(big)))
    decimals = 8
    for d in range(2, 8):
        scaled = sample * 10.0**d
        if np.all(np.abs(scaled - np.round(scaled)) < 1e-6 * np.maximum(1.0, np.abs(scaled))):
            decimals = d
            break
    return styles.float, neg + int_digits + (int_digits - 1) // 3 + 1 + decimals


def _datetime_column(s: pd.Series, styles: StyleIds) -> Prepared:
    stamps = s.to_numpy()
    valid = ~np.isnat(stamps)
    us = stamps[valid].astype("datetime64[us]").view("int64")
    style = datetime_style(us, styles) if valid.any() else styles.date
    width = {styles.date: 10, styles.datetime: 19, styles.datetime_ms: 23}[style]
    return (lambda sl, slots, ctx: put_datetimes(slots, None, stamps[sl], ctx.xf(style))), width, style, True


def _duration_column(s: pd.Series, styles: StyleIds) -> Prepared:
    spans = s.to_numpy()
    us = spans[~np.isnat(spans)].view(np.int64)
    style = fraction_style(us, styles.duration, styles.duration_ms)
    width = 10 if style == styles.duration else 14
    return (lambda sl, slots, ctx: put_durations(slots, None, spans[sl], ctx.xf(style))), width, style, True


def _string_column(s: pd.Series, styles: StyleIds) -> Prepared:
    mask = s.isna().to_numpy()

    def fill(sl: slice, slots: Slots, ctx: Ctx) -> None:
        part, m = s.iloc[sl], mask[sl]
        if not m.any():
            put_strings(slots, None, part, ctx, ctx.xf(None))
        else:
            keep = np.flatnonzero(~m)
            put_strings(slots, keep, part.iloc[keep], ctx, ctx.xf(None))

    return fill, (float(s.str.len().max()) if (~mask).any() else 0), None, False


_NUMERIC_KINDS = {"integer", "floating", "mixed-integer-float", "decimal", "datetime", "date",
                  "datetime64", "timedelta", "timedelta64", "time"}


def _object_column(s: pd.Series, styles: StyleIds) -> Prepared:
    objs = s.to_numpy(dtype=object)
    kind = pd.api.types.infer_dtype(objs, skipna=True)
    if kind in ("datetime", "date", "datetime64"):
        width = 10.0 if kind == "date" else 19.0
    else:
        try:
            lens = pd.Series(objs, dtype=object).str.len()  # strings only (approximate)
            width = float(lens.max()) if lens.notna().any() else 10
        except (AttributeError, TypeError):
            width = 10
    return ((lambda sl, slots, ctx: put_objects(slots, objs[sl], ctx)), width, None,
            kind in _NUMERIC_KINDS)


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


def sheet_xml(df: pd.DataFrame, columns: list[Column], ctx: Ctx, tab_selected: bool,
              look: SheetLook | None = None) -> Iterator[bytes]:
    """Yield the worksheet XML in pieces of a few MB, formatted as `look` says (None:
    filepipe's defaults)."""
    if look is None:
        look = plan_look(None, [c.facts() for c in columns], _ids(ctx), len(df))
        use_look(columns, look)
    ref = sheet_ref(len(df), len(columns))
    yield _sheet_head(columns, ctx, ref, tab_selected, look)
    if columns and len(df):
        yield from _sheet_rows(df, columns, ctx, look)
    tail = ["</sheetData>"]
    if columns:
        tail.append(f'<autoFilter ref="{ref}"/>')
    tail.extend(look.tail)
    tail.append("</worksheet>")
    yield "".join(tail).encode("utf-8")


def use_look(columns: list[Column], look: SheetLook) -> None:
    """Give each column its look, making the cell formats they need."""
    for col, col_look in zip(columns, look.columns):
        col.use_look(col_look)


def _ids(ctx: Ctx) -> StyleIds:
    assert ctx.styles is not None
    return ctx.styles


def _sheet_head(columns: list[Column], ctx: Ctx, ref: str, tab_selected: bool,
                look: SheetLook) -> bytes:
    """The worksheet XML up to the data rows: properties, dimension, frozen view, column
    widths and the header row."""
    sel = ' tabSelected="1"' if tab_selected else ""
    view = look.view_attrs or ' workbookViewId="0"'
    parts = [
        XML_DECL,
        f'<worksheet xmlns="{NS_MAIN}" xmlns:r="{NS_R}"{look.root_extra}>',
        look.sheet_pr,
        f'<dimension ref="{ref}"/>',
        f"<sheetViews><sheetView{sel}{view}>"
        f"{look.view_inner}</sheetView></sheetViews>",
        look.sheet_format,
    ]
    if columns or look.extra_cols:
        parts.append("<cols>")
        for i, col_look in enumerate(look.columns, start=1):
            width = repr(float(min(col_look.width, MAX_WIDTH))).removesuffix(".0")
            parts.append(f'<col min="{i}" max="{i}" width="{width}" customWidth="1"'
                         f"{col_look.col_attrs}/>")
        parts.extend(look.extra_cols)
        parts.append("</cols>")
    parts.append("<sheetData>")
    if columns:
        ctx.rows, ctx.labels, ctx.column = np.array([1]), None, "(header)"
        text, preserve = escape_strings(obj_array([c.name for c in columns]), ctx, None)
        parts.append(f'<row r="1"{look.header_row}>')
        for col, col_look, t, p in zip(columns, look.columns, text, preserve):
            plain, pres = str_mids(col_look.header_xf)
            parts.append(f"{col.prefix}1{pres if p else plain}{t}</t></is></c>")
        parts.append("</row>")
    return "".join(parts).encode("utf-8")


def _sheet_rows(df: pd.DataFrame, columns: list[Column], ctx: Ctx,
                look: SheetLook) -> Iterator[bytes]:
    """The data rows, a chunk of rows (at most `_ROW_CELL_BUDGET` cells) at a time."""
    n_rows, n_cols = len(df), len(columns)
    chunk = max(1_000, _ROW_CELL_BUDGET // n_cols)
    index = df.index
    row_open = f'"{look.row_default}>'
    exc = look.row_exceptions
    for lo in range(0, n_rows, chunk):
        hi = min(n_rows, lo + chunk)
        rownums = np.arange(lo + 2, hi + 2)
        rowstr = int_text(rownums)
        ctx.rows, ctx.labels = rownums, index[lo:hi]
        grid = np.empty((hi - lo, 4 + 5 * n_cols), dtype=object)
        grid[...] = ""
        grid[:, 0] = '<row r="'
        grid[:, 1] = rowstr
        grid[:, 2] = row_open
        grid[:, -1] = "</row>"
        if exc is not None:
            a, b = np.searchsorted(exc[0], [lo, hi])
            if b > a:
                grid[exc[0][a:b] - lo, 2] = ['"' + x + ">" for x in exc[1][a:b]]
        for j, col in enumerate(columns):
            col.fill(slice(lo, hi), grid, j, rowstr, ctx)
        yield "".join(grid.ravel().tolist()).encode("utf-8")
