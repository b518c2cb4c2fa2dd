"""IndexDB: the database of the metadata index, its shared tables and its change clock."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..errors import MetaIndexError
from ..sql import DBConn

if TYPE_CHECKING:
    import sqlalchemy as sa

PREFIX = "fp_"


class IndexDB:
    """The index's database: the tables every part of the meta shares (the clock, step
    state, file fingerprints, written column types, the run log) and transactions.

    The clock is one counter shared by every table: each stored change takes the next
    value as its `seq`, so "what changed since X" is an indexed range scan.
    """

    def __init__(self, dbconn: DBConn | str) -> None:
        import sqlalchemy as sa

        self.dbconn = DBConn(dbconn) if isinstance(dbconn, str) else dbconn
        self.md = sa.MetaData(schema=self.dbconn.schema)
        self.clock = sa.Table(
            f"{PREFIX}clock", self.md,
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("seq", sa.BigInteger, nullable=False),
        )
        self.steps = sa.Table(
            f"{PREFIX}steps", self.md,
            sa.Column("name", sa.String, primary_key=True),
            sa.Column("code_version", sa.String),
            sa.Column("transform_keys", sa.JSON),
        )
        self.step_inputs = sa.Table(
            f"{PREFIX}step_inputs", self.md,
            sa.Column("step", sa.String, primary_key=True),
            sa.Column("input", sa.String, primary_key=True),
            sa.Column("hwm", sa.BigInteger, nullable=False),
        )
        self.files = sa.Table(
            f"{PREFIX}files", self.md,
            sa.Column("file_id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("table_name", sa.String, nullable=False),
            sa.Column("path", sa.String, nullable=False),
            sa.Column("size", sa.BigInteger),
            sa.Column("mtime_ns", sa.BigInteger),
            sa.Column("inode", sa.BigInteger),
            sa.Column("synced_ns", sa.BigInteger),
            sa.Column("state", sa.String, nullable=False),  # synced | clean | dirty
            sa.UniqueConstraint("table_name", "path"),
        )
        self.schemas = sa.Table(
            f"{PREFIX}schemas", self.md,
            sa.Column("table_name", sa.String, primary_key=True),
            sa.Column("kinds", sa.JSON, nullable=False),  # column → dtype, as written
        )
        self.runs = sa.Table(
            f"{PREFIX}runs", self.md,
            sa.Column("run_id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("started", sa.Float, nullable=False),
            sa.Column("finished", sa.Float),
            sa.Column("trigger", sa.String),
            sa.Column("seq_from", sa.BigInteger),
            sa.Column("seq_to", sa.BigInteger),
            sa.Column("summary", sa.JSON),
        )
        self.tags = sa.Table(
            f"{PREFIX}tags", self.md,
            sa.Column("name", sa.String, primary_key=True),
            sa.Column("run_id", sa.Integer),
            sa.Column("seq", sa.BigInteger, nullable=False),
            sa.Column("created", sa.Float, nullable=False),
            sa.Column("message", sa.Text),
        )
        self.history_state = sa.Table(
            f"{PREFIX}history", self.md,  # tables whose every change is in the history
            sa.Column("table_name", sa.String, primary_key=True),  # '': gc's mark
            sa.Column("since_seq", sa.BigInteger, nullable=False),
        )
        self.history_inbox = sa.Table(
            f"{PREFIX}history_inbox", self.md,  # row versions, until they move to Parquet
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("table_name", sa.String, nullable=False),
            sa.Column("seq_lo", sa.BigInteger, nullable=False),
            sa.Column("seq_hi", sa.BigInteger, nullable=False),
            sa.Column("run_id", sa.Integer),  # NULL: the run whose clock range holds them
            sa.Column("rows", sa.Integer, nullable=False),
            sa.Column("added", sa.Integer, nullable=False),
            sa.Column("updated", sa.Integer, nullable=False),
            sa.Column("deleted", sa.Integer, nullable=False),
            sa.Column("data", sa.LargeBinary),  # the pickled frame, or
            sa.Column("path", sa.String),  # its pending segment, under the history's root
        )
        try:
            if self.engine.dialect.name == "postgresql":
                self._create_serialized()
            else:
                self.md.create_all(self.dbconn.engine, checkfirst=True)
            with self.begin() as conn:
                if conn.execute(sa.select(self.clock.c.seq)).first() is None:
                    conn.execute(self.clock.insert().values(id=1, seq=0))
        except sa.exc.DatabaseError as exc:
            where = self.dbconn.engine.url.database or str(self.dbconn.engine.url)
            raise MetaIndexError(
                f"the metadata index {where} cannot be used: {exc.orig}. Run `filepipe reset "
                "--all` to keep it aside and start a fresh index: the next run rebuilds it "
                "from the files and makes the outputs equal a fresh recompute") from None

    def _create_serialized(self) -> None:
        """Create the missing tables in one transaction holding a transaction-level advisory
        lock (PostgreSQL): two processes opening a fresh index at once (a `run` and a
        `status`, which takes no writer lock) would otherwise both create them, and one
        fail on the other's tables."""
        from ..sql import placeholders
        from .lock import NAMESPACE, lock_key

        _, key = lock_key(self.dbconn.url, self.dbconn.schema)
        with self.begin() as conn:
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({', '.join(placeholders(conn, 2))})",
                                 (NAMESPACE + 1, key))
            self.md.create_all(conn, checkfirst=True)

    @property
    def engine(self) -> sa.Engine:
        return self.dbconn.engine

    def fit(self, name: str) -> str:
        """`name` as a table or index name of this database: PostgreSQL keeps the first 63
        bytes of longer names, so two long names could become one; there, such a name
        becomes its start and a hash of the whole (on SQLite, names are kept whole)."""
        return fit_name(name, self.engine.dialect.max_identifier_length
                        if self.engine.dialect.name == "postgresql" else None)

    @contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        """One transaction on the index database (data of stores in it joins in)."""
        with self.dbconn.begin() as conn:
            yield conn

    # --- the change clock --------------------------------------------------------------
    def take_seq(self, conn: sa.Connection, n: int) -> int:
        """Reserve `n` clock values; returns the first."""
        from ..sql import placeholders, qualified

        table = qualified(conn, self.clock)
        ph = placeholders(conn, 1)[0]
        # plain driver SQL: a compiled SQLAlchemy statement costs ~1 ms on the one-row path
        if _returning(conn):  # one statement (a round trip to a server), not two
            return int(conn.exec_driver_sql(f"UPDATE {table} SET seq = seq + {ph} WHERE id = 1 RETURNING seq",
                                            (n,)).scalar_one()) - n + 1
        conn.exec_driver_sql(f"UPDATE {table} SET seq = seq + {ph} WHERE id = 1", (n,))
        return self.current_seq(conn) - n + 1

    def current_seq(self, conn: sa.Connection | None = None) -> int:
        from ..sql import qualified

        if conn is None:
            with self.begin() as c:
                return self.current_seq(c)
        table = qualified(conn, self.clock)
        return int(conn.exec_driver_sql(f"SELECT seq FROM {table} WHERE id = 1").scalar_one())

    def has_table(self, name: str) -> bool:
        import sqlalchemy as sa

        return sa.inspect(self.engine).has_table(name, schema=self.dbconn.schema)


def fit_name(name: str, limit: int | None) -> str:
    """`name`, or, longer than `limit` bytes, its start, ``_`` and 8 hex digits of its hash."""
    import hashlib

    raw = name.encode()
    if limit is None or len(raw) <= limit:
        return name
    digest = hashlib.sha1(raw).hexdigest()[:8]
    return raw[:limit - 9].decode(errors="ignore") + "_" + digest


def _returning(conn: sa.Connection) -> bool:
    """Does the database answer ``UPDATE … RETURNING`` (PostgreSQL; SQLite from 3.35)?"""
    if conn.dialect.name == "postgresql":
        return True
    if conn.dialect.name == "sqlite":
        import sqlite3

        return sqlite3.sqlite_version_info >= (3, 35)
    return False
