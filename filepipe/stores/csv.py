"""A CSV file as a keyed table."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..fileutil import atomic_write
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

    def read_file(self, path: Path) -> pd.DataFrame:
        import pandas as pd

        key_types = {k: self.dtypes[k] for k in self.primary_keys if k in self.dtypes}
        options = {"dtype": key_types or None, **self.read_options}
        try:
            return pd.read_csv(path, **options)
        except pd.errors.EmptyDataError:
            return self.empty()

    def write_file(self, df: pd.DataFrame) -> None:
        options = {k: self.read_options[k] for k in ("sep", "encoding", "decimal")
                   if k in self.read_options}
        atomic_write(self.path, lambda tmp: df.to_csv(tmp, index=False, **options))

    def __repr__(self) -> str:
        return f"TableStoreCSV({str(self.path)!r}, primary_keys={self.primary_keys})"
