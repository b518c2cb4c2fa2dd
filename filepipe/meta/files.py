"""FileMeta: the fingerprints of the files behind file-backed tables (``fp_files``).

One row per (table, file): the file's fingerprint (path, size, mtime_ns, inode) as
filepipe last saw it, when (`synced_ns`) and in which state: ``synced`` (a source file
read and hashed), ``clean`` (an output file as filepipe wrote it) or ``dirty`` (an output
filepipe began to write and has not finished: the file may lag behind its meta). An
output without a file yet is marked dirty by a placeholder row with no fingerprint.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .. import sql
from ..fileutil import FINGERPRINT_COLUMNS as FINGERPRINT

if TYPE_CHECKING:
    import pandas as pd
    import sqlalchemy as sa

    from .schema import IndexDB

class FileMeta:
    """Reads and writes ``fp_files`` (see the module docstring)."""

    def __init__(self, db: IndexDB) -> None:
        self.db = db
        self.table = db.files

    def stored(self, conn: sa.Connection, table: str) -> pd.DataFrame:
        """The recorded files of `table`: file_id, path, size, mtime_ns, inode, synced_ns, state."""
        ph = sql.placeholders(conn, 1)[0]
        return sql.select_all(conn, self.table, ["file_id", *FINGERPRINT, "synced_ns", "state"],
                              where=f"table_name = {ph}", params=(table,))

    def register(self, conn: sa.Connection, table: str, listed: pd.DataFrame,
                 now_ns: int) -> dict[str, int]:
        """Record the fingerprints of source files just read; returns path → file_id."""
        if listed.empty:
            return {}
        rows = listed.assign(table_name=table, synced_ns=now_ns, state="synced")
        sql.upsert(conn, self.table, rows, ["table_name", "path"])
        found = sql.select_where_in(conn, self.table, ["path", "file_id"], rows,
                                    ["table_name", "path"])
        return dict(zip(found["path"], found["file_id"].astype(int)))

    def forget(self, conn: sa.Connection, table: str, paths: Iterable[str]) -> None:
        import pandas as pd

        paths = list(paths)
        if paths:
            sql.delete_keys(conn, self.table, pd.DataFrame({"table_name": table, "path": paths}),
                            ["table_name", "path"])

    def mark_dirty(self, conn: sa.Connection, table: str, rows: pd.DataFrame,
                   placeholder: str) -> None:
        """Mark `table`'s output files dirty, recording `rows` (fingerprints, with
        synced_ns) as theirs; a placeholder row named `placeholder` when there are none."""
        import pandas as pd

        if rows.empty:
            rows = pd.DataFrame({"path": [placeholder], "size": [None], "mtime_ns": [None],
                                 "inode": [None], "synced_ns": [None]})
        sql.upsert(conn, self.table, rows.assign(table_name=table, state="dirty"),
                   ["table_name", "path"])

    def mark_clean(self, conn: sa.Connection, table: str, listed: pd.DataFrame) -> None:
        """Record `listed` as the files filepipe just wrote for `table`, and only them."""
        sql.upsert(conn, self.table,
                   listed.assign(table_name=table, synced_ns=time.time_ns(), state="clean"),
                   ["table_name", "path"])
        stored = self.stored(conn, table)
        self.forget(conn, table, sorted(set(stored["path"]) - set(listed["path"])))

    def follow_own_write(self, conn: sa.Connection, table: str, before: pd.DataFrame,
                         after: pd.DataFrame) -> None:
        """Other tables in the files `table`'s write just changed (sheets of one workbook)
        were not touched by it: where their record matched the file before the write, it
        now matches the file after it, so the next sync does not re-read them."""
        moved = before.merge(after, on="path", suffixes=("", "_new"))
        moved = moved[(moved["size"] != moved["size_new"]) | (moved["mtime_ns"] != moved["mtime_ns_new"])
                      | (moved["inode"] != moved["inode_new"])]
        ph = sql.placeholders(conn, 5)
        for r in moved.itertuples(index=False):  # one row per rewritten file, not per data row
            conn.exec_driver_sql(
                f"UPDATE {sql.qualified(conn, self.table)} SET size = {ph[0]}, mtime_ns = {ph[1]}, "
                f"inode = {ph[2]} WHERE path = {ph[3]} AND table_name != {ph[4]} "
                f"AND size = {int(r.size)} AND mtime_ns = {int(r.mtime_ns)} AND inode = {int(r.inode)}",
                (int(r.size_new), int(r.mtime_ns_new), int(r.inode_new), r.path, table))

    def is_dirty(self, table: str) -> bool:
        """Is an output of `table` marked as lagging behind its meta?"""
        with self.db.begin() as conn:
            ph = sql.placeholders(conn, 1)[0]
            return conn.exec_driver_sql(
                f"SELECT 1 FROM {sql.qualified(conn, self.table)} WHERE table_name = {ph} "
                "AND state = 'dirty' LIMIT 1", (table,)).first() is not None
