"""A CSV file as a keyed table."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..fileutil import atomic_write, open_regular
from .files import FileStore

if TYPE_CHECKING:
    import pandas as pd


class TableStoreCSV(FileStore):
    """``TableStoreCSV("data/prices.csv", primary_keys=["sku"], dtypes={"sku": "str"})``.

    Extra keyword arguments go to `pandas.read_csv` (``sep=";"``, ``encoding="cp1252"``,
    ``decimal=","``...); the same separator, encoding and decimal mark are used to write.

    `dtypes` may name ``"date"`` (``"2024-01-05"`` becomes a `datetime.date`); columns
    declared text are read as text (``007`` stays ``"007"``). Errors about rows name their
    line in the file (the header is line 1; a quoted field may span lines).
    """

    folder_adapter = "csv"

    def __init__(self, path: str | os.PathLike, primary_keys: Sequence[str],
                 dtypes: Mapping[str, Any] | None = None, **read_options: Any) -> None:
        super().__init__(path, primary_keys, dtypes)
        self.read_options = read_options
        self.written_kinds: dict[str, str] = {}
        self._read_path: Path | None = None  # the file the last read_file read, its rows
        self._rows_read = 0
        self._lines: list[int] | None = None  # line of each row of it (found on an error)

    def use_written_kinds(self, kinds: dict[str, str]) -> None:
        """Read back what filepipe wrote with its types: text such as ``007`` stays text."""
        self.written_kinds = {c: k for c, k in kinds.items() if c not in self.dtypes}

    def read_file(self, path: Path) -> pd.DataFrame:
        import pandas as pd

        from ..frames import is_text_dtype

        # text read as text (a number would lose its leading zeros); other declared types
        # are applied after the read, so that a value that does not fit names its line
        text = {c: "str" for c, k in self.read_dtypes().items() if is_text_dtype(k)}
        options: dict[str, Any] = {"dtype": text or None}
        if self.written_kinds:  # filepipe's own file: only an empty field is missing
            options.update(keep_default_na=False, na_values=[""])
        options.update(self.read_options)
        self._read_path, self._rows_read, self._lines = path, 0, None
        try:
            with open_regular(path) as f:
                df = pd.read_csv(f, **options)
        except pd.errors.EmptyDataError:  # retried by the sync: it may be being saved
            raise pd.errors.EmptyDataError(
                f"{path} is empty (0 bytes, not even a header line): the table's rows are kept "
                "until it holds at least its header") from None
        self._rows_read = len(df)
        return df

    def row_label(self, i: int) -> str:
        """``"line 7"``: the line of the file where the row starts (``"row 7"``, the 7th
        row of data, when read options make lines uncountable)."""
        if self._lines is None and self._read_path is not None:
            self._lines = _line_numbers(self._read_path, self.read_options, self._rows_read) or []
        if self._lines and i < len(self._lines):
            return f"line {self._lines[i]}"
        return f"row {i + 1}"

    def normalize(self, df: pd.DataFrame) -> pd.DataFrame:
        """What reading the written file back gives: in text columns an empty string is
        missing and a CR (alone or before LF) is LF; a column mixing text and numbers is
        text; `datetime.date` values are their ISO text."""
        import pandas as pd

        from ..frames import holds_text, is_date_dtype

        changed = {}
        for c in df.columns:
            if c in self.dtypes and is_date_dtype(self.dtypes[c]):
                continue  # declared dates: read back as dates
            if c in self.primary_keys or df[c].dtype.kind not in "OU" and \
                    not pd.api.types.is_string_dtype(df[c].dtype):
                continue
            kind = pd.api.types.infer_dtype(df[c], skipna=True)
            if kind == "date" or (kind.startswith("mixed") and holds_text(df[c])):
                changed[c] = df[c].astype(str).where(df[c].notna(), None)
            elif kind == "string":
                text = df[c].str.replace("\r\n?", "\n", regex=True)
                changed[c] = text.where(text != "", None)
        return df.assign(**changed) if changed else df

    def read_dtypes(self) -> dict[str, Any]:
        return {**self.written_kinds, **self.dtypes}

    def write_file(self, df: pd.DataFrame) -> None:
        options = {k: self.read_options[k] for k in ("sep", "encoding", "decimal")
                   if k in self.read_options}
        atomic_write(self.path, lambda tmp: df.to_csv(tmp, index=False, **options))

    def __repr__(self) -> str:
        return f"TableStoreCSV({str(self.path)!r}, primary_keys={self.primary_keys})"


#: read options with which the lines of rows can be counted with the csv module
_LINE_SAFE = frozenset({"sep", "delimiter", "encoding", "decimal", "quotechar", "doublequote",
                        "escapechar", "dtype", "na_values", "keep_default_na", "thousands",
                        "true_values", "false_values", "encoding_errors", "low_memory"})


def _line_numbers(path: Path, options: dict[str, Any], rows: int) -> list[int] | None:
    """The line where each data row of the CSV file at `path` starts, or None when the
    read `options` or the file (changed since) make them uncountable."""
    import csv
    import io

    if set(options) - _LINE_SAFE:
        return None
    sep = options.get("sep", options.get("delimiter", ","))
    if not isinstance(sep, str) or len(sep) != 1:
        return None
    starts: list[int] = []
    try:
        with open_regular(path) as raw:
            text = io.TextIOWrapper(raw, encoding=options.get("encoding") or "utf-8",
                                    errors="replace", newline="")
            reader = csv.reader(text, delimiter=sep, quotechar=options.get("quotechar", '"'),
                                doublequote=options.get("doublequote", True),
                                escapechar=options.get("escapechar"))
            end, header = 0, False
            for record in reader:
                start, end = end + 1, reader.line_num
                if not record:  # a blank line: pandas skips it
                    continue
                if not header:
                    header = True
                    continue
                starts.append(start)
    except (OSError, csv.Error, LookupError, ValueError):
        return None
    return starts if len(starts) == rows else None
