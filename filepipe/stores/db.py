"""A keyed SQL table (any SQLAlchemy database): the seed tutorial's `TableStoreDB`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import sql
from .base import TableStore

if TYPE_CHECKING:
    import pandas as pd
    import sqlalchemy as sa

    from ..sql import DBConn


class TableStoreDB(TableStore):
    """Rows in the SQL table `name`, with columns `data_sql_schema` (SQLAlchemy Columns).

    The table is created when missing. When it lives in the same database as the
    metadata index, data and meta of one batch commit in one transaction.
    """

    transactional = True

    def __init__(self, name: str, dbconn: DBConn, data_sql_schema: list[sa.Column],
                 create_table: bool = True) -> None:
        import sqlalchemy as sa

        self.name = name
        self.dbconn = dbconn
        self.columns = [c._copy() for c in data_sql_schema]
        self.primary_keys = [c.name for c in self.columns if c.primary_key]
        if not self.primary_keys:
            raise ValueError(f"TableStoreDB {name!r}: data_sql_schema has no primary_key column")
        self.table = sa.Table(name, sa.MetaData(schema=dbconn.schema), *self.columns)
        if create_table:
            self.table.create(dbconn.engine, checkfirst=True)

    def key_types(self) -> dict[str, sa.types.TypeEngine]:
        return {k: self.table.c[k].type for k in self.primary_keys}

    def read_rows(self, idx: pd.DataFrame | None = None) -> pd.DataFrame:
        cols = [c.name for c in self.columns]
        with self.dbconn.begin() as conn:
            if idx is None:
                return sql.select_all(conn, self.table, cols)
            if idx.empty:
                return sql.select_all(conn, self.table, cols, where="1=0")
            return sql.select_where_in(conn, self.table, cols, idx, self.primary_keys)

    def read_rows_matching(self, proj: pd.DataFrame) -> pd.DataFrame | None:
        on = list(proj.columns)
        if not on or on != self.primary_keys[:len(on)]:  # the key index serves its prefixes
            return None
        with self.dbconn.begin() as conn:
            return sql.select_where_in(conn, self.table, [c.name for c in self.columns], proj, on)

    def sql_table(self, conn: sa.Connection) -> sa.Table | None:
        return self.table if self._same_database(conn) else None

    def upsert_rows(self, df: pd.DataFrame, conn: Any = None) -> None:
        self._write(conn, lambda c: sql.upsert(c, self.table, df, self.primary_keys))

    def delete_rows(self, idx: pd.DataFrame, conn: Any = None) -> None:
        self._write(conn, lambda c: sql.delete_keys(c, self.table, idx, self.primary_keys))

    def _write(self, conn: sa.Connection | None, action: Any) -> None:
        """Run `action` in the caller's transaction when it is on this database."""
        if conn is not None and self._same_database(conn):
            action(conn)
        else:
            with self.dbconn.begin() as own:
                action(own)

    def _same_database(self, conn: sa.Connection) -> bool:
        return str(conn.engine.url) == str(self.dbconn.engine.url)

    def describe(self) -> str:
        return f"table {self.name!r}"
