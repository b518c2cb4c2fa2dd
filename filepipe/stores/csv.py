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
    """

    def __init__(self, path: str | os.PathLike, primary_keys: Sequence[str],
                 dtypes: Mapping[str, Any] | None = None, **read_options: Any) -> None:
        super().__init__(path, primary_keys, dtypes)
        self.read_options = read_options
        self.written_kinds: dict[str, str] = {}

    def use_written_kinds(self, kinds: dict[str, str]) -> None:
        """Read back what filepipe wrote with its types: text such as ``007`` stays text."""
        self.written_kinds = {c: k for c, k in kinds.items() if c not in self.dtypes}

    def read_file(self, path: Path) -> pd.DataFrame:
        import pandas as pd

        text = {c: "str" for c, k in self.written_kinds.items() if k == "str"}
        key_types = {k: self.dtypes[k] for k in self.primary_keys if k in self.dtypes}
        options: dict[str, Any] = {"dtype": {**text, **key_types} or None}
        if self.written_kinds:  # filepipe's own file: only an empty field is missing
            options.update(keep_default_na=False, na_values=[""])
        options.update(self.read_options)
        try:
            with open_regular(path) as f:
                return pd.read_csv(f, **options)
        except pd.errors.EmptyDataError:  # retried by the sync: it may be being saved
            raise pd.errors.EmptyDataError(
                f"{path} is empty (0 bytes, not even a header line): the table's rows are kept "
                "until it holds at least its header") from None

    def normalize(self, df: pd.DataFrame) -> pd.DataFrame:
        """What reading the written file back gives: in text columns an empty string is
        missing and a CR (alone or before LF) is LF; a column mixing text and numbers is
        text; `datetime.date` values are their ISO text."""
        import pandas as pd

        from ..frames import holds_text

        changed = {}
        for c in df.columns:
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

    def apply_dtypes(self, df: pd.DataFrame, where: str) -> pd.DataFrame:
        from ..frames import apply_dtypes

        return apply_dtypes(df, {**self.written_kinds, **self.dtypes}, where)

    def write_file(self, df: pd.DataFrame) -> None:
        options = {k: self.read_options[k] for k in ("sep", "encoding", "decimal")
                   if k in self.read_options}
        atomic_write(self.path, lambda tmp: df.to_csv(tmp, index=False, **options))

    def __repr__(self) -> str:
        return f"TableStoreCSV({str(self.path)!r}, primary_keys={self.primary_keys})"
