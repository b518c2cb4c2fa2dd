"""DataTable: a store plus its row meta, the unit steps read from and write to; and
DataStore, the metadata index that holds the tables of one pipeline."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import sql
from .errors import MissingColumnsError
from .frames import check_keys, key_positions, pick, rows_in, sql_type_for, take_rows
from .meta import MetaIndex
from .report import RunReport
from .sql import DBConn

if TYPE_CHECKING:
    import pandas as pd
    import sqlalchemy as sa

    from .executor import BatchExecutor
    from .frametypes import DataDF, IndexDF, MetaDF
    from .history import HistoryStore
    from .stores.base import TableStore


@dataclass(frozen=True, slots=True)
class Diff:
    """A frame's rows joined with their stored meta (`DataTable._diff`); the three masks
    are boolean arrays aligned with the frame's rows."""

    merged: dict[str, Any]  # arrays: the frame's keys and tracked columns, `hash`, stored meta as <col>__old
    existed: Any  # the key has meta (live or deleted)
    live: Any  # the key has meta and is not deleted
    write: Any  # rows to write: new or changed (or moved to another source file)
    beyond: bool  # some keys were neither in `known` nor `covers` (looked up in the index)


@dataclass
class Chunk:
    """A frame checked and diffed against the meta, ready for `DataTable.apply_chunk`."""

    df: DataDF
    diff: Diff | None  # None: the table has no meta yet and nothing is to be written
    gone: MetaDF | None  # meta rows of processed_idx not re-emitted (None with `diff`)
    file_id: Any
    write_store: bool


class DataStore:
    """The metadata index of a pipeline (``DataStore(DBConn("sqlite:///meta.sqlite"))``).

    Every run that changes something is a version (`recording`); the rows it replaced
    and deleted stay in the history, a folder of Parquet files (`history`: by default
    ``<name>.history`` beside an SQLite index; False keeps none; see docs/history.md).
    """

    def __init__(self, meta_dbconn: DBConn | str, history: str | Path | bool | None = None,
                 executor: str | BatchExecutor | None = None) -> None:
        from .executor import executor_from

        self.meta = MetaIndex(meta_dbconn, history)
        self.meta_dbconn = self.meta.dbconn
        #: where steps run their functions (`filepipe.executor`: in this thread by default;
        #: "processes:N", "dask://HOST:PORT", "dask:local"); `run_steps` may set another
        self.executor: BatchExecutor = executor_from(executor)
        self._tables: dict[str, DataTable] = {}
        #: the run in progress (only to log each run once; changes are counted into the
        #: report passed to the calls that make them) and the thread running it
        self._running: RunReport | None = None
        self._owner: int | None = None
        self._lock = threading.RLock()
        #: the id the run in progress will be logged as (its row versions carry it)
        self.run_id: int | None = None
        self._logged_at: int | None = None  # the clock when this process last logged a run

    @contextmanager
    def executing(self, executor: str | BatchExecutor | None) -> Iterator[BatchExecutor]:
        """Steps run their functions on `executor` meanwhile (None: the DataStore's own).
        One made here from a spec is closed at the end; one passed in is the caller's."""
        from .executor import executor_from

        if executor is None:
            yield self.executor
            return
        made = executor_from(executor)
        before, self.executor = self.executor, made
        try:
            yield made
        finally:
            self.executor = before
            if made is not executor:
                made.close()

    @contextmanager
    def recording(self, report: RunReport) -> Iterator[RunReport]:
        """A run for `report`: timed, and logged in the run log if it did anything (each
        logged run is a version; its row versions went into the history with the changes
        themselves). Runs nested in a run (a watch cycle's `run_steps`) are part of the
        outer one. What the run committed is logged even if it fails part-way."""
        with self._lock:  # one run at a time (threads of one process share the store)
            if self.running is not None:  # a run of this thread: part of it
                yield report
                report.finished = time.time()
                return
            with self._run(report) as done:
                yield done

    @property
    def running(self) -> RunReport | None:
        """The report of this thread's run in progress (None: none; another thread's run
        is not this thread's: its writes wait for that run to end, then make their own)."""
        return self._running if self._owner == threading.get_ident() else None

    @contextmanager
    def _run(self, report: RunReport) -> Iterator[RunReport]:
        self._running, self._owner = report, threading.get_ident()
        seq0 = self.meta.current_seq()
        try:
            if self.meta.history.enabled:
                if seq0 != self._logged_at:  # else this process logged every change so far
                    self._log_unlogged(seq0)
                if seq0 != self._logged_at or self.meta.history.wrote_pending:
                    self.meta.history.drop_orphans()
                self._start_history()
            with self.meta.begin() as conn:  # the id it will be logged as (one writer at a time)
                self.run_id = self.meta.next_run_id(conn)
            yield report
        finally:
            self._running, self._owner = None, None
            report.finished = time.time()
            if report.changed or report.failed:
                report.run_id, self._logged_at = self.meta.log_run(report, seq0, self.run_id)
            self.run_id = None

    def _log_unlogged(self, now: int) -> None:
        """Log the changes of a run that died before it was logged, as a version of its own
        (their row versions are in the history: they were written together)."""
        history = self.meta.history
        with self.meta.begin() as conn:
            runs = history.runs(conn, limit=1, columns=("run_id", "seq_to"))
            last = int(runs["seq_to"].iloc[0]) if len(runs) else 0
            tables, run_id = history.unlogged(conn, last) if now > last else ({}, None)
        if tables:  # logged as the id its versions carry
            recovered = RunReport(trigger="recovered after a crash", tables=tables)
            recovered.finished = time.time()
            self.meta.log_run(recovered, last, run_id)

    def _start_history(self) -> None:
        """Record, as a first version, the current rows of tables whose history has not
        begun (an index that kept none so far); a table without rows just begins."""
        from .meta.history import staged_versions

        history = self.meta.history
        with self.meta.begin() as conn:
            begun = history.started(conn)
        todo = [t for t in self._tables.values() if t.name not in begun]
        if not todo:
            return
        with self.meta.begin() as conn:  # one transaction: the first versions, their run, the marks
            now = self.meta.current_seq(conn)
            first = RunReport(trigger="history begins")
            run_id = self.meta.next_run_id(conn)
            for t in todo:
                meta = t.meta.scan(conn) if t.meta.exists else None
                if meta is not None and len(meta):
                    rows = t.meta.coerce(t.store.read_rows(pick(meta, t.primary_keys)))
                    pos = key_positions(rows, meta, t.primary_keys)
                    found = meta.take(pos[pos >= 0])
                    history.stage(conn, t.name, staged_versions(
                        rows[pos >= 0].reset_index(drop=True), found["seq"].to_numpy(), "added",
                        found["hash"].to_numpy()), run_id)
                    first.table_changed(t.name, len(found), 0, 0)
                history.start(conn, t.name, now)
            if first.tables:
                first.finished = time.time()
                self.meta.log_run(first, now, run_id, conn)

    @property
    def history(self) -> HistoryStore:
        """The history, all of it in Parquet segments (the versions of logged runs move
        there from the index's inbox first)."""
        self.meta.history.settle()
        return self.meta.history.store

    def get_or_create_table(self, name: str, store: TableStore,
                            max_delete_share: float | None = None) -> DataTable:
        table = self._tables.get(name)
        if table is None or table.store is not store:
            table = self._tables[name] = DataTable(self, name, store)
        table.max_delete_share = max_delete_share
        return table


class DataTable:
    """Rows of `store` with their meta in the DataStore's index.

    `store_chunk` is the one write path: it hashes rows, writes only new or changed ones,
    deletes rows of `processed_idx` that were not re-emitted, stamps each change with
    the next value of the index's clock and returns the keys it changed.
    """

    def __init__(self, ds: DataStore, name: str, store: TableStore) -> None:
        self.ds = ds
        self.name = name
        self.store = store
        self.primary_keys: list[str] = list(store.primary_keys)
        self.meta = ds.meta.row_meta(name)
        self.meta.ensure(self.primary_keys, store.key_types())
        if self.meta.exists and self.meta.keys != self.primary_keys:
            raise MissingColumnsError(
                f"table {name!r}: primary keys changed from {self.meta.keys} to "
                f"{self.primary_keys}; give the table a new name in the catalog (its rows are then recomputed), "
                "or start a fresh index (`filepipe reset --all`; on a database server: drop its "
                "fp_* tables)")
        self._wanted_tracked: set[str] = set()
        self._defer_flush = False
        #: the step writing this table (None: a source, only read)
        self.produced_by: str | None = None
        #: a batch failed after writing to the store: its file may disagree with the meta
        self.tainted = False
        #: a sync deleting more than this share of the rows at once is refused
        self.max_delete_share: float | None = None
        self._written_kinds = ds.meta.written_kinds(name)
        self._kinds_changed = False
        if self._written_kinds:
            store.use_written_kinds(self._written_kinds)

    def __repr__(self) -> str:
        return f"DataTable({self.name!r}, {self.store.describe()})"

    # --- tracked (group-by) columns ----------------------------------------------------
    def track(self, columns: Iterable[str]) -> None:
        """Keep these non-key columns in the row meta (steps group by them)."""
        self._wanted_tracked |= {c for c in columns if c not in self.primary_keys}
        self.ensure_tracked()

    def ensure_tracked(self, sample: DataDF | None = None,
                        conn: sa.Connection | None = None) -> None:
        missing = sorted(self._wanted_tracked - set(self.meta.tracked))
        if not missing or not self.meta.exists:
            return
        with self._transaction(conn) as c:
            has_rows = self.meta.count(c, include_deleted=True) > 0
        data = self._readable_rows() if has_rows else sample
        if data is None or data.empty:
            return
        absent = [c for c in missing if c not in data.columns]
        if absent:
            raise MissingColumnsError(
                f"table {self.name!r} ({self.store.describe()}) has no column(s) "
                f"{', '.join(map(repr, absent))} that a step uses as transform keys")
        with self._transaction(conn) as c:
            self.meta.add_tracked({c_: sql_type_for(data[c_]) for c_ in missing}, conn=c)
            if has_rows:
                assert self.meta.table is not None  # the meta exists (checked above)
                rows = self.meta.coerce(data[self.primary_keys + missing])
                sql.update_by_keys(c, self.meta.table, rows, self.primary_keys)

    def _readable_rows(self) -> DataDF:
        """All rows; for a file-backed table, of the files that can be read now (a broken
        file is reported by the sync, not here)."""
        import pandas as pd

        try:
            return self.store.read_rows()
        except Exception:
            if not self.is_file_backed:
                raise
        listed = self.store.list_files()
        assert listed is not None  # a file-backed store
        frames = []
        for path in listed["path"]:
            try:
                frames.append(self.store.read_files([path])[path])
            except Exception:  # noqa: BLE001 - skipped here, reported by the sync
                continue
        return pd.concat(frames, ignore_index=True) if frames else \
            pd.DataFrame(columns=self.primary_keys)

    # --- reads --------------------------------------------------------------------------
    def get_data(self, idx: IndexDF | None = None) -> DataDF:
        """Rows (all, or those of `idx`), oldest change first."""
        if idx is not None:
            idx = self.meta.coerce(idx)
        rows = self.store.read_rows(idx)
        if rows.empty or not self.meta.exists:
            return rows.reset_index(drop=True)
        rows = self.meta.coerce(rows)
        with self.ds.meta.begin() as conn:
            seqs = self.meta.lookup(conn, rows)[self.primary_keys + ["seq"]]
        rows = rows.merge(seqs, on=self.primary_keys, how="left")
        return rows.sort_values("seq", kind="stable").drop(columns="seq").reset_index(drop=True)

    def live_rows_matching(self, conn: sa.Connection, proj: IndexDF) -> DataDF | None:
        """Rows whose `proj` columns equal a row of `proj` and which the meta knows as
        live, oldest change first, read with their meta in one query; None when the store
        is not an SQL table in the index's database or `proj`'s columns are not a prefix
        of the keys (whose index serves the lookup)."""

        table = self.store.sql_table(conn)
        on = list(proj.columns)
        if table is None or self.meta.table is None or not on or on != self.primary_keys[:len(on)]:
            return None
        seq = f"{self.meta.table.name}.seq"
        found = sql.select_joined(conn, table, [c.name for c in table.c], self.meta.table, ["seq"],
                                  self.primary_keys, self.meta.coerce(proj), on, other_null=["delete_ts"],
                                  sort_by=seq)
        del found[seq]
        return found

    def get_metadata(self, idx: IndexDF | None = None,
                     include_deleted: bool = False) -> MetaDF:
        """Meta rows: keys, hash, create_ts, update_ts, delete_ts, seq (+ tracked columns)."""
        if not self.meta.exists:
            return self.meta.empty(self.primary_keys)
        with self.ds.meta.begin() as conn:
            if idx is None:
                return self.meta.scan(conn, include_deleted=include_deleted)
            found = self.meta.lookup(conn, idx)
        return found if include_deleted else found[found["delete_ts"].isna()]

    def known_columns(self) -> list[str] | None:
        """The table's columns, or None while they cannot be known (no data, no meta).

        Columns tracked in the meta count too, so a source whose file vanished or is
        unreadable still knows the columns its steps group by.
        """
        import pandas as pd

        columns = list(self.primary_keys) + list(self.meta.tracked)
        try:
            found = self.store.read_rows(pd.DataFrame(columns=self.primary_keys)).columns
            columns += [c for c in found if c not in columns]
        except Exception:  # noqa: BLE001 - an unreadable source is reported by its sync
            pass
        if set(columns) <= set(self.primary_keys) and self.count() == 0:
            return None
        return columns

    def count(self) -> int:
        with self.ds.meta.begin() as conn:
            return self.meta.count(conn)

    # --- writes -------------------------------------------------------------------------
    def store_chunk(self, df: DataDF, processed_idx: IndexDF | None = None,
                    now: float | None = None, conn: sa.Connection | None = None,
                    file_id: Any = None, write_store: bool = True,
                    report: RunReport | None = None) -> IndexDF:
        """Write the rows of `df`; delete rows of `processed_idx` absent from `df`.

        Returns the keys changed: new, changed and deleted rows, also counted into
        `report` when given. Syncing a source passes `write_store=False` (the file is the
        data; only the meta follows it) and the id of the file each row came from in
        `file_id`.
        """
        if self.ds.running is None and conn is None:  # a version of its own
            with self.ds.recording(report or RunReport(trigger="store_chunk")) as report:
                return self.store_chunk(df, processed_idx, now, conn, file_id, write_store, report)
        if write_store and self.is_file_backed and conn is None and not self._defer_flush:
            # the file is written once the meta is committed (marked dirty meanwhile)
            with self.deferred_flush():
                return self.store_chunk(df, processed_idx, now, conn, file_id, write_store, report)
        with self._transaction(conn) as c:
            chunk = self.prepare_chunk(df, processed_idx, c, file_id, write_store)
            return self.apply_chunk(chunk, c, now, report)

    def prepare_chunk(self, df: DataDF, processed_idx: IndexDF | None,
                      conn: sa.Connection, file_id: Any = None, write_store: bool = True,
                      known: MetaDF | None = None, covers: IndexDF | None = None,
                      where: str | None = None) -> Chunk:
        """Check `df` and diff it with the meta; nothing is written yet.

        A step with several outputs prepares all of them before applying any, so a bad
        frame for one output leaves the others untouched too. `known` are meta rows
        (all meta columns) the caller has read already, such as the rows under a step's
        batch: keys found there are not looked up again; nor are keys whose values in
        the columns of `covers` are one of its rows (`known` holds every meta row there).
        `where` names the frame in errors (default: this table).
        """
        where = where or f"table {self.name!r}"
        check_keys(df, self.primary_keys, where)
        if processed_idx is not None:
            check_keys(processed_idx, self.primary_keys, f"{where} processed_idx", unique=False)
        if not self.meta.ensure(self.primary_keys, self.store.key_types(), sample=df, conn=conn):
            if processed_idx is None or processed_idx.empty:
                return Chunk(df.iloc[0:0], None, None, None, write_store)
            raise MissingColumnsError(f"{where}: cannot infer key types from an empty frame")
        self.ensure_tracked(sample=df, conn=conn)
        absent = [c for c in self.meta.tracked if c not in df.columns]
        if absent and not df.empty:
            raise MissingColumnsError(f"{where}: rows lack column(s) {absent} used as transform keys")
        if write_store:
            self.store.check_writable(df)
            df = self.store.normalize(df)
        df = self.meta.coerce(df).reset_index(drop=True)
        diff = self._diff(conn, df, file_id, known, covers)
        gone = self._gone(conn, df, processed_idx, known, covers)
        return Chunk(df, diff, gone, file_id, write_store)

    def apply_chunk(self, chunk: Chunk, conn: sa.Connection, now: float | None = None,
                    report: RunReport | None = None) -> IndexDF:
        """Write a prepared chunk: data (unless a source), meta with new clock values; count
        the rows added, updated and deleted into `report`."""
        import pandas as pd

        keys = self.primary_keys
        diff, gone = chunk.diff, chunk.gone
        if diff is None:
            return pd.DataFrame(columns=keys)
        assert gone is not None  # set whenever `diff` is
        write, live = diff.write, diff.live
        n_changes = int(write.sum()) + len(gone)
        if n_changes == 0:
            return pd.DataFrame(columns=keys)
        now = time.time() if now is None else now
        first = self.ds.meta.take_seq(conn, n_changes)
        written = self._written_meta(diff, chunk.file_id, first, now)
        if len(written):
            if chunk.write_store:
                rows = chunk.df if len(written) == len(chunk.df) else chunk.df[write]
                self.store.upsert_rows(rows, conn=conn)
                self._remember_kinds(rows)
            self.meta.write(conn, written)
            self._log_moves(conn, written, diff.existed[write])
        if len(gone):
            gone = gone.assign(seq=range(first + len(written), first + n_changes),
                               delete_ts=now, update_ts=now)
            if chunk.write_store:
                self.store.delete_rows(pick(gone, keys), conn=conn)
            self.meta.write(conn, gone)
        if self.ds.meta.history.enabled:
            self._stage_versions(conn, chunk, written, gone)
        if chunk.write_store and not self._defer_flush:
            self._flush()
        if report is not None:
            n_new = int((write & ~live).sum())
            report.table_changed(self.name, n_new, len(written) - n_new, len(gone))
        parts = [pick(f, keys) for f in (written, gone) if len(f)]  # disjoint keys
        return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)

    def _stage_versions(self, conn: sa.Connection, chunk: Chunk, written: MetaDF, gone: MetaDF) -> None:
        """Write to the history, in this change's transaction, the row versions it makes:
        new and changed rows with their content, deleted keys. A row written again with
        the same content (it moved to another source file) is no new version."""
        import numpy as np
        import pandas as pd

        from .meta.history import staged_versions

        diff = chunk.diff
        assert diff is not None
        rows = np.flatnonzero(diff.write)
        live = diff.live[rows]
        new_hash = written["hash"].to_numpy(dtype="int64")
        content = ~live
        if live.any():  # their stored hash is known
            old_hash = pd.array(diff.merged["hash__old"]).take(rows[live]).to_numpy(dtype="int64")
            content[live] = old_hash != new_hash[live]
        history, run_id = self.ds.meta.history, self.ds.run_id
        if content.all() and len(rows) == len(chunk.df):  # every row (a first load): no copy
            history.stage(conn, self.name, staged_versions(
                chunk.df, written["seq"].to_numpy(), live, new_hash), run_id)
        elif content.any():
            history.stage(conn, self.name, staged_versions(
                chunk.df.take(rows[content]).reset_index(drop=True), written["seq"].to_numpy()[content],
                live[content], new_hash[content]), run_id)
        if len(gone):
            history.stage(conn, self.name, staged_versions(
                pick(gone, self.primary_keys), gone["seq"].to_numpy(), "deleted", None), run_id)

    def _remember_kinds(self, df: DataDF) -> None:
        """Note the column types written to a file store (CSV loses them); `_flush`
        keeps them in the index once the file holds them."""
        from .frames import merge_kinds, value_kinds

        if not self.is_file_backed:
            return
        kinds = merge_kinds(self._written_kinds, value_kinds(df))
        if kinds != self._written_kinds:
            self._written_kinds, self._kinds_changed = kinds, True
            self.store.use_written_kinds(kinds)

    @staticmethod
    def _written_meta(diff: Diff, file_id: Any, first: int, now: float) -> MetaDF:
        """Meta rows for the diff's new and changed rows, clock values from `first` on."""
        import numpy as np
        import pandas as pd

        rows = np.flatnonzero(diff.write)
        n = len(rows)
        merged = diff.merged
        every = n == len(diff.write)  # a first load: no copy
        data = {c: values if every else values.take(rows) for c, values in merged.items()}
        created = merged.get("create_ts__old")  # absent when every row is new
        data.update(
            seq=np.arange(first, first + n, dtype="int64"),
            create_ts=np.full(n, now) if created is None else
            np.where(diff.live[rows], np.asarray(created, dtype="float64")[rows], now),
            update_ts=np.full(n, now),
            delete_ts=np.full(n, np.nan),
            file_id=(np.asarray(file_id)[rows] if _is_array(file_id)
                     else np.full(n, np.nan if file_id is None else file_id)),
        )
        return pd.DataFrame(data)

    def _diff(self, conn: sa.Connection, df: DataDF, file_id: Any = None,
              known: MetaDF | None = None, covers: IndexDF | None = None) -> Diff:
        """Join `df`'s hashes with the stored meta.

        `merged` holds arrays by name: `df`'s key and tracked columns, its `hash`, and
        the stored meta as ``<column>__old``. A row that moved to another source file is
        rewritten too (its meta must follow).
        """
        import numpy as np

        from .hashing import hash_rows

        keys = self.primary_keys
        columns = keys + [t for t in self.meta.tracked if t in df.columns]
        hashes = hash_rows(df)
        old, beyond = self._meta_of(conn, df, known, covers) if len(df) else (self.meta.empty(), False)
        pos = key_positions(df, old, keys) if len(old) else np.full(len(df), -1, dtype=np.intp)
        merged = {**{c: df[c].array for c in columns}, "hash": hashes}
        existed = pos >= 0
        if not existed.any():  # all new rows: no stored values to carry
            return Diff(merged, existed, existed, ~existed, beyond)
        merged.update(take_rows(old, pos, [c for c in old.columns if c not in keys], suffix="__old"))
        live = existed & old["delete_ts"].isna().to_numpy(dtype=bool)[pos]
        same = live & (old["hash"].to_numpy(dtype="int64")[pos] == np.asarray(hashes, dtype="int64"))
        if file_id is not None:
            fid_old = old["file_id"].to_numpy(dtype="float64", na_value=-1)[pos]
            same &= fid_old == (np.asarray(file_id, dtype="float64") if _is_array(file_id) else file_id)
        return Diff(merged, existed, live, ~same, beyond)

    def delete_by_idx(self, idx: IndexDF, now: float | None = None,
                      conn: sa.Connection | None = None, report: RunReport | None = None) -> IndexDF:
        """Delete the rows of `idx`; returns the keys that were present."""
        empty = idx.iloc[0:0]
        return self.store_chunk(empty, processed_idx=idx, now=now, conn=conn, report=report)

    def _gone(self, conn: sa.Connection, df: DataDF, processed_idx: IndexDF | None,
              known: MetaDF | None = None, covers: IndexDF | None = None) -> MetaDF:
        """Live meta rows of `processed_idx` whose keys `df` does not hold."""
        keys = self.primary_keys
        if processed_idx is None or processed_idx.empty:
            return self.meta.empty().iloc[0:0]
        pidx = self.meta.coerce(processed_idx)
        if len(df):
            pidx = pidx[key_positions(pidx, df, keys) < 0]  # df holds each key once
        if pidx.empty:
            return self.meta.empty().iloc[0:0]
        found, _ = self._meta_of(conn, pidx, known, covers)
        wanted = found["delete_ts"].isna().to_numpy(dtype=bool)
        if known is not None and len(known):  # then `found` may hold other keys too
            wanted = wanted & rows_in(found, pidx, keys)
        return found[wanted].reset_index(drop=True)

    def _meta_of(self, conn: sa.Connection, idx: IndexDF, known: MetaDF | None,
                 covers: IndexDF | None = None) -> tuple[MetaDF, bool]:
        """Meta rows for the keys of `idx`, looking up only those neither in `known` nor
        covered by `covers` (see `prepare_chunk`); and whether there were any such keys.

        The result may hold more keys than `idx` (those of `known`), each once.
        """
        import numpy as np
        import pandas as pd

        if known is None:
            return self.meta.lookup(conn, idx), True
        # both hold each key once: an index lookup, not a merge
        inside = key_positions(idx, known, self.primary_keys) >= 0 if len(known) else \
            np.zeros(len(idx), dtype=bool)
        if covers is not None and len(covers.columns):
            inside |= key_positions(idx, covers, list(covers.columns)) >= 0
        beyond = not inside.all()
        if not beyond and len(known.columns) > len(self.primary_keys):
            return known, False
        rest = self.meta.lookup(conn, idx[~inside])
        if not len(known):
            return rest, beyond
        return (pd.concat([known, rest], ignore_index=True) if len(rest) else known), beyond

    def _log_moves(self, conn: sa.Connection, written: MetaDF, existed: Any) -> None:
        """Log old tracked values of rows whose group changed."""
        tracked = self.meta.tracked
        if not tracked or not existed.any():
            return
        prev = written[existed]
        moved = None
        for t in tracked:
            diff = prev[f"{t}__old"].astype(object).to_numpy() != prev[t].astype(object).to_numpy()
            moved = diff if moved is None else (moved | diff)
        prev = prev[moved]
        if len(prev):
            old = prev[self.primary_keys + ["seq"]].copy()
            for t in tracked:
                old[t] = prev[f"{t}__old"].to_numpy()
            self.meta.log_moves(conn, old)

    @contextmanager
    def _transaction(self, conn: sa.Connection | None) -> Iterator[sa.Connection]:
        if conn is not None:
            with nullcontext(conn) as c:
                yield c
        else:
            with self.ds.meta.begin() as c:
                yield c

    @contextmanager
    def deferred_flush(self) -> Iterator[None]:
        """Collect writes of buffered (file) stores and flush once at the end.

        The output's file is marked dirty in the index meanwhile: if the process dies
        before the flush, the next run sees that the file lags behind its meta. A write
        that fails raises `OutputWriteError` and leaves the mark (the next run rebuilds
        the output); so does a batch that failed after writing to the store.
        """
        from .errors import OutputWriteError

        try:
            if self.is_file_backed:
                self.mark_files("dirty")
        except Exception as exc:
            raise OutputWriteError(f"cannot write {self.store.describe()}: "
                                   f"{type(exc).__name__}: {exc}") from exc
        self._defer_flush = True
        try:
            yield
        finally:
            self._defer_flush = False
            try:
                self._flush()
            except Exception as exc:
                self.store.discard()  # what could not be written
                with suppress(Exception):  # the dirty mark made above stays, at least
                    self.mark_files("dirty", current=True)
                raise OutputWriteError(f"cannot write {self.store.describe()}: "
                                       f"{type(exc).__name__}: {exc}") from exc

    def _flush(self) -> None:
        before = self.store.list_files() if self.is_file_backed else None
        self.store.flush()
        if before is not None:
            if self.tainted:  # rows of a failed batch may be in the file: rebuild next run
                self.mark_files("dirty", current=True)
                self.tainted = False
            else:
                self.mark_files("clean", before=before)
        if self._kinds_changed:
            with self.ds.meta.begin() as conn:
                self.ds.meta.set_written_kinds(conn, self.name, self._written_kinds)
            self._kinds_changed = False

    def mark_files(self, state: str, before: pd.DataFrame | None = None,
                   current: bool = False) -> None:
        """Record the output's files as 'dirty' (before buffered writes) or 'clean' (after).

        A clean record stores the fingerprints the write left, so a later edit by someone
        else shows as a mismatch. A dirty record keeps the fingerprints the files had
        before filepipe began writing (or, with `current`, those they have now), and a new
        output gets a placeholder, so a write that never finished is always seen.
        `before`: the fingerprints before the write, which other tables of the same
        files (sheets of one workbook) follow (`FileMeta.follow_own_write`).
        """
        listed = self.store.list_files()
        if listed is None:
            return
        files = self.ds.meta.file_meta
        with self.ds.meta.begin() as conn:
            if before is not None:
                files.follow_own_write(conn, self.name, before, listed)
            if state == "clean":
                files.mark_clean(conn, self.name, listed)
                return
            stored = files.stored(conn, self.name)
            rows = stored.drop(columns=["file_id", "state"]) if len(stored) and not current \
                else listed.assign(synced_ns=None)
            files.mark_dirty(conn, self.name, rows, placeholder=self.store.describe())

    @property
    def is_file_backed(self) -> bool:
        return self.store.file_backed



def _is_array(value: Any) -> bool:
    return hasattr(value, "__len__") and not isinstance(value, (str, bytes))
