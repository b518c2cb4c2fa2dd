"""Change detection for file-backed tables (DESIGN §5) and guarding file outputs (§7).

A source's files are listed with one stat each and compared with their stored
fingerprints (path, size, mtime_ns, inode): unchanged files are never opened. Changed,
new and "racy" files (modified within the timestamp granularity of the last sync) are
read and hashed row by row; only rows whose hash changed go on. Missing files lose
their rows. A file that stays unreadable after a few retries is reported by path and
keeps its previous rows, and the rest of the sync goes on.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import FilepipeError, SourceReadError
from .fileutil import backup_path

if TYPE_CHECKING:
    import pandas as pd
    import sqlalchemy as sa

    from .compute import RunReport
    from .table import DataTable

log = logging.getLogger("filepipe")

RACY_NS = 2_000_000_000  # FAT has 2 s mtimes; SMB/NFS cache them: re-hash files this fresh
RETRY_DELAYS = (0.1, 0.3, 0.8)  # a program may still be saving the file


@dataclass
class SyncResult:
    """What one sync found."""

    table: str
    opened: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    changed: pd.DataFrame | None = None


def stored_fingerprints(conn: sa.Connection, table: DataTable) -> pd.DataFrame:
    """Fingerprints recorded for `table`'s files (file_id, path, size, mtime_ns, inode, ...)."""
    from .sql import select_all

    files = table.ds.meta.files
    cols = ["file_id", "path", "size", "mtime_ns", "inode", "synced_ns", "state"]
    from .sql import placeholders

    ph = placeholders(conn, 1)[0]
    return select_all(conn, files, cols, where=f"table_name = {ph}", params=(table.name,))


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
        stored = stored_fingerprints(conn, table)
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
               paths: set[str] | None = None) -> SyncResult:
    """Bring the row meta of the file-backed source `table` up to date with its files.

    `paths` limits the work to those files (the watcher knows which changed).
    """
    import numpy as np
    import pandas as pd

    result = SyncResult(table.name)
    now_ns = time.time_ns()
    found = file_changes(table, paths)
    listed, stored = found.listed, found.stored
    result.missing = found.missing
    if listed.empty and stored.empty:  # nothing there, and never was: say so
        if report is not None:
            report.missing_files.append(table.store.describe())
        return result
    if not found.to_read and not found.missing:
        return result

    data, result.errors = _read_changed(table, found.to_read)
    read_ok = [p for p in found.to_read if p not in result.errors]
    result.opened = read_ok

    with table.ds.meta.begin() as conn:
        ids = _register_files(conn, table, listed[listed["path"].isin(read_ok)], now_ns)
        if data is not None:
            data = data.assign(_fid=data.pop("_path").map(ids))
            _check_unique_across_files(table, data, ids)
        old_ids = [int(i) for i in stored.loc[stored["path"].isin(read_ok + result.missing), "file_id"]]
        prev = _rows_of_files(conn, table, old_ids)
        if data is None:
            data = table.store.empty() if hasattr(table.store, "empty") else prev.iloc[0:0]
            file_ids = None
        else:
            file_ids = data.pop("_fid").to_numpy(dtype=np.int64)
        if data.empty and prev.empty:
            changed = pd.DataFrame(columns=table.primary_keys)
        else:
            changed = table.store_chunk(data, processed_idx=prev, conn=conn,
                                        file_id=file_ids, write_store=False)
        _forget_files(conn, table, result.missing)
    result.changed = changed
    if result.errors and report is not None:
        report.source_errors.update({p: e for p, e in result.errors.items()})
    if result.missing and report is not None:
        report.missing_files.extend(result.missing)
    return result


def _read_changed(table: DataTable, paths: list[str]) -> tuple[pd.DataFrame | None, dict[str, str]]:
    """Rows of the changed files (column ``_path``) and the errors of unreadable ones.

    All files are read in one go; only if that fails, or a file changed while it was
    read, are files read one by one (with retries) to keep the good ones.
    """
    import pandas as pd

    if not paths:
        return None, {}
    before = {p: _stat(p) for p in paths}
    try:
        data = _typed_keys(table, "", table.store.read_files_frame(paths))
        unstable = [p for p in paths if _stat(p) != before[p]]
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
    frames = [f for f in frames if len(f)]
    return (pd.concat(frames, ignore_index=True) if frames else None), errors


def _typed_keys(table: DataTable, path: str, df: pd.DataFrame) -> pd.DataFrame:
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
            raise FilepipeError(
                f"{path}: column {column!r} holds a value that is not a "
                f"{sa_type.python_type.__name__} like the rest of that column ({exc}); "
                "fix the cell") from None
    return table.meta.coerce(df)


def _read_stable(table: DataTable, path: str) -> pd.DataFrame:
    """Read one file, retrying while it is half-written or changes under the read."""
    last: Exception | None = None
    for delay in (0.0, *RETRY_DELAYS):
        if delay:
            time.sleep(delay)
        before = _stat(path)
        try:
            df = table.store.read_files([path])[path]
        except FilepipeError:
            raise  # bad data (duplicate keys, bad types): retrying will not help
        except Exception as exc:  # noqa: BLE001 - zip/parquet/CSV errors while saving
            last = exc
            continue
        if _stat(path) == before:
            return df
        last = SourceReadError(f"{path} changed while it was being read")
    assert last is not None
    raise last


def _stat(path: str) -> tuple | None:
    try:
        st = Path(path).stat()
    except FileNotFoundError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _register_files(conn: sa.Connection, table: DataTable, listed: pd.DataFrame,
                    now_ns: int) -> dict[str, int]:
    """Record fingerprints of the files just read; returns path → file_id."""
    from .sql import select_where_in, upsert

    files = table.ds.meta.files
    if listed.empty:
        return {}
    rows = listed.assign(table_name=table.name, synced_ns=now_ns, state="synced")
    upsert(conn, files, rows, ["table_name", "path"])
    found = select_where_in(conn, files, ["path", "file_id"], rows, ["table_name", "path"])
    return dict(zip(found["path"], found["file_id"].astype(int)))


def _forget_files(conn: sa.Connection, table: DataTable, paths: list[str]) -> None:
    if not paths:
        return
    import pandas as pd

    from .sql import delete_keys

    delete_keys(conn, table.ds.meta.files,
                pd.DataFrame({"table_name": table.name, "path": paths}), ["table_name", "path"])


def _rows_of_files(conn: sa.Connection, table: DataTable, file_ids: list[int]) -> pd.DataFrame:
    """Keys of the live rows that came from the given files."""
    import pandas as pd

    if not table.meta.exists or not file_ids:
        return pd.DataFrame(columns=table.primary_keys)
    return table.meta.matching(conn, pd.DataFrame({"file_id": file_ids}),
                               columns=table.primary_keys)


def _check_unique_across_files(table: DataTable, data: pd.DataFrame, ids: dict[str, int]) -> None:
    from .errors import DuplicateKeysError

    keys = table.primary_keys
    dup = data.duplicated(keys, keep=False)
    if dup.any():
        names = {v: k for k, v in ids.items()}
        clash = data[dup]
        files = sorted({names[i] for i in clash["_fid"]})
        first = clash.iloc[0]
        raise DuplicateKeysError(
            f"table {table.name!r}: key {', '.join(f'{k}={first[k]!r}' for k in keys)} "
            f"appears in several files: {', '.join(files)}")


# --- outputs ---------------------------------------------------------------------------

def mark_output(table: DataTable, state: str, before: pd.DataFrame | None = None) -> None:
    """Record an output file's state: 'dirty' before buffered writes, 'clean' after flush.

    A clean record also stores the fingerprint the flush left, so a later edit by
    someone else shows as a mismatch. `before` holds the fingerprints the files had
    before the flush (see `_follow_own_write`).
    """
    from .sql import upsert

    listed = table.store.list_files()
    if listed is None:
        return
    with table.ds.meta.begin() as conn:
        if before is not None:
            _follow_own_write(conn, table, before, listed)
        if state == "dirty":
            stored = stored_fingerprints(conn, table)
            rows = stored.drop(columns=["file_id"]) if len(stored) else \
                listed.assign(synced_ns=None)
            upsert(conn, table.ds.meta.files,
                   rows.assign(table_name=table.name, state="dirty"), ["table_name", "path"])
        else:
            upsert(conn, table.ds.meta.files,
                   listed.assign(table_name=table.name, synced_ns=time.time_ns(), state="clean"),
                   ["table_name", "path"])
            stored = stored_fingerprints(conn, table)
            _forget_files(conn, table, sorted(set(stored["path"]) - set(listed["path"])))


def _follow_own_write(conn: sa.Connection, table: DataTable, before: pd.DataFrame,
                      after: pd.DataFrame) -> None:
    """Other tables in the files filepipe just rewrote (sheets of one workbook) were not
    touched by the write: where their record matched the file before it, it now matches
    the file after it, so the next sync does not re-read them.
    """
    from .sql import placeholders, qualified

    moved = before.merge(after, on="path", suffixes=("", "_new"))
    moved = moved[(moved["size"] != moved["size_new"]) | (moved["mtime_ns"] != moved["mtime_ns_new"])
                  | (moved["inode"] != moved["inode_new"])]
    ph = placeholders(conn, 5)
    for r in moved.itertuples(index=False):  # one row per rewritten file, not per data row
        conn.exec_driver_sql(
            f"UPDATE {qualified(conn, table.ds.meta.files)} SET size = {ph[0]}, mtime_ns = {ph[1]}, inode = {ph[2]} "
            f"WHERE path = {ph[3]} AND table_name != {ph[4]} AND size = {int(r.size)} "
            f"AND mtime_ns = {int(r.mtime_ns)} AND inode = {int(r.inode)}",
            (int(r.size_new), int(r.mtime_ns_new), int(r.inode_new), r.path, table.name))


def check_output(table: DataTable) -> str | None:
    """If the output's file no longer holds what filepipe wrote, back it up and rebuild.

    Returns the backup path when the output was rebuilt (its producing step must then
    recompute everything), else None. A file that changed on disk but still holds the
    same rows (another sheet was edited, or it was re-saved) is simply re-fingerprinted.
    """
    listed = table.store.list_files()
    if listed is None:
        return None
    with table.ds.meta.begin() as conn:
        stored = stored_fingerprints(conn, table)
    if stored.empty:
        return None
    both = listed.merge(stored, on="path", how="outer", suffixes=("", "_old"))
    unchanged = ((both["size"] == both["size_old"]) & (both["mtime_ns"] == both["mtime_ns_old"])
                 & (both["inode"] == both["inode_old"]) & (both["state"] == "clean")).all()
    if unchanged:
        return None
    if _content_matches(table):
        mark_output(table, "clean")
        return None
    edited = both.loc[both["size"].notna() & ~(
        (both["size"] == both["size_old"]) & (both["mtime_ns"] == both["mtime_ns_old"])
        & (both["inode"] == both["inode_old"])), "path"].tolist() or listed["path"].tolist()
    backup = _backup(table, [Path(p) for p in edited])
    log.warning("output %s was changed outside filepipe since it was written; kept a copy as "
                "%s and rebuilding it", table.store.describe(), backup)
    rebuild_output(table)
    return backup


def _backup(table: DataTable, paths: list[Path]) -> str:
    """Copy edited output files aside; returns where they went.

    A single-file output gets a timestamped copy beside it; files of a folder output go
    to a timestamped sibling folder, where the store's own pattern cannot pick them up.
    """
    from .stores.files import FileStore

    if isinstance(table.store, FileStore) and len(paths) == 1:
        target = backup_path(paths[0])
        shutil.copy2(paths[0], target)
        return str(target)
    root = table.store.watch_paths()[0]
    folder = backup_path(root)
    for p in paths:
        dest = folder / p.relative_to(root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dest)
    return str(folder)


def _content_matches(table: DataTable) -> bool:
    """Do the rows in the output's files hash to exactly what the meta recorded?"""
    from .hashing import hash_rows

    discard = getattr(table.store, "discard", None)
    if discard:
        discard()
    try:
        rows = table.store.read_rows()
    except Exception:  # noqa: BLE001 - unreadable counts as changed
        return False
    meta = table.get_metadata()
    if len(rows) != len(meta):
        return False
    if rows.empty:
        return True
    rows = table.meta.coerce(rows)
    got = rows[table.primary_keys].assign(hash=hash_rows(rows))
    both = got.merge(meta[table.primary_keys + ["hash"]], on=table.primary_keys,
                     how="inner", suffixes=("", "_meta"))
    return len(both) == len(meta) and bool((both["hash"] == both["hash_meta"].astype("int64")).all())


def rebuild_output(table: DataTable) -> None:
    """Empty an output for its producer to rebuild: its rows are deleted (soft deletes in
    the meta, so steps reading it see the change) without reading the file, which may be
    the broken one someone left behind.
    """
    table.store.clear()
    if table.meta.exists:
        live = table.get_metadata()[table.primary_keys]
        if len(live):
            table.store_chunk(live.iloc[0:0], processed_idx=live, write_store=False)
    table._flush()
