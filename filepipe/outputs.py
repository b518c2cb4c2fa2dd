"""Guarding file outputs: a file someone changed is backed up and rebuilt, a write that
never finished is redone, an output a fresh index finds is adopted (docs/reliability.md).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .fileutil import backup_path

if TYPE_CHECKING:
    import pandas as pd

    from .report import RunReport
    from .table import DataTable

log = logging.getLogger("filepipe")


@dataclass
class OutputCheck:
    """What guarding an output found: rebuilt (its producer must recompute every key),
    the backup kept of someone else's edit, or the copy held of an output adopted by a
    fresh index (see `adopt_output`)."""

    rebuilt: bool = False
    backup: str | None = None
    held: Path | None = None


def check_output(table: DataTable, report: RunReport | None = None) -> OutputCheck:
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
        stored = table.ds.meta.file_meta.stored(conn, table.name)
    unknown = stored.empty and not (table.meta.exists and table.count())
    dirty = bool((stored["state"] == "dirty").any())
    if unknown or dirty:  # a write may have been killed: its temp files go first
        _remove_temp_files(table)
        listed = table.store.list_files()
        assert listed is not None  # a file-backed store, as the first listing showed
    if unknown:
        return adopt_output(table, listed)
    both = listed.merge(stored, on="path", how="outer", suffixes=("", "_old"))
    same = ((both["size"] == both["size_old"]) & (both["mtime_ns"] == both["mtime_ns_old"])
            & (both["inode"] == both["inode_old"]))
    if same.all() and not dirty:
        return OutputCheck()
    if _content_matches(table):
        table.mark_files("clean")
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
    rebuild_output(table, report)
    return OutputCheck(rebuilt=True, backup=backup)


def _remove_temp_files(table: DataTable) -> None:
    """Remove the temp files a killed write of filepipe's left among `table`'s files."""
    from .fileutil import remove_stale_temp_files

    for left in remove_stale_temp_files(_location(table)):
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
        table.mark_files("clean")
        return OutputCheck()
    held = Path(tempfile.mkdtemp(prefix="filepipe-adopted-"))
    for p in listed["path"]:
        dest = held / (Path(p).name if table.store.single_file else
                       Path(p).relative_to(_location(table)))
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dest)
    table.store_chunk(rows, write_store=False)  # not a change of this run: not reported
    table.mark_files("clean")
    log.info("output %s is not in the index: taking its %d row(s) as they are and "
             "recomputing them", table.store.describe(), len(rows))
    return OutputCheck(rebuilt=True, held=held)


def release_adopted(table: DataTable, held: Path, changed: bool,
                    kept: dict[Path, str]) -> str | None:
    """Keep the held copy of an adopted output beside it if the run `changed` the
    output (rows filepipe could not account for were replaced); returns its path.
    `kept` maps files already kept this run to their copy (two sheets, one workbook)."""
    root = _location(table)
    if not changed or root in kept:
        shutil.rmtree(held, ignore_errors=True)
        return kept.get(root) if changed else None
    target = backup_path(root)
    shutil.move(str(next(held.iterdir()) if table.store.single_file else held), target)
    shutil.rmtree(held, ignore_errors=True)
    kept[root] = str(target)
    log.warning("output %s held rows that the pipeline does not produce from the current "
                "sources; kept its previous content as %s", table.store.describe(), target)
    return str(target)


def _location(table: DataTable) -> Path:
    """The file or folder of an output that has files (so a file-backed store)."""
    root = table.store.location()
    assert root is not None, f"{table.store.describe()} is not file-backed"
    return root


def _backup(table: DataTable, paths: list[Path]) -> str:
    """Copy edited output files aside; returns where they went.

    A single-file output gets a timestamped copy beside it; files of a folder output go
    to a timestamped sibling folder, where the store's own pattern cannot pick them up.
    """
    if table.store.single_file and len(paths) == 1:
        target = backup_path(paths[0])
        shutil.copy2(paths[0], target)
        return str(target)
    root = _location(table)
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


def rebuild_output(table: DataTable, report: RunReport | None = None) -> None:
    """Empty an output for its producer to rebuild: its rows are deleted (soft deletes in
    the meta, so steps reading it see the change) without reading the file, which may be
    the broken one someone left behind. The file is left as it is, marked dirty, until
    the producer writes it: a run that stops before that redoes it without a backup.
    """
    table.store.clear()
    if table.meta.exists:
        live = table.get_metadata()[table.primary_keys]
        if len(live):
            table.store_chunk(live.iloc[0:0], processed_idx=live, write_store=False, report=report)
    table.mark_files("dirty", current=True)
