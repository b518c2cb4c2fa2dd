"""Base of the stores that keep a whole table in one file (CSV, an Excel sheet, Parquet).

The file is read once and kept in memory while its fingerprint is unchanged; writes go
to the in-memory frame and `flush()` writes the file atomically (temp file + rename).
"""

from __future__ import annotations

import os
import re
from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
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
from ..frames import align_keys, check_source_rows, frame_dtype, rows_in
from .base import TableStore

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd

#: stores made for the files of a folder store (`file_of_folder`): no glob check
_FOLDER_FILE: ContextVar[bool] = ContextVar("filepipe_folder_file", default=False)
_GLOB = re.compile(r"\*\*/|\*+|\?+|\{[^{}/]*\}")


class FileStore(TableStore):
    """A keyed table held in the single file `path`.

    `dtypes` (column → pandas dtype, e.g. ``{"zip": "str", "qty": "Int64"}``, or
    ``"date"`` for `datetime.date` values) fixes types the file format cannot carry; other
    columns keep the types the reader infers.

    Reading a source checks every row at once: a value that does not fit its declared
    type, an empty key cell, a key that repeats — one error (`BadRowsError`) names each
    such row (`row_label`: the sheet's row, the CSV's line).

    A path with ``*``, ``?`` or a ``{field}`` names many files: a single-file store refuses
    it, pointing to `TableStoreFiledir(..., adapter=...)`, which reads a folder of them.
    """

    #: the `TableStoreFiledir` adapter reading a folder of such files (for the glob hint)
    folder_adapter: str | None = None

    def __init__(self, path: str | os.PathLike, primary_keys: Sequence[str],
                 dtypes: Mapping[str, Any] | None = None) -> None:
        if self.folder_adapter is not None and not _FOLDER_FILE.get():
            check_single_path(type(self).__name__, path, self.folder_adapter, primary_keys,
                              getattr(self, "_folder_options", ""))
        if not primary_keys:
            raise ValueError(f"{type(self).__name__}({path!s}): primary_keys must name at least one column")
        self.path: Path = resolve_path(path)
        self.primary_keys = list(primary_keys)
        self.dtypes = dict(dtypes or {})
        self._frame: pd.DataFrame | None = None
        self._loaded_fp: tuple | None = None
        self._dirty = False
        #: read by the sync: an empty key cell is an error (an output's reads allow it)
        self._is_source = False
        #: columns a file may hold whose every value must agree with a value its path
        #: names (a folder of such files): column → (the path's text, agrees(value))
        self.fixed_columns: dict[str, tuple[str, Callable[[Any], bool]]] = {}

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
        """Read `path`, apply `dtypes` and check the rows: every bad row at once, each
        named by `row_label` (see the class docstring)."""
        df = self.read_file(path)
        df = check_source_rows(df, self.primary_keys, self.read_dtypes(), self.describe(),
                               self.row_label, fixed=self.fixed_columns,
                               empty_keys=self.refuses_empty_keys())
        return df.reset_index(drop=True)

    def read_dtypes(self) -> dict[str, Any]:
        """The types `load` gives columns: `dtypes` (CSV adds the written column types)."""
        return dict(self.dtypes)

    def row_label(self, i: int) -> str:
        """How the row at position `i` of the frame the last `read_file` gave is named in
        messages (``"row 3"``: the third row of data)."""
        return f"row {i + 1}"

    def refuses_empty_keys(self) -> bool:
        """Is a row with an empty key cell an error when reading? (For a source.)"""
        return self._is_source

    def empty(self) -> pd.DataFrame:
        import pandas as pd

        cols = self.primary_keys + [c for c in self.dtypes if c not in self.primary_keys]
        return pd.DataFrame({c: pd.Series([], dtype=frame_dtype(self.dtypes.get(c, object),
                                                               key=c in self.primary_keys))
                             for c in cols})

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

    def remove_keys(self, idx: pd.DataFrame) -> None:
        """Drop the rows of `idx` held here; the store becomes dirty only if one was."""
        if idx.empty:
            return
        before = self.frame()
        if before.empty:
            return
        after = self._without(idx)
        if len(after) != len(before):
            self._frame, self._dirty = after, True

    @property
    def is_dirty(self) -> bool:
        return self._dirty

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
        self._is_source = True  # the sync reads only sources
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



@contextmanager
def file_of_folder() -> Iterator[None]:
    """Stores made inside are one file of a folder store (its name may hold '*', '?')."""
    token = _FOLDER_FILE.set(True)
    try:
        yield
    finally:
        _FOLDER_FILE.reset(token)


def check_single_path(kind: str, path: str | os.PathLike, adapter: str,
                      primary_keys: Sequence[str] | None, options: str = "") -> None:
    """Refuse a path naming many files (``exports/*.csv``, ``shops/{shop}.xlsx``) in the
    single-file store `kind`, pointing to the folder store that reads such files."""
    text = os.fspath(path)
    if isinstance(text, bytes) or not _GLOB.search(text) or os.path.exists(text):
        return
    fields: list[str] = []

    def field(m: re.Match) -> str:
        found = m.group(0)
        if found.startswith("{"):
            name = found[1:-1].strip() or "part"
        else:
            name = "folder" if found == "**/" else "file"
        base, n = name, 2
        while name in fields:
            name, n = f"{base}{n}", n + 1
        fields.append(name)
        return "{" + name + "}" + ("/" if found == "**/" else "")

    pattern = _GLOB.sub(field, text.replace(os.sep, "/") if os.sep != "/" else text)
    keys = [*fields, *[k for k in (primary_keys or []) if k not in fields]]
    if len(keys) == len(fields):
        keys.append("<key column inside the files>")
    raise ValueError(
        f"{kind}({text!r}): this path names many files ({', '.join(map(repr, _GLOB.findall(text)))}), "
        f"but {kind} keeps a table in one file. For a folder of such files as one table, use "
        f"TableStoreFiledir({pattern!r}, adapter={adapter!r}{options}, primary_keys={keys!r}): "
        "each {field} of the pattern matches part of a file's path and becomes a column, a "
        "key column when primary_keys names it")
