"""MetaIndex: the metadata index, with row meta per table, step meta per step, the file
fingerprints, written column types and the run log."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..sql import DBConn
from .files import FileMeta
from .schema import IndexDB

if TYPE_CHECKING:
    import sqlalchemy as sa

    from .rows import RowMeta
    from .steps import StepMeta


class MetaIndex(IndexDB):
    """``MetaIndex(DBConn("sqlite:///meta.sqlite"))``: creates what is missing."""

    def __init__(self, dbconn: DBConn | str) -> None:
        super().__init__(dbconn)
        self.file_meta = FileMeta(self)
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
    def log_run(self, report: Any, seq_from: int) -> None:
        """Record a finished run (only runs that changed something or failed are logged)."""
        import json

        from ..sql import executemany, insert_sql

        columns = ["started", "finished", "trigger", "seq_from", "seq_to", "summary"]
        with self.begin() as conn:
            executemany(conn, insert_sql(conn, self.runs, columns),
                        [(report.started, report.finished, report.trigger, seq_from,
                          self.current_seq(conn), json.dumps(report.summary()))])

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
