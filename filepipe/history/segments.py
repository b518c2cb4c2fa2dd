"""`HistoryStore`: the row versions of filepipe tables, in append-only Parquet segments.

``<root>/<table>/<seq_lo:012d>-<seq_hi:012d>-<random>.parquet``: one file per append,
holding row versions (the row's columns plus `_fp_seq`, `_fp_run`, `_fp_kind`,
`_fp_hash`) whose clock values lie in ``[seq_lo, seq_hi]``. Files are never changed in
place: `compact` writes a merged file before deleting its parts, `gc` writes a smaller
copy before deleting the original. A crash in between leaves rows twice, which every read
drops, so no row is lost or shown twice. See docs/history.md for the layout.
"""

from __future__ import annotations

import math
import os
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import FilepipeError, MissingColumnsError
from . import codec
from .states import HASH, KIND, KINDS, SEQ, SYSTEM_COLUMNS, SYSTEM_DTYPES, needed_versions, state_at

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

T = TypeVar("T")

_SEGMENT_NAME = re.compile(r"(\d+)-(\d+)-[0-9a-f]+\.parquet")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]|^\.")
#: rows per Parquet row group: small enough that one row's lookup decodes little
ROW_GROUP_ROWS = 16_384
#: segments below this size are the first tier of `compact`; each further tier is
#: TIER_FACTOR times larger
SMALL_SEGMENT_BYTES = 256 * 1024
TIER_FACTOR = 4
_READ_ATTEMPTS = 3
#: keys beyond which `as_of_keys` reads the whole table (row-group statistics no longer pay)
MANY_KEYS = 2_000
#: the suffix of a segment written before the transaction of its versions committed
PENDING = ".pending"
#: numpy kinds of columns some segments lack, and the nullable dtypes they are read as
_NULLABLE = {"i": "Int64", "u": "UInt64", "b": "boolean"}
_NUMPY = {"Int64": "int64", "UInt64": "uint64", "boolean": "bool"}


@dataclass(frozen=True)
class Segment:
    """One segment file: the clock range its name gives, its path and size in bytes."""

    lo: int
    hi: int
    path: Path
    size: int

    def overlaps(self, lo: int | None, hi: int | None) -> bool:
        """May it hold versions with ``lo < _fp_seq <= hi`` (None: unbounded)?"""
        return (lo is None or self.hi > lo) and (hi is None or self.lo <= hi)

    def within(self, lo: int | None, hi: int | None) -> bool:
        """Are all its versions in ``lo < _fp_seq <= hi``?"""
        return (lo is None or self.lo > lo) and (hi is None or self.hi <= hi)

    @property
    def tier(self) -> int:
        """Its size class for `compact`: 0 below SMALL_SEGMENT_BYTES, then one per factor."""
        if self.size < SMALL_SEGMENT_BYTES:
            return 0
        return 1 + int(math.log(self.size / SMALL_SEGMENT_BYTES, TIER_FACTOR))


def folder_name(table: str) -> str:
    """The folder name of `table`: characters other than ``[A-Za-z0-9_.-]``, and a leading
    dot, written as ``%XX`` (UTF-8 bytes), so any name is one safe, distinct folder."""
    if not table:
        raise FilepipeError("history: a table name cannot be empty")
    return _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m[0].encode()), table)


def table_name(folder: str) -> str:
    """The table a folder of the history holds (the inverse of `folder_name`)."""
    from urllib.parse import unquote

    return unquote(folder)


class HistoryStore:
    """Row versions of tables under the folder `root`, one sub-folder per table.

    Writers (`append`, `compact`, `gc`) must not run concurrently (the project lock);
    readers may run at any time.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._schemas: dict[Path, pd.DataFrame] = {}  # segment → empty frame of its dtypes

    # --- files ---------------------------------------------------------------------------

    def folder(self, table: str) -> Path:
        return self.root / folder_name(table)

    def segments(self, table: str) -> list[Segment]:
        """The segment files of `table`, by clock range (temp and other files ignored)."""
        try:
            entries = list(os.scandir(self.folder(table)))
        except (FileNotFoundError, NotADirectoryError):
            return []
        found = []
        for e in entries:
            m = _SEGMENT_NAME.fullmatch(e.name)
            if m and e.is_file(follow_symlinks=False):
                found.append(Segment(int(m[1]), int(m[2]), Path(e.path), e.stat().st_size))
        return sorted(found, key=lambda s: (s.lo, s.hi, s.path.name))

    def tables(self) -> list[str]:
        """The tables that have at least one segment, sorted."""
        try:
            folders = [e.name for e in os.scandir(self.root) if e.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return []
        names = [table_name(f) for f in folders]
        return sorted(n for n in names if self.segments(n))

    def size_bytes(self, table: str | None = None) -> int:
        """Bytes on disk of the segments of `table` (default: of every table)."""
        tables = self.tables() if table is None else [table]
        return sum(s.size for t in tables for s in self.segments(t))

    # --- writing -------------------------------------------------------------------------

    def append(self, table: str, rows: pd.DataFrame) -> Path | None:
        """Write `rows` (row versions: the row's columns and the system columns) as one
        new segment of `table`, atomically; None (and no file) when `rows` is empty."""
        if len(rows) == 0:
            return None
        return self._write(table, _checked(rows, table)).path

    def compact(self, table: str, max_segments: int = 32) -> int:
        """Keep `table` to at most `max_segments` segments: while it has more, merge the
        segments of the smallest size tier holding two or more (else the two smallest)
        into one. Cheap when there is nothing to do (one folder listing). Returns how many
        segments were merged into others."""
        if max_segments < 1:
            raise ValueError(f"max_segments must be at least 1, not {max_segments}")
        segments = self.segments(table)
        merged = 0
        while len(segments) > max_segments:
            tiers: dict[int, list[Segment]] = {}
            for s in segments:
                tiers.setdefault(s.tier, []).append(s)
            group = next((g for _, g in sorted(tiers.items()) if len(g) > 1),
                         sorted(segments, key=lambda s: s.size)[:2])
            new = self._merge(table, group)
            merged += len(group)
            segments = [s for s in segments if s not in group] + [new]
        return merged

    def gc(self, table: str, keys: Sequence[str], keep_from_seq: int,
           keep_seqs: Iterable[int] = ()) -> int:
        """Drop the row versions of `table` that no state at ``seq >= keep_from_seq`` nor
        at any of `keep_seqs` (tagged versions) needs (see `states.needed_versions`).
        Files losing rows are rewritten (the copy first, then the original deleted).
        Returns how many row versions were dropped."""
        import numpy as np
        import pandas as pd

        segments = [s for s in self.segments(table) if s.lo <= keep_from_seq]
        if not segments:
            return 0
        parts = [self._read_segment(s) for s in segments]
        rows = pd.concat(parts, ignore_index=True)
        _check_keys(rows, keys, table)
        ordered = rows.take(np.argsort(rows[SEQ].to_numpy(), kind="stable"))
        distinct = ordered[~ordered.duplicated([SEQ, *keys]).to_numpy()]
        needed = needed_versions(distinct, keys, keep_from_seq, keep_seqs)
        keep = np.zeros(len(rows), dtype=bool)
        keep[distinct.index.to_numpy()[needed]] = True
        start = 0
        for segment, part in zip(segments, parts):
            mine = keep[start:start + len(part)]
            start += len(part)
            if mine.all():
                continue
            if mine.any():
                self._write(table, part[mine])
            segment.path.unlink()
        return int(len(distinct) - needed.sum())

    def _merge(self, table: str, group: list[Segment]) -> Segment:
        """One segment holding the versions of `group`; the parts deleted after it is written."""
        import pandas as pd

        merged = _exact_duplicates_dropped(
            pd.concat([self._read_segment(s) for s in group], ignore_index=True)
            .sort_values(SEQ, kind="stable", ignore_index=True))
        new = self._write(table, merged)
        for s in group:
            s.path.unlink(missing_ok=True)
        return new

    def write_pending(self, table: str, rows: pd.DataFrame) -> Path:
        """Write `rows` (row versions) as a segment that is not one yet: reads ignore it
        until `publish` gives it its segment name. For writers whose versions belong to a
        transaction not yet committed."""
        return self._write(table, _checked(rows, table), PENDING).path

    @staticmethod
    def publish(path: Path) -> None:
        """Make the pending segment at `path` a segment (done already: nothing to do)."""
        if path.name.endswith(PENDING):
            try:
                os.replace(path, path.with_name(path.name[:-len(PENDING)]))
            except FileNotFoundError:
                pass

    def pending_files(self) -> list[Path]:
        """Every pending segment under the root."""
        return sorted(self.root.glob(f"*/*{PENDING}")) if self.root.is_dir() else []

    def _write(self, table: str, rows: pd.DataFrame, suffix: str = "") -> Segment:
        import pyarrow.parquet as pq

        from ..fileutil import atomic_write

        data = codec.to_arrow(rows, f"history of table {table!r}")
        lo, hi = int(rows[SEQ].min()), int(rows[SEQ].max())
        path = self.folder(table) / f"{lo:012d}-{hi:012d}-{secrets.token_hex(6)}.parquet{suffix}"
        # clock values mostly follow one another: delta-encoded they take ~nothing; hashes
        # are random: a dictionary would only add to them
        dictionary = [c for c in data.column_names if c not in (SEQ, HASH)]
        atomic_write(path, lambda tmp: pq.write_table(
            data, tmp, compression="zstd", row_group_size=ROW_GROUP_ROWS, use_dictionary=dictionary,
            column_encoding={SEQ: "DELTA_BINARY_PACKED"}))
        return Segment(lo, hi, path, path.stat().st_size)

    # --- reading -------------------------------------------------------------------------

    def read(self, table: str, lo: int | None = None, hi: int | None = None) -> pd.DataFrame:
        """The row versions of `table` with ``lo < _fp_seq <= hi`` (None: unbounded),
        sorted by `_fp_seq`, in the table's history schema (see `schema`); a version
        stored twice (a crash during `compact` or `gc`) is read once."""
        return self._retrying(lambda: self._read(table, lo, hi))

    def as_of(self, table: str, keys: Sequence[str], seq: int) -> pd.DataFrame:
        """The table as it was at clock value `seq`: per key its latest version with
        ``_fp_seq <= seq``, deleted ones left out; row columns only, sorted by `keys`.
        Empty (with the key columns only) when the table has no history."""
        from ..frames import empty_frame

        versions = self._retrying(lambda: self._read(table, None, seq))
        if list(versions.columns) == SYSTEM_COLUMNS:
            return empty_frame(keys)
        _check_keys(versions, keys, table)
        return _exact_ints(state_at(versions, keys))

    def as_of_keys(self, table: str, keys: Sequence[str], seq: int, wanted: pd.DataFrame) -> pd.DataFrame:
        """`as_of(table, keys, seq)` of just the keys in `wanted` (a frame of the key
        columns): reads the key columns of the segments, then only the row groups holding
        one of those keys, so the cost grows with the keys asked for, not the table."""
        from ..frames import empty_frame

        def read() -> pd.DataFrame:
            segments = [sg for sg in self.segments(table) if sg.overlaps(None, seq)]
            union = self._union(self.segments(table))
            if list(union.columns) == SYSTEM_COLUMNS:
                return union
            _check_keys(union, keys, table)
            parts = [p for sg in segments if (p := _rows_with_keys(sg.path, wanted[list(keys)])) is not None]
            found = self._combine(parts, union)
            return found[found[SEQ].to_numpy() <= seq]

        if len(wanted) > MANY_KEYS:  # a large share of the table, likely: read it all
            from ..frames import rows_in

            state = self.as_of(table, keys, seq)
            return state[rows_in(state, wanted[list(keys)], list(keys))].reset_index(drop=True) \
                if len(state) else state
        versions = self._retrying(read)
        if list(versions.columns) == SYSTEM_COLUMNS:
            return empty_frame(keys)
        return _exact_ints(state_at(versions, keys))

    def versions(self, table: str, keys: Sequence[str], key_values: Mapping[str, Any]) -> pd.DataFrame:
        """Every version of the row of `table` whose keys equal `key_values`, oldest first,
        system columns kept. Reads only the row groups whose statistics may hold the
        row, and of those only the key columns until a match is found."""
        if sorted(key_values) != sorted(keys):
            raise FilepipeError(f"history of table {table!r}: give one value per key column "
                                f"({', '.join(map(repr, keys))}), not {', '.join(map(repr, key_values)) or 'none'}")
        return self._retrying(lambda: self._versions(table, keys, key_values))

    def schema(self, table: str) -> pd.DataFrame:
        """An empty frame with the columns and dtypes every read of `table` returns: the
        union of its segments', as `pd.concat` of them would give (a column added later,
        ints in one segment and floats in another); system columns last."""
        return self._union(self.segments(table))

    def _read(self, table: str, lo: int | None, hi: int | None) -> pd.DataFrame:
        segments = self.segments(table)
        parts = [self._read_segment(s, lo, hi) for s in segments if s.overlaps(lo, hi)]
        return self._combine(parts, self._union(segments))

    def _versions(self, table: str, keys: Sequence[str], key_values: Mapping[str, Any]) -> pd.DataFrame:
        segments = self.segments(table)
        union = self._union(segments)
        if segments:
            _check_keys(union, keys, table)
        parts = [p for s in segments if (p := _matching_rows(s.path, key_values)) is not None]
        return self._combine(parts, union).drop_duplicates(SEQ, ignore_index=True)

    def _retrying(self, read: Callable[[], T]) -> T:
        """`read()`, again from a fresh listing when a segment vanished under it (a
        concurrent `compact` or `gc` replaced it)."""
        for _ in range(_READ_ATTEMPTS - 1):
            try:
                return read()
            except FileNotFoundError:
                continue
        return read()

    def _read_segment(self, segment: Segment, lo: int | None = None, hi: int | None = None) -> pd.DataFrame:
        """The versions of one segment with ``lo < _fp_seq <= hi``, skipping row groups
        whose `_fp_seq` statistics lie outside."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        with pq.ParquetFile(segment.path) as f:
            if segment.within(lo, hi):
                return codec.to_frame(f.read())
            meta = f.metadata
            column = _leaf_indexes(meta)[SEQ]
            groups = [i for i in range(meta.num_row_groups)
                      if _stats_overlap(meta.row_group(i).column(column).statistics, lo, hi)]
            data = f.read_row_groups(groups)
        seq = pc.field(SEQ)
        if lo is not None:
            data = data.filter(seq > lo)
        if hi is not None:
            data = data.filter(seq <= hi)
        return codec.to_frame(data)

    def _union(self, segments: list[Segment]) -> pd.DataFrame:
        """The empty frame of the union of `segments`' columns and dtypes (see `schema`)."""
        import numpy as np
        import pandas as pd
        import pyarrow.parquet as pq

        if not segments:
            return pd.DataFrame({c: pd.Series(dtype=d) for c, d in SYSTEM_DTYPES.items()})
        for s in segments:
            if s.path not in self._schemas:
                self._schemas[s.path] = codec.empty_frame(pq.read_schema(s.path))
        folder = segments[0].path.parent
        current = {s.path for s in segments}
        for gone in [p for p in self._schemas if p.parent == folder and p not in current]:
            del self._schemas[gone]
        schemas = [self._schemas[s.path] for s in segments]
        union = pd.concat(schemas, ignore_index=True)
        for c in union.columns:  # a column some segments lack (deletions hold keys only):
            having = [f[[c]] for f in schemas if c in f.columns]  # typed by those holding it,
            if len(having) < len(schemas):  # integers and booleans made nullable
                dtype = pd.concat(having, ignore_index=True)[c].dtype
                union[c] = union[c].astype(_NULLABLE.get(dtype.kind, dtype)
                                           if isinstance(dtype, np.dtype) else dtype)
        return union[[c for c in union.columns if c not in SYSTEM_COLUMNS] + SYSTEM_COLUMNS]

    @staticmethod
    def _combine(parts: list[pd.DataFrame], union: pd.DataFrame) -> pd.DataFrame:
        """`parts` one after the other, cast to the `union` schema, sorted by `_fp_seq`,
        exact duplicates dropped; a fresh index. Every null of an object column is None
        (how a segment stored it, NaN or null, does not show)."""
        import pandas as pd

        df = pd.concat([union, *parts], ignore_index=True).reindex(columns=union.columns)
        changed = {c: d for c, d in union.dtypes.items() if df[c].dtype != d}
        if changed:
            df = df.astype(changed)
        for c in union.columns[(union.dtypes == object).to_numpy()]:
            df[c] = df[c].where(df[c].notna(), None)
        return _exact_duplicates_dropped(df.sort_values(SEQ, kind="stable", ignore_index=True))


# --- helpers ---------------------------------------------------------------------------


def _checked(rows: pd.DataFrame, table: str) -> pd.DataFrame:
    """`rows` with valid system columns of their dtypes, placed last."""
    where = f"history of table {table!r}"
    missing = [c for c in SYSTEM_COLUMNS if c not in rows.columns]
    if missing:
        raise MissingColumnsError(f"{where}: row versions lack the system column(s) "
                                  f"{', '.join(missing)}")
    import pandas as pd

    found = pd.unique(rows[KIND].to_numpy(dtype=object, na_value=None))  # a few distinct values
    bad = sorted({str(k) for k in found if k is not None} - set(KINDS)) + (["null"] if None in found else [])
    if bad:
        raise FilepipeError(f"{where}: {KIND} must be one of {', '.join(KINDS)}; found {', '.join(bad)}")
    cast = {c: d for c, d in SYSTEM_DTYPES.items() if str(rows[c].dtype) != d}
    try:
        typed = rows.astype(cast) if cast else rows
    except (TypeError, ValueError) as exc:
        raise FilepipeError(f"{where}: system columns of the wrong type ({exc}): {SEQ} and "
                            "_fp_run need integers, _fp_hash integers or nulls") from exc
    return typed[[c for c in rows.columns if c not in SYSTEM_COLUMNS] + SYSTEM_COLUMNS]


def _check_keys(df: pd.DataFrame, keys: Sequence[str], table: str) -> None:
    from ..frames import check_keys

    if not keys:
        raise FilepipeError(f"history of table {table!r}: name its key columns")
    check_keys(df, keys, f"history of table {table!r}", unique=False)


def _exact_duplicates_dropped(df: pd.DataFrame) -> pd.DataFrame:
    """`df` without rows equal in every column to an earlier one (only rows sharing a
    `_fp_seq` are compared, by content hash)."""
    import numpy as np
    import pandas as pd

    from ..hashing import hash_rows

    shared = df.duplicated(SEQ, keep=False).to_numpy()
    if not shared.any():
        return df
    content = np.zeros(len(df), dtype=np.int64)
    content[shared] = hash_rows(df[shared])
    repeated = pd.DataFrame({"seq": df[SEQ].to_numpy(), "content": content}).duplicated().to_numpy()
    return df[~repeated].reset_index(drop=True)


def _leaf_indexes(meta: pq.FileMetaData) -> dict[str, int]:
    """Column name → its index among the file's Parquet columns (for statistics)."""
    return {meta.schema.column(j).path: j for j in range(meta.num_columns)}


def _stats_overlap(stats: Any, lo: int | None, hi: int | None) -> bool:
    if stats is None or not stats.has_min_max:
        return True
    return (lo is None or stats.max > lo) and (hi is None or stats.min <= hi)


def _exact_ints(state: pd.DataFrame) -> pd.DataFrame:
    """Nullable integer and boolean columns (made so only by deletions) back to numpy ones
    when they hold no null."""
    exact = {c: _NUMPY[str(d)] for c, d in state.dtypes.items()
             if str(d) in _NUMPY and not state[c].isna().any()}
    return state.astype(exact) if exact else state


def _rows_with_keys(path: Path, wanted: pd.DataFrame) -> pd.DataFrame | None:
    """The versions in the segment at `path` whose keys are a row of `wanted`, or None."""
    from ..frames import rows_in

    keys = list(wanted.columns)
    return _rows_matching(path, {k: wanted[k].drop_duplicates().tolist() for k in keys},
                          lambda df: rows_in(df, wanted, keys))


def _matching_rows(path: Path, key_values: Mapping[str, Any]) -> pd.DataFrame | None:
    """The versions in the segment at `path` whose keys equal `key_values`, or None."""
    return _rows_matching(path, {k: [v] for k, v in key_values.items()},
                          lambda df: _equal(df, key_values))


def _rows_matching(path: Path, values: Mapping[str, list[Any]],
                   match: Callable[[pd.DataFrame], np.ndarray]) -> pd.DataFrame | None:
    """The versions in the segment at `path` that `match` (on its key columns) says are
    wanted, or None. Row groups whose statistics exclude every value of `values` for a key
    column are skipped; of the others, the key columns are read first, then the whole row
    groups holding a match."""
    import numpy as np
    import pyarrow.parquet as pq

    keys = list(values)
    with pq.ParquetFile(path) as f:
        schema = f.schema_arrow
        if any(k not in schema.names for k in keys):
            return None
        meta = f.metadata
        leaf = _leaf_indexes(meta)
        as_json = set(codec.json_columns(schema))
        groups = [i for i in range(meta.num_row_groups)
                  if all(k in as_json or any(_may_hold(meta.row_group(i).column(leaf[k]).statistics, v)
                                             for v in values[k]) for k in keys)]
        if not groups:
            return None
        hits = match(codec.to_frame(f.read_row_groups(groups, columns=keys)))
        if not hits.any():
            return None
        ends = np.cumsum([meta.row_group(i).num_rows for i in groups])
        holding = np.unique(np.searchsorted(ends, np.flatnonzero(hits), side="right"))
        rows = codec.to_frame(f.read_row_groups([groups[j] for j in holding]))
    return rows[match(rows)]


def _may_hold(stats: Any, value: Any) -> bool:
    """Can a row group with these column statistics hold `value`? True when unsure."""
    if stats is None:
        return True
    if _is_null(value):
        return not stats.has_null_count or stats.null_count > 0
    if not stats.has_min_max:
        return True
    try:
        return bool(stats.min <= value <= stats.max)
    except (TypeError, ValueError):  # e.g. text against numbers: the exact test decides
        return True


def _equal(df: pd.DataFrame, key_values: Mapping[str, Any]) -> np.ndarray:
    """Rows of `df` whose columns equal `key_values` (null matches null)."""
    import numpy as np

    match = np.ones(len(df), dtype=bool)
    for k, v in key_values.items():
        col = df[k]
        same = col.isna() if _is_null(v) else (col == v).fillna(False)
        match &= same.to_numpy(dtype=bool)
    return match


def _is_null(value: Any) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_scalar(value) and pd.isna(value))
