"""Parquet as a keyed table: one file, or a hive-style partitioned dataset.

``TableStoreParquet("data/sales.parquet", primary_keys=["id"])`` keeps the table in one
file (a `FileStore`: read once while its fingerprint holds, written atomically in
`flush()`).

``TableStoreParquetDataset("data/sales", primary_keys=["region", "id"], partition_cols=["region"])``
keeps it in a directory ``region=EU/part-0.parquet``, ``region=US/part-0.parquet``... Each
file is handled by the same single-file machinery (`_PartitionFile`), so a partition is
read only when its fingerprint changed and `flush()` rewrites only the partitions that
changed; a partition left without rows loses its file and its empty folders.

Partition values are taken from the path (URL-quoted, ``__HIVE_DEFAULT_PARTITION__`` for
null). Files filepipe writes record the Arrow type of each partition column in their
footer, so values come back with the type they were written with (ints stay ints, dates
stay dates) and row hashes match on re-read. For files written by other tools the value
is a string unless the file itself holds the column, or `dtypes` names a type for it.

Writes are deterministic: rows are written in key order, so the same rows give
byte-identical files whatever order they were upserted in.

`check_writable` refuses rows Arrow or Parquet cannot hold (ints beyond 64 bits, a
column mixing lists and dicts or numbers and text, an empty struct), naming the column,
a key and the fix; the writer names the file and column of anything left. Entries of a
dataset that cannot be files (FIFOs, names that are not UTF-8) are left out of the
listing and reported by `skipped_files()`; no FIFO is ever opened.
"""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, unquote

from ..errors import FilepipeError, MissingColumnsError, PipelineError
from ..fileutil import (
    FINGERPRINT_COLUMNS,
    NOT_UTF8,
    NOT_UTF8_FOLDER,
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
from ..frames import align_keys, check_keys, concat_rows, sorted_by_key
from .base import TableStore
from .files import FileStore

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

NULL_SEGMENT = "__HIVE_DEFAULT_PARTITION__"
PART_FILE = "part-0.parquet"
BACKUP_SUFFIX = ".bak.parquet"  # fileutil.backup_path: part-0.<time>.bak.parquet
_PARTITION_META = b"filepipe.partition_types"


# --- the single file ---------------------------------------------------------------------

class TableStoreParquet(FileStore):
    """``TableStoreParquet("data/sales.parquet", primary_keys=["id"])``: the table in one file.

    `dtypes` (column → pandas dtype) fixes types the file does not carry. A partitioned
    dataset is `TableStoreParquetDataset`; a folder of Parquet files named freely (one per
    day, say) is ``TableStoreFiledir("days/{day}.parquet", adapter="parquet", ...)``.
    """

    folder_adapter = "parquet"

    def __init__(self, path: str | os.PathLike, primary_keys: Sequence[str],
                 partition_cols: Sequence[str] | None = None,
                 dtypes: Mapping[str, Any] | None = None) -> None:
        if partition_cols:
            raise PipelineError(
                f"TableStoreParquet({path!s}): a partitioned dataset is "
                f"TableStoreParquetDataset({str(path)!r}, primary_keys={list(primary_keys)}, "
                f"partition_cols={list(partition_cols)})")
        FileStore.__init__(self, path, primary_keys, dtypes)
        self.partition_cols: list[str] = []

    def __repr__(self) -> str:
        return f"TableStoreParquet({str(self.path)!r}, primary_keys={self.primary_keys})"

    def read_file(self, path: Path) -> pd.DataFrame:
        return _to_pandas(_read_table(path))

    def check_writable(self, df: pd.DataFrame) -> None:
        if len(df):
            table = _from_pandas(df, self.describe(), df[self.primary_keys])
            _check_parquet(table.schema, self.describe())

    def write_file(self, df: pd.DataFrame) -> None:
        rows = sorted_by_key(df, self.primary_keys)
        _write_table(self.path, _from_pandas(rows, self.describe(), rows[self.primary_keys]))


# --- the partitioned dataset -------------------------------------------------------------

class _PartitionFile(TableStoreParquet):
    """One file of a dataset: its rows plus the partition columns its path names."""

    def __init__(self, dataset: TableStoreParquetDataset, path: Path) -> None:
        FileStore.__init__(self, path, dataset.primary_keys, dataset.dtypes)
        self.partition_cols = dataset.partition_cols
        self.dataset = dataset

    def empty(self) -> pd.DataFrame:
        return self.dataset.empty()

    def read_file(self, path: Path) -> pd.DataFrame:
        import pyarrow as pa

        segments = self.dataset.segments_of(path)
        table = _read_table(path)
        types = _partition_types(table.schema.metadata)
        n = table.num_rows
        for col, raw in zip(self.partition_cols, segments):
            typ = types.get(col)
            if col in table.column_names:  # written by a tool that keeps it in the file
                typ = typ or table.schema.field(col).type
                table = table.drop_columns([col])
            value = _parse_segment(raw, typ or pa.string(), str(path), col)
            table = table.append_column(col, pa.repeat(value, n))
        return _to_pandas(table)

    def write_file(self, df: pd.DataFrame) -> None:
        import pyarrow as pa

        pcols = self.partition_cols
        keys = [k for k in self.primary_keys if k not in pcols] or self.primary_keys
        rows = sorted_by_key(df, keys)
        table = _from_pandas(rows.drop(columns=pcols), self.describe(), rows[self.primary_keys])
        types = pa.schema([pa.field(c, _arrow_type(df[c], self.describe())) for c in pcols])
        meta = dict(table.schema.metadata or {})
        meta[_PARTITION_META] = base64.b64encode(types.serialize().to_pybytes())
        _write_table(self.path, table.replace_schema_metadata(meta))

    def flush(self) -> None:
        if not self._dirty or self._frame is None:
            return
        if len(self._frame):
            super().flush()
            return
        self.path.unlink(missing_ok=True)
        _prune_empty_dirs(self.path.parent, self.dataset.path)
        self._dirty, self._loaded_fp = False, None


class TableStoreParquetDataset(TableStore):
    """``TableStoreParquetDataset("data/sales", primary_keys=["region", "id"],
    partition_cols=["region"])``: a hive-style dataset ``col=value/.../part-0.parquet``,
    one `_PartitionFile` per file (see the module docstring).

    `dtypes` (column → pandas dtype) fixes types the files do not carry (partition values
    of datasets written by other tools, which otherwise read as strings).
    """

    file_backed = True

    def __init__(self, path: str | os.PathLike, primary_keys: Sequence[str],
                 partition_cols: Sequence[str] | None = None,
                 dtypes: Mapping[str, Any] | None = None) -> None:
        if not primary_keys:
            raise ValueError(f"TableStoreParquetDataset({path!s}): primary_keys must name at least one column")
        if isinstance(partition_cols, str):
            partition_cols = [partition_cols]
        if not partition_cols or len(set(partition_cols)) != len(partition_cols):
            raise ValueError(f"TableStoreParquetDataset({path!s}): partition_cols must name distinct columns")
        self.path: Path = resolve_path(path)
        self.primary_keys = list(primary_keys)
        self.partition_cols = list(partition_cols)
        self.dtypes = dict(dtypes or {})
        self._files: dict[Path, _PartitionFile] = {}
        self._skipped: dict[str, str] = {}  # entries the last full listing left out, with why
        # the partition columns that are keys: a key then lives in exactly one partition
        self._keyed = [c for c in self.partition_cols if c in self.primary_keys]
        self._disjoint = len(self._keyed) == len(self.partition_cols)

    # --- description ---------------------------------------------------------------------
    def describe(self) -> str:
        return f"{self.path}/ (parquet dataset by {', '.join(self.partition_cols)})"

    def __repr__(self) -> str:
        return (f"TableStoreParquetDataset({str(self.path)!r}, primary_keys={self.primary_keys}, "
                f"partition_cols={self.partition_cols})")

    def location(self) -> Path:
        return self.path

    def watch_paths(self) -> list[Path]:
        return [self.path]

    def owns_path(self, path: Path) -> bool:
        """Data files of the dataset (not notes, temp files or backups beside them)."""
        return self.path in path.parents and _is_data_file(path.name)

    def skipped_files(self) -> dict[str, str]:
        return dict(self._skipped)

    def empty(self) -> pd.DataFrame:
        import pandas as pd

        cols = list(dict.fromkeys(self.primary_keys + self.partition_cols + list(self.dtypes)))
        return pd.DataFrame({c: pd.Series([], dtype=self.dtypes.get(c, object)) for c in cols})

    # --- layout --------------------------------------------------------------------------
    def segments_of(self, path: Path) -> list[str | None]:
        """Raw partition values (unquoted; None for null) of a file of the dataset."""
        try:
            parts = Path(path).relative_to(self.path).parts[:-1]
        except ValueError:
            raise FilepipeError(f"{path} is not inside {self.describe()}") from None
        layout = "/".join(f"{c}=..." for c in self.partition_cols)
        if len(parts) != len(self.partition_cols):
            raise FilepipeError(f"{path}: not in a partition folder of {self.describe()} "
                                f"(expected {layout}/file.parquet)")
        values = []
        for col, part in zip(self.partition_cols, parts):
            raw = _segment_value(part, col)
            if raw is False:
                raise FilepipeError(f"{path}: folder {part!r} should be {col}=<value> "
                                    f"(expected {layout}/file.parquet)")
            values.append(raw)
        return values

    def _dir_for(self, values: Iterable[str | None]) -> Path:
        return self.path.joinpath(*(f"{c}={_quote(v)}" for c, v in zip(self.partition_cols, values)))

    def _walk(self, filters: _Filters | None = None) -> list[tuple[str, os.stat_result]]:
        """Parquet files under the directory (one scandir walk), pruned by `filters`.

        A full walk records, for `skipped_files()`, the names that are not UTF-8 and the
        data-file names that are not regular files.
        """
        found: list[tuple[str, os.stat_result]] = []
        skipped: dict[str, str] = {}
        depth = len(self.partition_cols)
        root = str(self.path)
        if not is_utf8(root):
            raise FilepipeError(f"{display_path(root)}: the path of the Parquet dataset is not "
                                "valid UTF-8; rename it")

        def visit(folder: str, level: int, values: tuple) -> None:
            try:
                entries = list(os.scandir(folder))
            except FileNotFoundError:
                return
            except NotADirectoryError:  # the dataset's folder (or a parent) is a file
                if level == 0:
                    check_folder(self.path, self.describe())
                return
            col = self.partition_cols[level] if level < depth else None
            for entry in entries:
                name = entry.name
                raw = _segment_value(name, col) if col is not None else False
                if raw is False and (name.startswith((".", "_")) or is_temp_name(name)):
                    continue
                try:
                    if entry.is_dir():
                        if not is_utf8(name):
                            skipped[display_path(entry.path)] = NOT_UTF8_FOLDER
                        elif filters is None or raw is False or filters.level_ok(col, raw):
                            visit(entry.path, level + 1, values + (raw,))
                    elif _is_data_file(name):
                        if filters is not None and level == depth and not filters.leaf_ok(values):
                            continue
                        if not is_utf8(name):
                            skipped[display_path(entry.path)] = NOT_UTF8
                        elif entry.is_file():
                            found.append((entry.path, entry.stat()))
                        else:
                            reason = not_a_file_reason(entry)
                            if reason is not None:
                                skipped[entry.path] = reason
                except FileNotFoundError:  # removed while we looked
                    continue

        visit(root, 0, ())
        found.sort()
        if filters is None:
            self._skipped = skipped
        return found

    def _filters(self, idx: pd.DataFrame | None) -> _Filters | None:
        if idx is None or not self._keyed:
            return None
        try:
            return _Filters(self.partition_cols, idx[self._keyed].drop_duplicates())
        except Exception:  # noqa: BLE001 - odd key values: read everything instead
            return None

    def _file(self, path: Path | str) -> _PartitionFile:
        path = Path(path)
        store = self._files.get(path)
        if store is None:
            store = self._files[path] = _PartitionFile(self, path)
        return store

    def _paths(self, idx: pd.DataFrame | None = None) -> list[Path]:
        """Files that may hold the keys of `idx` (all when None): on disk or buffered."""
        filters = self._filters(idx)
        on_disk = [Path(p) for p, _ in self._walk(filters)]
        if filters is None:  # a full listing: forget files that are gone
            present = set(on_disk)
            for p in [p for p, s in self._files.items() if p not in present and not s.is_dirty]:
                del self._files[p]
        pending = [p for p, s in self._files.items() if s.is_dirty and not p.exists()
                   and (filters is None or filters.leaf_ok(tuple(self.segments_of(p))))]
        return sorted(set(on_disk) | set(pending))

    # --- reading -------------------------------------------------------------------------
    def read_rows(self, idx: pd.DataFrame | None = None) -> pd.DataFrame:
        keys = self.primary_keys
        if idx is None:
            paths = self._paths()
            frames = [self._file(p).frame() for p in paths]
            df = concat_rows(frames)
            if df is None:
                return frames[0].iloc[0:0].copy() if frames else self.empty()
            if len(frames) > 1 and not (self._disjoint and
                                        len({p.parent for p in paths}) == len(paths)):
                check_keys(df, keys, self.describe())  # a key in two files
            return df
        wanted = idx[keys].drop_duplicates()
        paths = self._paths(wanted) if len(wanted) else []
        parts = []
        for p in paths:
            frame = self._file(p).frame()
            if len(frame):
                parts.append(frame.merge(align_keys(wanted, frame, keys), on=keys))
        df = concat_rows(parts)
        return df if df is not None else self._columns_only()

    def _columns_only(self) -> pd.DataFrame:
        """No rows, but the table's columns (those of any file) when there is one."""
        for p in self._paths():
            frame = self._file(p).frame()
            if len(frame.columns):
                return frame.iloc[0:0].copy()
        return self.empty()

    # --- writing -------------------------------------------------------------------------
    def check_writable(self, df: pd.DataFrame) -> None:
        """Partition values must name folders and the other columns fit one Arrow type
        each, across the whole batch (a dataset's files must agree on their schema)."""
        if df.empty:
            return
        self._check_columns(df)
        check_folder(self.path, self.describe())
        for c in self.partition_cols:
            _format_column(df[c], self.describe())
        table = _from_pandas(df.drop(columns=self.partition_cols), self.describe(),
                             df[self.primary_keys])
        _check_parquet(table.schema, self.describe())

    def _check_columns(self, df: pd.DataFrame) -> None:
        missing = [c for c in self.partition_cols + self.primary_keys if c not in df.columns]
        if missing:
            raise MissingColumnsError(f"{self.describe()}: rows lack column(s) "
                                      f"{', '.join(map(repr, missing))}")

    def upsert_rows(self, df: pd.DataFrame, conn: Any = None) -> None:
        import numpy as np

        if df.empty:
            return
        self._check_columns(df)
        df = df.reset_index(drop=True)
        keys = self.primary_keys
        rows_of = self._rows_by_target(df)  # target file -> row positions
        # a key lives in one file: take it out of every other file that may hold it
        for path in self._paths(df[keys]):
            others = [r for t, r in rows_of.items() if t != path
                      and (not self._disjoint or t.parent == path.parent)]
            if others:  # (partitioned by keys, only the partition's other files can hold it)
                self._file(path).remove_keys(df.iloc[np.sort(np.concatenate(others))][keys])
        for target, rows in rows_of.items():
            self._file(target).upsert_rows(df.iloc[rows])

    def delete_rows(self, idx: pd.DataFrame, conn: Any = None) -> None:
        if idx.empty:
            return
        wanted = idx[self.primary_keys].drop_duplicates()
        for path in self._paths(wanted):
            self._file(path).remove_keys(wanted)

    def flush(self) -> None:
        for path in sorted(self._files):
            store = self._files[path]
            if store.is_dirty:
                store.flush()
                if not path.exists():
                    del self._files[path]

    def discard(self) -> None:
        """Forget buffered changes and cached partitions."""
        self._files.clear()

    def clear(self) -> None:
        self.discard()
        _remove_files(self.list_files()["path"])

    def _rows_by_target(self, df: pd.DataFrame) -> dict[Path, np.ndarray]:
        """Row positions of `df` per file they go to (one group per partition value)."""
        import numpy as np

        codes = df.groupby(self.partition_cols, dropna=False, sort=False,
                           observed=True).ngroup().to_numpy()
        order = np.argsort(codes, kind="stable")
        groups = np.split(order, np.flatnonzero(np.diff(codes[order])) + 1)
        firsts = df.iloc[[g[0] for g in groups]]
        segments = [_format_column(firsts[c], self.describe()) for c in self.partition_cols]
        rows_of: dict[Path, list[np.ndarray]] = {}
        for values, rows in zip(zip(*segments), groups):
            rows_of.setdefault(self._target_file(self._dir_for(values)), []).append(rows)
        return {t: np.sort(np.concatenate(r)) if len(r) > 1 else r[0]
                for t, r in sorted(rows_of.items())}

    def _target_file(self, folder: Path) -> Path:
        """The file new rows of a partition go to: its only file, else part-0.parquet."""
        existing = [p for p in self._files if p.parent == folder and self._files[p].is_dirty]
        try:
            existing += [Path(e.path) for e in os.scandir(folder) if _is_data_file(e.name)]
        except (FileNotFoundError, NotADirectoryError):
            pass
        existing = sorted(set(existing))
        if len(existing) == 1 or (existing and folder / PART_FILE not in existing):
            return existing[0]
        return folder / PART_FILE

    # --- files ---------------------------------------------------------------------------
    def list_files(self) -> pd.DataFrame:
        import pandas as pd

        rows = [(p, st.st_size, st.st_mtime_ns, st.st_ino) for p, st in self._walk()]
        return pd.DataFrame(rows, columns=FINGERPRINT_COLUMNS).astype(
            {"size": "int64", "mtime_ns": "int64", "inode": "int64"})

    def read_files(self, paths: list[str]) -> dict[str, pd.DataFrame]:
        result = {}
        for p in paths:
            path = Path(p)
            if not path.is_relative_to(self.path):
                raise ValueError(f"{self.describe()}: not this store's file: {p}")
            store = self._file(path)
            if path.exists():
                result[p] = store.read_files([str(path)])[str(path)]
            else:
                result[p] = self.empty()
                if not store.is_dirty:
                    self._files.pop(path, None)
        return result


# --- partition values --------------------------------------------------------------------

class _Filters:
    """Which partition folders can hold the keys of an index (for pruned reads)."""

    def __init__(self, partition_cols: list[str], keyed: pd.DataFrame) -> None:
        import pyarrow as pa

        self.partition_cols = partition_cols
        self.columns = list(keyed.columns)
        self.types = {c: pa.Array.from_pandas(keyed[c]).type for c in self.columns}
        self.values = {c: set(pa.Array.from_pandas(keyed[c]).to_pylist()) for c in self.columns}
        tuples = pa.Table.from_pandas(keyed, preserve_index=False).to_pylist()
        self.tuples = {tuple(r[c] for c in self.columns) for r in tuples}

    def _value(self, col: str, raw: str | None) -> Any:
        return _parse_cached(raw, self.types[col])

    def level_ok(self, col: str | None, raw: str | None) -> bool:
        if col is None or col not in self.values:
            return True
        try:
            return self._value(col, raw) in self.values[col]
        except Exception:  # noqa: BLE001 - not a value of the key's type: no key lives here
            return False

    def leaf_ok(self, raws: tuple) -> bool:
        if len(raws) != len(self.partition_cols) or any(r is False for r in raws):
            return True  # a misplaced file: read it (and report it)
        given = dict(zip(self.partition_cols, raws))
        try:
            return tuple(self._value(c, given[c]) for c in self.columns) in self.tuples
        except Exception:  # noqa: BLE001
            return False


def _is_data_file(name: str) -> bool:
    """A Parquet file of the dataset: not hidden, temp, or a backup filepipe made."""
    return (name.endswith(".parquet") and not name.endswith(BACKUP_SUFFIX)
            and not name.startswith((".", "_")) and not is_temp_name(name))


@lru_cache(maxsize=4096)
def _parse_cached(raw: str | None, typ: pa.DataType) -> Any:
    return _parse_segment(raw, typ, "", "").as_py()


def _segment_value(name: str, col: str | None) -> str | None | Literal[False]:
    """The unquoted value of a folder name ``col=value`` (None for null); False if not one."""
    if col is None or not name.startswith(f"{col}="):
        return False
    raw = unquote(name[len(col) + 1:])
    return None if raw == NULL_SEGMENT else raw


def _quote(value: str | None) -> str:
    return NULL_SEGMENT if value is None else quote(value, safe="")


def _parse_segment(raw: str | None, typ: pa.DataType, where: str, col: str) -> pa.Scalar:
    import pyarrow as pa

    if raw is None or pa.types.is_null(typ):
        return pa.scalar(None, typ)
    try:
        return pa.array([raw], pa.string()).cast(typ)[0]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise FilepipeError(f"{where}: partition value {col}={raw!r} is not a {typ}: {exc}") from exc


def _arrow_type(series: pd.Series, where: str) -> pa.DataType:
    import pyarrow as pa

    try:
        return pa.Array.from_pandas(series).type
    except _arrow_errors() as exc:
        raise FilepipeError(f"{where}: partition column {series.name!r}: {exc}") from exc


def _format_column(series: pd.Series, where: str) -> list[str | None]:
    """Partition values as the text that names their folders (None for null)."""
    import pyarrow as pa

    try:
        array = pa.Array.from_pandas(series) if len(series) else pa.array([], pa.string())
        if pa.types.is_dictionary(array.type):
            array = array.dictionary_decode()
        text = array if pa.types.is_null(array.type) else array.cast(pa.string())
    except _arrow_errors() as exc:
        raise FilepipeError(f"{where}: cannot partition by column {series.name!r}: {exc}; "
                            "partition by a column of numbers, text, dates or booleans") from exc
    return text.to_pylist()


def _partition_types(metadata: Mapping[bytes, bytes] | None) -> dict[str, pa.DataType]:
    import pyarrow as pa

    blob = (metadata or {}).get(_PARTITION_META)
    if not blob:
        return {}
    try:
        schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(blob)))
    except Exception:  # noqa: BLE001 - damaged or foreign: fall back to strings
        return {}
    return {f.name: f.type for f in schema}


def _prune_empty_dirs(folder: Path, root: Path) -> None:
    """Remove `folder` and its parents up to (not including) `root` while they are empty."""
    while folder != root and folder.is_relative_to(root):
        try:
            folder.rmdir()
        except OSError:  # not empty (or gone)
            if folder.exists():
                return
        folder = folder.parent


# --- Arrow <-> pandas, files ---------------------------------------------------------------

def _read_table(path: Path) -> pa.Table:
    import pyarrow.parquet as pq

    with open_regular(path) as raw, pq.ParquetFile(raw) as f:
        return f.read()


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas()



def _arrow_errors() -> tuple[type[Exception], ...]:
    """What converting pandas values to Arrow raises for values it cannot hold
    (an int beyond 64 bits raises a bare OverflowError)."""
    import pyarrow as pa

    return (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError)


def _from_pandas(df: pd.DataFrame, where: str, keys: pd.DataFrame) -> pa.Table:
    """`df` as an Arrow table; values Arrow cannot hold raise a `FilepipeError` naming the
    column, the `keys` (aligned with `df`'s rows) of the first such row, and the fix."""
    import pyarrow as pa

    try:
        return pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False,
                                    nthreads=None if len(df) > 100_000 else 1)
    except _arrow_errors() + (ValueError,) as exc:  # (duplicate column names: ValueError)
        raise FilepipeError(f"{where}: {_conversion_problem(df, keys, exc)}") from exc


def _conversion_problem(df: pd.DataFrame, keys: pd.DataFrame, exc: Exception) -> str:
    """Which column and row of `df` Arrow refuses, and what to do (failures only)."""
    import pyarrow as pa

    errors = _arrow_errors()
    for j, col in enumerate(df.columns):
        s = df.iloc[:, j]
        try:
            pa.array(s, from_pandas=True)
        except errors as err:
            lo, hi = 0, len(s)  # s[:lo] converts, s[:hi] does not: bisect to the first bad row
            while hi - lo > 1:
                mid = (lo + hi) // 2
                try:
                    pa.array(s.iloc[:mid], from_pandas=True)
                    lo = mid
                except errors:
                    hi = mid
            value = s.iloc[hi - 1]
            return f"column {col!r}: row {row_name(keys, hi - 1)} {_value_problem(value, err)}"
    return f"cannot write rows as Parquet: {exc}"


def _value_problem(value: Any, err: Exception) -> str:
    """What is wrong with the first `value` Arrow refused (with `err`), and the fix."""
    import numpy as np

    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        if 0 <= value < 2**64:
            return (f"holds {value}, an integer of 2**63 or more, which Arrow keeps only in an "
                    "unsigned column: convert the column with .astype('uint64') if no value "
                    "is negative, else to float or text")
        return (f"holds {value}, an integer outside the 64-bit range Parquet can hold: store "
                "the column as text (.astype(str)) or as float")
    first = str(err.args[0] if err.args else err).partition("\n")[0]
    return (f"holds {type(value).__name__} {value!r:.60}, which Arrow cannot store in one "
            f"column with the values before it ({first}): make the column hold one kind "
            "of value (convert it with .astype(str), say)")


def _check_parquet(schema: pa.Schema, where: str) -> None:
    """Raise, naming the column, if Parquet cannot store a column of `schema` (an empty
    struct, say)."""
    problem = _parquet_problem(schema)
    if problem is not None:
        raise FilepipeError(f"{where}: {problem}")


@lru_cache(maxsize=256)
def _parquet_problem(schema: pa.Schema) -> str | None:
    """What Parquet refuses in `schema` (an empty table of it is written to memory)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def fails(s: pa.Schema) -> Exception | None:
        try:
            pq.write_table(s.empty_table(), pa.BufferOutputStream())
        except _arrow_errors() as exc:
            return exc
        return None

    err = fails(schema)
    if err is None:
        return None
    for field in schema:
        field_err = fails(pa.schema([field]))
        if field_err is not None:
            return (f"column {field.name!r} cannot be written to Parquet: {field_err}; "
                    "convert it (to text, say)")
    return f"cannot be written to Parquet: {err}"


def _write_table(path: Path, table: pa.Table) -> None:
    """Write atomically with fixed options: identical tables give identical bytes."""
    _check_parquet(table.schema, display_path(path))
    try:
        atomic_write(path, lambda tmp: _write_to(tmp, table))
    except _arrow_errors() as exc:
        raise FilepipeError(f"{display_path(path)}: cannot write as Parquet: {exc}") from exc


def _write_to(tmp: Path, table: pa.Table) -> None:
    """`table` into the file `tmp` (opened here: pyarrow cannot open non-UTF-8 paths)."""
    import pyarrow.parquet as pq

    with open(tmp, "wb") as f:
        pq.write_table(table, f, compression="snappy")



def _remove_files(paths: Any) -> None:
    """Delete files (and the folders they leave empty)."""
    for p in map(Path, paths):
        p.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            p.parent.rmdir()
