"""The one protocol every store implements: a place that looks like a keyed table."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import sqlalchemy as sa

    from ..frametypes import DataDF, IndexDF


class TableStore(ABC):
    """A keyed table kept somewhere: an SQL table, a sheet, a file, a folder, memory.

    Rows are pandas frames; `idx` arguments are frames of key columns. Stores do not keep
    metadata: the `DataTable` wrapping a store does (hashes, timestamps, change sequence).

    Writes may be buffered: a file store may collect `upsert_rows`/`delete_rows` in memory
    and write its file once in `flush()`, which the engine calls at the end of each step.
    """

    primary_keys: list[str]
    #: writes go through the index's transaction (and roll back with it)
    transactional: bool = False
    #: the rows live in files, which the sync fingerprints (`list_files`) and reads
    file_backed: bool = False
    #: all rows in one file, `location()` (else a folder of files, or not files at all)
    single_file: bool = False

    # --- schema -------------------------------------------------------------------------
    def key_types(self) -> dict[str, sa.types.TypeEngine] | None:
        """SQL types of the key columns when the store knows them (else inferred from data)."""
        return None

    # --- data ---------------------------------------------------------------------------
    @abstractmethod
    def read_rows(self, idx: IndexDF | None = None) -> DataDF:
        """All rows, or the rows whose keys are in `idx` (missing keys are skipped)."""

    def sql_table(self, conn: sa.Connection) -> sa.Table | None:
        """The SQL table holding the rows when it is in the database of `conn` (the
        index's): the engine then reads rows and their meta in one query. Default: None."""
        return None

    def empty(self) -> DataDF:
        """No rows, with the columns (and, where the store knows them, the dtypes) a read
        of the table gives."""
        import pandas as pd

        return pd.DataFrame(columns=self.primary_keys)

    def read_rows_matching(self, proj: pd.DataFrame) -> DataDF | None:
        """Rows whose values in `proj`'s columns (some of the keys) equal one of its rows.

        Only for stores that can find them through an index; None (the default) makes
        the engine read by full keys instead. Steps grouping by part of the keys (the
        seed's events by `user_id`) read a batch in one indexed query this way.
        """
        return None

    @abstractmethod
    def upsert_rows(self, df: DataDF, conn: Any = None) -> None:
        """Insert or replace the rows of `df` by key.

        `conn` is the metadata index's open SQLAlchemy connection: a store in the same
        database writes through it so data and meta commit in one transaction.
        """

    @abstractmethod
    def delete_rows(self, idx: IndexDF, conn: Any = None) -> None:
        """Delete the rows whose keys are in `idx` (absent keys are ignored)."""

    def flush(self) -> None:
        """Write buffered changes out (atomically). No-op for unbuffered stores."""

    def discard(self) -> None:
        """Forget buffered writes and cached content (next read goes to the files)."""

    def use_written_kinds(self, kinds: dict[str, str]) -> None:
        """Column dtypes of what filepipe wrote (kept in the index): a store whose format
        keeps no types (CSV) reads its columns back with them. Default: ignored."""

    def check_writable(self, df: DataDF) -> None:
        """Raise a `FilepipeError` naming the column, key and limit when rows of `df` cannot
        be written to this store (a cell too long for Excel, an int too large for Parquet).

        The engine calls it before writing anything of a batch, so a value one output
        cannot hold fails only the keys of that batch. Default: everything fits.
        """

    def normalize(self, df: DataDF) -> DataDF:
        """`df` as reading it back from the store will give it (default: unchanged).

        The engine hashes this, so values a format cannot keep exactly (Excel's
        millisecond times, say) do not look like changes when the file is read again.
        """
        return df

    def clear(self) -> None:
        """Remove every row, without relying on the current content being readable."""
        rows = self.read_rows()
        if len(rows):
            self.delete_rows(rows[self.primary_keys])

    # --- files --------------------------------------------------------------------------
    def location(self) -> Path | None:
        """The file (single-file stores) or folder holding the table's files; None for
        stores that are not file-backed."""
        return None

    def list_files(self) -> pd.DataFrame | None:
        """Fingerprints of the files holding the table: columns path, size, mtime_ns, inode.

        None for stores that are not file-backed (SQL, memory): those are never synced.
        """
        return None

    def skipped_files(self) -> dict[str, str]:
        """Entries the last `list_files` found at the store's paths but left out, with why:
        not a regular file (a FIFO, a socket), a name that is not valid UTF-8. The sync
        reports them; the rest of the table syncs. Default: none.
        """
        return {}

    def owns_path(self, path: Path) -> bool:
        """Could the file `path` hold rows of this table (watchers start cycles only for
        such paths)? Default: any path under `watch_paths()`."""
        return any(path == root or root in path.parents for root in self.watch_paths())

    def read_files(self, paths: list[str]) -> dict[str, DataDF]:
        """Rows of each given file (a file that vanished maps to an empty frame)."""
        raise NotImplementedError(f"{type(self).__name__} is not file-backed")

    def read_files_frame(self, paths: list[str]) -> DataDF:
        """Rows of the given files in one frame, the column ``_path`` naming each row's file.

        Raises if any file cannot be read; the sync then reads them one by one to
        find which. Stores of many small files override it to build one frame at once.
        """
        import pandas as pd

        frames = [df.assign(_path=p) for p, df in self.read_files(paths).items() if len(df)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["_path"])

    def watch_paths(self) -> list[Path]:
        """Directories a watcher should observe for this store."""
        return []

    def describe(self) -> str:
        """Short human description for messages, e.g. ``out/report.xlsx[Summary]``."""
        return type(self).__name__
