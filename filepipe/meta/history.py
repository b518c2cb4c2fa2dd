"""The versions kept of every table: row versions staged by open transactions, written to
the Parquet history (`filepipe.history.HistoryStore`) once committed, how far the history
is complete, and tags naming versions.

A change reaches the history in the order data reaches its store: staged with the
transaction that writes it, kept in memory once that transaction commits (dropped if it
rolls back), and written as a segment per table at the end of the run (or sooner, when
many rows are waiting). The index then records the clock value up to which the history
is complete: a crash before that leaves a gap the next run fills from the meta and the
stored rows (`DataStore.repair_history`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import sql

if TYPE_CHECKING:
    import pandas as pd
    import sqlalchemy as sa

    from ..history import HistoryStore
    from .schema import IndexDB

#: committed rows kept in memory before they are written out mid-run
PENDING_ROWS = 250_000
#: a run changing at most this many rows keeps them in the index's inbox (one insert in
#: the transaction logging the run) instead of writing Parquet files
INBOX_ROWS = 5_000
#: rows, and frames, in the inbox beyond which they move to Parquet segments
INBOX_LIMIT = 20_000
INBOX_FRAMES = 300
#: segments of one table beyond which a flush merges the small ones
MAX_SEGMENTS = 32


class HistoryLog:
    """The history of the index `index`, kept under `root` (None: no history)."""

    def __init__(self, index: IndexDB, root: Path | None) -> None:
        self.index = index
        self.root = root
        self._store: HistoryStore | None = None
        self._staged: dict[int, list[tuple[str, pd.DataFrame]]] = {}
        self._pending: dict[str, list[pd.DataFrame]] = {}
        self.pending_rows = 0
        index.after_commit.append(self._committed)
        index.after_rollback.append(self._rolled_back)

    @property
    def enabled(self) -> bool:
        return self.root is not None

    @property
    def store(self) -> HistoryStore:
        from ..history import HistoryStore

        if self.root is None:
            raise ValueError("this index keeps no history")
        if self._store is None:
            self._store = HistoryStore(self.root)
        return self._store

    # --- capture ------------------------------------------------------------------------
    def stage(self, conn: sa.Connection, table: str, rows: pd.DataFrame) -> None:
        """Row versions written by the transaction of `conn` (kept once it commits)."""
        if self.enabled and len(rows):
            self._staged.setdefault(id(conn), []).append((table, rows))

    def _committed(self, conn: sa.Connection) -> None:
        for table, rows in self._staged.pop(id(conn), ()):
            self._pending.setdefault(table, []).append(rows)
            self.pending_rows += len(rows)

    def _rolled_back(self, conn: sa.Connection) -> None:
        self._staged.pop(id(conn), None)

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    def flush(self, run_id: int) -> None:
        """Write the committed versions waiting, a segment per table, as versions of run
        `run_id` (the run log then records the history complete: `MetaIndex.log_run`)."""
        for table, rows in self._take_pending(run_id).items():
            self.store.append(table, rows)
            self.store.compact(table, MAX_SEGMENTS)

    def keep_in_inbox(self, conn: sa.Connection, run_id: int) -> None:
        """Keep the versions waiting (few) in the index's inbox, in the transaction of
        `conn` (the one logging run `run_id`): a Parquet file per table and run would
        cost more than the change itself."""
        import pickle

        rows = [(table, len(df), pickle.dumps(df, protocol=pickle.HIGHEST_PROTOCOL))
                for table, df in self._take_pending(run_id).items()]
        inbox = self.index.history_inbox
        sql.executemany(conn, sql.insert_sql(conn, inbox, ["table_name", "rows", "data"]), rows)

    def _take_pending(self, run_id: int) -> dict[str, pd.DataFrame]:
        from ..history.states import RUN

        pending, self._pending, self.pending_rows = self._pending, {}, 0
        return {table: _concat(frames).assign(**{RUN: run_id}) for table, frames in pending.items()}

    def inbox_full(self, conn: sa.Connection) -> bool:
        """Does the inbox hold enough to move to Parquet (INBOX_LIMIT rows, INBOX_FRAMES frames)?"""
        table = sql.qualified(conn, self.index.history_inbox)
        frames, rows = conn.exec_driver_sql(
            f"SELECT COUNT(*), COALESCE(SUM(rows), 0) FROM {table}").one()
        return int(frames) > INBOX_FRAMES or int(rows) > INBOX_LIMIT

    def settle(self) -> None:
        """Move the versions in the inbox to Parquet segments (one per table), so that
        the history is all in the history folder. Reads of the history call it first.
        A crash in between leaves versions in both places, which reads count once."""
        import pickle

        if not self.enabled:
            return
        inbox = self.index.history_inbox
        with self.index.begin() as conn:
            found = conn.exec_driver_sql(
                f"SELECT id, table_name, data FROM {sql.qualified(conn, inbox)} ORDER BY id").all()
        if not found:
            return
        frames: dict[str, list[pd.DataFrame]] = {}
        for _, table, data in found:
            frames.setdefault(table, []).append(pickle.loads(data))  # our own index's bytes
        for table, parts in frames.items():
            self.store.append(table, _concat(parts))
            self.store.compact(table, MAX_SEGMENTS)
        with self.index.begin() as conn:
            ph = sql.placeholders(conn, 1)[0]
            conn.exec_driver_sql(f"DELETE FROM {sql.qualified(conn, inbox)} WHERE id <= {ph}",
                                 (int(found[-1][0]),))

    # --- how far the history is complete ------------------------------------------------
    def complete_to(self, conn: sa.Connection) -> int | None:
        """The clock value up to which every change is in the history (None: never kept)."""
        table = sql.qualified(conn, self.index.history_state)
        found = conn.exec_driver_sql(f"SELECT seq FROM {table} WHERE id = 1").first()
        return None if found is None else int(found[0])

    def set_complete_to(self, conn: sa.Connection, seq: int) -> None:
        sql.upsert_tuples(conn, self.index.history_state, ["id", "seq"], [(1, int(seq))], ["id"])

    # --- tags ---------------------------------------------------------------------------
    def tag(self, conn: sa.Connection, name: str, run_id: int | None, seq: int,
            created: float, message: str | None) -> None:
        sql.upsert_tuples(conn, self.index.tags, ["name", "run_id", "seq", "created", "message"],
                          [(name, run_id, int(seq), created, message)], ["name"])

    def tags(self, conn: sa.Connection) -> pd.DataFrame:
        return sql.select_all(conn, self.index.tags, ["name", "run_id", "seq", "created", "message"])

    def untag(self, conn: sa.Connection, name: str) -> bool:
        ph = sql.placeholders(conn, 1)[0]
        done = conn.exec_driver_sql(f"DELETE FROM {sql.qualified(conn, self.index.tags)} "
                                    f"WHERE name = {ph}", (name,))
        return bool(done.rowcount)

    # --- runs ---------------------------------------------------------------------------
    def runs(self, conn: sa.Connection, limit: int | None = None,
             columns: Sequence[str] = ("run_id", "started", "finished", "trigger", "seq_from",
                                       "seq_to", "summary")) -> pd.DataFrame:
        """Logged runs, newest first."""
        import json

        q = ", ".join(sql.quote(conn, c) for c in columns)
        text = f"SELECT {q} FROM {sql.qualified(conn, self.index.runs)} ORDER BY run_id DESC"
        if limit:
            text += f" LIMIT {int(limit)}"
        found = sql.fetch(conn, text, [], list(columns), self.index.runs)
        if "summary" in found.columns:
            found["summary"] = [json.loads(s) if isinstance(s, str) else (s or {})
                                for s in found["summary"]]
        return found


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Row versions one after the other; a column some lack (deletions hold keys only)
    keeps its type, made nullable (ints do not turn into floats)."""
    import pandas as pd

    if len(frames) == 1:
        return frames[0]
    dtypes: dict[str, Any] = {}
    for f in frames:
        for c, d in f.dtypes.items():
            dtypes.setdefault(str(c), d)
    nullable = {"i": "Int64", "u": "UInt64", "b": "boolean"}
    filled = []
    for f in frames:
        missing = {c: pd.array([None] * len(f), dtype=nullable.get(getattr(d, "kind", ""), d))
                   for c, d in dtypes.items() if c not in f.columns}
        filled.append(f.assign(**missing) if missing else f)
    return pd.concat(filled, ignore_index=True)


def default_root(url: str) -> Path | None:
    """Where an index at `url` keeps its history by default: ``<name>.history`` beside an
    SQLite file (``.filepipe/history`` for a project); none for other databases, which
    name a folder (``DataStore(url, history="folder")``)."""
    import sqlalchemy as sa

    parsed = sa.engine.make_url(url)
    db = parsed.database
    if parsed.get_backend_name() != "sqlite" or not db or db == ":memory:" or db.startswith("file:"):
        return None
    path = Path(db)
    return path.parent / "history" if path.name == "meta.sqlite" else path.with_name(f"{path.stem}.history")


def staged_versions(df: pd.DataFrame, seq: Any, kind: Any, hashes: Any) -> pd.DataFrame:
    """Row versions of the rows of `df`: their columns plus clock value, kind and hash."""
    from ..history.states import HASH, KIND, SEQ

    return df.assign(**{SEQ: seq, KIND: kind, HASH: hashes})
