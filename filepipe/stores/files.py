"""Base of the stores that keep a whole table in one file (CSV, an Excel sheet, Parquet).

The file is read once and kept in memory while its fingerprint is unchanged; writes go
to the in-memory frame and `flush()` writes the file atomically (temp file + rename).
"""

from __future__ import annotations

import os
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..fileutil import (
    Fingerprint,
    NotRegularFileError,
    display_path,
    fingerprint_of,
    fingerprints,
    resolve_path,
    unusable_reason,
)
from ..frames import align_keys, apply_dtypes, check_keys, rows_in
from .base import TableStore

if TYPE_CHECKING:
    import pandas as pd


class FileStore(TableStore):
    """A keyed table held in the single file `path`.

    `dtypes` (column → pandas dtype, e.g. ``{"zip": "str", "qty": "Int64"}``) fixes
    types the file format cannot carry; other columns keep the types the reader infers.
    """

    def __init__(self, path: str | os.PathLike, primary_keys: Sequence[str],
                 dtypes: Mapping[str, Any] | None = None) -> None:
        if not primary_keys:
            raise ValueError(f"{type(self).__name__}({path!s}): primary_keys must name at least one column")
        self.path: Path = resolve_path(path)
        self.primary_keys = list(primary_keys)
        self.dtypes = dict(dtypes or {})
        self._frame: pd.DataFrame | None = None
        self._loaded_fp: tuple | None = None
        self._dirty = False

    file_backed = True
    single_file = True

    # --- what a format implements -------------------------------------------------------
    @abstractmethod
    def read_file(self, path: Path) -> pd.DataFrame:
        """Rows of the file as the format gives them (raise on a broken file)."""

    @abstractmethod
    def write_file(self, df: pd.DataFrame) -> None:
        """Write `df` to `self.path` atomically."""

    # --- reading ------------------------------------------------------------------------
    def describe(self) -> str:
        return str(self.path)

    def _fingerprint(self) -> Fingerprint | None:
        # a FIFO, a folder: never opened (skipped_files says why)
        return fingerprint_of(self.path, regular_only=True)

    def frame(self) -> pd.DataFrame:
        """The table as a frame: the buffered one, or the file read afresh if it changed."""
        fp = self._fingerprint()
        if self._frame is not None and (self._dirty or fp == self._loaded_fp):
            return self._frame
        why = unusable_reason(self.path) if fp is None else None
        if why:  # a FIFO or a folder there: never opened, and not an empty table either
            raise NotRegularFileError(f"{display_path(self.path)}: {why}")
        self._frame = self.load(self.path) if fp is not None else self.empty()
        self._loaded_fp = fp
        return self._frame

    def load(self, path: Path) -> pd.DataFrame:
        """Read `path`, apply `dtypes` and check the keys (errors name the file)."""
        df = self.read_file(path)
        df = self.apply_dtypes(df, where=self.describe())
        check_keys(df, self.primary_keys, self.describe())
        return df.reset_index(drop=True)

    def apply_dtypes(self, df: pd.DataFrame, where: str) -> pd.DataFrame:
        return apply_dtypes(df, self.dtypes, where)

    def empty(self) -> pd.DataFrame:
        import pandas as pd

        cols = self.primary_keys + [c for c in self.dtypes if c not in self.primary_keys]
        return pd.DataFrame({c: pd.Series([], dtype=self.dtypes.get(c, object)) for c in cols})

    def read_rows(self, idx: pd.DataFrame | None = None) -> pd.DataFrame:
        df = self.frame()
        if idx is None:
            return df.copy()
        keys = self.primary_keys
        wanted = align_keys(idx[keys].drop_duplicates(), df, keys)
        return df.merge(wanted, on=keys)

    # --- writing ------------------------------------------------------------------------
    def upsert_rows(self, df: pd.DataFrame, conn: Any = None) -> None:
        import pandas as pd

        if df.empty:
            return
        df = self.normalize(df)  # the buffer holds what reading the file back will give
        rest = self._without(df)
        self._frame = df.reset_index(drop=True).copy() if rest.empty else \
            pd.concat([rest, df], ignore_index=True)
        self._dirty = True

    def delete_rows(self, idx: pd.DataFrame, conn: Any = None) -> None:
        if idx.empty:
            return
        self._frame = self._without(idx)
        self._dirty = True

    def _without(self, idx: pd.DataFrame) -> pd.DataFrame:
        df = self.frame()
        if df.empty:
            return df
        keys = self.primary_keys
        return df[~rows_in(df, align_keys(idx[keys], df, keys), keys)].reset_index(drop=True)

    def flush(self) -> None:
        if not self._dirty or self._frame is None:
            return
        self.write_file(self._frame)
        self._dirty = False
        self._loaded_fp = self._fingerprint()

    def clear(self) -> None:
        self._frame, self._dirty = self.empty(), True

    def discard(self) -> None:
        """Forget buffered changes and the cached frame."""
        self._frame, self._loaded_fp, self._dirty = None, None, False

    # --- files --------------------------------------------------------------------------
    def location(self) -> Path:
        return self.path

    def list_files(self) -> pd.DataFrame:
        return fingerprints([self.path])

    def skipped_files(self) -> dict[str, str]:
        why = unusable_reason(self.path)
        return {display_path(self.path): why} if why else {}

    def read_files(self, paths: list[str]) -> dict[str, pd.DataFrame]:
        result = {}
        for p in paths:
            if Path(p) != self.path:
                raise ValueError(f"{self.describe()}: not this store's file: {p}")
            result[p] = self.load(self.path) if self._fingerprint() is not None else self.empty()
            self._frame, self._loaded_fp = result[p], self._fingerprint()
        return result

    def watch_paths(self) -> list[Path]:
        return [self.path.parent]

    def owns_path(self, path: Path) -> bool:
        return path == self.path

