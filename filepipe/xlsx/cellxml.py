"""Cells as XML: the row grid a chunk of the sheet is built in, and the formatters that
fill it, one vectorised pass per column and value type.

A chunk of rows is an object array `grid` of shape (rows, 3 + 5 * columns + 1):
  '<row r="' | row number | '">' | per column: '<c r="B' | row number |
  '" s="4"><v>' (attributes, opening of the value) | value text | '</v></c>' | ... | '</row>'
An empty cell keeps its five slots ''. "".join(grid.ravel().tolist()) is the XML.
Formatters fill the slots with numpy (masked) assignments, so no string is built per cell
except the value text itself, made by pandas/Arrow casts and string kernels, or by
map(repr)/map(str)/json.dumps for floats, Python ints, mixed-object cells and JSON.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .limits import MAX_CELL_CHARS, SheetError
from .styles import StyleIds
from .values import (
    EXCEL_EPOCH_OFFSET,
    LEAP_BUG_DAY,
    MS_PER_DAY,
    US_PER_DAY,
    excel_durations,
    obj_array,
    time_us,
    to_naive_utc,
    type_groups,
)

_EXCEL_ESCAPE_RE = re.compile(r"_(?=x[0-9A-Fa-f]{4}_)")
# strings that need more than copying: XML specials, _xHHHH_, edge whitespace
_SPECIAL_TEXT = r"[&<>]|_x[0-9A-Fa-f]{4}_|^[ \t\n]|[ \t\n]$"


def same_xf(xf: int | None) -> int | None:
    """The cell format filepipe gives a value by default, unchanged."""
    return xf


class Ctx:
    """What the formatters need besides the values: style ids, the cell format of the
    current column's cells (`xf`: from the one filepipe gives a value by default), where
    errors point."""

    def __init__(self, path: str, sheet: str, styles: StyleIds | None):
        self.path, self.sheet, self.styles = path, sheet, styles
        self.xf: Callable[[int | None], int | None] = same_xf
        self.column = ""
        self.rows: np.ndarray | None = None  # Excel row numbers of the current chunk
        self.labels: Any = None  # index labels of the current chunk


class Slots:
    """The five grid columns of one sheet column, for one chunk of rows."""

    __slots__ = ("open", "row", "mid", "val", "close", "prefix", "rowstr")

    def __init__(self, grid: np.ndarray, j: int, prefix: str, rowstr: np.ndarray):
        base = 3 + 5 * j
        self.open, self.row, self.mid, self.val, self.close = (grid[:, base + k] for k in range(5))
        self.prefix, self.rowstr = prefix, rowstr

    def put(self, idx: np.ndarray | None, mid: Any, val: Any, close: str) -> None:
        """Fill the cells at chunk positions `idx` (None: all rows)."""
        if idx is None:
            self.open[:] = self.prefix
            self.row[:] = self.rowstr
            self.mid[:] = mid
            self.val[:] = val
            self.close[:] = close
        elif len(idx):
            self.open[idx] = self.prefix
            self.row[idx] = self.rowstr[idx]
            self.mid[idx] = mid
            self.val[idx] = val
            self.close[idx] = close


def _sub(idx: np.ndarray | None, sub: np.ndarray) -> np.ndarray:
    return sub if idx is None else idx[sub]


# --------------------------------------------------------------------------- numbers and bools


def int_text(values: np.ndarray) -> np.ndarray:
    """Integers as text (object array)."""
    return pd.Series(values, copy=False).astype(str).to_numpy(dtype=object)


def _float_text(values: np.ndarray) -> np.ndarray:
    """Text of finite floats that reads back as exactly the same double.

    Values with at most 6 decimals (prices, measurements...) are formatted with integer
    arithmetic and Arrow string kernels; the others with repr() (shortest round-trip)."""
    if values.dtype != np.float64:
        return values.astype(str).astype(object)  # float16/32: their own shortest repr
    with np.errstate(invalid="ignore", over="ignore"):
        q = np.round(values * 1e6)
        short = (np.abs(q) < 2.0**53) & (q / 1e6 == values)
    if not short.any():
        return obj_array(list(map(repr, values.tolist())))
    out = np.empty(len(values), dtype=object)
    qi = q[short].astype(np.int64)
    neg = qi < 0
    a = np.abs(qi)
    whole, frac = np.divmod(a, 1_000_000)
    dec = pd.Series(frac, copy=False).astype(str).str.zfill(6).str.rstrip("0")
    dec = dec.where(dec != "", "0")  # 2.0 stays "2.0", like repr (openpyxl reads "2" as int)
    text = pd.Series(whole, copy=False).astype(str) + "." + dec
    if neg.any():
        text = text.where(~neg, "-" + text)
    out[short] = text.to_numpy(dtype=object)
    rest = ~short
    if rest.any():
        out[rest] = list(map(repr, values[rest].tolist()))
    return out


def _s(style: int | None) -> str:
    """The style attribute of cell format `style` (none for the default, 0)."""
    return f' s="{style}"' if style else ""


def put_numbers(slots: Slots, idx: np.ndarray | None, text: Any, style: int | None = None) -> None:
    """Number cells of value texts `text`, with cell format `style`."""
    slots.put(idx, f'"{_s(style)}><v>', text, "</v></c>")


def put_floats(slots: Slots, idx: np.ndarray | None, values: np.ndarray,
               style: int | None = None) -> None:
    """Float cells; NaN stays empty, infinities are the error value #NUM!."""
    finite = np.isfinite(values)
    if finite.all():
        put_numbers(slots, idx, _float_text(values), style)
        return
    sub = np.flatnonzero(finite)
    if len(sub):
        put_numbers(slots, _sub(idx, sub), _float_text(values[sub]), style)
    inf = np.flatnonzero(np.isinf(values))
    if len(inf):  # Excel has no infinities: show the error value #NUM!
        slots.put(_sub(idx, inf), f'"{_s(style)} t="e"><v>', "#NUM!", "</v></c>")


def put_bools(slots: Slots, idx: np.ndarray | None, values: np.ndarray,
              style: int | None = None) -> None:
    """TRUE/FALSE cells."""
    slots.put(idx, f'"{_s(style)} t="b"><v>', np.where(values.astype(bool), "1", "0").astype(object),
              "</v></c>")


# --------------------------------------------------------------------------- strings


def escape_strings(values: Any, ctx: Ctx, idx: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """XML text of strings as cells keep them (`clean_text`; no missing values) and where
    xml:space="preserve" is needed."""
    s = pd.Series(values, dtype="str", copy=False)
    lengths = s.str.len().to_numpy()
    too_long = np.flatnonzero(lengths > MAX_CELL_CHARS)
    if len(too_long):
        _too_long(ctx, idx, int(too_long[0]), int(lengths[too_long[0]]))
    text = s.to_numpy(dtype=object)
    preserve = np.zeros(len(text), dtype=bool)
    special = np.flatnonzero(s.str.contains(_SPECIAL_TEXT, regex=True).to_numpy(dtype=bool))
    if len(special):  # only the strings that need it go through the escaping passes
        t = s.iloc[special]
        preserve[special] = t.str.contains(r"^[ \t\n]|[ \t\n]$", regex=True).to_numpy(dtype=bool)
        t = (t.str.replace("&", "&amp;", regex=False)
              .str.replace("<", "&lt;", regex=False)
              .str.replace(">", "&gt;", regex=False))
        esc = t.to_numpy(dtype=object)
        maybe = np.flatnonzero(t.str.contains("_x", regex=False).to_numpy(dtype=bool))
        if len(maybe):  # Excel decodes _xHHHH_ in text: escape a literal one as _x005F_xHHHH_
            esc[maybe] = [_EXCEL_ESCAPE_RE.sub("_x005F_", v) for v in esc[maybe]]
        text[special] = esc
    return text, preserve


def _too_long(ctx: Ctx, idx: np.ndarray | None, k: int, length: int) -> None:
    """Raise SheetError for the `k`-th string of a formatter call, of `length` characters."""
    where = int(idx[k]) if idx is not None else k
    row = int(ctx.rows[where]) if ctx.rows is not None else 1
    label = f" (index {ctx.labels[where]!r})" if ctx.labels is not None else ""
    raise SheetError(
        f"{ctx.path}: sheet {ctx.sheet!r}, row {row}{label}, column {ctx.column!r}: "
        f"text of {length:,} characters; an Excel cell holds at most {MAX_CELL_CHARS:,}")


def str_mids(style: int | None) -> tuple[str, str]:
    """The attributes and value openings of inline string cells: plain, and with
    xml:space="preserve"."""
    sattr = f' s="{style}"' if style else ""
    return (f'"{sattr} t="inlineStr"><is><t>',
            f'"{sattr} t="inlineStr"><is><t xml:space="preserve">')


def put_strings(slots: Slots, idx: np.ndarray | None, values: Any, ctx: Ctx,
                style: int | None = None) -> None:
    """Inline string cells."""
    if len(values) == 0:
        return
    text, preserve = escape_strings(values, ctx, idx)
    plain, pres = str_mids(style)
    mid: Any = np.where(preserve, pres, plain).astype(object) if preserve.any() else plain
    slots.put(idx, mid, text, "</t></is></c>")


# --------------------------------------------------------------------------- dates, times, durations


def datetime_style(us: np.ndarray, styles: StyleIds) -> int:
    """The cell format of datetimes (µs since 1970): a date, to the second or to the ms."""
    if (us % 1_000_000 != 0).any():
        return styles.datetime_ms
    if (us % US_PER_DAY != 0).any():
        return styles.datetime
    return styles.date


def fraction_style(us: np.ndarray, whole: int, with_ms: int) -> int:
    """`with_ms` when some of the µs values `us` have milliseconds, else `whole`."""
    return with_ms if (us % 1_000_000 != 0).any() else whole


def _serial_text(us: np.ndarray) -> np.ndarray:
    """Excel serial numbers of µs since 1970 (all within Excel's date range), as text.

    Whole days as integers, else 11 decimals (0.9 µs), trailing zeros removed: exact
    integer arithmetic, no float formatting. Days before 1900-03-01 are serials 1-59
    (Excel counts a 1900-02-29 that did not exist)."""
    days, frac = np.divmod(us, US_PER_DAY)
    serials = days + EXCEL_EPOCH_OFFSET - (days < LEAP_BUG_DAY)
    days_text = pd.Series(serials, copy=False).astype(str)
    if not frac.any():
        return days_text.to_numpy(dtype=object)
    digits = np.rint(frac * (1e11 / US_PER_DAY)).astype(np.int64)
    dec = pd.Series(digits, copy=False).astype(str).str.zfill(11).str.rstrip("0")
    text = days_text.where(dec == "", days_text + "." + dec)
    return text.to_numpy(dtype=object)


def _put_datetime_us(slots: Slots, idx: np.ndarray | None, us: np.ndarray, style: int | None) -> None:
    put_numbers(slots, idx, _serial_text(us), style)


def _put_days(slots: Slots, idx: np.ndarray | None, us: np.ndarray, style: int | None) -> None:
    """Times of day and durations (µs, whole milliseconds) as numbers of days."""
    put_numbers(slots, idx, _float_text((us // 1000) / MS_PER_DAY), style)


def _put_present(slots: Slots, idx: np.ndarray | None, values: np.ndarray, us: np.ndarray,
                 style: int | None,
                 put: Callable[[Slots, np.ndarray | None, np.ndarray, int | None], None]
                 ) -> None:
    """`put` the µs values `us` of the cells of `values` that are not NaT (which stay empty)."""
    ok = ~np.isnat(values)
    if ok.all():
        put(slots, idx, us, style)
    else:
        put(slots, _sub(idx, np.flatnonzero(ok)), us[ok], style)


def put_datetimes(slots: Slots, idx: np.ndarray | None, values: np.ndarray,
                  style: int | None) -> None:
    """`values`: naive datetime64 within Excel's dates (`cell_values`); NaT stays empty."""
    _put_present(slots, idx, values, values.astype("datetime64[us]").view("int64"), style,
                 _put_datetime_us)


def put_durations(slots: Slots, idx: np.ndarray | None, values: np.ndarray,
                  style: int | None) -> None:
    """`values`: timedelta64[us] at whole milliseconds; NaT stays empty."""
    _put_present(slots, idx, values, values.view(np.int64), style, _put_days)


# --------------------------------------------------------------------------- mixed objects


def put_objects(slots: Slots, values: np.ndarray, ctx: Ctx) -> None:
    """Mixed object column, as `cell_values` made it: group the cells by Python
    type, format each group as arrays."""
    if len(values) == 0:
        return
    styles = ctx.styles
    assert styles is not None
    xf = ctx.xf
    for t, idx in type_groups(values):
        vals = values[idx]
        if t is type(None) or t is type(pd.NA) or t is type(pd.NaT):
            continue
        if issubclass(t, (bool, np.bool_)):
            put_bools(slots, idx, vals.astype(bool), xf(None))
        elif issubclass(t, (int, np.integer)):
            put_numbers(slots, idx, obj_array(list(map(str, map(int, vals)))), xf(styles.int))
        elif issubclass(t, (float, np.floating)):
            put_floats(slots, idx, vals.astype(np.float64), xf(0))
        elif issubclass(t, str):
            put_strings(slots, idx, vals, ctx, xf(None))
        elif issubclass(t, dt.datetime):
            naive = to_naive_utc(vals)
            put_datetimes(slots, idx, naive, xf(datetime_style(naive.view("int64"), styles)))
        elif issubclass(t, dt.time):
            us = time_us(vals)
            _put_days(slots, idx, us, xf(fraction_style(us, styles.time, styles.time_ms)))
        elif issubclass(t, dt.timedelta):
            us = excel_durations(vals).view(np.int64)
            _put_days(slots, idx, us, xf(fraction_style(us, styles.duration, styles.duration_ms)))
        else:
            raise TypeError(f"filepipe.xlsx: no cell format for {t.__name__} (column {ctx.column!r})")


# --------------------------------------------------------------------------- cells formatted apart


_S_ATTR = re.compile(r' s="\d+"')


def restyle(slots: Slots, ks: np.ndarray, resolvers: Sequence[Callable[[int | None], int | None]],
            default_of: Callable[[int | None], int | None]) -> None:
    """Give the cells at chunk positions `ks` the format `resolvers[i]` gives the format
    filepipe gives their value by default (`default_of` their present format). An empty
    cell becomes an empty cell of that format."""
    cache: dict[tuple[str, int], str] = {}
    for k, r in zip(ks.tolist(), resolvers):
        mid = slots.mid[k]
        if slots.open[k] == "":
            xf = r(None)
            if xf:
                slots.open[k], slots.row[k] = slots.prefix, slots.rowstr[k]
                slots.mid[k], slots.val[k], slots.close[k] = f'"{_s(xf)}>', "", "</c>"
            continue
        key = (mid, id(r))
        new = cache.get(key)
        if new is None:
            m = _S_ATTR.search(mid)
            current = int(m.group(0)[4:-1]) if m else (None if ' t="' in mid else 0)
            bare = _S_ATTR.sub("", mid, count=1)
            new = cache[key] = '"' + _s(r(default_of(current))) + bare[1:]
        slots.mid[k] = new
