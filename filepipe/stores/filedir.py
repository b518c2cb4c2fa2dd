"""A folder of files as a keyed table: the keys (some of them) in the path.

``TableStoreFiledir("inbox/{order_id}.json")`` or
``TableStoreFiledir("events/{user_id}/{event_id}.json", dtypes={"event_id": "int64"})``:
one file per row. ``TableStoreFiledir("exports/{month}.csv", adapter="csv",
primary_keys=["month", "id"])`` (and ``adapter="xlsx"`` with ``sheet=``, ``adapter="parquet"``):
files of many rows each; see "Folders of files of many rows" below.

Conventions (the same for sources and outputs):

* The pattern's fixed prefix up to the last ``/`` before the first ``{`` is the *root*
  folder (resolved like every store path); the rest is matched against the paths under
  it. A field matches one path component or part of one (``[^/]+``); names starting
  with ``.`` and the lock/temp/swap names of `fileutil.is_temp_name` (``~$x.json``,
  ``.~lock.x#``, filepipe's own temp files) are never rows.
* Key values parsed from the path are strings unless `dtypes` names a type for them
  (``{"order_id": "int64"}``; `dtypes` also casts content columns). Typed keys are
  written canonically (``7.json``); a file named otherwise (``007.json``) is still found
  for key 7, through one listing of the folder. The primary keys are the pattern's
  fields (default: in pattern order).
* Adapters: ``json`` (the file holds one JSON object; its fields are the columns),
  ``text`` (UTF-8 text in column ``text``), ``bytes`` (raw content in column ``data``);
  and ``csv``, ``xlsx``, ``parquet``: files of many rows (below).
* `dtypes` takes pandas dtypes and ``"date"``: ``{"day": "date", "at": "datetime64[ns]"}``
  reads JSON text ``"2024-01-05"`` as a `datetime.date` (ISO 8601 text, or a datetime at
  midnight; a time of day is refused) and ``"2024-01-05T10:30"`` as a datetime. A key
  declared ``"date"`` is kept as a datetime at midnight (the index has no date type). A
  value that does not fit is an error naming the file, the column and the value; all such
  values of a file are named at once.
* The path is the authority on keys. A JSON object may also hold a field named like a
  key; it is then dropped if it agrees with the path (``"order_id": 7`` in ``7.json``)
  and the file is rejected, naming it, if it does not. Keys are not written into the
  files filepipe writes.
* JSON is written deterministically: the frame's column order (keys left out),
  ``indent=2``, UTF-8 without ``\\u`` escapes, a final newline; NaN/None/NaT → ``null``,
  datetimes/dates/times as ISO 8601 text, timedeltas as ISO 8601 durations, numpy
  scalars and arrays as plain numbers and lists. Infinite floats and bytes cells are
  refused (JSON cannot hold them; use the ``bytes`` adapter for binary content).
  Dates and times read back as strings unless `dtypes` says otherwise.
* A missing root folder is an empty table. A folder that cannot be listed
  (permissions), or a file where the root folder should be, raises rather than making
  its rows vanish. A file that cannot be decoded raises `FileDecodeError` naming it (a
  ValueError: the sync retries it, since it may be half-written, then reports it);
  reading all rows raises too, so no step ever computes silently without that row.
* Entries the pattern matches that cannot be rows are left out of the listing and
  reported by `skipped_files()`: names that are not valid UTF-8, FIFOs, sockets and
  devices (never opened: a FIFO would block the run). Symbolic links to files are rows.
* `check_writable` refuses, naming the key and the fix, rows whose keys cannot name a
  file (missing, empty, a path separator, not valid Unicode, over 255 bytes) or whose
  content the adapter cannot write.
* Writes go straight to the files (one atomic write per changed row); a row whose
  rendered content is byte-identical to the file on disk is not rewritten. Deleting a
  row deletes its file and the folders below the root it leaves empty. Reads never
  write anything.

Folders of files of many rows (``adapter="csv"``, ``"xlsx"``, ``"parquet"``):

* Each file is read and written by the single-file store of its format (`TableStoreCSV`
  with ``options=`` as its read options, `TableStoreExcel` with ``sheet=``, ``formats=``,
  ``widths=``, `TableStoreParquet`), whose keys are the primary keys not in the pattern:
  ``primary_keys`` must name at least one such key inside the files. Each field of the
  pattern becomes a column of every row of its file (text unless `dtypes` types it); a
  field need not be a key (``shops/{shop}.csv`` with ``primary_keys=["order_id"]``: order
  ids unique across shops, ``shop`` a column).
* A file may hold a column named like a field: it is dropped when every value agrees with
  the path (or is empty); rows where it does not are errors naming their line or row.
* Reading a file checks all its rows at once (`filepipe.errors.BadRowsError`: empty and
  duplicate keys, values that do not fit `dtypes`, each named by the sheet's row or the
  CSV's line). The sync reads only the files that changed, a deleted file deletes its
  rows, and a key held by two files is reported for the file read last (naming both and
  the key), which keeps its previous rows.
* As an output, rows go to the file their fields name, one file per distinct value,
  buffered and written atomically at the end of the step (only the files whose rows
  changed); a file left without rows is deleted (a workbook that also holds other sheets
  keeps them, this sheet emptied). With a field that is not a key, a row whose field
  changes moves: it is taken out of its old file. Fields are not written into the files.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from stat import S_ISREG
from typing import TYPE_CHECKING, Any

from ..errors import FileDecodeError, FilepipeError
from ..fileutil import (
    FINGERPRINT_COLUMNS,
    NOT_UTF8,
    NOT_UTF8_FOLDER,
    NotRegularFileError,
    atomic_write,
    check_folder,
    display_path,
    is_temp_name,
    is_utf8,
    not_a_file_reason,
    open_regular,
    resolve_path,
    row_name,
)
from ..frames import (
    cast_column,
    cast_key_column,
    check_keys,
    check_source_rows,
    declared_sql_type,
    frame_dtype,
)
from .base import TableStore
from .files import FileStore, file_of_folder

if TYPE_CHECKING:
    import pandas as pd
    import sqlalchemy as sa

MULTI_ROW_ADAPTERS = ("csv", "xlsx", "parquet")  # files of many rows each
ADAPTERS = ("json", "text", "bytes", *MULTI_ROW_ADAPTERS)
CONTENT_COLUMN = {"text": "text", "bytes": "data"}
_FIELD = re.compile(r"\{([^{}]*)\}")
_ANY = "[^/]+"
_NAME_MAX = 255  # bytes in one file name, on every common file system
_SURROGATES = "lone surrogates, as decoding undecodable bytes with surrogateescape gives"


class TableStoreFiledir(TableStore):
    """A folder where each file is one row and the path pattern names the keys."""

    file_backed = True

    def __new__(cls, *args: Any, **kwargs: Any) -> TableStoreFiledir:
        adapter = kwargs.get("adapter", args[1] if len(args) > 1 else "json")
        if cls is TableStoreFiledir and adapter in MULTI_ROW_ADAPTERS:
            cls = FolderOfTables  # files of many rows each: the keys partly in the path
        return super().__new__(cls)

    def __init__(self, pattern: str | os.PathLike, adapter: str = "json",
                 primary_keys: Sequence[str] | None = None,
                 dtypes: Mapping[str, Any] | None = None, *, sheet: str | None = None,
                 formats: Mapping[str, str] | None = None,
                 widths: Mapping[str, float] | None = None,
                 options: Mapping[str, Any] | None = None) -> None:
        self._setup(pattern, adapter, dtypes)
        given = [n for n, v in (("sheet", sheet), ("formats", formats), ("widths", widths),
                                ("options", options)) if v is not None]
        if given:
            raise ValueError(f"TableStoreFiledir({self.pattern}): {', '.join(given)} go(es) with "
                             f"adapter='xlsx' (sheet, formats, widths) or 'csv' (options), not "
                             f"{adapter!r}")
        if primary_keys is None:
            self.primary_keys = list(self.fields)
        else:
            self.primary_keys = list(primary_keys)
            if sorted(self.primary_keys) != sorted(self.fields):
                hint = ("; for files of many rows each, name the adapter (adapter='csv', "
                        "'xlsx' or 'parquet')" if set(self.fields) < set(self.primary_keys) else "")
                raise ValueError(
                    f"TableStoreFiledir({self.pattern}): primary_keys {self.primary_keys} must "
                    f"be exactly the pattern's fields {self.fields} (the path names each row){hint}")
        content = CONTENT_COLUMN.get(adapter)
        if content is not None and content in self.fields:
            raise ValueError(f"TableStoreFiledir({self.pattern}): a key cannot be named "
                             f"{content!r}: the {adapter} adapter keeps the content there")
        self._finish(self.primary_keys)

    def _setup(self, pattern: str | os.PathLike, adapter: str,
               dtypes: Mapping[str, Any] | None) -> None:
        """The pattern compiled, the root resolved (the part every adapter shares)."""
        if adapter not in ADAPTERS:
            raise ValueError(f"TableStoreFiledir({pattern!s}): unknown adapter {adapter!r}; "
                             f"use one of {', '.join(ADAPTERS)}")
        self.pattern = str(pattern)
        self.adapter = adapter
        self.dtypes = dict(dtypes or {})
        root_text, rest, fields, segments, full, repeats = _compile(self.pattern)
        self.fields = list(fields)
        self.root: Path = resolve_path(root_text or ".")
        self._root_str = str(self.root)
        self._prefix = os.path.join(self._root_str, "")
        self._rest = rest
        self._segments = segments            # one compiled matcher per path component
        self._full = full                    # the whole relative path, one group per field
        self._group_fields = fields          # field of each capturing group
        self._repeats = repeats               # a field used twice: check whole paths
        self._columns_seen: list[str] = []    # columns of the rows read last (schema hint)
        self._names_ok: set[str] = set()      # last-component names known to match
        self._skipped: dict[str, str] = {}    # entries the last walk left out, with why

    def _finish(self, path_keys: list[str]) -> None:
        """`path_keys`: the columns whose values make a file's path, in the order
        `_path_of` takes them (the pattern's fields, in some order)."""
        self._path_keys = path_keys
        self._typed_keys = [k for k in path_keys if k in self.dtypes]
        self._fields_in_key_order = self.fields == path_keys

    # --- description ---------------------------------------------------------------------
    def describe(self) -> str:
        return os.path.join(self._root_str, self._rest)

    def __repr__(self) -> str:
        return (f"TableStoreFiledir({self.pattern!r}, adapter={self.adapter!r}, "
                f"primary_keys={self.primary_keys})")

    def location(self) -> Path:
        return self.root

    def watch_paths(self) -> list[Path]:
        return [self.root]

    def owns_path(self, path: Path) -> bool:
        """A file the pattern matches, or a folder on the way to one (the root included)."""
        text = str(path)
        if text == self._root_str:
            return True
        if not text.startswith(self._prefix):
            return False
        parts = _rel(text, len(self._prefix)).split("/")
        if len(parts) > len(self._segments) or any(
                not part or part[0] == "." or is_temp_name(part) or not seg.fullmatch(part)
                for part, seg in zip(parts, self._segments)):
            return False
        return len(parts) < len(self._segments) or bool(self._full.fullmatch("/".join(parts)))

    def skipped_files(self) -> dict[str, str]:
        return dict(self._skipped)

    def key_types(self) -> dict[str, sa.types.TypeEngine]:
        """Keys come from file names: text, unless `dtypes` gives them a type."""
        import sqlalchemy as sa

        return {k: declared_sql_type(self.dtypes[k]) if k in self.dtypes
                else sa.String() for k in self.primary_keys}

    def empty(self) -> pd.DataFrame:
        import pandas as pd

        cols = list(self.primary_keys)
        content = CONTENT_COLUMN.get(self.adapter)
        if content is not None:
            cols.append(content)
        else:
            cols += [c for c in self.dtypes if c not in cols]
        return pd.DataFrame({c: pd.Series([], dtype=self._dtype_of(c)) for c in cols})

    def _dtype_of(self, col: str) -> Any:
        if col in self.dtypes:
            return frame_dtype(self.dtypes[col], key=col in self.primary_keys)
        if col in self.primary_keys or (col == "text" and self.adapter == "text"):
            return "str"
        return object

    # --- listing -------------------------------------------------------------------------
    def _walk(self, stat: bool) -> tuple[list[str], list[os.stat_result]]:
        """One scandir walk: paths (and stats) of the files the pattern matches.

        Only folders whose names match the pattern's components at their depth are
        entered; hidden and temp/lock names are skipped at every level. Matching names
        that are not UTF-8, and matching entries that are neither files nor folders, are
        recorded for `skipped_files()`.
        """
        if not is_utf8(self._root_str):
            raise FilepipeError(f"{display_path(self._root_str)}: the path of the folder of "
                                f"{display_path(self.describe())} is not valid UTF-8; rename it")
        paths: list[str] = []
        stats: list[os.stat_result] = []
        skipped: dict[str, str] = {}
        last = len(self._segments) - 1
        full = self._full.fullmatch if self._repeats else None
        prefix_len = len(self._prefix)
        temp, add_path, add_stat = is_temp_name, paths.append, stats.append
        known = self._names_ok  # file names already checked against the pattern
        if len(known) > 1_000_000:
            known.clear()
        add_known = known.add
        stack = [(self._root_str, 0)]
        while stack:
            folder, depth = stack.pop()
            try:
                it = os.scandir(folder)
            except FileNotFoundError:  # no folder: no rows
                continue
            except NotADirectoryError:  # the root (or a parent) is a file: say so
                if depth == 0:
                    check_folder(self.root, self.describe())
                continue
            # PermissionError and other OS errors propagate: rows must not vanish because
            # a folder could not be listed for a moment
            match = self._segments[depth].fullmatch
            with it:
                if depth < last:
                    for entry in it:
                        name = entry.name
                        if name[0] == "." or not match(name) or is_temp_name(name):
                            continue
                        try:
                            if not entry.is_dir():
                                continue
                        except OSError:
                            continue
                        if is_utf8(name):
                            stack.append((entry.path, depth + 1))
                        else:
                            skipped[display_path(entry.path)] = NOT_UTF8_FOLDER
                    continue
                for entry in it:  # the hot loop: one set lookup and one stat per file
                    name = entry.name
                    if name not in known:
                        if name[0] == "." or not match(name) or temp(name):
                            continue
                        if not is_utf8(name):
                            skipped[display_path(entry.path)] = NOT_UTF8
                            continue
                        add_known(name)
                    path = entry.path
                    if full is not None and not full(_rel(path, prefix_len)):
                        continue
                    try:
                        if not entry.is_file():  # follows links: a link to a file is a row
                            reason = not_a_file_reason(entry)
                            if reason is not None:
                                skipped[path] = reason
                            continue
                        if stat:
                            add_stat(entry.stat())
                    except FileNotFoundError:  # deleted during the walk
                        continue
                    add_path(path)
        self._skipped = skipped
        return paths, stats

    def list_files(self) -> pd.DataFrame:
        import numpy as np
        import pandas as pd

        paths, stats = self._walk(stat=True)
        n = len(paths)
        return pd.DataFrame({
            "path": pd.Series(paths, dtype="str"),
            "size": np.fromiter((s.st_size for s in stats), dtype=np.int64, count=n),
            "mtime_ns": np.fromiter((s.st_mtime_ns for s in stats), dtype=np.int64, count=n),
            "inode": np.fromiter((s.st_ino for s in stats), dtype=np.uint64, count=n)
            .view(np.int64),
        }, columns=FINGERPRINT_COLUMNS)

    # --- reading -------------------------------------------------------------------------
    def read_files(self, paths: list[str]) -> dict[str, pd.DataFrame]:
        result = {}
        for p in paths:
            p = str(p)
            record = self._read_record(p)
            result[p] = self._frame([record], [p]) if record is not None else self.empty()
        return result

    def read_files_frame(self, paths: list[str]) -> pd.DataFrame:
        records, found = [], []
        for p in map(str, paths):
            record = self._read_record(p)
            if record is not None:
                records.append(record)
                found.append(p)
        return self._frame(records, found).assign(_path=found)

    def read_rows(self, idx: pd.DataFrame | None = None) -> pd.DataFrame:
        if idx is None:
            paths = sorted(self._walk(stat=False)[0])
        else:
            missing = [k for k in self.primary_keys if k not in idx.columns]
            if missing:
                raise FilepipeError(f"{self.describe()}: keys to read lack column(s) {missing}")
            if idx.empty:
                return self._empty_like_rows()
            paths = self._paths_for(idx[self.primary_keys].drop_duplicates())
        records, found = [], []
        for p in paths:
            record = self._read_record(p)
            if record is not None:
                records.append(record)
                found.append(p)
        df = self._frame(records, found)
        check_keys(df, self.primary_keys, self.describe())
        return df

    def _empty_like_rows(self) -> pd.DataFrame:
        """No rows, but the columns rows have (the engine asks this to learn the schema).

        The columns of the rows this store read last; before any read, those of the
        first file (one file opened, nothing written).
        """
        if not self._columns_seen and self.adapter == "json":
            paths = sorted(self._walk(stat=False)[0])
            for p in paths[:1]:
                try:
                    self._frame([r for r in [self._read_record(p)] if r is not None], [p])
                except (FilepipeError, ValueError):
                    pass  # a bad file: sync reports it
        empty = self.empty()
        extra = [c for c in self._columns_seen if c not in empty.columns]
        if extra:
            import pandas as pd

            empty = empty.assign(**{c: pd.Series([], dtype=object) for c in extra})
        return empty

    def _keys_of(self, path: str) -> dict[str, str]:
        """Key values (text) parsed from a path under the root."""
        m = self._full.fullmatch(_rel(path, len(self._prefix))) \
            if path.startswith(self._prefix) else None
        if m is None:
            raise FilepipeError(f"{self.describe()}: not a file of this folder pattern: {path}")
        keys = dict(zip(self._group_fields, m.groups()))
        return keys if self._fields_in_key_order else {k: keys[k] for k in self._path_keys}

    def _read_record(self, path: str) -> dict[str, Any] | None:
        """One row: keys from the path, content from the file (None if it vanished)."""
        keys = self._keys_of(path)
        try:
            with open_regular(path) as f:  # never a FIFO: the listing reports those
                data = f.read()
        except (FileNotFoundError, NotADirectoryError, NotRegularFileError):
            return None
        if self.adapter == "bytes":
            return {**keys, "data": data}
        if self.adapter == "text":
            try:
                return {**keys, "text": data.decode("utf-8")}
            except UnicodeDecodeError as exc:
                raise FileDecodeError(f"{path}: not UTF-8 text: {exc}") from exc
        try:
            obj = json.loads(data)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            raise FileDecodeError(f"{path}: not valid JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise FilepipeError(f"{path}: holds a JSON {_json_kind(obj)}, not an object; each "
                                f"file of {self.describe()} must hold one JSON object (one row)")
        for k, text in keys.items():
            if k in obj:
                value = obj.pop(k)
                if not self._agrees(k, value, text):
                    raise FilepipeError(
                        f"{path}: field {k!r} = {value!r} inside the file disagrees with "
                        f"{k}={text!r} in its path (the path names the row; fix or remove the field)")
        return {**keys, **obj}

    def _agrees(self, key: str, value: Any, text: str) -> bool:
        """Does a key field inside a JSON file say the same as the path?"""
        if value is None or (isinstance(value, str) and value == text):
            return True
        if isinstance(value, bool):
            return str(value).lower() == text.lower()
        if key in self.dtypes:
            import pandas as pd

            try:
                typed, bad = cast_column(pd.Series([text, value], dtype=object), self.dtypes[key])
            except (TypeError, ValueError):
                return False
            return not len(bad) and bool(typed.iloc[0] == typed.iloc[1])
        if isinstance(value, (int, float)):
            try:
                return float(text) == float(value)
            except ValueError:
                return False
        return False

    def _frame(self, records: list[dict[str, Any]], paths: list[str]) -> pd.DataFrame:
        """Rows from records, key columns first, `dtypes` applied (errors name the file)."""
        import pandas as pd

        if not records:
            return self.empty()
        df = pd.DataFrame.from_records(records)
        self._columns_seen = list(df.columns)
        text_cols = [k for k in self.primary_keys if k not in self.dtypes]
        if self.adapter == "text":
            text_cols.append("text")
        for c in text_cols:  # pandas infers str already; cast only where it did not
            if df[c].dtype != "str":
                df[c] = df[c].astype("str")
        # every value that does not fit its declared type, each named by its file
        keys = self.primary_keys  # (typed only: duplicates are for the callers to find)
        if len(paths) == 1:
            return check_source_rows(df, keys, self.dtypes, paths[0], key_checks=False)
        return check_source_rows(df, keys, self.dtypes, self.describe(), paths.__getitem__,
                                 key_checks=False)

    # --- paths of keys -------------------------------------------------------------------
    def _path_of(self, values: Sequence[Any]) -> str:
        """The canonical path of one row's key values (in primary-key order)."""
        texts = {}
        for k, v in zip(self._path_keys, values):
            text = _key_text(v)
            if text is None:
                raise FilepipeError(f"{self.describe()}: key {k}={v!r} is missing (None/NaN); "
                                    "each row's keys name its file: give every row a value")
            if (not text or "/" in text or os.sep in text or "\0" in text
                    or text in (".", "..")):
                raise FilepipeError(f"{self.describe()}: key {k}={v!r} cannot be part of a file "
                                    "name (empty, '.', '..' or holds a path separator); "
                                    "change the key value")
            if not is_utf8(text):
                raise FilepipeError(f"{self.describe()}: key {k}={v!r} is not valid Unicode "
                                    f"({_SURROGATES}), so it cannot name a file; clean the key")
            texts[k] = text
        rel = _FIELD.sub(lambda m: texts[m.group(1)], self._rest)
        m = self._full.fullmatch(rel)
        if m is None or any(texts[f] != g for f, g in zip(self._group_fields, m.groups())):
            raise FilepipeError(f"{self.describe()}: keys {texts} give the path {rel!r}, which "
                                "does not read back as the same keys")
        parts = rel.split("/")
        if any(part[0] == "." or is_temp_name(part) for part in parts):
            raise FilepipeError(f"{self.describe()}: keys {texts} give the path {rel!r}, a hidden "
                                "or temporary file name that this store ignores")
        longest = max(len(part.encode("utf-8")) for part in parts)
        if longest > _NAME_MAX:
            shown = ", ".join(f"{k}={t!r:.40}" for k, t in texts.items())
            raise FilepipeError(f"{self.describe()}: keys {shown} give a file name of {longest} "
                                f"bytes, longer than the {_NAME_MAX} bytes file systems allow; "
                                "shorten the key values")
        return os.path.join(self._root_str, *parts)

    def _paths_of(self, idx: pd.DataFrame) -> list[str]:
        rows = idx[self._path_keys].itertuples(index=False, name=None)
        return [self._path_of(values) for values in rows]

    def _paths_for(self, idx: pd.DataFrame) -> list[str]:
        """The path of each row of `idx` (absent files included: callers skip them).

        With typed keys a file may name a key non-canonically (``007.json`` for 7):
        keys whose canonical path is absent are looked up in one listing of the folder.
        """
        paths = self._paths_of(idx)
        if self._typed_keys:
            absent = [i for i, p in enumerate(paths) if not os.path.isfile(p)]
            if absent:
                by_key = self._index_by_key()
                keys = list(idx[self._path_keys].itertuples(index=False, name=None))
                for i in absent:
                    paths[i] = by_key.get(_norm_key(keys[i]), paths[i])
        return paths

    def _index_by_key(self) -> dict[tuple, str]:
        """Typed key tuple → path for every file of the folder (typed keys only)."""
        import pandas as pd

        paths = sorted(self._walk(stat=False)[0])
        if not paths:
            return {}
        keys = pd.DataFrame.from_records([self._keys_of(p) for p in paths],
                                         columns=self._path_keys)
        for k in self._typed_keys:
            try:
                typed, bad = cast_key_column(keys[k].astype(object), self.dtypes[k])
            except (TypeError, ValueError):
                return {}
            if len(bad):
                return {}  # a badly named file: reading it reports it
            keys[k] = typed
        return {_norm_key(t): p for t, p in zip(keys.itertuples(index=False, name=None), paths)}

    # --- writing -------------------------------------------------------------------------
    def check_writable(self, df: pd.DataFrame) -> None:
        """Refuse rows whose keys cannot name a file or whose content cannot be written
        (nothing is written; the error names the row's keys and the fix)."""
        if df.empty:
            return
        check_keys(df, self.primary_keys, self.describe())
        check_folder(self.root, self.describe())
        self._paths_of(df)
        self._render(df)

    def upsert_rows(self, df: pd.DataFrame, conn: Any = None) -> None:
        if df.empty:
            return
        check_keys(df, self.primary_keys, self.describe())
        payloads = self._render(df)
        paths = self._paths_for(df)
        for path, payload in zip(paths, payloads):
            if _same_bytes(path, payload):
                continue
            atomic_write(Path(path), functools.partial(Path.write_bytes, data=payload))

    def delete_rows(self, idx: pd.DataFrame, conn: Any = None) -> None:
        if idx.empty:
            return
        folders = set()
        for path in self._paths_for(idx[self.primary_keys].drop_duplicates()):
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            folders.add(os.path.dirname(path))
        self._prune(folders)

    def _prune(self, folders: set[str]) -> None:
        """Remove the folders the pattern made that are now empty, deepest first."""
        for folder in sorted(folders, key=len, reverse=True):
            while folder.startswith(self._prefix) and folder != self._root_str:
                try:
                    os.rmdir(folder)
                except OSError:  # not empty (or gone)
                    break
                folder = os.path.dirname(folder)

    def clear(self) -> None:
        for path in self.list_files()["path"]:
            os.unlink(path)

    def _render(self, df: pd.DataFrame) -> list[bytes]:
        """The file content of each row of `df`."""
        content_cols = [c for c in df.columns if c not in self.primary_keys]
        content = CONTENT_COLUMN.get(self.adapter)
        if content is not None:
            if content_cols != [content]:
                raise FilepipeError(
                    f"{self.describe()}: the {self.adapter} adapter stores exactly one column "
                    f"{content!r} besides the keys; got {content_cols or '(none)'}")
            values = df[content].to_numpy(dtype=object)
            want = str if self.adapter == "text" else (bytes, bytearray, memoryview)
            bad = [i for i, v in enumerate(values) if not isinstance(v, want)]
            if bad:
                v = values[bad[0]]
                raise FilepipeError(
                    f"{self.describe()}: column {content!r} must hold "
                    f"{'str' if self.adapter == 'text' else 'bytes'} values; row "
                    f"{row_name(df[self.primary_keys], bad[0])} holds {type(v).__name__} "
                    f"{v!r:.40}")
            if self.adapter == "bytes":
                return [bytes(v) for v in values]
            try:
                return [v.encode("utf-8") for v in values]
            except UnicodeEncodeError:
                i = next(i for i, v in enumerate(values) if not is_utf8(v))
                raise FilepipeError(self._not_unicode(df, i, content)) from None
        columns = {}
        for c in content_cols:
            try:
                columns[c] = _json_column(df[c])
            except (TypeError, ValueError) as exc:
                i, why = _first_unjsonable(df[c], exc)
                raise FilepipeError(f"{self.describe()}: row {row_name(df[self.primary_keys], i)}: "
                                    f"column {c!r} cannot be written as JSON: {why}") from exc
        names = [str(c) for c in content_cols]
        out = []
        for i in range(len(df)):
            obj = {n: columns[c][i] for n, c in zip(names, content_cols)}
            text = json.dumps(obj, ensure_ascii=False, indent=2, allow_nan=False) + "\n"
            try:
                out.append(text.encode("utf-8"))
            except UnicodeEncodeError:
                bad_col = next(c for c in content_cols
                               if not is_utf8(json.dumps(columns[c][i], ensure_ascii=False)))
                raise FilepipeError(self._not_unicode(df, i, bad_col)) from None
        return out

    def _not_unicode(self, df: pd.DataFrame, i: int, column: str) -> str:
        return (f"{self.describe()}: row {row_name(df[self.primary_keys], i)}: column "
                f"{column!r} holds text that is not valid Unicode ({_SURROGATES}), which UTF-8 "
                "cannot encode; clean or replace those characters")


# --- folders of files of many rows each ----------------------------------------------------

class FolderOfTables(TableStoreFiledir):
    """A folder of CSV files, workbooks or Parquet files — many rows each — as one table.

    Made by ``TableStoreFiledir(pattern, adapter="csv" | "xlsx" | "parquet", primary_keys=...)``
    (see the module docstring). Each file is handled by the single-file store of its format
    (`TableStoreCSV`, `TableStoreExcel`, `TableStoreParquet`: reading, checks, buffered
    atomic writes), whose keys are the key columns inside the files; the pattern's fields
    become columns taken from each file's path.
    """

    def __init__(self, pattern: str | os.PathLike, adapter: str = "csv",
                 primary_keys: Sequence[str] | None = None,
                 dtypes: Mapping[str, Any] | None = None, *, sheet: str | None = None,
                 formats: Mapping[str, str] | None = None,
                 widths: Mapping[str, float] | None = None,
                 options: Mapping[str, Any] | None = None) -> None:
        self._setup(pattern, adapter, dtypes)
        where = f"TableStoreFiledir({self.pattern}, adapter={adapter!r})"
        wrong = [n for n, v in (("sheet", sheet), ("formats", formats), ("widths", widths))
                 if v is not None and adapter != "xlsx"]
        wrong += ["options"] if options is not None and adapter != "csv" else []
        if wrong:
            raise ValueError(f"{where}: {', '.join(wrong)} do(es) not go with this adapter "
                             "(sheet, formats and widths go with 'xlsx', options with 'csv')")
        keys = list(primary_keys or [])
        file_keys = [k for k in keys if k not in self.fields]
        if not file_keys:
            example = [*self.fields, *keys[len(self.fields):], "id"]
            raise ValueError(
                f"{where}: each file holds many rows, so primary_keys must name the key "
                f"column(s) inside the files as well as those of the path, e.g. "
                f"primary_keys={list(dict.fromkeys(example))!r}")
        if len(set(keys)) != len(keys):
            raise ValueError(f"{where}: primary_keys {keys} name a column twice")
        self.primary_keys = keys
        #: the keys inside each file (the keys of each file's own store)
        self.file_keys = file_keys
        self.sheet = sheet
        self.formats = dict(formats or {})
        self.widths = dict(widths or {})
        self.options = dict(options or {})
        #: every field is a key: a key's file is known from the key (else every file is
        #: searched for it, and a key may move from one file to another)
        self._disjoint = all(f in keys for f in self.fields)
        self._key_fields = [f for f in self.fields if f in keys]
        self._files: dict[str, FileStore] = {}
        self._kinds: dict[str, str] = {}
        self._is_source = False
        self._path_values: dict[str, dict[str, Any]] = {}
        self._finish(list(self.fields))
        self._template = self._new_file(os.path.join(self._root_str, "(rows)"))  # normalize only

    # --- description ---------------------------------------------------------------------
    def describe(self) -> str:
        where = os.path.join(self._root_str, self._rest)
        return f"{where}[{self.sheet}]" if self.sheet else where

    def __repr__(self) -> str:
        sheet = f", sheet={self.sheet!r}" if self.sheet is not None else ""
        return (f"TableStoreFiledir({self.pattern!r}, adapter={self.adapter!r}{sheet}, "
                f"primary_keys={self.primary_keys})")

    def key_types(self) -> dict[str, sa.types.TypeEngine]:
        """Path keys are text unless `dtypes` types them; keys inside the files have the
        types their first rows give, unless `dtypes` names one."""
        import sqlalchemy as sa

        types: dict[str, sa.types.TypeEngine] = {}
        for k in self.primary_keys:
            if k in self.dtypes:
                types[k] = declared_sql_type(self.dtypes[k])
            elif k in self.fields:
                types[k] = sa.String()
        return types

    def empty(self) -> pd.DataFrame:
        import pandas as pd

        cols = list(dict.fromkeys([*self.fields, *self.primary_keys, *self.dtypes]))
        return pd.DataFrame({c: pd.Series([], dtype=self._dtype_of(c)) for c in cols})

    def _dtype_of(self, col: str) -> Any:
        if col in self.dtypes:
            return frame_dtype(self.dtypes[col], key=col in self.primary_keys)
        return "str" if col in self.fields else object

    # --- the store of each file ----------------------------------------------------------
    def _new_file(self, path: str) -> FileStore:
        from .csv import TableStoreCSV
        from .excel import TableStoreExcel
        from .parquet import TableStoreParquet

        dtypes = {c: d for c, d in self.dtypes.items() if c not in self.fields}
        store: FileStore
        with file_of_folder():  # a file name may hold '*' or '?': no glob check
            if self.adapter == "csv":
                store = TableStoreCSV(path, self.file_keys, dtypes, **self.options)
            elif self.adapter == "xlsx":
                store = TableStoreExcel(path, self.sheet, self.file_keys, dtypes,
                                        formats=self.formats, widths=self.widths)
            else:
                store = TableStoreParquet(path, self.file_keys, dtypes=dtypes)
        if self._kinds:
            store.use_written_kinds(dict(self._kinds))
        return store

    def _file(self, path: str) -> FileStore:
        """The store of the file at `path` (kept: it caches the file's rows while the file
        is unchanged, and buffers writes until `flush`)."""
        store = self._files.get(path)
        if store is None:
            store = self._files[path] = self._new_file(path)
            texts = self._keys_of(path)
            store.fixed_columns = {f: (t, functools.partial(self._agrees_or_empty, f, text=t))
                                   for f, t in texts.items()}
        store._is_source = store._is_source or self._is_source
        return store

    def _agrees_or_empty(self, key: str, value: Any, text: str) -> bool:
        """Does a column inside a file that is named like a field say what the path says?"""
        import pandas as pd

        if value is None or (not isinstance(value, (list, dict)) and pd.isna(value)):
            return True
        return _key_text(value) == text or self._agrees(key, value, text)

    def _path_columns(self, path: str) -> dict[str, Any]:
        """The value of each field in the path of `path`, typed by `dtypes`."""
        import pandas as pd

        found = self._path_values.get(path)
        if found is not None:
            return found
        values: dict[str, Any] = {}
        for f, text in self._keys_of(path).items():
            if f in self.dtypes:
                try:
                    cast = cast_key_column if f in self.primary_keys else cast_column
                    typed, bad = cast(pd.Series([text], dtype=object), self.dtypes[f])
                    fits = not len(bad)
                except (TypeError, ValueError):
                    fits = False
                if not fits:
                    raise FilepipeError(f"{path}: {f}={text!r} in the file's path cannot be read "
                                        f"as {self.dtypes[f]}; rename the file")
                values[f] = typed.iloc[0]
            else:
                values[f] = text
        if len(self._path_values) > 100_000:
            self._path_values.clear()
        self._path_values[path] = values
        return values

    def _with_path(self, df: pd.DataFrame, path: str) -> pd.DataFrame:
        """The rows of one file with the path's fields in front (as their own columns)."""
        import pandas as pd

        values = self._path_columns(path)
        n = len(df)
        front = {}
        for f, v in values.items():
            front[f] = pd.Series([v] * n, dtype=object).astype(self._dtype_of(f))
        rest = df.drop(columns=[c for c in self.fields if c in df.columns]).reset_index(drop=True)
        return pd.concat([pd.DataFrame(front, index=rest.index), rest], axis=1)

    def _rows_of(self, path: str) -> pd.DataFrame:
        return self._with_path(self._file(path).frame(), path)

    # --- reading -------------------------------------------------------------------------
    def read_files(self, paths: list[str]) -> dict[str, pd.DataFrame]:
        self._is_source = True  # the sync reads only sources: empty keys are now errors
        result = {}
        for p in map(str, paths):
            store = self._file(p)
            result[p] = self._with_path(store.read_files([p])[p], p)
        return result

    def read_files_frame(self, paths: list[str]) -> pd.DataFrame:
        from ..frames import concat_rows

        frames = [df.assign(_path=p) for p, df in self.read_files(paths).items()]
        found = concat_rows(frames)
        if found is not None:
            return found
        import pandas as pd

        return self.empty().assign(_path=pd.Series([], dtype="str"))

    def read_rows(self, idx: pd.DataFrame | None = None) -> pd.DataFrame:
        from ..frames import align_keys, concat_rows

        keys = self.primary_keys
        if idx is None:
            df = concat_rows([self._rows_of(p) for p in self._all_paths()])
            if df is None:
                return self._empty_like_rows()
            check_keys(df, keys, self.describe())  # a key in two files
            return df
        missing = [k for k in keys if k not in idx.columns]
        if missing:
            raise FilepipeError(f"{self.describe()}: keys to read lack column(s) {missing}")
        if idx.empty:
            return self._empty_like_rows()
        wanted = idx[keys].drop_duplicates()
        if self._disjoint:
            paths = list(dict.fromkeys(self._paths_for(wanted[self.fields].drop_duplicates())))
            paths = [p for p in paths if p in self._files or os.path.isfile(p)]
        else:
            paths = self._all_paths()
        parts = []
        for p in paths:
            rows = self._rows_of(p)
            if len(rows):
                parts.append(rows.merge(align_keys(wanted, rows, keys), on=keys))
        df = concat_rows(parts)
        return df if df is not None else self._empty_like_rows()

    def _all_paths(self) -> list[str]:
        """The files of the table: those on disk and those buffered, not yet written."""
        listed = self._walk(stat=False)[0]
        pending = [p for p, s in self._files.items() if s.is_dirty]
        return sorted(set(listed) | set(pending))

    def _empty_like_rows(self) -> pd.DataFrame:
        """No rows, with the columns of the files (of one of them: the engine asks this to
        learn the schema; one file is read at most)."""
        import pandas as pd

        columns: list[str] = []
        for store in self._files.values():
            if store._frame is not None:
                columns = list(store._frame.columns)
                break
        else:
            for p in sorted(self._walk(stat=False)[0])[:1]:
                try:
                    columns = list(self._file(p).frame().columns)
                except Exception:  # noqa: BLE001 - a bad file: the sync reports it
                    pass
        empty = self.empty()
        extra = [c for c in columns if c not in empty.columns]
        return empty.assign(**{c: pd.Series([], dtype=object) for c in extra}) if extra else empty

    # --- writing -------------------------------------------------------------------------
    def use_written_kinds(self, kinds: dict[str, str]) -> None:
        self._kinds = {c: k for c, k in kinds.items() if c not in self.fields}
        for store in [self._template, *self._files.values()]:
            store.use_written_kinds(dict(self._kinds))

    def _targets(self, df: pd.DataFrame) -> list[str]:
        """The file of each row of `df` (refusing, naming the row, values that cannot
        make a path)."""
        import pandas as pd

        missing = [f for f in self.fields if f not in df.columns]
        if missing:
            from ..errors import MissingColumnsError

            raise MissingColumnsError(
                f"{self.describe()}: rows lack column(s) {', '.join(map(repr, missing))}, which "
                "name each row's file")
        tuples = list(df[self.fields].itertuples(index=False, name=None))
        distinct = list(dict.fromkeys(tuples))
        paths = self._paths_for(pd.DataFrame.from_records(distinct, columns=self.fields))
        where = dict(zip(distinct, paths))
        return [where[t] for t in tuples]

    def _groups(self, targets: list[str]) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {}
        for i, p in enumerate(targets):
            groups.setdefault(p, []).append(i)
        return groups

    def check_writable(self, df: pd.DataFrame) -> None:
        """Refuse, before anything is written, rows whose fields cannot name a file, and
        rows the format of their file cannot hold (see the single-file stores)."""
        if df.empty:
            return
        check_keys(df, self.primary_keys, self.describe())
        check_folder(self.root, self.describe())
        df = df.reset_index(drop=True)
        for path, rows in self._groups(self._targets(df)).items():
            self._file(path).check_writable(self._content(df.iloc[rows]))

    def _content(self, df: pd.DataFrame) -> pd.DataFrame:
        """`df` without the columns the path holds (keys are not written into files)."""
        return df.drop(columns=[c for c in self.fields if c in df.columns]).reset_index(drop=True)

    def normalize(self, df: pd.DataFrame) -> pd.DataFrame:
        """`df` as reading its files back gives it: the content as its format gives it
        back, fields that are not keys as the text of their path (typed by `dtypes`)."""
        import pandas as pd

        if df.empty:
            return df
        content = self._template.normalize(self._content(df))
        out = df.reset_index(drop=True).copy()
        for c in content.columns:
            out[c] = content[c]  # (both with a fresh index)
        for f in self.fields:
            if f in self.primary_keys or f not in out.columns:
                continue
            texts = pd.Series([_key_text(v) for v in out[f].tolist()], dtype=object)
            try:
                typed, bad = cast_column(texts, self.dtypes.get(f, "str"))
            except (TypeError, ValueError):
                continue
            if not len(bad):
                out[f] = typed.to_numpy() if f in self.dtypes else typed.astype("str")
        return out

    def upsert_rows(self, df: pd.DataFrame, conn: Any = None) -> None:
        if df.empty:
            return
        check_keys(df, self.primary_keys, self.describe())
        df = df.reset_index(drop=True)
        targets = self._targets(df)
        groups = self._groups(targets)
        if not self._disjoint:  # a key lives in one file: take it out of the others
            self._remove(df[self.primary_keys], keep=targets)
        for path, rows in groups.items():
            self._file(path).upsert_rows(self._content(df.iloc[rows]))

    def delete_rows(self, idx: pd.DataFrame, conn: Any = None) -> None:
        if idx.empty:
            return
        wanted = idx[self.primary_keys].drop_duplicates().reset_index(drop=True)
        if not self._disjoint:
            self._remove(wanted)
            return
        paths = self._paths_for(wanted[self.fields])
        for path, rows in self._groups(paths).items():
            if path in self._files or os.path.isfile(path):
                self._file(path).remove_keys(wanted.iloc[rows][self.file_keys])

    def _remove(self, idx: pd.DataFrame, keep: list[str] | None = None) -> None:
        """Take the keys of `idx` out of every file that may hold them (the files whose
        path gives the same key fields), except row i's file `keep[i]`."""
        import numpy as np
        import pandas as pd

        from ..frames import align_keys

        by_fields: dict[tuple, list[int]] = {}  # the rows of each key-field value
        for i, t in enumerate(idx[self._key_fields].itertuples(index=False, name=None)):
            by_fields.setdefault(tuple(_key_text(v) for v in t), []).append(i)
        held = []  # the file keys of the files that may hold one of the rows, in one frame
        for path in self._all_paths():
            mine = tuple(_key_text(self._path_columns(path)[f]) for f in self._key_fields)
            if mine in by_fields:
                frame = self._file(path).frame()
                if len(frame):
                    held.append(frame[self.file_keys].assign(_fp_path=path))
        if not held:
            return
        every = pd.concat(held, ignore_index=True)
        rows = idx[self.file_keys].reset_index(drop=True).assign(_fp_row=np.arange(len(idx)))
        hits = every.merge(align_keys(rows, every, self.file_keys), on=self.file_keys)
        for path, found in hits.groupby("_fp_path", sort=False):
            wanted = [i for i in found["_fp_row"].tolist() if keep is None or keep[i] != path]
            if wanted:  # only files holding one of the keys change
                self._file(str(path)).remove_keys(idx.iloc[np.asarray(wanted)][self.file_keys])

    def flush(self) -> None:
        """Write each file whose rows changed (atomically); a file left without rows is
        deleted (a workbook holding other sheets keeps them, with this sheet empty)."""
        folders = set()
        for path in sorted(self._files):
            store = self._files[path]
            if not store.is_dirty:
                continue
            if len(store.frame()) or self._keeps_other_sheets(path):
                store.flush()
                continue
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            folders.add(os.path.dirname(path))
            store.discard()
        self._prune(folders)

    def _keeps_other_sheets(self, path: str) -> bool:
        if self.adapter != "xlsx" or not os.path.isfile(path):
            return False
        from ..xlsx import sheet_names

        try:
            names = sheet_names(path)
        except Exception:  # noqa: BLE001 - not a workbook any more: it is replaced
            return False
        from .excel import TableStoreExcel

        store = self._files[path]
        mine = store.resolve_sheet(names) if isinstance(store, TableStoreExcel) else None
        return any(n != mine for n in names)

    def discard(self) -> None:
        for store in self._files.values():
            store.discard()
        self._files.clear()
        self._path_values.clear()

    def clear(self) -> None:
        for path in self._all_paths():
            self._file(path).clear()


# --- the pattern ---------------------------------------------------------------------------

def _compile(pattern: str) -> tuple[str, str, list[str], list[re.Pattern], re.Pattern, bool]:
    """(root text, relative pattern, fields (= groups), per-component matchers, full regex,
    whether a field repeats)."""
    norm = pattern.replace(os.sep, "/") if os.sep != "/" else pattern
    where = f"TableStoreFiledir({pattern!r})"
    first = norm.find("{")
    if first < 0:
        raise ValueError(f"{where}: the pattern names no key field; write it like "
                         "'inbox/{order_id}.json'")
    cut = norm.rfind("/", 0, first)
    root_text = norm[:cut] if cut > 0 else ("/" if cut == 0 else "")
    rest = norm[cut + 1:]
    fields: list[str] = []
    segments: list[re.Pattern] = []
    full_parts: list[str] = []
    seen: dict[str, int] = {}
    repeats = False
    for part in rest.split("/"):
        if part in ("", ".", ".."):
            raise ValueError(f"{where}: empty, '.' or '..' path component after the first field")
        seg, pos, prev_field = [], 0, False
        for m in _FIELD.finditer(part):
            literal = part[pos:m.start()]
            _check_literal(literal, where)
            name = m.group(1)
            if not name or name != name.strip() or ":" in name or "!" in name:
                raise ValueError(f"{where}: bad field {{{name}}}: write a column name, "
                                 "like {order_id}")
            if prev_field and not literal:
                raise ValueError(f"{where}: fields {{{fields[-1] if fields else ''}}}{{{name}}} "
                                 "touch: put a separator between them")
            seg.append(re.escape(literal))
            full_parts.append(re.escape(literal))
            seg.append(_ANY)
            if name in seen:
                repeats = True
                full_parts.append(f"(?:\\{seen[name]})")
            else:
                fields.append(name)
                seen[name] = len(fields)
                full_parts.append(f"({_ANY})")
            pos, prev_field = m.end(), True
        literal = part[pos:]
        _check_literal(literal, where)
        seg.append(re.escape(literal))
        full_parts.append(re.escape(literal) + "/")
        if part.startswith("."):
            raise ValueError(f"{where}: hidden names (starting with '.') are ignored; "
                             f"the component {part!r} would never match")
        segments.append(re.compile("".join(seg), re.DOTALL))
    full = re.compile("".join(full_parts)[:-1], re.DOTALL)
    return root_text, rest, fields, segments, full, repeats


def _check_literal(text: str, where: str) -> None:
    if "{" in text or "}" in text:
        raise ValueError(f"{where}: unbalanced brace in {text!r}")


def _rel(path: str, prefix_len: int) -> str:
    rel = path[prefix_len:]
    return rel.replace(os.sep, "/") if os.sep != "/" else rel


# --- values --------------------------------------------------------------------------------

def _key_text(value: Any) -> str | None:
    """A key value as it appears in a path (None for a missing value)."""
    import numpy as np
    import pandas as pd

    if isinstance(value, str):
        return value
    if value is None or (not isinstance(value, (list, dict)) and pd.isna(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return str(int(f)) if f.is_integer() else repr(f)
    if isinstance(value, dt.datetime):
        ts = pd.Timestamp(value)
        return ts.strftime("%Y-%m-%d") if ts == ts.normalize() and ts.tz is None else ts.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _norm_key(values: tuple) -> tuple:
    """Key tuple with numpy scalars as Python values (for dict lookups)."""
    return tuple(v.item() if hasattr(v, "item") and not isinstance(v, str) else v for v in values)


def _json_column(s: pd.Series) -> list[Any]:
    """A column's values as JSON-ready Python objects (vectorised for plain dtypes)."""
    import numpy as np
    import pandas as pd

    dtype = s.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "biu":
        return s.to_numpy().tolist()
    if isinstance(dtype, np.dtype) and dtype.kind == "f":
        values = s.to_numpy()
        if np.isinf(values).any():
            raise ValueError("infinite values have no JSON form")
        return [None if v != v else v for v in values.tolist()]
    if isinstance(dtype, (np.dtype, pd.DatetimeTZDtype)) and dtype.kind in "mM":
        return [None if v is pd.NaT else v.isoformat() for v in s]
    return [_jsonable(v) for v in s.to_numpy(dtype=object)]


def _jsonable(v: Any) -> Any:
    import numpy as np
    import pandas as pd

    if v is None or isinstance(v, (str, bool)):
        return v
    if isinstance(v, (int, np.integer)) and not isinstance(v, np.bool_):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if f != f:
            return None
        if f in (float("inf"), float("-inf")):
            raise ValueError("infinite values have no JSON form; replace them (with None, "
                             "say)")
        return f
    if v is pd.NaT or v is pd.NA:
        return None
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return [_jsonable(x) for x in v.tolist()]
    if isinstance(v, (set, frozenset)):
        return [_jsonable(x) for x in sorted(v, key=repr)]
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, (pd.Timedelta, dt.timedelta, np.timedelta64)):
        return pd.Timedelta(v).isoformat()
    if isinstance(v, np.datetime64):
        return None if np.isnat(v) else pd.Timestamp(v).isoformat()
    if isinstance(v, decimal.Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        raise TypeError("bytes have no JSON form (use adapter='bytes' for binary files)")
    raise TypeError(f"{type(v).__name__} value {v!r:.40} has no JSON form; convert it to "
                    "text, a number, a list or a dict")


def _first_unjsonable(s: pd.Series, exc: Exception) -> tuple[int, Exception]:
    """Position and error of the first value of `s` with no JSON form (after `exc`)."""
    for i, v in enumerate(s.to_numpy(dtype=object)):
        try:
            _jsonable(v)
        except (TypeError, ValueError) as err:
            return i, err
    return 0, exc


def _json_kind(obj: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(obj), type(obj).__name__)


def _same_bytes(path: str, payload: bytes) -> bool:
    """Does the file at `path` hold exactly `payload`? (size first, then content)."""
    try:
        st = os.stat(path)
        if not S_ISREG(st.st_mode) or st.st_size != len(payload):
            return False
        with open(path, "rb") as f:
            return f.read() == payload
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return False
