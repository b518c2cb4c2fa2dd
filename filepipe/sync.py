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
MASS_DELETE_MIN_ROWS = 20  # below this, deleting most rows is ordinary editing


@dataclass
class SyncResult:
    """What one sync found."""

    table: str
    opened: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    changed: pd.DataFrame | None = None
    #: why the sync changed nothing (it would have deleted too much), else None
    refused: str | None = None


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
               paths: set[str] | None = None, allow_deletes: bool = False) -> SyncResult:
    """Bring the row meta of the file-backed source `table` up to date with its files.

    `paths` limits the work to those files (the watcher knows which changed). A sync
    that would delete every row, or more than the table's `max_delete_share` of a
    sizeable table, changes nothing and reports why unless `allow_deletes`.
    """
    import numpy as np
    import pandas as pd

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

    data, errors = _read_changed(table, found.to_read)
    result.errors.update(errors)

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
        ids = _register_files(conn, table, listed[listed["path"].isin(read_ok)], now_ns)
        file_ids = None
        if data is None:
            data = table.store.empty() if hasattr(table.store, "empty") else prev.iloc[0:0]
        else:
            data = data[data["_path"].isin(read_ok)]
            file_ids = data["_path"].map(ids).to_numpy(dtype=np.int64)
            data = data.drop(columns="_path")
        if data.empty and prev.empty:
            changed = pd.DataFrame(columns=table.primary_keys)
        else:
            changed = table.store_chunk(data, processed_idx=prev, conn=conn,
                                        file_id=file_ids, write_store=False)
        _forget_files(conn, table, result.missing)
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
    if _single(table):
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


def _without_clashes(conn: sa.Connection, table: DataTable, data: pd.DataFrame,
                     stored: pd.DataFrame, missing: list[str],
                     errors: dict[str, str]) -> pd.DataFrame:
    """`data` (rows of the files just read, column ``_path``) less the files whose keys
    clash with another file's (``7.json`` and ``007.json`` with an int key): those are
    reported in `errors` with both paths, and keep their previous rows. Rows of files
    read now or gone now (a rename) clash with nothing."""
    import numpy as np

    from .frames import key_positions, take_rows

    keys = table.primary_keys
    dup = data.duplicated(keys, keep=False).to_numpy()
    clash: dict[str, set[str]] = {}
    if dup.any():
        for _, group in data[dup].groupby(keys, sort=False, dropna=False)["_path"]:
            paths = set(group)
            for p in paths:
                clash.setdefault(p, set()).update(paths - {p})
    if table.meta.exists:  # against rows of files not read now
        live = table.meta.matching(conn, data[keys], columns=keys + ["file_id"])
        if len(live):
            reread = stored.loc[stored["path"].isin([*set(data["_path"]), *missing]), "file_id"]
            pos = key_positions(data, live, keys)
            owner = take_rows(live, pos, ["file_id"])["file_id"].to_numpy(dtype="float64", na_value=-1)
            other = (pos >= 0) & (owner >= 0) & ~np.isin(owner, reread.to_numpy(dtype="float64"))
            if other.any():
                names = dict(zip(stored["file_id"], stored["path"]))
                for p, fid in zip(data["_path"].to_numpy()[other], owner[other]):
                    clash.setdefault(p, set()).add(names.get(int(fid), f"file #{int(fid)}"))
    for p, others in clash.items():
        if p in errors:
            continue
        shown = ", ".join(sorted(others))
        errors[p] = (f"table {table.name!r}: {p} holds the same key as {shown} (file names that "
                     "differ but give equal keys, such as 7 and 007 for a number key); rename "
                     "or remove one of them")
        log.error("%s", errors[p])
    return data[~data["_path"].isin(clash)] if clash else data


def _mass_delete(conn: sa.Connection, table: DataTable, data: pd.DataFrame | None,
                 prev: pd.DataFrame) -> str | None:
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


# --- outputs ---------------------------------------------------------------------------

def mark_output(table: DataTable, state: str, before: pd.DataFrame | None = None,
                current: bool = False) -> None:
    """Record an output file's state: 'dirty' before buffered writes, 'clean' after flush.

    A clean record also stores the fingerprint the flush left, so a later edit by
    someone else shows as a mismatch. A dirty record keeps the fingerprints the files
    had before filepipe started writing (those they have now with `current`), and a
    new output gets a placeholder row, so a write that never finished is always seen.
    `before` holds the fingerprints the files had before the flush (see
    `_follow_own_write`).
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
            rows = stored.drop(columns=["file_id"]) if len(stored) and not current else \
                listed.assign(synced_ns=None)
            if rows.empty:
                rows = _placeholder(table)
            upsert(conn, table.ds.meta.files,
                   rows.assign(table_name=table.name, state="dirty"), ["table_name", "path"])
        else:
            upsert(conn, table.ds.meta.files,
                   listed.assign(table_name=table.name, synced_ns=time.time_ns(), state="clean"),
                   ["table_name", "path"])
            stored = stored_fingerprints(conn, table)
            _forget_files(conn, table, sorted(set(stored["path"]) - set(listed["path"])))


def _placeholder(table: DataTable) -> pd.DataFrame:
    """A fingerprint row standing for an output that has no file yet."""
    import pandas as pd

    return pd.DataFrame({"path": [table.store.describe()], "size": [None], "mtime_ns": [None],
                         "inode": [None], "synced_ns": [None]})


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


@dataclass
class OutputCheck:
    """What guarding an output found: rebuilt (its producer must recompute every key),
    the backup kept of someone else's edit, or the copy held of an output adopted by a
    fresh index (see `adopt_output`)."""

    rebuilt: bool = False
    backup: str | None = None
    held: Path | None = None


def check_output(table: DataTable) -> OutputCheck:
    """If the output's files no longer hold what filepipe wrote, back them up and rebuild.

    Files that changed on disk but still hold the recorded rows (another sheet was
    edited, or the workbook re-saved) are simply re-fingerprinted. A write filepipe
    itself did not finish (the record says 'dirty') is redone without a backup, unless
    someone changed the file since. An output the index has no record of is adopted.
    """
    listed = table.store.list_files()
    if listed is None:
        return OutputCheck()
    with table.ds.meta.begin() as conn:
        stored = stored_fingerprints(conn, table)
    unknown = stored.empty and not (table.meta.exists and table.count())
    dirty = bool((stored["state"] == "dirty").any())
    if unknown or dirty:  # a write may have been killed: its temp files go first
        _remove_temp_files(table)
        listed = table.store.list_files()
    if unknown:
        return adopt_output(table, listed)
    both = listed.merge(stored, on="path", how="outer", suffixes=("", "_old"))
    same = ((both["size"] == both["size_old"]) & (both["mtime_ns"] == both["mtime_ns_old"])
            & (both["inode"] == both["inode_old"]))
    if same.all() and not dirty:
        return OutputCheck()
    if _content_matches(table):
        mark_output(table, "clean")
        return OutputCheck()
    present = both["size"].notna()
    if dirty:  # only files someone changed since filepipe began its write are theirs
        edited = both.loc[present & both["size_old"].notna() & ~same, "path"].tolist()
    else:
        edited = both.loc[present & ~same, "path"].tolist() or listed["path"].tolist()
    backup = _backup(table, [Path(p) for p in edited]) if edited else None
    if backup:
        log.warning("output %s was changed outside filepipe since it was written; kept a copy as "
                    "%s and rebuilding it", table.store.describe(), backup)
    else:
        log.info("output %s: finishing a write that was interrupted", table.store.describe())
    rebuild_output(table)
    return OutputCheck(rebuilt=True, backup=backup)


def _remove_temp_files(table: DataTable) -> None:
    """Remove the temp files a killed write of filepipe's left among `table`'s files."""
    from .fileutil import remove_stale_temp_files

    roots = [table.store.path] if _single(table) else table.store.watch_paths()
    for root in roots:
        for left in remove_stale_temp_files(root):
            log.info("removed %s, left by an interrupted write", left)


def adopt_output(table: DataTable, listed: pd.DataFrame) -> OutputCheck:
    """An output with files but no record in the index (lost, or new) is taken as it is.

    Its rows enter the meta as they are, and its producer recomputes every key (the
    caller resets it): rows that nothing produces any more go, others are rewritten
    only if they differ. A copy of the files is held meanwhile; `release_adopted`
    keeps it as a backup if the recompute changed anything, else drops it. Files that
    cannot be read are backed up and rebuilt, as after a hand edit.
    """
    import tempfile

    if listed.empty:
        return OutputCheck()
    table.store.discard()
    try:
        rows = table.store.read_rows()
    except Exception:  # noqa: BLE001 - unreadable: someone's file, keep it
        backup = _backup(table, [Path(p) for p in listed["path"]])
        rebuild_output(table)
        return OutputCheck(rebuilt=True, backup=backup)
    if rows.empty:  # a workbook without this sheet yet, say: nothing to account for
        mark_output(table, "clean")
        return OutputCheck()
    held = Path(tempfile.mkdtemp(prefix="filepipe-adopted-"))
    for p in listed["path"]:
        dest = held / (Path(p).name if _single(table) else
                       Path(p).relative_to(table.store.watch_paths()[0]))
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dest)
    report, table.ds.report = table.ds.report, None  # not a change of this run
    try:
        table.store_chunk(rows, write_store=False)
    finally:
        table.ds.report = report
    mark_output(table, "clean")
    log.info("output %s is not in the index: taking its %d row(s) as they are and "
             "recomputing them", table.store.describe(), len(rows))
    return OutputCheck(rebuilt=True, held=held)


def release_adopted(table: DataTable, held: Path, changed: bool,
                    kept: dict[Path, str]) -> str | None:
    """Keep the held copy of an adopted output beside it if the run `changed` the
    output (rows filepipe could not account for were replaced); returns its path.
    `kept` maps files already kept this run to their copy (two sheets, one workbook)."""
    root = table.store.path if _single(table) else table.store.watch_paths()[0]
    if not changed or root in kept:
        shutil.rmtree(held, ignore_errors=True)
        return kept.get(root) if changed else None
    target = backup_path(root)
    shutil.move(str(next(held.iterdir()) if _single(table) else held), target)
    shutil.rmtree(held, ignore_errors=True)
    kept[root] = str(target)
    log.warning("output %s held rows that the pipeline does not produce from the current "
                "sources; kept its previous content as %s", table.store.describe(), target)
    return str(target)


def is_dirty(table: DataTable) -> bool:
    """Is the output's file marked as lagging behind its meta (a write not finished)?"""
    from .sql import placeholders, qualified

    with table.ds.meta.begin() as conn:
        ph = placeholders(conn, 1)[0]
        return conn.exec_driver_sql(
            f"SELECT 1 FROM {qualified(conn, table.ds.meta.files)} WHERE table_name = {ph} "
            "AND state = 'dirty' LIMIT 1", (table.name,)).first() is not None


def _single(table: DataTable) -> bool:
    from .stores.files import FileStore

    return isinstance(table.store, FileStore)


def _backup(table: DataTable, paths: list[Path]) -> str:
    """Copy edited output files aside; returns where they went.

    A single-file output gets a timestamped copy beside it; files of a folder output go
    to a timestamped sibling folder, where the store's own pattern cannot pick them up.
    """
    if _single(table) and len(paths) == 1:
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
    """Do the rows in the output's files hash to exactly what the meta recorded?

    Rows read back go through the store's `normalize`, as the rows written did.
    """
    from .hashing import hash_rows

    table.store.discard()
    try:
        rows = table.store.read_rows()
    except Exception:  # noqa: BLE001 - unreadable counts as changed
        return False
    meta = table.get_metadata()
    if len(rows) != len(meta):
        return False
    if rows.empty:
        return True
    rows = table.meta.coerce(table.store.normalize(rows))
    got = rows[table.primary_keys].assign(hash=hash_rows(rows))
    both = got.merge(meta[table.primary_keys + ["hash"]], on=table.primary_keys,
                     how="inner", suffixes=("", "_meta"))
    return len(both) == len(meta) and bool((both["hash"] == both["hash_meta"].astype("int64")).all())


def rebuild_output(table: DataTable) -> None:
    """Empty an output for its producer to rebuild: its rows are deleted (soft deletes in
    the meta, so steps reading it see the change) without reading the file, which may be
    the broken one someone left behind. The file is left as it is, marked dirty, until
    the producer writes it: a run that stops before that redoes it without a backup.
    """
    table.store.clear()
    if table.meta.exists:
        live = table.get_metadata()[table.primary_keys]
        if len(live):
            table.store_chunk(live.iloc[0:0], processed_idx=live, write_store=False)
    mark_output(table, "dirty", current=True)
