"""What a cell keeps of a value: the value a frame reads back as once written.

write_sheet writes `cell_values(column)`; `sheet_values` is that, with what reading gives
for error cells. So a frame, the sheet written of it, and that sheet re-saved by Excel,
LibreOffice or openpyxl all read back alike (equal under filepipe.hashing.hash_rows).
Also the text of a cell (`cell_text`), as filepipe names headers and text keys.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from .limits import MAX_CELL_CHARS, SheetError
from .xmltext import ILLEGAL_XML_CHARS, ILLEGAL_XML_RE

SIGNIFICANT_DIGITS = 15  # what Excel shows and LibreOffice saves
_POW10 = np.array([float(10**i) for i in range(23)])  # exact powers of ten
_MAX_FLOAT_15 = 1.79769313486231e308  # the largest finite double of 15 significant digits
# what a cell does not keep as it is: illegal XML characters (removed) and CR (becomes LF)
_UNKEPT_TEXT = "[\x00-\x08\x0b\x0c\r\x0e-\x1f\ufffe\uffff]"

# Excel serial 61 is 1900-03-01; 60 is the fake 1900-02-29 of Excel's 1900 leap-year bug, so
# serials 1-59 (1900-01-01..1900-02-28) are one day less than the count of days suggests.
EXCEL_EPOCH_OFFSET = 25569  # serial of 1970-01-01
US_PER_DAY = 86_400_000_000
MS_PER_DAY = 86_400_000
LEAP_BUG_DAY = 61 - EXCEL_EPOCH_OFFSET  # 1900-03-01, in days since 1970
_MIN_SERIAL_US = (LEAP_BUG_DAY - 59) * US_PER_DAY  # 1900-01-01 (serial 1)
_MAX_SERIAL_US = (2958466 - EXCEL_EPOCH_OFFSET) * US_PER_DAY  # 10000-01-01
_LAST_MS_OF_DAY_US = US_PER_DAY - 1000  # 23:59:59.999: a time rounded up stays that day


# --------------------------------------------------------------------------- small helpers


def obj_array(values: Any) -> np.ndarray:
    """`values` as a 1-d object array (sequences stay single cells)."""
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr


def type_groups(values: np.ndarray) -> Iterator[tuple[type, np.ndarray]]:
    """The Python types of the object array `values`, each with the positions holding it."""
    types = np.frompyfunc(type, 1, 1)(values)
    codes, uniques = pd.factorize(types)
    for code, t in enumerate(uniques):
        yield t, np.flatnonzero(codes == code)


def is_missing(v: Any) -> bool:
    """Is `v` a missing value (None, NaN, NaT, pd.NA)? False for anything pd.isna cannot judge."""
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return str(v)


def cell_json(v: Any) -> str:
    """A dict/list cell as the compact JSON text written to (and read back from) a sheet."""
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"), default=_json_default)


# --------------------------------------------------------------------------- numbers


def excel_floats(values: np.ndarray) -> np.ndarray:
    """Floats as a sheet keeps them: ``float(f"{v:.15g}")``, the value rounded to 15
    significant digits (Excel shows 15, LibreOffice saves 15; openpyxl saves 16, which keeps
    these), vectorised. Idempotent. float32/float16 go through their own shortest text
    (float32 0.1 is 0.1); a finite value never becomes infinite.
    """
    if values.dtype != np.float64:
        values = values.astype(str).astype(np.float64)
    out = values.copy()
    mag = np.abs(values)
    # x * 10**k (10**k exact for |k| <= 22) is within half an ulp of the exact product; its
    # nearest integer n is the 15 digits unless the product is that close to a half, and
    # n / 10**k, one correctly rounded operation, is the double nearest to them.
    slow = np.isfinite(values) & (values != 0) & ((mag < 1e-7) | (mag >= 1e36))
    fast = np.flatnonzero((mag >= 1e-7) & (mag < 1e36))
    if len(fast):
        x = values[fast]
        k = SIGNIFICANT_DIGITS - 1 - np.floor(np.log10(np.abs(x))).astype(np.int64)
        scaled = _times_pow10(x, k)
        k += (np.abs(scaled) < 1e14).astype(np.int64) - (np.abs(scaled) >= 1e15)  # log10 off by one
        scaled = _times_pow10(x, k)
        out[fast] = _times_pow10(np.rint(scaled), -k)
        half = np.abs(scaled - np.floor(scaled) - 0.5) <= 0.5 * np.spacing(np.abs(scaled))
        slow[fast[half]] = True
    slow = np.flatnonzero(slow)
    if len(slow):  # near halves, tiny or huge magnitudes: decimal formatting
        out[slow] = [float(f"{v:.{SIGNIFICANT_DIGITS}g}") for v in values[slow].tolist()]
        over = slow[np.isinf(out[slow])]
        out[over] = np.copysign(_MAX_FLOAT_15, values[over])
    return out


def _times_pow10(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """x * 10**k for integer |k| <= 22, each with one rounding."""
    p = _POW10[np.abs(k)]
    return np.where(k >= 0, x * p, x / p)


def _read_floats(floats: np.ndarray, read: bool) -> np.ndarray:
    """`floats` (from `excel_floats`), with infinities missing when `read`: they are
    written as #NUM!, read as missing. Modified in place."""
    if read:
        floats[np.isinf(floats)] = np.nan
    return floats


def _excel_ints(values: np.ndarray, missing: np.ndarray) -> np.ndarray | None:
    """Integers as a sheet keeps them (more than 15 digits are rounded to 15, as numbers are),
    or None when all fit. int64 when every value still does, else float64 (NaN where
    `missing`)."""
    as_float = values.astype(np.float64)
    big = (np.abs(as_float) >= 1e15) & ~missing
    if not big.any():
        return None
    rounded = excel_floats(as_float)
    if not missing.any() and (np.abs(rounded) < 2.0**63).all():
        return rounded.astype(np.int64)
    rounded[missing] = np.nan
    return rounded


def _object_ints(values: np.ndarray, read: bool) -> np.ndarray | None:
    """Python/numpy ints of an object column: more than 15 digits rounded; beyond any double
    the error value #NUM! (missing when `read`). None when all fit."""
    try:
        floats = values.astype(np.float64)
    except OverflowError:
        floats = np.array([float(v) if abs(v) < 2**1023 else np.copysign(np.inf, v) for v in values])
    big = ~(np.abs(floats) < 1e15)
    if not big.any():
        return None
    new = values.copy()
    rounded = excel_floats(floats[big])
    new[big] = [int(v) if np.isfinite(v) else (None if read else v) for v in rounded.tolist()]
    return new


# --------------------------------------------------------------------------- text


def clean_text(s: pd.Series) -> pd.Series:
    """Text as a cell keeps it: characters XML 1.0 cannot hold removed, CR LF and CR as LF
    (openpyxl and LibreOffice re-save them so). Missing values stay missing."""
    try:
        t = s.astype("str")
        if not t.str.contains(_UNKEPT_TEXT, regex=True).any():
            return t
        return (t.str.replace("\r\n", "\n", regex=False).str.replace("\r", "\n", regex=False)
                 .str.replace(ILLEGAL_XML_CHARS, "", regex=True))
    except (UnicodeEncodeError, ValueError, TypeError):  # lone surrogates cannot go to Arrow
        return pd.Series([v if is_missing(v) else _clean_one(str(v)) for v in s],
                         index=s.index, dtype="str")


def _clean_one(text: str) -> str:
    return ILLEGAL_XML_RE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def _object_text(values: np.ndarray, read: bool) -> np.ndarray:
    """Strings (object array) as cells keep them; "" is missing when `read`."""
    text = clean_text(pd.Series(values, dtype=object))
    if read:
        text = text.mask(text == "")
    return text.to_numpy(dtype=object, na_value=None)


# --------------------------------------------------------------------------- dates, times, durations


def _round_ms(us: np.ndarray) -> np.ndarray:
    """Microseconds (int64) rounded to whole milliseconds, halves to even (as pandas)."""
    q, r = np.divmod(us, 1000)
    return (q + ((r > 500) | ((r == 500) & (q % 2 == 1)))) * 1000


def _excel_datetimes(values: np.ndarray) -> np.ndarray:
    """Naive datetime64 values as a sheet keeps them: to the millisecond; those that are no
    Excel date (before 1900-01-01, from 10000-01-01 on) as ISO-8601 text (object array then)."""
    us = values.astype("datetime64[us]").view(np.int64)
    nat = np.isnat(values)
    rounded = np.where(nat, us, _round_ms(us)).view("datetime64[us]")
    outside = ~nat & ((rounded.view(np.int64) < _MIN_SERIAL_US)
                      | (rounded.view(np.int64) >= _MAX_SERIAL_US))
    if not outside.any():
        return rounded
    out = pd.Series(rounded).astype(object).to_numpy(copy=True)
    out[nat] = None
    out[outside] = np.datetime_as_string(rounded[outside], unit="auto")
    return out


def datetimes_from_serials(serials: np.ndarray) -> np.ndarray:
    """Excel serial numbers (float, NaN missing) as naive datetime64[us] at the millisecond,
    as a reader gives cells of a date format (serials 1-59 are 1900-01-01..1900-02-28)."""
    days = np.where(serials < 61, serials + 1, serials) - EXCEL_EPOCH_OFFSET
    with np.errstate(invalid="ignore"):
        ms = np.rint(days * MS_PER_DAY)
    ok = np.isfinite(ms) & (np.abs(ms) < 2.0**62 / 1000)
    out = np.full(len(serials), np.datetime64("NaT"), dtype="datetime64[us]")
    out[ok] = (ms[ok].astype(np.int64) * 1000).view("datetime64[us]")
    return out


def serials_from_datetimes(values: np.ndarray) -> np.ndarray:
    """datetime64 or timedelta64 values as Excel serial numbers (float64, NaN for NaT) at
    15 significant digits: what a cell holds under a date or duration format."""
    if np.issubdtype(values.dtype, np.timedelta64):
        us = values.astype("timedelta64[us]").view(np.int64)
        days = us / US_PER_DAY
    else:
        us = values.astype("datetime64[us]").view(np.int64)
        whole, frac = np.divmod(us, US_PER_DAY)
        days = whole + EXCEL_EPOCH_OFFSET - (whole < LEAP_BUG_DAY) + frac / US_PER_DAY
    out = excel_floats(np.asarray(days, dtype=np.float64))
    out[np.isnat(values)] = np.nan
    return out


def to_naive_utc(values: Any) -> np.ndarray:
    """datetime-likes (possibly tz-aware, mixed) -> naive UTC datetime64[us]."""
    stamps = pd.to_datetime(pd.Series(values, dtype=object), utc=True)
    return stamps.dt.tz_localize(None).to_numpy().astype("datetime64[us]")


def time_us(values: np.ndarray) -> np.ndarray:
    """`datetime.time` values as microseconds since midnight, to the millisecond (a time
    rounded up to midnight stays 23:59:59.999: it is a time of that day)."""
    us = np.fromiter((((t.hour * 60 + t.minute) * 60 + t.second) * 1_000_000 + t.microsecond
                      for t in values), dtype=np.int64, count=len(values))
    return np.minimum(_round_ms(us), _LAST_MS_OF_DAY_US)


def excel_durations(values: Any) -> np.ndarray:
    """Timedelta-likes (NaT allowed) as timedelta64[us], to the millisecond."""
    td = pd.to_timedelta(pd.Series(values)).to_numpy().astype("timedelta64[us]")
    us = td.view(np.int64)
    return np.where(np.isnat(td), us, _round_ms(us)).view("timedelta64[us]")


# --------------------------------------------------------------------------- columns


def cell_values(s: pd.Series, read: bool) -> pd.Series | None:
    """What write_sheet writes of column `s` (`read`: what reading it back gives, where error
    cells and empty text are missing), or None when that is `s` itself."""
    dtype = s.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        s = s.astype(object).where(s.notna(), None)
        new = cell_values(s, read)
        return s if new is None else new
    if pd.api.types.is_bool_dtype(dtype):
        return None
    if pd.api.types.is_integer_dtype(dtype):
        missing = s.isna().to_numpy()
        np_dtype = getattr(dtype, "numpy_dtype", dtype)
        ints = s.to_numpy(dtype=np_dtype, na_value=0) if missing.any() else s.to_numpy(dtype=np_dtype)
        rounded = _excel_ints(ints, missing)
        return None if rounded is None else pd.Series(rounded, index=s.index, name=s.name)
    if pd.api.types.is_float_dtype(dtype):
        floats = excel_floats(s.to_numpy(dtype=getattr(dtype, "numpy_dtype", dtype), na_value=np.nan))
        return pd.Series(_read_floats(floats, read), index=s.index, name=s.name)
    if pd.api.types.is_datetime64_any_dtype(dtype):
        if getattr(dtype, "tz", None) is not None:
            s = s.dt.tz_convert("UTC").dt.tz_localize(None)  # documented: UTC, naive
        return pd.Series(_excel_datetimes(s.to_numpy()), index=s.index, name=s.name)
    if pd.api.types.is_timedelta64_dtype(dtype):
        return pd.Series(excel_durations(s.to_numpy()), index=s.index, name=s.name)
    if isinstance(dtype, pd.StringDtype):
        text = clean_text(s)
        return text.mask(text == "") if read else text
    objs = s.to_numpy(dtype=object) if dtype == object else s.astype(object).to_numpy(dtype=object)
    new = _object_cell_values(objs, read)
    if new is None:
        return None if dtype == object else pd.Series(objs, index=s.index, name=s.name)
    return pd.Series(new, index=s.index, name=s.name, dtype=object)


def _object_cell_values(values: np.ndarray, read: bool) -> np.ndarray | None:
    """`cell_values` of a mixed object column, type by type (None: unchanged)."""
    out: np.ndarray | None = None
    for t, idx in type_groups(values):
        if t in (type(None), type(pd.NA), type(pd.NaT)) or issubclass(t, (bool, np.bool_)):
            continue
        new = _typed_cell_values(t, values[idx], read)
        if new is not None:
            if out is None:
                out = values.copy()
            out[idx] = new
    return out


def _typed_cell_values(t: type, vals: np.ndarray, read: bool) -> np.ndarray | None:
    """`cell_values` of the cells `vals` of an object column, all of type `t`."""
    if issubclass(t, (int, np.integer)):
        return _object_ints(vals, read)
    if issubclass(t, (float, np.floating)):
        return obj_array(_read_floats(excel_floats(vals.astype(np.float64)), read).tolist())
    if issubclass(t, str):
        return _object_text(vals, read)
    if issubclass(t, (dt.datetime, np.datetime64, dt.date)):
        new = pd.Series(_excel_datetimes(to_naive_utc(vals))).astype(object).to_numpy(copy=True)
        new[pd.isna(new)] = None
        return new
    if issubclass(t, dt.time):
        aware = np.fromiter((v.tzinfo is not None for v in vals), dtype=bool, count=len(vals))
        new = vals.copy()  # a time with a timezone is no Excel time: it is written as text
        new[~aware] = pd.to_datetime(time_us(vals[~aware]), unit="us").time
        new[aware] = _object_text(obj_array(list(map(str, vals[aware]))), read)
        return new
    if issubclass(t, (dt.timedelta, np.timedelta64)):
        durations = excel_durations(vals)
        new = pd.Series(durations).astype(object).to_numpy(copy=True)
        new[np.isnat(durations)] = None
        return new
    if issubclass(t, (dict, list, tuple, np.ndarray)):
        return _object_text(obj_array(list(map(cell_json, vals))), read)
    # Decimal, bytes, custom objects...: str(value)
    present = ~np.fromiter(map(is_missing, vals), bool, len(vals))
    new = vals.copy()
    new[present] = _object_text(obj_array(list(map(str, vals[present]))), read)
    return new


def sheet_values(df: pd.DataFrame, keep: Any = ()) -> pd.DataFrame:
    """`df` as :func:`read_sheet` gives it back once :func:`write_sheet` wrote it — and after
    Excel, LibreOffice or openpyxl re-saved that workbook: row by row equal under
    :func:`filepipe.hashing.hash_rows`. Idempotent. Columns are named by their header text
    (:func:`header_texts`); the values of the columns named in `keep` are left as they are.

    Numbers keep 15 significant digits (ints too); ``±inf`` (``#NUM!``), ``""`` and text of
    only control characters become missing; datetimes become naive UTC at the millisecond
    (ISO text outside Excel's dates), ``datetime.date`` midnight datetimes; times and durations
    are kept to the millisecond; CR becomes LF and control characters go; dict/list cells
    become JSON text and other objects ``str(value)``.
    """
    out = df.copy()
    for j, name in enumerate(df.columns):
        if name not in keep:
            new = cell_values(df.iloc[:, j], read=True)
            if new is not None:
                out.isetitem(j, new)
    out.columns = [header_text(n) for n in df.columns]
    return out


# --------------------------------------------------------------------------- cell text


def cell_text(value: Any) -> str | None:
    """The text of a cell value, as filepipe names headers and text keys (None: empty cell).

    Text as it is; ``TRUE``/``FALSE``; numbers in their shortest form of at most 15
    significant digits, integral ones without ``.0`` (``2019``, ``2019.5``, ``1e+20``);
    ``#NUM!`` for infinities; dates ISO (``2026-11-30``), datetimes ``2026-11-30 10:15:00``
    (UTC for aware ones); times ``13:30:00``; durations as ``[h]:mm:ss`` shows them
    (``36:00:00``); milliseconds only when present; anything else ``str(value)``.
    """
    if isinstance(value, str):
        return value
    if value is None or is_missing(value):
        return None
    if isinstance(value, (bool, np.bool_)):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, np.integer)) and abs(int(value)) < 10**15:
        return str(int(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        size = abs(int(value)) if isinstance(value, (int, np.integer)) else abs(float(value))
        x = float(excel_floats(np.array([float(value)]))[0]) if size < 2**1023 else np.inf
        if np.isinf(x):
            return "#NUM!"
        return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)
    if isinstance(value, (dt.datetime, np.datetime64)):
        ts = pd.Timestamp(value)
        if ts.tz is not None:
            ts = ts.tz_convert("UTC").tz_localize(None)
        return ts.date().isoformat() if ts == ts.normalize() else ts.isoformat(sep=" ")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (dt.timedelta, np.timedelta64)):
        us = int(pd.Timedelta(value) / pd.Timedelta(microseconds=1))
        sign, us = ("-" if us < 0 else ""), abs(us)
        seconds, frac = divmod(us, 1_000_000)
        text = f"{sign}{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        return text + f".{frac:06d}".rstrip("0") if frac else text
    return str(value)


def header_text(name: Any) -> str:
    """The header cell text of a column name: :func:`cell_text`, as a cell keeps it."""
    return _clean_one(cell_text(name) or "")


def header_texts(columns: Any, where: str) -> list[str]:
    """Header cell texts of `columns`; SheetError when two columns get the same header or
    one is longer than a cell holds."""
    texts = [header_text(c) for c in columns]
    first: dict[str, Any] = {}
    for i, (name, text) in enumerate(zip(columns, texts)):
        if len(text) > MAX_CELL_CHARS:
            raise SheetError(f"{where}, row 1 (header), column {i + 1}: name of {len(text):,} "
                             f"characters; an Excel cell holds at most {MAX_CELL_CHARS:,}")
        if text in first:
            raise SheetError(f"{where}: columns {first[text]!r} and {name!r} would both be headed "
                             f"{text!r} (headers are text); rename one of them")
        first[text] = name
    return texts
