"""Change detection for file sources (docs/design.md); outputs are guarded in `outputs`.

A source's files are listed with one stat each and compared with their stored
fingerprints (path, size, mtime_ns, inode): unchanged files are never opened. Changed,
new and "racy" files (modified within the timestamp granularity of the last sync) are
read and hashed row by row; only rows whose hash changed go on. Missing files lose
their rows. A file that stays unreadable after a few retries is reported by path and
keeps its previous rows, and the rest of the sync goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import FilepipeError, SourceReadError
from .fileutil import fingerprint_of
from .report import RunReport

if TYPE_CHECKING:
    import pandas as pd
    import sqlalchemy as sa

    from .frametypes import DataDF, IndexDF
    from .table import DataTable

log = logging.getLogger("filepipe")

RACY_NS = 2_000_000_000  # FAT has 2 s mtimes; SMB/NFS cache them: re-hash files this fresh
RETRY_DELAYS = (0.1, 0.3, 0.8)  # a program may still be saving the file
MASS_DELETE_MIN_ROWS = 20  # below this, deleting most rows is ordinary editing


@dataclass
class SyncResult:
    """What one sync found."""

    table: str
    opened: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    changed: IndexDF | None = None
    #: why the sync changed nothing (it would have deleted too much), else None
    refused: str | None = None


@dataclass
class FileChanges:
    """Files of a table whose fingerprint differs from the recorded one (nothing read)."""

    new: list[str]
    changed: list[str]
    racy: list[str]
    missing: list[str]
    listed: pd.DataFrame
    stored: pd.DataFrame

    @property
    def to_read(self) -> list[str]:
        return self.new + self.changed + self.racy

    def __bool__(self) -> bool:
        return bool(self.new or self.changed or self.missing)


def file_changes(table: DataTable, paths: set[str] | None = None) -> FileChanges:
    """Compare the files of `table` with their stored fingerprints (one stat per file)."""
    listed = table.store.list_files()
    if listed is None:
        raise FilepipeError(f"table {table.name!r} ({table.store.describe()}) is not file-backed")
    with table.ds.meta.begin() as conn:
        stored = table.ds.meta.file_meta.stored(conn, table.name)
    both = listed.merge(stored, on="path", how="outer", suffixes=("", "_old"), indicator=True)
    if paths is not None:
        both = both[both["path"].isin(paths)]
    kind = both["_merge"]
    same = (kind == "both") & (both["size"] == both["size_old"]) & \
        (both["mtime_ns"] == both["mtime_ns_old"]) & (both["inode"] == both["inode_old"])
    racy = same & ((both["synced_ns"] - both["mtime_ns"]) < RACY_NS)
    return FileChanges(
        new=both.loc[kind == "left_only", "path"].tolist(),
        changed=both.loc[(kind == "both") & ~same, "path"].tolist(),
        racy=both.loc[racy, "path"].tolist(),
        missing=both.loc[kind == "right_only", "path"].tolist(),
        listed=listed, stored=stored)


def sync_table(table: DataTable, report: RunReport | None = None,
               paths: set[str] | None = None, allow_deletes: bool = False) -> SyncResult:
    """Bring the row meta of the file-backed source `table` up to date with its files.

    `paths` limits the work to those files (the watcher knows which changed). A sync
    that would delete every row, or more than the table's `max_delete_share` of a
    sizeable table, changes nothing and reports why unless `allow_deletes`. Outside a
    run, a sync that changes something is a version of its own.
    """
    import numpy as np
    import pandas as pd

    if table.ds.running is None:
        with table.ds.recording(report or RunReport(trigger="sync")) as own:
            return sync_table(table, own, paths, allow_deletes)
    result = SyncResult(table.name)
    now_ns = time.time_ns()
    found = file_changes(table, paths)
    listed, stored = found.listed, found.stored
    skipped = table.store.skipped_files()
    result.errors.update(skipped)
    result.missing = [p for p in found.missing if p not in skipped]
    # files gone, or a root missing before the index knew any row (a lost index):
    # refused; a source emptied on purpose (--allow-deletes) stays quietly empty
    if listed.empty and not allow_deletes and (
            result.missing or (_root_missing(table) and not _ever_held_rows(table))):
        result.refused = _vanished(table)
        return _reported(result, report, missing=False)
    if listed.empty and stored.empty:  # nothing there, and never was: say so
        if report is not None:
            report.missing_files.append(table.store.describe())
        return _reported(result, report)
    if not found.to_read and not result.missing:
        return _reported(result, report)

    total = len(found.to_read)
    if report is not None:
        report.read_progress(table.name, 0, total)
    read = _read_changed(table, found.to_read, None if report is None else
                         lambda done: report.read_progress(table.name, done, total))
    data = read.data
    result.errors.update(read.errors)

    files = table.ds.meta.file_meta
    with table.ds.meta.begin() as conn:
        if data is not None:
            data = _without_clashes(conn, table, data, stored, result.missing, result.errors)
        read_ok = [p for p in found.to_read if p not in result.errors]
        result.opened = read_ok
        old_ids = [int(i) for i in stored.loc[stored["path"].isin(read_ok + result.missing), "file_id"]]
        prev = _rows_of_files(conn, table, old_ids)
        refused = None if allow_deletes else _mass_delete(conn, table, data, prev)
        if refused:
            result.refused = refused
            result.opened, result.missing = [], []
            return _reported(result, report, missing=False)
        ids = files.register(conn, table.name, listed[listed["path"].isin(read_ok)], now_ns)
        file_ids = None
        if data is None:
            data = table.store.empty()
        else:
            data = data[data["_path"].isin(read_ok)]
            file_ids = data["_path"].map(ids).to_numpy(dtype=np.int64)
            data = data.drop(columns="_path")
        if data.empty and prev.empty:
            changed = pd.DataFrame(columns=table.primary_keys)
        else:
            changed = table.store_chunk(data, processed_idx=prev, conn=conn,
                                        file_id=file_ids, write_store=False, report=report)
        files.forget(conn, table.name, result.missing)
    result.changed = changed
    return _reported(result, report)


def _ever_held_rows(table: DataTable) -> bool:
    """Does the index know any row of `table`, deleted ones included?"""
    with table.ds.meta.begin() as conn:
        return table.meta.count(conn, include_deleted=True) > 0


def _root_missing(table: DataTable) -> bool:
    """Is the folder of the source missing (a single file not there yet is not)?"""
    return not all(r.exists() for r in table.store.watch_paths())


def _vanished(table: DataTable) -> str:
    """Why a source none of whose files is left is not emptied."""
    gone = [r for r in table.store.watch_paths() if not r.exists()]
    if table.store.single_file:
        what = f"{table.store.describe()} does not exist"
    elif gone:
        what = f"its folder {gone[0]} does not exist"
    else:
        what = f"no file matches {table.store.describe()} any more"
    return (f"{what} (moved, renamed, or on a drive that is not mounted?); its rows and the "
            "outputs computed from them are kept. If the files are really gone, run again "
            "with --allow-deletes")


def _reported(result: SyncResult, report: RunReport | None, missing: bool = True) -> SyncResult:
    """Hand the sync's unreadable and missing files to the run's report."""
    if report is not None:
        report.source_errors.update(result.errors)
        if result.refused:
            report.refused[result.table] = result.refused
            log.error("%s", result.refused)
        if missing:
            report.missing_files.extend(result.missing)
    return result


@dataclass(frozen=True, slots=True)
class ChangedFiles:
    """What `_read_changed` read: the rows of the files that could be read, column
    ``_path`` naming each row's file (None when no row was read), and why each of the
    others could not be read, by path."""

    data: DataDF | None
    errors: dict[str, str]


READ_CHUNK = 2_000  # files read at a time (progress is reported after each chunk)


def _read_changed(table: DataTable, paths: list[str],
                  progress: Callable[[int], None] | None = None) -> ChangedFiles:
    """Rows of the changed files (column ``_path``) and the errors of unreadable ones.

    Files are read READ_CHUNK at a time, each chunk in one go; only if that fails, or a
    file changed while it was read, are its files read one by one (with retries) to keep
    the good ones. `progress(files_done)` is called after each chunk.
    """
    import pandas as pd

    if not paths:
        return ChangedFiles(None, {})
    frames: list[DataDF] = []
    errors: dict[str, str] = {}
    for start in range(0, len(paths), READ_CHUNK):
        chunk = paths[start:start + READ_CHUNK]
        found = _read_chunk(table, chunk)
        frames += found.frames
        errors.update(found.errors)
        if progress is not None:
            progress(start + len(chunk))
    frames = [f for f in frames if len(f)]
    return ChangedFiles(pd.concat(frames, ignore_index=True) if len(frames) > 1 else
                        (frames[0] if frames else None), errors)


@dataclass
class _Chunk:
    frames: list[DataDF]
    errors: dict[str, str]


def _read_chunk(table: DataTable, paths: list[str]) -> _Chunk:
    before = {p: fingerprint_of(p) for p in paths}
    try:
        data = _typed_keys(table, "", table.store.read_files_frame(paths))
        unstable = [p for p in paths if fingerprint_of(p) != before[p]]
    except Exception:  # noqa: BLE001 - find the culprit file by file below
        data, unstable = None, list(paths)
    if data is not None and unstable:
        data = data[~data["_path"].isin(unstable)]
    errors: dict[str, str] = {}
    frames = [] if data is None else [data]
    for path in unstable:
        try:
            frames.append(_typed_keys(table, path, _read_stable(table, path)).assign(_path=path))
        except Exception as exc:  # noqa: BLE001 - report the file, go on with the rest
            errors[path] = f"{type(exc).__name__}: {exc}"
            log.error("cannot read %s (table %s): %s", path, table.name, exc)
    return _Chunk(frames, errors)


def _typed_keys(table: DataTable, path: str, df: DataDF) -> DataDF:
    """Key and tracked columns cast to the table's types; a value that does not fit
    (text typed into a numeric key column) is an error naming the file and column."""
    if not table.meta.exists or df.empty:
        return df
    for column, sa_type in table.meta.column_types().items():
        if column not in df.columns:
            continue
        try:
            table.meta.coerce(df[[column]])
        except (TypeError, ValueError) as exc:
            kind = sa_type.python_type.__name__
            raise FilepipeError(
                f"{path or _paths_shown(df)}: column {column!r} holds "
                f"{_unfit_values(table, df, column) or 'a value'} that is not a {kind} like the "
                f"rest of that column ({exc}); fix the cell, or declare the column's type "
                "(dtypes=) to have each such row named") from None
    return table.meta.coerce(df)


def _unfit_values(table: DataTable, df: DataDF, column: str) -> str:
    """The first few distinct values of `column` the index's type refuses, as text."""
    bad: list[str] = []
    values = df[column].drop_duplicates()
    for i in range(min(len(values), 10_000)):
        try:
            table.meta.coerce(values.iloc[i:i + 1].to_frame())
        except (TypeError, ValueError):
            bad.append(f"{values.iloc[i]!r:.40}")
            if len(bad) == 3:
                break
    return ", ".join(bad)


def _paths_shown(df: DataDF) -> str:
    if "_path" not in df.columns:
        return "(a source file)"
    paths = list(dict.fromkeys(df["_path"].tolist()))
    return paths[0] if len(paths) == 1 else f"(one of {len(paths)} files)"


def _read_stable(table: DataTable, path: str) -> DataDF:
    """Read one file, retrying while it is half-written or changes under the read."""
    last: Exception | None = None
    for delay in (0.0, *RETRY_DELAYS):
        if delay:
            time.sleep(delay)
        before = fingerprint_of(path)
        try:
            df = table.store.read_files([path])[path]
        except FilepipeError as exc:
            if not exc.retryable:
                raise  # bad data (duplicate keys, bad types): retrying will not help
            last = exc
            continue
        except Exception as exc:  # noqa: BLE001 - zip/parquet/CSV errors while saving
            last = exc
            continue
        if fingerprint_of(path) == before:
            return df
        last = SourceReadError(f"{path} changed while it was being read")
    assert last is not None
    raise last



def _rows_of_files(conn: sa.Connection, table: DataTable, file_ids: list[int]) -> IndexDF:
    """Keys of the live rows that came from the given files."""
    import pandas as pd

    if not table.meta.exists or not file_ids:
        return pd.DataFrame(columns=table.primary_keys)
    return table.meta.matching(conn, pd.DataFrame({"file_id": file_ids}),
                               columns=table.primary_keys)


def _without_clashes(conn: sa.Connection, table: DataTable, data: DataDF,
                     stored: pd.DataFrame, missing: list[str],
                     errors: dict[str, str]) -> DataDF:
    """`data` (rows of the files just read, column ``_path``) less the files whose keys
    clash with another file's (``7.json`` and ``007.json`` with an int key): those are
    reported in `errors` with both paths, and keep their previous rows. Rows of files
    read now or gone now (a rename) clash with nothing."""
    import numpy as np

    from .frames import key_positions, take_rows

    keys = table.primary_keys
    dup = data.duplicated(keys, keep=False).to_numpy()
    clash: dict[str, set[str]] = {}
    shown: dict[str, list[tuple]] = {}  # a few of the keys each file shares with others
    if dup.any():
        for key, group in data[dup].groupby(keys, sort=False, dropna=False)["_path"]:
            paths = set(group)
            for p in paths:
                clash.setdefault(p, set()).update(paths - {p})
                _note(shown, p, key if isinstance(key, tuple) else (key,))
    if table.meta.exists:  # against rows of files not read now
        live = table.meta.matching(conn, data[keys], columns=keys + ["file_id"])
        if len(live):
            reread = stored.loc[stored["path"].isin([*set(data["_path"]), *missing]), "file_id"]
            pos = key_positions(data, live, keys)
            owner = take_rows(live, pos, ["file_id"])["file_id"].to_numpy(dtype="float64", na_value=-1)
            other = (pos >= 0) & (owner >= 0) & ~np.isin(owner, reread.to_numpy(dtype="float64"))
            if other.any():
                names = dict(zip(stored["file_id"], stored["path"]))
                rows = data[keys].to_numpy(dtype=object)[other]
                for p, fid, key in zip(data["_path"].to_numpy()[other], owner[other], rows):
                    clash.setdefault(p, set()).add(names.get(int(fid), f"file #{int(fid)}"))
                    _note(shown, p, tuple(key))
    for p, others in clash.items():
        if p in errors:
            continue
        listed = ", ".join(sorted(others)) or "another of its rows"
        some = shown.get(p, [])
        named = "; ".join(", ".join(f"{k}={v!r}" for k, v in zip(keys, t)) for t in some[:3])
        what = f" ({named}{', ...' if len(some) > 3 else ''})" if named else ""
        errors[p] = (f"table {table.name!r}: {p} holds the same key as {listed}{what}; a key "
                     "must come from one file only (file names that differ but give equal keys, "
                     "such as 7 and 007 for a number key, clash too); rename or remove one of "
                     "them, or fix the keys")
        log.error("%s", errors[p])
    return data[~data["_path"].isin(clash)] if clash else data


def _note(shown: dict[str, list[tuple]], path: str, key: tuple) -> None:
    found = shown.setdefault(path, [])
    if len(found) < 4 and key not in found:
        found.append(key)


def _mass_delete(conn: sa.Connection, table: DataTable, data: DataDF | None,
                 prev: IndexDF) -> str | None:
    """Why deleting the rows of `prev` that `data` lacks is refused, or None.

    Refused when more than `table.max_delete_share` of a table of at least
    `MASS_DELETE_MIN_ROWS` live rows would go at once.
    """
    from .frames import rows_in

    share = table.max_delete_share
    if share is None or prev.empty:
        return None
    gone = len(prev) - (int(rows_in(prev, data, table.primary_keys).sum())
                        if data is not None and len(data) else 0)
    if gone == 0:
        return None
    total = table.meta.count(conn)  # a scan: only when rows go
    if total < MASS_DELETE_MIN_ROWS or gone <= share * total:
        return None
    return (f"this sync would delete {gone} of {total} rows (more than {share:.0%}) of "
            f"{table.store.describe()}; nothing was changed. If that is what you want, run "
            "again with --allow-deletes, or raise Table(..., max_delete_share=...)")
