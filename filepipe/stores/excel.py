"""One sheet of an Excel workbook (.xlsx) as a keyed table.

``TableStoreExcel("out/report.xlsx", sheet="Summary", primary_keys=["customer"])``

* Row 1 of the sheet holds the column names; every following row is a row of the table.
  Rows whose cells are all empty are skipped, and so are columns that have neither a
  header nor a value (Excel's "used range" often includes formatted empty cells).
* Reading uses :func:`filepipe.xlsx.read_sheet` (calamine); writing uses
  :func:`filepipe.xlsx.write_sheet`, which replaces only this sheet inside the zip package,
  atomically: every other sheet of the workbook (formatting, charts, formulas) is kept
  byte for byte. So one workbook may hold input sheets, filepipe's output sheets and the
  user's own sheets side by side.
* Rows are written sorted by the primary key (a changed row keeps its place; a run that
  changes one row does not reshuffle the sheet). If the key values cannot be ordered
  (mixed types) the order of the buffered frame is kept.

Which sheet ``sheet=None`` means (the same rule for reading and writing, so a store always
reads back what it wrote):

1. the workbook does not exist yet: a sheet named after the file's stem
   (``out/report.xlsx`` → ``report``; characters Excel forbids in sheet names are replaced by
   ``_``, and the name is cut to 31 characters); writing creates the workbook with it;
2. the workbook has a sheet with that name (compared case-insensitively, as Excel does):
   that sheet;
3. otherwise: the first sheet.

To add an output sheet to a workbook that already holds other sheets, name the sheet:
with ``sheet=None`` rule 3 would make the first (someone else's) sheet the table.

A sheet name given explicitly matches case-insensitively too (``"summary"`` finds
``"Summary"``), as in Excel.

Missing sheets. For a *source* (a table filepipe syncs from the file) a missing sheet —
renamed or deleted by someone — is an error that names the file and lists the sheets it
has: the sync reports it and keeps the table's previous rows. For an *output* a missing
sheet is simply an empty table (filepipe creates the sheet on its first write). A store
becomes a source the first time the sync reads its file through :meth:`read_files`.

Types. Excel keeps numbers (as float64), text, booleans, dates (numbers with a date format)
and errors. What comes back from a sheet filepipe wrote, compared with the frame it wrote:

* ints come back as ints (integral floats too: row hashes treat ``2 == 2.0``), a numeric
  column with empty cells as float64 with NaN (same hash as the nullable ints written);
* datetimes come back as naive ``datetime64`` at millisecond precision (Excel's);
  timezone-aware values are written as UTC; ``datetime.date`` values come back as
  midnight datetimes;
* ``None``/NaN/NaT/pd.NA are empty cells and come back as NaN/NaT; the empty string ``""``
  is indistinguishable from an empty cell and comes back as NaN too;
* dict/list cells come back as their compact JSON text; ``inf`` as NaN (Excel shows
  ``#NUM!``); ints beyond ±2**53 rounded to float64 precision.

:meth:`TableStoreExcel.normalize` turns a frame into the values a re-read will give, and
buffered writes go through it, so what filepipe keeps in memory equals what the next
process reads from the file. Key columns are never changed by it: keys must round-trip
exactly (no sub-millisecond datetime keys, no empty-string keys).

Key columns typed by people. A key column where some cells are numbers and others text
(Excel's "number stored as text") is read as text, integral numbers without ``.0``
(``1001`` and ``"1001"`` are then the same key, and a duplicate if both occur). Pass
``dtypes={"sku": "str"}`` to always read a key column as text (recommended for codes such as
zip codes or SKUs that may start with zero or contain letters): integral numbers become
``"1001"``, not ``"1001.0"``. Rows with an empty key cell are an error naming the sheet.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MissingColumnsError, SourceReadError
from ..xlsx import SheetError
from .files import FileStore

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["TableStoreExcel", "SheetNotFoundError", "EmptyKeyError"]

_MAX_SHEET_NAME = 31
_BAD_SHEET_CHARS = re.compile(r"[\[\]:*?/\\]")
_EXACT_FLOAT_INT = 2**53  # float64 holds every integer up to this magnitude
_UNNAMED = re.compile(r"^Unnamed: \d+$")


class SheetNotFoundError(SourceReadError, SheetError):
    """A source's sheet is not in its workbook (renamed or deleted): retrying will not help."""


class EmptyKeyError(MissingColumnsError):
    """Rows of a sheet have an empty cell in a key column."""


def sheet_for_stem(path: str | os.PathLike) -> str:
    """The sheet name `sheet=None` uses for a new workbook at `path` (its stem, made valid)."""
    name = _BAD_SHEET_CHARS.sub("_", Path(path).stem).strip("'")[:_MAX_SHEET_NAME].strip("'")
    if not name or name.casefold() == "history":
        return "Sheet1"
    return name


class TableStoreExcel(FileStore):
    """One sheet of an ``.xlsx`` workbook as a keyed table (see the module docstring).

    ``TableStoreExcel(path, sheet=None, primary_keys=[...], dtypes=None)``: `sheet` is the
    sheet's name (None: see "which sheet" above); `dtypes` fixes column types the cells do
    not carry, e.g. ``{"zip": "str"}``.
    """

    def __init__(self, path: str | os.PathLike, sheet: str | None = None,
                 primary_keys: Sequence[str] | None = None,
                 dtypes: Mapping[str, Any] | None = None) -> None:
        if sheet is not None and not isinstance(sheet, str):
            hint = (f"; did you mean primary_keys={list(sheet)!r}?"
                    if isinstance(sheet, (list, tuple)) and primary_keys is None else "")
            raise TypeError(f"TableStoreExcel({os.fspath(path)!s}): sheet must be a sheet name "
                            f"(str) or None, got {sheet!r}{hint}")
        super().__init__(path, primary_keys or [], dtypes)
        if sheet is not None:
            from ..xlsx import validate_sheet_name

            try:
                validate_sheet_name(sheet, self.path)
            except SheetError as exc:
                raise ValueError(str(exc)) from None
        self.sheet = sheet
        self._resolved: str | None = sheet  # the sheet last read or written
        self._is_source = False

    def __repr__(self) -> str:
        extra = f", dtypes={self.dtypes!r}" if self.dtypes else ""
        return (f"TableStoreExcel({str(self.path)!r}, sheet={self.sheet!r}, "
                f"primary_keys={self.primary_keys!r}{extra})")

    def describe(self) -> str:
        sheet = self._resolved or self.sheet
        return f"{self.path}[{sheet}]" if sheet else str(self.path)

    # --- which sheet ----------------------------------------------------------------------
    def resolve_sheet(self, names: Sequence[str] | None) -> str | None:
        """The sheet this store means, given the workbook's sheet names (None: no workbook).

        Returns None when the sheet is not in the workbook (a name given explicitly), or when
        the workbook has no sheet at all.
        """
        wanted = self.sheet if self.sheet is not None else sheet_for_stem(self.path)
        if names is None:
            return wanted
        if wanted in names:
            return wanted
        folded = [n for n in names if n.casefold() == wanted.casefold()]
        if folded:
            return folded[0]
        if self.sheet is None and names:
            return names[0]
        return None

    def _sheet_names(self, path: Path) -> list[str] | None:
        from ..xlsx import sheet_names

        try:
            return sheet_names(path)
        except FileNotFoundError:
            return None

    # --- reading --------------------------------------------------------------------------
    def read_files(self, paths: list[str]) -> dict[str, pd.DataFrame]:
        self._is_source = True  # the sync reads only sources: a missing sheet is now an error
        return super().read_files(paths)

    def read_file(self, path: Path) -> pd.DataFrame:
        from ..xlsx import read_sheet

        names = self._sheet_names(path)
        if names is None:  # vanished between stat and read
            return self.empty()
        sheet = self.resolve_sheet(names)
        if sheet is None:
            if not self._is_source:
                return self.empty()  # an output whose sheet filepipe has not written yet
            wanted = self.sheet if self.sheet is not None else "(any)"
            listed = ", ".join(repr(n) for n in names) or "none"
            raise SheetNotFoundError(
                f"{path}: sheet {wanted!r} not found (renamed or deleted?); the workbook has "
                f"sheets: {listed}")
        self._resolved = sheet
        df = read_sheet(path, sheet)
        if df.columns.empty:
            return self.empty()  # a blank sheet is an empty table
        return self._tidy(df)

    def _tidy(self, df: pd.DataFrame) -> pd.DataFrame:
        """Drop empty rows and unnamed empty columns; fix key and text columns."""

        where = self.describe()
        empty_cols = [c for c in df.columns
                      if isinstance(c, str) and _UNNAMED.match(c) and df[c].isna().all()]
        if empty_cols:
            df = df.drop(columns=empty_cols)
        blank = df.isna().all(axis=1)
        if blank.any():
            df = df[~blank.to_numpy()].reset_index(drop=True)
        for col in df.columns:
            wanted = self.dtypes.get(col)
            if wanted is not None and _is_text_dtype(wanted):
                df[col] = _as_text(df[col])
            elif col in self.primary_keys and _mixes_text_and_numbers(df[col]):
                df[col] = _as_text(df[col])
        keys = [k for k in self.primary_keys if k in df.columns]
        if keys and len(df):
            no_key = df[keys].isna().any(axis=1).to_numpy()
            if no_key.any():
                shown = df.loc[no_key].head(3).to_dict("records")
                raise EmptyKeyError(
                    f"{where}: {int(no_key.sum())} row(s) have an empty key cell in "
                    f"{', '.join(map(repr, keys))}, e.g. {_show_rows(shown)}; every row needs "
                    "a key (delete or complete those rows)")
        return df

    # --- writing --------------------------------------------------------------------------
    def upsert_rows(self, df: pd.DataFrame, conn: Any = None) -> None:
        super().upsert_rows(self.normalize(df), conn)

    def write_file(self, df: pd.DataFrame) -> None:
        from ..xlsx import write_sheet

        sheet = self.resolve_sheet(self._sheet_names(self.path))
        if sheet is None:  # an explicit name not yet in the workbook: add it
            sheet = self.sheet
        assert sheet is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_sheet(self.path, sheet, _sorted_by(df, self.primary_keys))
        self._resolved = sheet

    def normalize(self, df: pd.DataFrame) -> pd.DataFrame:
        """`df` as reading it back from the sheet will give it (key columns untouched).

        Only values Excel cannot keep change: ``""`` → NaN, datetimes → naive UTC rounded to
        the millisecond, ``datetime.date`` → Timestamp, dict/list/tuple → compact JSON text,
        ±inf → NaN, ints beyond ±2**53 → the nearest float64 integer.
        """
        out = None
        for col in df.columns:
            if col in self.primary_keys:
                continue
            new = _normalize_column(df[col])
            if new is not None:
                if out is None:
                    out = df.copy()
                out[col] = new
        return df if out is None else out


# --- helpers ------------------------------------------------------------------------------

def _is_text_dtype(dtype: Any) -> bool:
    import pandas as pd

    if dtype is str:
        return True
    try:
        resolved = pd.api.types.pandas_dtype(dtype)
    except TypeError:
        return False
    return isinstance(resolved, pd.StringDtype)


def _number_text(value: Any) -> Any:
    """Text of one cell value: integral numbers without '.0'; missing stays missing."""
    import pandas as pd

    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, bool):
        return str(value).upper()  # Excel's TRUE / FALSE
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    return str(value)


def _as_text(s: pd.Series) -> pd.Series:
    import pandas as pd

    if isinstance(s.dtype, pd.StringDtype):
        return s
    if s.dtype.kind in "iu":
        return s.astype("str")
    return s.astype(object).map(_number_text).astype("str")


def _mixes_text_and_numbers(s: pd.Series) -> bool:
    """Does an object column hold text and also numbers (or other non-text values)?"""
    if s.dtype != object:
        return False
    kinds = {type(v) for v in s.dropna().tolist()}
    return any(issubclass(k, str) for k in kinds) and any(not issubclass(k, str) for k in kinds)


def _show_rows(rows: list[dict]) -> str:
    def cell(v: Any) -> str:
        try:
            import pandas as pd

            if v is None or pd.isna(v):
                return "(empty)"
        except (TypeError, ValueError):
            pass
        return repr(v)

    return "; ".join("{" + ", ".join(f"{k}: {cell(v)}" for k, v in r.items()) + "}"
                     for r in rows)


def _sorted_by(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    if len(df) < 2 or not all(k in df.columns for k in keys):
        return df
    try:
        return df.sort_values(keys, kind="stable", ignore_index=True)
    except TypeError:  # keys of mixed types cannot be ordered
        return df


def _normalize_column(s: pd.Series) -> pd.Series | None:
    """The column as a re-read gives it, or None when it round-trips as it is."""
    import numpy as np
    import pandas as pd

    dtype = s.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        return s.dt.tz_convert("UTC").dt.tz_localize(None).dt.round("ms")
    if pd.api.types.is_datetime64_dtype(dtype):
        rounded = s.dt.round("ms")
        return None if rounded.equals(s) else rounded
    if pd.api.types.is_float_dtype(dtype):
        values = s.to_numpy(dtype="float64", na_value=np.nan)
        inf = np.isinf(values)
        return s.where(~inf) if inf.any() else None
    if pd.api.types.is_integer_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        values = s.to_numpy(dtype="float64", na_value=0.0)
        if (np.abs(values) <= _EXACT_FLOAT_INT).all():
            return None
        return s.astype(object).map(
            lambda v: v if v is None or pd.isna(v) or abs(int(v)) <= _EXACT_FLOAT_INT
            else int(float(v)))
    if isinstance(dtype, pd.StringDtype):
        empty = (s == "").fillna(False).to_numpy(dtype=bool)
        return s.where(~empty) if empty.any() else None
    if dtype == object:
        values = s.tolist()
        changed = False
        fixed = []
        for v in values:
            new = _normalize_cell(v)
            if new is not v:
                changed = True
            fixed.append(new)
        return pd.Series(fixed, index=s.index, dtype=object, name=s.name) if changed else None
    return None


def _normalize_cell(v: Any) -> Any:
    import math

    import pandas as pd

    if isinstance(v, str):
        return None if v == "" else v
    if isinstance(v, (bool, int)):
        if not isinstance(v, bool) and abs(v) > _EXACT_FLOAT_INT:
            return int(float(v))
        return v
    if isinstance(v, float):
        return None if math.isinf(v) else v
    if isinstance(v, (dict, list, tuple)):
        from ..xlsx import cell_json

        return cell_json(v)
    if isinstance(v, pd.Timestamp):
        if v.tzinfo is not None:
            v = v.tz_convert("UTC").tz_localize(None)
        rounded = v.round("ms")
        return v if rounded == v and v.tzinfo is None else rounded
    if isinstance(v, dt.datetime):
        return _normalize_cell(pd.Timestamp(v))
    if isinstance(v, dt.date):
        return pd.Timestamp(v)
    return v

