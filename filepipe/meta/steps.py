"""Step meta of one transform: per transform key its status, and per input how far it read."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .. import sql
from ..frames import coerce_columns

if TYPE_CHECKING:
    import pandas as pd
    import sqlalchemy as sa

    from .schema import IndexDB

WHOLE = "_whole"  # the single key column of a whole-table step


class StepMeta:
    """``fp_keys__<step>``: transform key → status ('ok'/'failed'), error, attempts, done_seq.

    `done_seq` is the clock value when the key was last processed successfully: changes
    with a higher seq are still to do. The per-input high-water marks in ``fp_step_inputs``
    say up to which clock value every change has been looked at.
    """

    def __init__(self, index: IndexDB, name: str) -> None:
        import sqlalchemy as sa

        self.index = index
        self.name = name
        self.table_name = index.fit(f"fp_keys__{name}")
        self.table: sa.Table | None = None
        self.keys: list[str] = []
        if index.has_table(self.table_name):
            self.table = sa.Table(self.table_name, sa.MetaData(schema=index.dbconn.schema),
                                  autoload_with=index.engine)
            self.keys = [c.name for c in self.table.primary_key.columns]

    def ensure(self, keys: Sequence[str], types: Mapping[str, Any]) -> None:
        """Create (or re-create, when the transform keys changed) the keys table."""
        import sqlalchemy as sa

        keys = list(keys) or [WHOLE]
        if self.table is not None and self.keys == keys:
            return
        if self.table is not None:
            self.table.drop(self.index.engine)
        types = {WHOLE: sa.Integer(), **types}
        cols = [sa.Column(k, types[k], primary_key=True) for k in keys]
        cols += [
            sa.Column("status", sa.String, nullable=False),
            sa.Column("error", sa.Text),
            sa.Column("attempts", sa.Integer, nullable=False),
            sa.Column("done_seq", sa.BigInteger),
            sa.Column("update_ts", sa.Float, nullable=False),
        ]
        self.table = sa.Table(self.table_name, sa.MetaData(schema=self.index.dbconn.schema),
                              *cols, sa.Index(self.index.fit(f"ix_{self.table_name}_status"), "status"),
                              sqlite_with_rowid=False)
        self.table.create(self.index.engine, checkfirst=True)
        self.keys = keys

    @property
    def ready(self) -> bool:
        return self.table is not None

    def _coerce(self, df: pd.DataFrame) -> pd.DataFrame:
        assert self.table is not None
        df = df.assign(**{WHOLE: 0}) if self.keys == [WHOLE] else df
        return coerce_columns(df, {k: self.table.c[k].type for k in self.keys})

    # --- step-level state ---------------------------------------------------------------
    def state(self, conn: sa.Connection) -> tuple[str | None, list[str] | None, dict[str, int]]:
        """(code version, transform keys, high-water mark per input) as last recorded."""
        # plain driver SQL: compiled SQLAlchemy statements cost ~1 ms each on the hot path
        ph = sql.placeholders(conn, 1)[0]
        steps, inputs = sql.qualified(conn, self.index.steps), sql.qualified(conn, self.index.step_inputs)
        row = conn.exec_driver_sql(f"SELECT code_version, transform_keys FROM {steps} "
                                   f"WHERE name = {ph}", (self.name,)).first()
        hwm = {name: int(v) for name, v in conn.exec_driver_sql(
            f"SELECT input, hwm FROM {inputs} WHERE step = {ph}", (self.name,))}
        if row is None:
            return None, None, hwm
        version, tk = row
        return version, (json.loads(tk) if isinstance(tk, str) else tk), hwm

    def set_state(self, conn: sa.Connection, code_version: str, transform_keys: list[str],
                  hwm: Mapping[str, int]) -> None:
        steps, inputs = self.index.steps, self.index.step_inputs
        sql.upsert_tuples(conn, steps, ["name", "code_version", "transform_keys"],
                          [(self.name, code_version, json.dumps(list(transform_keys)))], ["name"])
        sql.upsert_tuples(conn, inputs, ["step", "input", "hwm"],
                          [(self.name, name, int(v)) for name, v in hwm.items()], ["step", "input"])

    # --- per-key state ------------------------------------------------------------------
    def failed(self, conn: sa.Connection) -> pd.DataFrame:
        """Transform keys whose last attempt failed."""
        if self.table is None:
            return _frame({})
        ph = sql.placeholders(conn, 1)[0]
        return sql.select_all(conn, self.table, self.keys, where=f"status = {ph}",
                              params=("failed",))

    def done_seqs(self, conn: sa.Connection, keys: pd.DataFrame) -> pd.DataFrame:
        """`done_seq` (clock value of the last success) for the given transform keys."""
        if self.table is None or keys.empty:
            return _frame({k: [] for k in self.keys + ["done_seq"]})
        return sql.select_where_in(conn, self.table, self.keys + ["done_seq"],
                                   self._coerce(keys), self.keys)

    def record(self, conn: sa.Connection, keys: pd.DataFrame, error: str | None,
               done_seq: int) -> None:
        """Mark `keys` processed (error None) or failed with `error`."""
        assert self.table is not None
        if keys.empty:
            return
        keys = self._coerce(keys)
        rows = list(dict.fromkeys(sql.driver_rows(conn, self.table, keys, self.keys)))
        now = time.time()
        if error:  # count the attempts of failing keys and keep their last done_seq
            prev = sql.select_where_in(conn, self.table, self.keys + ["attempts"], keys, self.keys)
            attempts = dict(zip(sql.driver_rows(conn, self.table, prev, self.keys),
                                prev["attempts"].tolist()))
            columns = ["attempts", "status", "error", "update_ts"]
            values = [k + (int(attempts.get(k, 0)) + 1, "failed", error, now) for k in rows]
        elif sql.supports_upsert(conn):  # one value for all: bound once, not per row
            sql.insert_columns(conn, self.table, self.keys, [list(c) for c in zip(*rows)], self.keys,
                               constants={"attempts": 0, "status": "ok", "error": None,
                                          "done_seq": int(done_seq), "update_ts": now})
            return
        else:
            columns = ["attempts", "status", "error", "done_seq", "update_ts"]
            values = [k + (0, "ok", None, int(done_seq), now) for k in rows]
        sql.upsert_tuples(conn, self.table, self.keys + columns, values, self.keys)

    def counts(self, conn: sa.Connection) -> dict[str, int]:
        if self.table is None:
            return {}
        result = conn.exec_driver_sql(
            f"SELECT status, COUNT(*) FROM {sql.qualified(conn, self.table)} GROUP BY status")
        return {status: int(n) for status, n in result}

    def errors(self, conn: sa.Connection, limit: int = 20) -> pd.DataFrame:
        """Failed keys with their error and attempts."""
        if self.table is None:
            return _frame({})
        ph = sql.placeholders(conn, 1)[0]
        df = sql.select_all(conn, self.table, self.keys + ["error", "attempts"],
                            where=f"status = {ph}", params=("failed",))
        return df.head(limit)

    def reset(self, conn: sa.Connection) -> None:
        """Forget everything: the next run recomputes every key of the step."""
        steps, inputs = self.index.steps, self.index.step_inputs
        conn.execute(steps.delete().where(steps.c.name == self.name))
        conn.execute(inputs.delete().where(inputs.c.step == self.name))
        if self.table is not None:
            conn.exec_driver_sql(f"DELETE FROM {sql.qualified(conn, self.table)}")


def _frame(data: dict[str, list]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(data)
