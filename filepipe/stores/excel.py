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

Column names are text. A header cell is read as the text it shows — ``2019`` → ``"2019"``,
``2019.5`` → ``"2019.5"``, ``TRUE`` → ``"TRUE"``, a date → ``"2026-11-30"``, a time →
``"13:30:00"`` (:func:`filepipe.xlsx.cell_text`) — and a frame's column names are written
as that same text, so ``primary_keys`` name columns by their text: ``primary_keys=["2019"]``
(a non-text name such as ``[2019]`` is an error saying so).

Types. Excel keeps numbers (as float64), text, booleans, dates (numbers with a date format)
and errors. What comes back from a sheet filepipe wrote, compared with the frame it wrote:

* ints come back as ints (integral floats too: row hashes treat ``2 == 2.0``), a numeric
  column with empty cells as float64 with NaN (same hash as the nullable ints written);
  numbers keep 15 significant digits, as Excel shows them and LibreOffice saves them
  (``0.1 + 0.2`` → ``0.3``, ``1234567890123456`` → ``1234567890123460``);
* datetimes come back as naive ``datetime64`` at millisecond precision (Excel's);
  timezone-aware values are written as UTC; ``datetime.date`` values come back as
  midnight datetimes; dates before 1900-01-01 (no Excel date) are written and come back
  as ISO-8601 text (``"1899-12-31"``);
* ``datetime.time`` values are Excel times and come back as ``datetime.time``; timedeltas
  are Excel durations (``[h]:mm:ss``) and come back as ``timedelta64``; both at the
  millisecond;
* ``None``/NaN/NaT/pd.NA are empty cells and come back as NaN/NaT; the empty string ``""``
  is indistinguishable from an empty cell and comes back as NaN too;
* text loses the control characters XML cannot hold, and CR LF / CR become LF;
* dict/list cells come back as their compact JSON text; ``inf`` as NaN (Excel shows
  ``#NUM!``); other objects as ``str(value)``.

:meth:`TableStoreExcel.normalize` turns a frame into the values a re-read will give — of the
file filepipe wrote, and of that file re-saved by Excel, LibreOffice or openpyxl — and
buffered writes go through it, so what filepipe keeps in memory equals what the next
process reads from the file. Key columns are never changed by it: keys must round-trip
exactly, and :meth:`TableStoreExcel.check_writable` refuses, naming the cells, keys that
would not (more than 15 significant digits, sub-millisecond times, empty or control-character
text, dates before 1900, or a mix of kinds a sheet gives back as text), along with text
longer than a cell holds (32,767 characters) and more rows or columns than a sheet holds.

How the sheet looks. ``formats={"price": "#,##0.00", "day": "dd.mm.yyyy"}`` gives columns
Excel number-format codes and ``widths={"name": 30}`` widths in characters (an unknown column
is an error naming the store and the column, raised before anything is written; so is a
number format on dates or a date format on numbers, which a sheet would give back as the
other kind). Other columns get readable defaults: ints in full, floats with two to eight
decimals (the cell keeps every digit), dates and datetimes as dates, headers over numbers
right-aligned, widths from the content. The look a user gives filepipe's sheet — number
formats, column widths, fonts, fills, borders, conditional formats, data validations, a tab
colour, print set-up — is kept by every rewrite (:mod:`filepipe.xlsx.look`): a column's look
applies to rows added later, a cell or row formatted apart keeps its format by the key of its
row. The number formats and widths ``formats`` and ``widths`` name are the pipeline's (applied
over the file's at every write); the others are the user's. A
change of look only is no hand edit: the rows read back alike (a date column shown as numbers
is read back as dates again, from the column types filepipe wrote).

Key columns typed by people. A key column where some cells are numbers and others text
(Excel's "number stored as text") is read as text, integral numbers without ``.0``
(``1001`` and ``"1001"`` are then the same key, and a duplicate if both occur). So is any
key column that mixes kinds (``123`` and ``TRUE``: ``"123"``, ``"TRUE"``) or holds times of
day or durations (``"13:30:00"``): the text :func:`filepipe.xlsx.cell_text` gives. Pass
``dtypes={"sku": "str"}`` to always read a key column as text (recommended for codes such as
zip codes or SKUs that may start with zero or contain letters): integral numbers become
``"1001"``, not ``"1001.0"``. Rows with an empty key cell are an error naming the sheet.

Bad rows. Reading checks every row at once: empty key cells, keys that repeat, values that
do not fit their declared `dtypes` (``{"day": "date"}`` reads date cells and ISO text as
`datetime.date`). One error (`filepipe.errors.BadRowsError`) names the file, the sheet and
each row by its row number in the sheet, so all of them can be fixed before the next run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import (
    EmptyKeyError,
    KeyNameError,
    NotWritableError,
    SheetError,
    SheetNotFoundError,
)
from .files import FileStore

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from ..fileutil import Fingerprint

__all__ = ["TableStoreExcel", "SheetNotFoundError", "EmptyKeyError", "NotWritableError", "KeyNameError"]

_UNNAMED = re.compile(r"^Unnamed: \d+$")
_MAX_SHOWN = 3


def sheet_for_stem(path: str | os.PathLike) -> str:
    """The sheet name `sheet=None` uses for a new workbook at `path` (its stem, made valid)."""
    from ..xlsx import sheet_name_from

    return sheet_name_from(Path(path).stem)


class TableStoreExcel(FileStore):
    """One sheet of an ``.xlsx`` workbook as a keyed table (see the module docstring).

    ``TableStoreExcel(path, sheet=None, primary_keys=[...], dtypes=None, formats=None,
    widths=None)``: `sheet` is the sheet's name (None: see "which sheet" above);
    `primary_keys` are column names, which are header texts (``["2019"]`` for a column
    headed by the number 2019; see "column names are text" above); `dtypes` fixes column
    types the cells do not carry, e.g. ``{"zip": "str"}``; `formats` and `widths` give
    columns an Excel number format and a width (see "how the sheet looks" above).
    """

    folder_adapter = "xlsx"

    def __init__(self, path: str | os.PathLike, sheet: str | None = None,
                 primary_keys: Sequence[str] | None = None,
                 dtypes: Mapping[str, Any] | None = None,
                 formats: Mapping[str, str] | None = None,
                 widths: Mapping[str, float] | None = None) -> None:
        if sheet is not None and not isinstance(sheet, str):
            hint = (f"; did you mean primary_keys={list(sheet)!r}?"
                    if isinstance(sheet, (list, tuple)) and primary_keys is None else "")
            raise TypeError(f"TableStoreExcel({os.fspath(path)!s}): sheet must be a sheet name "
                            f"(str) or None, got {sheet!r}{hint}")
        self._folder_options = f", sheet={sheet!r}" if sheet is not None else ""  # (glob hint)
        super().__init__(path, primary_keys or [], dtypes)
        not_text = [k for k in [*self.primary_keys, *self.dtypes] if not isinstance(k, str)]
        if not_text:
            from ..xlsx import header_text

            name = not_text[0]
            where = "primary_keys" if name in self.primary_keys else "dtypes"
            fixed = ([header_text(k) for k in self.primary_keys] if where == "primary_keys"
                     else {header_text(k): v for k, v in self.dtypes.items()})
            raise KeyNameError(
                f"TableStoreExcel({self.path}): {where} names column {name!r}, which is not "
                f"text; column names are the text of their header cells, so write "
                f"{where}={fixed!r}")
        if sheet is not None:
            from ..xlsx import validate_sheet_name

            try:
                validate_sheet_name(sheet, self.path)
            except SheetError as exc:
                raise ValueError(str(exc)) from None
        self.sheet = sheet
        self._resolved: str | None = sheet  # the sheet last read or written
        self._is_source = False
        self.formats, self.widths = self._checked_look(formats, widths)
        self.written_kinds: dict[str, str] = {}
        # the keys of the rows of the sheet on disk (file fingerprint, keys, row numbers)
        self._sheet_rows: tuple[Fingerprint | None, pd.DataFrame, np.ndarray] | None = None
        self._read_rows: np.ndarray | None = None  # row numbers of the frame read_file gave

    def _checked_look(self, formats: Mapping[str, str] | None,
                      widths: Mapping[str, float] | None) -> tuple[dict[str, str], dict[str, float]]:
        """`formats` and `widths` as dicts; ValueError (KeyNameError for a name that is
        not text) naming the store and the column when one is not what Excel takes."""
        from ..xlsx import SheetError, check_look, header_text

        for what, given in (("formats", formats), ("widths", widths)):
            if given is None:
                continue
            if not isinstance(given, Mapping):
                raise TypeError(f"TableStoreExcel({self.path}): {what} must map column names to "
                                f"{'number-format codes' if what == 'formats' else 'widths'}, "
                                f"got {given!r}")
            for name in given:
                if not isinstance(name, str):
                    fixed = {header_text(k): v for k, v in given.items()}
                    raise KeyNameError(
                        f"TableStoreExcel({self.path}): {what} names column {name!r}, which is "
                        f"not text; column names are the text of their header cells, so write "
                        f"{what}={fixed!r}")
        checked_formats, checked_widths = dict(formats or {}), dict(widths or {})
        try:
            check_look(checked_formats, checked_widths, f"TableStoreExcel({self.path})")
        except SheetError as exc:
            raise ValueError(str(exc)) from None
        return checked_formats, checked_widths

    def __repr__(self) -> str:
        extra = f", dtypes={self.dtypes!r}" if self.dtypes else ""
        extra += f", formats={self.formats!r}" if self.formats else ""
        extra += f", widths={self.widths!r}" if self.widths else ""
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
        return self._written_kinds_back(self._tidy(df))

    def _tidy(self, df: pd.DataFrame) -> pd.DataFrame:
        """Drop empty rows and unnamed empty columns; fix key and text columns; note the
        sheet row of each row kept (`_read_rows`)."""
        import numpy as np

        empty_cols = [c for c in df.columns
                      if _UNNAMED.match(c) and df[c].isna().all()]
        if empty_cols:
            df = df.drop(columns=empty_cols)
        rows = np.arange(2, len(df) + 2)
        blank = df.isna().all(axis=1)
        if blank.any():
            df = df[~blank.to_numpy()].reset_index(drop=True)
            rows = rows[~blank.to_numpy()]
        self._read_rows = rows
        for col in df.columns:
            wanted = self.dtypes.get(col)
            if wanted is not None and _is_text_dtype(wanted):
                df[col] = _as_text(df[col])
            elif col in self.primary_keys and _read_as_text_key(df[col]):
                df[col] = _as_text(df[col])
        return df

    def row_label(self, i: int) -> str:
        """``"row 7"``: the sheet's row number of the row at position `i` (header: row 1)."""
        rows = self._read_rows
        return f"row {int(rows[i])}" if rows is not None and i < len(rows) else f"row {i + 2}"

    def refuses_empty_keys(self) -> bool:
        return True  # a sheet's total row, a row half typed in: never a row of the table

    def load(self, path: Path) -> pd.DataFrame:
        """The rows of the sheet (see `FileStore.load`); the keys of its rows are kept with
        their row numbers, so that a rewrite keeps the format of the cells and rows the user
        formatted apart."""
        import numpy as np

        from ..fileutil import fingerprint_of

        fp = fingerprint_of(path, regular_only=True)
        self._read_rows = None
        df = super().load(path)
        rows = self._read_rows
        keys = [k for k in self.primary_keys if k in df.columns]
        if rows is not None and len(rows) == len(df) and len(keys) == len(self.primary_keys):
            self._sheet_rows = (fp, df[keys], np.asarray(rows))
        else:
            self._sheet_rows = None
        return df

    def use_written_kinds(self, kinds: dict[str, str]) -> None:
        """Column types of what filepipe wrote: a date column the user gave a number format
        (or a number column a date format) reads back as dates (numbers), as written."""
        self.written_kinds = {c: k for c, k in kinds.items() if c not in self.dtypes}

    def _written_kinds_back(self, df: pd.DataFrame) -> pd.DataFrame:
        """`df` with the columns that a number format made read back as another kind than
        filepipe wrote (dates as numbers, numbers as dates) turned back."""
        import pandas as pd

        from ..xlsx import datetimes_from_serials, serials_from_datetimes

        changed = {}
        for c, kind in self.written_kinds.items():
            if c not in df.columns or not len(df):
                continue
            s = df[c]
            if kind.startswith("datetime64") and (pd.api.types.is_numeric_dtype(s.dtype)
                                                  and not pd.api.types.is_bool_dtype(s.dtype)):
                changed[c] = pd.Series(datetimes_from_serials(s.to_numpy(dtype=float, na_value=float("nan"))),
                                       index=s.index)
            elif kind in ("Int64", "float64") and (pd.api.types.is_datetime64_dtype(s.dtype)
                                                   or pd.api.types.is_timedelta64_dtype(s.dtype)):
                changed[c] = pd.Series(serials_from_datetimes(s.to_numpy()), index=s.index)
        return df.assign(**changed) if changed else df

    # --- writing --------------------------------------------------------------------------
    def check_writable(self, df: pd.DataFrame) -> None:
        """Raise a `FilepipeError` naming the column, key and limit when the rows of `df`
        cannot go into this sheet: the path is a folder (or under a file), a column name
        makes no header, the sheet would hold too many rows or columns, a text is longer
        than a cell holds, or a key would not read back as it is (see the module docstring).
        """
        from ..xlsx import check_output_path, header_texts, sheet_values

        where = self.describe()
        check_output_path(self.path)
        names = header_texts(df.columns, where)
        for name, text in zip(df.columns, names):
            if not text:
                raise NotWritableError(f"{where}: column {name!r} has an empty name, which a sheet "
                                       "reads back as 'Unnamed: n'; name the column")
            if isinstance(name, str) and text != name:
                raise NotWritableError(f"{where}: column name {name!r} holds control characters a "
                                       f"cell does not keep (it would read back as {text!r}); "
                                       "rename the column")
        self._check_look(df, where)
        self._check_size(df, names, where)
        values = sheet_values(df)
        self._check_text_lengths(df, values, where)
        self._check_keys(df, values, where)

    def _check_look(self, df: pd.DataFrame, where: str) -> None:
        """`formats` and `widths` must name columns of the table, and a declared number
        format must show the column's values as what they are (dates as dates, numbers as
        numbers): a sheet gives cells back as their format shows them."""
        import pandas as pd

        from ..xlsx import shows_dates

        columns = {str(c) for c in df.columns} | {str(c) for c in self.frame().columns}
        for what, given in (("formats", self.formats), ("widths", self.widths)):
            unknown = [c for c in given if c not in columns] if len(df) else []
            if unknown:
                listed = ", ".join(map(repr, sorted(columns))) or "none"
                raise NotWritableError(
                    f"{where}: {what} names column {unknown[0]!r}, which the table does not have "
                    f"(its columns: {listed}); fix the name in TableStoreExcel(..., {what}=...)")
        for name, code in self.formats.items():
            if name not in df.columns:
                continue
            dtype = df[name].dtype
            if pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype):
                if not shows_dates(code):
                    raise NotWritableError(
                        f"{where}: formats[{name!r}] is {code!r}, which shows numbers, but column "
                        f"{name!r} holds dates or times; a sheet would give them back as numbers: "
                        "give it a date format such as 'dd.mm.yyyy' or 'yyyy-mm-dd hh:mm'")
            elif pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
                if shows_dates(code):
                    raise NotWritableError(
                        f"{where}: formats[{name!r}] is {code!r}, which shows dates, but column "
                        f"{name!r} holds numbers; a sheet would give them back as dates: give it "
                        "a number format such as '#,##0.00', or make the column datetimes")

    def _check_size(self, df: pd.DataFrame, names: list[str], where: str) -> None:
        from ..frames import align_keys, rows_in
        from ..xlsx import MAX_COLS, MAX_ROWS

        current = self.frame()
        n_cols = len(set(names) | set(current.columns))
        if n_cols > MAX_COLS:
            raise NotWritableError(f"{where}: this write would give the sheet {n_cols:,} columns; "
                                   f"an Excel sheet holds {MAX_COLS:,}: write fewer columns, or "
                                   "write the table to a CSV or Parquet store")
        n_rows = len(current) + len(df)
        keys = self.primary_keys
        if n_rows + 1 > MAX_ROWS and len(current) and all(k in df.columns for k in keys):
            n_rows = len(current) + int((~rows_in(align_keys(df[keys], current, keys), current,
                                                  keys)).sum())
        if n_rows + 1 > MAX_ROWS:
            raise NotWritableError(f"{where}: after this write the sheet would hold "
                                   f"{n_rows + 1:,} rows with the header; an Excel sheet holds "
                                   f"{MAX_ROWS:,}: write the table to a CSV or Parquet store, "
                                   "or split it over several sheets")

    def _check_text_lengths(self, df: pd.DataFrame, values: pd.DataFrame, where: str) -> None:
        import numpy as np
        import pandas as pd

        from ..xlsx import MAX_CELL_CHARS

        for j, name in enumerate(df.columns):
            s = values.iloc[:, j]
            if not (isinstance(s.dtype, pd.StringDtype) or s.dtype == object):
                continue
            try:
                lengths = s.str.len().to_numpy(dtype=float, na_value=np.nan)
            except AttributeError:  # no text in this column
                continue
            over = np.flatnonzero(lengths > MAX_CELL_CHARS)
            if len(over):
                i = int(over[0])
                more = f" (and {len(over) - 1:,} more cells)" if len(over) > 1 else ""
                raise NotWritableError(
                    f"{where}: column {name!r}, {self._key_text(df, i)}: text of "
                    f"{int(lengths[i]):,} characters{more}; an Excel cell holds at most "
                    f"{MAX_CELL_CHARS:,}: shorten it (e.g. .str.slice(0, {MAX_CELL_CHARS})) "
                    "or write the table to a CSV or Parquet store")

    def _check_keys(self, df: pd.DataFrame, values: pd.DataFrame, where: str) -> None:
        """Every key must read back as it is (normalize leaves keys alone)."""
        import numpy as np
        import pandas as pd

        from ..hashing import hash_rows
        from ..xlsx import is_missing

        for k in self.primary_keys:
            if k not in df.columns:
                continue
            back = values[k]
            if _read_as_text_key(back):
                shown = ", ".join(map(repr, df[k].drop_duplicates().head(_MAX_SHOWN).tolist()))
                raise NotWritableError(
                    f"{where}: key column {k!r} mixes kinds of values or holds times or "
                    f"durations ({shown}); a sheet gives such keys back as text, so they would "
                    f"not match: make them text first (df[{k!r}] = df[{k!r}].astype(str))")
            changed = np.flatnonzero(hash_rows(pd.DataFrame({k: df[k]}))
                                     != hash_rows(pd.DataFrame({k: back})))
            if len(changed):
                i = int(changed[0])
                was, now = df[k].iloc[[i]].tolist()[0], back.iloc[[i]].tolist()[0]
                shown = "an empty cell" if is_missing(now) else repr(now)
                raise NotWritableError(
                    f"{where}: key column {k!r} holds {was!r}, which a sheet gives back as "
                    f"{shown} ({len(changed):,} key(s) like this); a cell keeps 15 significant "
                    "digits, milliseconds, dates from 1900 on and text without control "
                    "characters or emptiness, and keys must read back exactly: round or "
                    "convert them first")

    def _key_text(self, df: pd.DataFrame, i: int) -> str:
        keys = [k for k in self.primary_keys if k in df.columns]
        if not keys:
            return f"row {i + 2}"
        row = df[keys].iloc[[i]].to_dict("records")[0]
        return "key " + ", ".join(f"{k}={v!r}" for k, v in row.items())

    def write_file(self, df: pd.DataFrame) -> None:
        from ..frames import sorted_by_key
        from ..xlsx import check_output_path, write_sheet

        check_output_path(self.path)
        sheet = self.resolve_sheet(self._sheet_names(self.path))
        if sheet is None:  # an explicit name not yet in the workbook: add it
            sheet = self.sheet
        assert sheet is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows = sorted_by_key(df, self.primary_keys)
        present = {str(c) for c in rows.columns}
        write_sheet(self.path, sheet, rows,
                    formats={c: f for c, f in self.formats.items() if c in present},
                    widths={c: w for c, w in self.widths.items() if c in present},
                    row_origin=lambda: self._row_origin(rows))
        self._resolved = sheet
        self._remember_rows(rows)

    def _row_origin(self, rows: pd.DataFrame) -> np.ndarray | None:
        """For each row of `rows` (about to replace the sheet), the row number its key had in
        the sheet on disk, -1 for a new key; None when that is not known (the file changed
        since it was read, or keys do not compare)."""
        import numpy as np

        from ..errors import FilepipeError
        from ..fileutil import fingerprint_of
        from ..frames import align_keys, key_positions

        fp = fingerprint_of(self.path, regular_only=True)
        if fp is None:
            return None
        if self._sheet_rows is None or self._sheet_rows[0] != fp:
            try:  # another sheet of the workbook was written since: read this one's keys again
                self.load(self.path)
            except Exception:  # noqa: BLE001 - then the formats of single rows are not kept
                return None
        if self._sheet_rows is None or self._sheet_rows[0] != fp:
            return None
        _, old_keys, old_rows = self._sheet_rows
        keys = list(old_keys.columns)
        if not all(k in rows.columns for k in keys):
            return None
        try:
            positions = key_positions(align_keys(rows[keys], old_keys, keys), old_keys, keys)
        except (FilepipeError, TypeError, ValueError):
            return None
        found = positions >= 0
        out = old_rows[np.where(found, positions, 0)] if len(old_rows) else positions.copy()
        out[~found] = -1
        return out

    def _remember_rows(self, rows: pd.DataFrame) -> None:
        """The sheet now holds `rows`, from row 2 on, in this order."""
        import numpy as np

        from ..fileutil import fingerprint_of

        keys = [k for k in self.primary_keys if k in rows.columns]
        if len(keys) != len(self.primary_keys):
            self._sheet_rows = None
            return
        self._sheet_rows = (fingerprint_of(self.path, regular_only=True),
                            rows[keys].reset_index(drop=True), np.arange(2, len(rows) + 2))

    def normalize(self, df: pd.DataFrame) -> pd.DataFrame:
        """`df` as reading the sheet back will give it — the sheet filepipe writes, and that
        sheet re-saved by Excel, LibreOffice or openpyxl (:func:`filepipe.xlsx.sheet_values`);
        key columns untouched. Idempotent.
        """
        from ..xlsx import sheet_values

        return sheet_values(df, keep=self.primary_keys)


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


def _as_text(s: pd.Series) -> pd.Series:
    import pandas as pd

    from ..xlsx import cell_text

    if isinstance(s.dtype, pd.StringDtype):
        return s
    if s.dtype.kind in "iu":
        return s.astype("str")
    return s.astype(object).map(cell_text).astype("str")


def _value_kind(t: type) -> str:
    import datetime as dt

    import numpy as np

    if issubclass(t, str):
        return "text"
    if issubclass(t, (bool, np.bool_)):
        return "bool"
    if issubclass(t, (int, float, np.integer, np.floating)):
        return "number"
    if issubclass(t, (dt.date, np.datetime64)):
        return "datetime"
    return "other"


def _read_as_text_key(s: pd.Series) -> bool:
    """Is this a key column the store reads as text: kinds mixed (numbers and text, numbers
    and TRUE/FALSE...), or times of day, durations and other values no key type holds?"""
    import numpy as np
    import pandas as pd

    if pd.api.types.is_timedelta64_dtype(s.dtype):
        return True
    if s.dtype != object:
        return False
    values = s.dropna().to_numpy(dtype=object)
    kinds = {_value_kind(t) for t in pd.unique(np.frompyfunc(type, 1, 1)(values))}
    return len(kinds) > 1 or "other" in kinds
