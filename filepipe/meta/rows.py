"""Row meta of one table: keys, content hash, timestamps, soft delete, change sequence.

Besides its keys, a row's meta may keep *tracked* columns: non-key columns some step
groups by (``transform_keys=["customer"]`` over orders keyed by ``order_id``). When a
tracked value changes, the old value is logged in the table's *moves* so the step
recomputes the old group as well as the new one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .. import sql
from ..frames import SMALL_FRAME, coerce_columns, sql_type_for

if TYPE_CHECKING:
    import pandas as pd
    import sqlalchemy as sa

    from ..frametypes import DataDF, IndexDF, MetaDF
    from .schema import IndexDB

ROW_COLUMNS = ["hash", "create_ts", "update_ts", "delete_ts", "seq", "file_id"]
#: columns a write often sets to one value for every row (a batch's time, no deletion)
CONSTANT_COLUMNS = ["create_ts", "update_ts", "delete_ts", "file_id"]


class RowMeta:
    """The meta table ``fp_rows__<name>`` (created at the first write if key types are unknown)."""

    def __init__(self, index: IndexDB, name: str) -> None:
        self.index = index
        self.name = name
        self.table_name = index.fit(f"fp_rows__{name}")
        self.moves_name = index.fit(f"fp_moves__{name}")
        self.table: sa.Table | None = None
        self.moves: sa.Table | None = None
        self.keys: list[str] = []
        self.tracked: list[str] = []
        self._reflect()

    # --- schema -------------------------------------------------------------------------
    def _reflect(self, conn: sa.Connection | None = None) -> None:
        import sqlalchemy as sa

        bind = conn if conn is not None else self.index.engine
        md = sa.MetaData(schema=self.index.dbconn.schema)
        if not sa.inspect(bind).has_table(self.table_name, schema=self.index.dbconn.schema):
            return
        self.table = sa.Table(self.table_name, md, autoload_with=bind)
        self.keys = [c.name for c in self.table.primary_key.columns]
        self.tracked = [c.name for c in self.table.c if c.name not in self.keys
                        and c.name not in ROW_COLUMNS]
        if sa.inspect(bind).has_table(self.moves_name, schema=self.index.dbconn.schema):
            self.moves = sa.Table(self.moves_name, md, autoload_with=bind)

    @property
    def exists(self) -> bool:
        return self.table is not None

    def holds(self, columns: Sequence[str]) -> bool:
        """Does the meta exist and keep all of `columns` (keys or tracked)?"""
        return self.table is not None and all(c in self.keys or c in self.tracked for c in columns)

    def key_types(self) -> dict[str, sa.types.TypeEngine]:
        assert self.table is not None
        return {k: self.table.c[k].type for k in self.keys}

    def column_types(self) -> dict[str, sa.types.TypeEngine]:
        """Types of the key and tracked columns."""
        assert self.table is not None
        return {c: self.table.c[c].type for c in self.keys + self.tracked}

    def ensure(self, keys: Sequence[str], key_types: Mapping[str, Any] | None,
               sample: DataDF | None = None, conn: sa.Connection | None = None) -> bool:
        """Create the meta table if missing; False when key types are not known yet.

        DDL runs on `conn` when given (SQLite would lock against a second connection).
        """
        import sqlalchemy as sa

        if self.table is not None:
            return True
        types = dict(key_types or {})
        for k in keys:
            if k not in types:
                if sample is None or k not in sample.columns or sample.empty:
                    return False
                types[k] = sql_type_for(sample[k])
        md = sa.MetaData(schema=self.index.dbconn.schema)
        cols = [sa.Column(k, types[k], primary_key=True) for k in keys]
        cols += [
            sa.Column("hash", sa.BigInteger, nullable=False),
            sa.Column("create_ts", sa.Float, nullable=False),
            sa.Column("update_ts", sa.Float, nullable=False),
            sa.Column("delete_ts", sa.Float, nullable=True),
            sa.Column("seq", sa.BigInteger, nullable=False),
            sa.Column("file_id", sa.Integer, nullable=True),
        ]
        # WITHOUT ROWID: the rows live in the key B-tree (two B-trees per row, not three)
        table = sa.Table(self.table_name, md, *cols,
                         sa.Index(self.index.fit(f"ix_{self.table_name}_seq"), "seq"), sqlite_with_rowid=False)
        table.create(conn if conn is not None else self.index.engine, checkfirst=True)
        self.table, self.keys = table, list(keys)
        return True

    def add_tracked(self, columns: Mapping[str, Any], conn: sa.Connection | None = None) -> list[str]:
        """Add tracked columns (name → SQL type); returns those newly added."""
        import sqlalchemy as sa

        assert self.table is not None
        new = [c for c in columns if c not in self.keys and c not in self.tracked]
        if not new:
            return []
        with _on(self.index, conn) as conn:
            for c in new:
                ddl = sa.schema.CreateColumn(sa.Column(c, columns[c])).compile(dialect=conn.dialect)
                conn.exec_driver_sql(
                    f"ALTER TABLE {sql.qualified(conn, self.table)} ADD COLUMN {ddl}")
                conn.exec_driver_sql(
                    f"CREATE INDEX {sql.quote(conn, self.index.fit(f'ix_{self.table_name}_{c}'))} "
                    f"ON {sql.qualified(conn, self.table)} ({sql.quote(conn, c)})")
            self.table = None
            self._reflect(conn)
            self._ensure_moves(conn)
        return new

    def _ensure_moves(self, conn: sa.Connection) -> None:
        import sqlalchemy as sa

        if not self.tracked or self.table is None:
            return
        if self.moves is not None and all(c in self.moves.c for c in self.tracked):
            return
        md = sa.MetaData(schema=self.index.dbconn.schema)
        if self.moves is not None:
            self.moves.drop(conn)
        cols = [sa.Column("seq", sa.BigInteger, nullable=False)]
        cols += [sa.Column(c, self.table.c[c].type) for c in self.keys + self.tracked]
        self.moves = sa.Table(self.moves_name, md, *cols, sa.Index(self.index.fit(f"ix_{self.moves_name}_seq"), "seq"))
        self.moves.create(conn, checkfirst=True)

    @property
    def meta_columns(self) -> list[str]:
        return self.keys + ROW_COLUMNS + self.tracked

    def coerce(self, df: pd.DataFrame) -> pd.DataFrame:
        """Cast key and tracked columns of `df` to this table's types."""
        return coerce_columns(df, self.column_types()) if self.table is not None else df

    def lookup(self, conn: sa.Connection, idx: IndexDF, total: int | None = None) -> MetaDF:
        """Meta rows (deleted ones included) for the keys in `idx`.

        When `idx` covers a large share of the table a scan beats many IN lookups.
        """
        assert self.table is not None
        if idx.empty:
            return self.empty()
        if total is None and len(idx) > SMALL_FRAME:  # a few keys: always by index
            total = self.count(conn, include_deleted=True)
        if total == 0:
            return self.empty()
        if total is not None and len(idx) * 4 > total:
            found = self.scan(conn, include_deleted=True)
            return found.merge(self.coerce(idx[self.keys]).drop_duplicates(), on=self.keys)
        return sql.select_where_in(conn, self.table, self.meta_columns, self.coerce(idx), self.keys)

    def scan(self, conn: sa.Connection, include_deleted: bool = False,
             columns: Sequence[str] | None = None, deleted_after: int | None = None) -> MetaDF:
        """Meta rows: live ones, plus deleted ones (all, or those deleted after a clock value)."""
        assert self.table is not None
        cols = list(columns or self.meta_columns)
        where = "" if include_deleted else "delete_ts IS NULL"
        if deleted_after is not None and not include_deleted:
            where = f"delete_ts IS NULL OR seq > {int(deleted_after)}"
        return sql.select_all(conn, self.table, cols, where=where)

    def matching(self, conn: sa.Connection, proj: pd.DataFrame,
                 columns: Sequence[str] | None = None,
                 on: Sequence[str] | None = None, include_deleted: bool = False) -> MetaDF:
        """Live meta rows (deleted ones too with `include_deleted`) whose `on` columns
        (default all of `proj`'s) equal one of its rows."""
        assert self.table is not None
        cols = list(columns or self.meta_columns)
        on = list(proj.columns if on is None else on)
        if proj.empty and on:
            return self.empty(cols)
        return sql.select_where_in(conn, self.table, cols, self.coerce(proj), on,
                                   extra_where="" if include_deleted else "delete_ts IS NULL")

    def changed_between(self, conn: sa.Connection, lo: int, hi: int,
                        columns: Sequence[str]) -> pd.DataFrame:
        """`columns` of rows changed (incl. deleted) with lo < seq <= hi, plus old values
        of moves: each distinct value once, with the `seq` of its latest change (grouped
        in SQL: a first run reads one row per key, not per changed row)."""
        import pandas as pd

        assert self.table is not None
        cur = _latest_between(conn, self.table, columns, lo, hi)
        if self.moves is None or not set(columns) & set(self.tracked):
            return cur
        moved = _latest_between(conn, self.moves, columns, lo, hi)
        return pd.concat([cur, moved], ignore_index=True) if len(moved) else cur

    def last_changed_between(self, conn: sa.Connection, lo: int, hi: int) -> MetaDF:
        """Meta rows (every column) whose last change has lo < seq <= hi."""
        assert self.table is not None
        return sql.select_all(conn, self.table, self.meta_columns, where=_range_where(conn),
                              params=(lo, hi))

    def moves_for(self, conn: sa.Connection, idx: IndexDF, after: int,
                  columns: Sequence[str]) -> pd.DataFrame:
        """Old tracked values of the keys in `idx` logged after clock value `after`."""
        if self.moves is None or idx.empty:
            return self.empty(list(columns))
        found = sql.select_where_in(conn, self.moves, list(columns), self.coerce(idx),
                                    self.keys, extra_where=f"seq > {int(after)}")
        return found

    def count(self, conn: sa.Connection, include_deleted: bool = False) -> int:
        if self.table is None:
            return 0
        where = "" if include_deleted else " WHERE delete_ts IS NULL"
        return int(conn.exec_driver_sql(
            f"SELECT COUNT(*) FROM {sql.qualified(conn, self.table)}{where}").scalar_one())

    def is_empty(self, conn: sa.Connection) -> bool:
        """Does the table hold no meta row, deleted ones included? (One index step.)"""
        return self.table is None or conn.exec_driver_sql(
            f"SELECT 1 FROM {sql.qualified(conn, self.table)} LIMIT 1").first() is None

    def last_change_ts(self, conn: sa.Connection) -> float | None:
        if self.table is None:
            return None
        return conn.exec_driver_sql(
            "SELECT MAX(COALESCE(delete_ts, update_ts)) FROM "
            f"{sql.qualified(conn, self.table)}").scalar_one()

    def empty(self, columns: Sequence[str] | None = None) -> MetaDF:
        """No rows, with `columns` (default all) typed as a lookup would type them."""
        return sql.empty_result(self.table, list(columns or self.meta_columns))

    # --- writes -------------------------------------------------------------------------
    def write(self, conn: sa.Connection, rows: MetaDF) -> None:
        """Upsert full meta rows (all of `meta_columns` present in `rows`; others ignored)."""
        assert self.table is not None
        sql.upsert(conn, self.table, rows, self.keys, same=CONSTANT_COLUMNS)

    def log_moves(self, conn: sa.Connection, old: pd.DataFrame) -> None:
        """Record old tracked values (with the seq of the change that moved them)."""
        if self.moves is None or old.empty:
            return
        cols = ["seq"] + self.keys + self.tracked
        if sql.copies(conn):  # many rows by COPY
            sql.insert_columns(conn, self.moves, cols, sql.driver_columns(conn, self.moves, old, cols))
            return
        sql.executemany(conn, sql.insert_sql(conn, self.moves, cols),
                        sql.driver_rows(conn, self.moves, old[cols], cols))

    def prune_moves(self, conn: sa.Connection, upto: int) -> None:
        """Drop logged moves every reader has seen (clock value <= `upto`)."""
        if self.moves is not None:
            conn.exec_driver_sql(
                f"DELETE FROM {sql.qualified(conn, self.moves)} WHERE seq <= {int(upto)}")


@contextmanager
def _on(index: IndexDB, conn: sa.Connection | None) -> Iterator[sa.Connection]:
    """The caller's connection, or a new transaction."""
    if conn is not None:
        yield conn
    else:
        with index.begin() as own:
            yield own


def _range_where(conn: sa.Connection) -> str:
    a, b = sql.placeholders(conn, 2)
    return f"seq > {a} AND seq <= {b}"


def _latest_between(conn: sa.Connection, table: sa.Table, columns: Sequence[str],
                    lo: int, hi: int) -> pd.DataFrame:
    """Distinct values of `columns` of `table`'s rows with lo < seq <= hi, with MAX(seq)."""
    cols = ", ".join(sql.quote(conn, c) for c in columns)
    # from the start: every row (those written after `hi` are redone next run anyway), in
    # key order, so grouping by leading key columns needs no sort (twice as fast)
    where, params = (f" WHERE {_range_where(conn)}", [lo, hi]) if lo > 0 else ("", [])
    text = (f"SELECT {cols + ', ' if cols else ''}MAX(seq) FROM {sql.qualified(conn, table)}"
            + where + (f" GROUP BY {cols}" if cols else ""))
    found = sql.fetch(conn, text, params, list(columns) + ["seq"], table)
    return found if columns else found[found["seq"].notna()].astype({"seq": "int64"})
