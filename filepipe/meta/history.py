"""The versions kept of every table: row versions written with the transaction that
makes the change, moved to the Parquet history (`filepipe.history.HistoryStore`) in bulk,
the tables whose history is complete, tags naming versions, and what gc dropped.

A change reaches the history in the transaction that writes it to the index: its row
versions go into the index's inbox (``fp_history_inbox``, the frame pickled), so the
history can never hold a change the meta does not, nor miss one the meta holds, whatever
moment a crash picks. The inbox moves to Parquet segments, a segment per table, when it
has grown (at the end of a run) and before any read of the history. A version whose run
was never logged (the process died) is logged by the next run as a recovered one.
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

#: rows, and frames, in the inbox beyond which a run's end moves them to Parquet segments
INBOX_LIMIT = 50_000
INBOX_FRAMES = 300
#: segments of one table beyond which moving the inbox merges the small ones
MAX_SEGMENTS = 32
#: versions of one change from which the inbox names a Parquet file instead of holding them
FILE_ROWS = 10_000
INBOX_COLUMNS = ["table_name", "seq_lo", "seq_hi", "run_id", "rows", "added", "updated", "deleted",
                 "data", "path"]


class HistoryLog:
    """The history of the index `index`, kept under `root` (None: no history)."""

    def __init__(self, index: IndexDB, root: Path | None) -> None:
        self.index = index
        self.root = root
        self._store: HistoryStore | None = None
        #: this process wrote pending segments since it last dropped orphans
        self.wrote_pending = False

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
    def stage(self, conn: sa.Connection, table: str, rows: pd.DataFrame, run_id: int | None = None) -> None:
        """Row versions of `table` (the row's columns and `_fp_seq`, `_fp_kind`, `_fp_hash`)
        made by run `run_id` (None: the run whose clock range holds them, found later) and
        written by the transaction of `conn`, recorded in the inbox in that transaction:
        few rows pickled in the row itself, many as a pending Parquet segment the row names
        (published once the transaction has committed: `settle`)."""
        import pickle

        from ..history.states import KIND, RUN, SEQ

        if not self.enabled or not len(rows):
            return
        kinds = rows[KIND].value_counts()
        seq = rows[SEQ].to_numpy()
        if run_id is not None:
            rows = rows.assign(**{RUN: run_id})
        data, path = None, None
        if run_id is not None and len(rows) >= FILE_ROWS:
            path = str(self.store.write_pending(table, rows).relative_to(self.store.root))
            self.wrote_pending = True
        else:
            data = pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL)
        values = (table, int(seq.min()), int(seq.max()), run_id, len(rows), int(kinds.get("added", 0)),
                  int(kinds.get("updated", 0)), int(kinds.get("deleted", 0)), data, path)
        sql.executemany(conn, sql.insert_sql(conn, self.index.history_inbox, INBOX_COLUMNS), [values])

    def drop_orphans(self) -> None:
        """Remove pending segments no inbox row names: their transaction rolled back, or
        the process died before it committed. Only a writer (holding the project) may."""
        if not self.enabled:
            return
        self.wrote_pending = False
        pending = self.store.pending_files()
        if not pending:
            return
        inbox = self.index.history_inbox
        with self.index.begin() as conn:
            named = {str(r[0]) for r in conn.exec_driver_sql(
                f"SELECT path FROM {sql.qualified(conn, inbox)} WHERE path IS NOT NULL")}
        for path in pending:
            if str(path.relative_to(self.store.root)) not in named:
                path.unlink(missing_ok=True)

    def unlogged(self, conn: sa.Connection, after: int) -> tuple[dict[str, dict[str, int]], int | None]:
        """Rows added, updated and deleted per table by inbox versions with clock values
        above `after` (the last logged run's): changes of a run that was never logged; and
        the run id they carry (the id that run was to be logged as), if any."""
        inbox = sql.qualified(conn, self.index.history_inbox)
        ph = sql.placeholders(conn, 1)[0]
        found = conn.exec_driver_sql(
            f"SELECT table_name, SUM(added), SUM(updated), SUM(deleted), MAX(run_id) FROM {inbox} "
            f"WHERE seq_lo > {ph} GROUP BY table_name", (int(after),)).all()
        run_ids = {int(r[4]) for r in found if r[4] is not None}
        return ({t: {"added": int(a), "updated": int(u), "deleted": int(d)} for t, a, u, d, _ in found},
                max(run_ids) if run_ids else None)

    def inbox_full(self, conn: sa.Connection) -> bool:
        """Does the inbox hold enough to move to Parquet (INBOX_LIMIT rows, INBOX_FRAMES frames)?"""
        table = sql.qualified(conn, self.index.history_inbox)
        frames, rows = conn.exec_driver_sql(
            f"SELECT COUNT(*), COALESCE(SUM(rows), 0) FROM {table}").one()
        return int(frames) > INBOX_FRAMES or int(rows) > INBOX_LIMIT

    def settle(self) -> None:
        """Move the versions in the inbox whose run is logged to Parquet segments (one per
        table; pending segments are published as they are), each version stamped with its
        run. A crash in between leaves versions in both places, which reads count once;
        temp files of a killed write are removed."""
        import pickle
        from pathlib import Path

        import numpy as np

        from ..fileutil import remove_stale_temp_files
        from ..history.states import RUN, SEQ

        if not self.enabled:
            return
        inbox = self.index.history_inbox
        with self.index.begin() as conn:
            runs = self.runs(conn, columns=("run_id", "seq_from", "seq_to")).sort_values("seq_to")
            logged = int(runs["seq_to"].max()) if len(runs) else 0
            ph = sql.placeholders(conn, 1)[0]
            # only versions of logged runs: a writer may be in the middle of a run (its
            # versions carry the id it will be logged as), or may die before logging it
            found = conn.exec_driver_sql(
                f"SELECT id, table_name, data, path FROM {sql.qualified(conn, inbox)} "
                f"WHERE run_id IN (SELECT run_id FROM {sql.qualified(conn, self.index.runs)}) "
                f"OR (run_id IS NULL AND seq_hi <= {ph}) ORDER BY id", (logged,)).all()
        if not found:
            return
        if self.root is not None and self.root.exists():
            remove_stale_temp_files(self.root)
        ends, ids = runs["seq_to"].to_numpy(dtype="int64"), runs["run_id"].to_numpy(dtype="int64")
        frames: dict[str, list[pd.DataFrame]] = {}
        for _, table, data, path in found:
            if path is not None:
                self.store.publish(self.store.root / Path(path))
                continue
            df = pickle.loads(data)  # our own index's bytes
            if RUN not in df.columns:  # the run whose clock range holds each version
                df[RUN] = ids[np.searchsorted(ends, df[SEQ].to_numpy(dtype="int64"), side="left")]
            frames.setdefault(table, []).append(df)
        for table, parts in frames.items():
            self.store.append(table, _concat(parts))
        for table in {str(r[1]) for r in found}:
            self.store.compact(table, MAX_SEGMENTS)
        with self.index.begin() as conn:
            q = sql.qualified(conn, inbox)
            done = [int(r[0]) for r in found]
            for start in range(0, len(done), sql.MAX_VARIABLES):
                part = done[start:start + sql.MAX_VARIABLES]
                conn.exec_driver_sql(f"DELETE FROM {q} WHERE id IN ({', '.join(map(str, part))})")

    # --- tables whose history is complete -----------------------------------------------
    def started(self, conn: sa.Connection) -> set[str]:
        """Tables whose every change is in the history (since their first row, or since
        their current rows were recorded as a first version)."""
        table = sql.qualified(conn, self.index.history_state)
        return {str(r[0]) for r in conn.exec_driver_sql(f"SELECT table_name FROM {table}")}

    def forget_started(self, conn: sa.Connection) -> None:
        """Changes are made without history: every table's history must begin anew (with
        a first version of its rows) the next time the index keeps one. gc's mark stays."""
        table = sql.qualified(conn, self.index.history_state)
        conn.exec_driver_sql(f"DELETE FROM {table} WHERE table_name <> ''")

    def start(self, conn: sa.Connection, table: str, seq: int) -> None:
        sql.upsert_tuples(conn, self.index.history_state, ["table_name", "since_seq"],
                          [(table, int(seq))], ["table_name"])

    # --- what gc dropped ----------------------------------------------------------------
    def kept_from(self, conn: sa.Connection) -> int:
        """The clock value before which gc dropped states (tagged ones excepted); 0: none."""
        table = sql.qualified(conn, self.index.history_state)
        found = conn.exec_driver_sql(f"SELECT since_seq FROM {table} WHERE table_name = ''").first()
        return int(found[0]) if found else 0

    def set_kept_from(self, conn: sa.Connection, seq: int) -> None:
        self.start(conn, "", seq)  # the row of no table holds it

    # --- tags ---------------------------------------------------------------------------
    def tag(self, conn: sa.Connection, name: str, run_id: int | None, seq: int,
            created: float, message: str | None) -> None:
        sql.upsert_tuples(conn, self.index.tags, ["name", "run_id", "seq", "created", "message"],
                          [(name, run_id, int(seq), created, message)], ["name"])

    def tags(self, conn: sa.Connection) -> pd.DataFrame:
        return sql.select_all(conn, self.index.tags, ["name", "run_id", "seq", "created", "message"])

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


def staged_versions(df: pd.DataFrame, seq: Any, kind: str | Any, hashes: Any) -> pd.DataFrame:
    """Row versions of the rows of `df`: their columns plus clock value, kind (one for all,
    or a boolean array: True 'updated', False 'added') and hash, typed as segments store them."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from ..history.states import HASH, KIND, SEQ

    n = len(df)
    codes = np.zeros(n, dtype=np.int8) if isinstance(kind, str) else np.asarray(kind, dtype=np.int8)
    names = [kind] if isinstance(kind, str) else ["added", "updated"]
    text = pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(names, type=pa.large_string()))
    kinds = pd.Series(pd.array(text.cast(pa.large_string()), dtype="str"))  # no string per row
    return df.assign(**{
        SEQ: np.asarray(seq, dtype="int64"),
        KIND: kinds.set_axis(df.index),
        HASH: pd.array(np.asarray(hashes, dtype="int64"), dtype="Int64") if hashes is not None
        else pd.array([None] * n, dtype="Int64"),
    })
