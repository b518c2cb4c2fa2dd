"""MetaIndex: the metadata index, with row meta per table, step meta per step, the file
fingerprints, written column types and the run log."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..sql import DBConn
from .files import FileMeta
from .history import HistoryLog, default_root
from .schema import IndexDB

if TYPE_CHECKING:
    import sqlalchemy as sa

    from .rows import RowMeta
    from .steps import StepMeta


class MetaIndex(IndexDB):
    """``MetaIndex(DBConn("sqlite:///meta.sqlite"))``: creates what is missing."""

    def __init__(self, dbconn: DBConn | str, history: str | Path | bool | None = None) -> None:
        super().__init__(dbconn)
        self.file_meta = FileMeta(self)
        if history is None or history is True:
            root = default_root(self.dbconn.url)
            if root is None and history is True:
                raise ValueError(f"name the folder of the history of {self.dbconn.url}: "
                                 "DataStore(url, history='folder')")
        else:
            root = None if history is False else Path(history)
        self.history = HistoryLog(self, root)
        if root is None:  # what is written now is kept nowhere: histories begin anew later
            with self.begin() as conn:
                self.history.forget_started(conn)
        self._rows: dict[str, RowMeta] = {}
        self._steps: dict[str, StepMeta] = {}

    # --- per-table and per-step meta ---------------------------------------------------
    def row_meta(self, name: str) -> RowMeta:
        from .rows import RowMeta

        if name not in self._rows:
            self._rows[name] = RowMeta(self, name)
        return self._rows[name]

    def step_meta(self, name: str) -> StepMeta:
        from .steps import StepMeta

        if name not in self._steps:
            self._steps[name] = StepMeta(self, name)
        return self._steps[name]

    # --- run log ----------------------------------------------------------------------
    def next_run_id(self, conn: sa.Connection) -> int:
        """The id the next logged run gets (one writer at a time holds the index)."""
        from ..sql import qualified

        return int(conn.exec_driver_sql(
            f"SELECT COALESCE(MAX(run_id), 0) + 1 FROM {qualified(conn, self.runs)}").scalar_one())

    def log_run(self, report: Any, seq_from: int, run_id: int | None = None,
                conn: sa.Connection | None = None) -> tuple[int, int]:
        """Record a run (started, finished, trigger, clock range, summary) as run `run_id`
        (None: a new one), in the transaction of `conn` if given. Returns its id and the
        clock value it was logged at. Its row versions are in the history's inbox already;
        when the inbox has grown, they move to Parquet now."""
        import json

        from ..sql import upsert_tuples

        if conn is None:
            with self.begin() as own:
                run_id, now = self.log_run(report, seq_from, run_id, own)
                spill = self.history.enabled and self.history.inbox_full(own)
            if spill:
                self.history.settle()
            return run_id, now
        run_id = self.next_run_id(conn) if run_id is None else run_id
        now = self.current_seq(conn)
        upsert_tuples(conn, self.runs, ["run_id", "started", "finished", "trigger", "seq_from",
                                        "seq_to", "summary"],
                      [(run_id, report.started, report.finished, report.trigger, seq_from, now,
                        json.dumps(report.summary()))], ["run_id"])
        return run_id, now

    # --- column types of written files ---------------------------------------------------
    def written_kinds(self, table: str) -> dict[str, str]:
        """Column dtypes of what filepipe wrote to `table`'s files (see `value_kinds`)."""
        import sqlalchemy as sa

        with self.begin() as conn:
            found = conn.execute(sa.select(self.schemas.c.kinds)
                                 .where(self.schemas.c.table_name == table)).scalar()
        return dict(found or {})

    def set_written_kinds(self, conn: sa.Connection, table: str, kinds: dict[str, str]) -> None:
        import sqlalchemy as sa

        conn.execute(sa.delete(self.schemas).where(self.schemas.c.table_name == table))
        conn.execute(sa.insert(self.schemas).values(table_name=table, kinds=kinds))
