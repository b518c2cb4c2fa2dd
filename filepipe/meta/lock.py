"""The writer lock of an index on PostgreSQL: one writer per index, across machines.

A session-level advisory lock (``pg_try_advisory_lock``) on a key derived from the
index (its database and schema), held by a connection of its own for as long as the lock
is: the server releases it when that session ends, however the process ends — SIGKILL,
a crash, a lost machine (TCP keepalives end a session whose peer is gone). The holder's
pid and host are the connection's ``application_name``, which another process reads from
``pg_stat_activity`` to name the holder.
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..errors import LockedError
from ..sql import placeholders

if TYPE_CHECKING:
    import sqlalchemy as sa

#: the first of the two int4 keys of every filepipe writer lock ("fpLK")
NAMESPACE = 0x66704C4B
POLL = 0.1  # seconds between attempts while waiting
APP_PREFIX = "filepipe "


def lock_key(url: str, schema: str | None = None) -> tuple[int, int]:
    """The advisory-lock key of the index at `url` (in `schema`): two non-negative int4.

    Advisory locks belong to one database already; the key names the database and schema
    too, so two indexes in one database (two schemas) have two locks.
    """
    import sqlalchemy as sa

    parsed = sa.engine.make_url(url)
    identity = f"{parsed.database or ''}/{schema or ''}"
    return NAMESPACE, zlib.crc32(identity.encode()) & 0x7FFFFFFF


def holder_name(pid: int | None = None, host: str | None = None) -> str:
    """What a holder calls itself: ``pid 4242 on host-b`` (the SQLite lock file's words)."""
    return f"pid {pid or os.getpid()} on {host or os.uname().nodename}"


@contextmanager
def advisory_lock(url: str, schema: str | None, wait: float, where: str) -> Iterator[None]:
    """Hold the writer lock of the PostgreSQL index at `url` for the block.

    `wait` seconds to wait for another writer (negative: as long as it takes); raises
    LockedError naming the holder (pid and host) otherwise. `where` names the project in
    that message.
    """
    import sqlalchemy as sa

    keys = lock_key(url, schema)
    args: dict[str, Any] = {}
    if sa.engine.make_url(url).get_driver_name() in ("psycopg", "psycopg2"):  # libpq's parameters
        args = {"application_name": (APP_PREFIX + holder_name())[:63],
                # a holder whose machine vanished loses the lock within about a minute
                "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT",
                              connect_args=args)
    try:
        conn = engine.connect()
        try:
            _acquire(conn, keys, wait, where, engine.url)
            try:
                yield
            finally:
                conn.exec_driver_sql(f"SELECT pg_advisory_unlock({_two(conn)})", keys)
        finally:
            conn.close()
    finally:
        engine.dispose()


def _acquire(conn: sa.Connection, keys: tuple[int, int], wait: float, where: str, url: Any) -> None:
    deadline = None if wait < 0 else time.monotonic() + wait
    while True:
        if conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({_two(conn)})", keys).scalar():
            return
        if deadline is not None and time.monotonic() >= deadline:
            break
        time.sleep(POLL if deadline is None else max(0.0, min(POLL, deadline - time.monotonic())))
    index = url.render_as_string(hide_password=True)
    raise LockedError(f"another filepipe is already running on {where}'s index, {index} "
                      f"({holder(conn, keys)}); wait for it to finish or stop it")


def _two(conn: sa.Connection) -> str:
    return ", ".join(placeholders(conn, 2))


def holder(conn: sa.Connection, keys: tuple[int, int]) -> str:
    """Who holds the lock `keys` (``pid 4242 on host-b``), as well as can be told."""
    a, b = placeholders(conn, 2)
    found = conn.exec_driver_sql(
        "SELECT a.application_name, l.pid FROM pg_locks l "
        "LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        f"AND l.classid = {a} AND l.objid = {b}", keys).first()
    if found is None:  # released in between
        return "another process, which has just finished"
    name, backend = found
    if name and name.startswith(APP_PREFIX):
        return name[len(APP_PREFIX):]
    return f"PostgreSQL session {backend}"
