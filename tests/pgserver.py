"""A throwaway PostgreSQL server for the tests, and fresh databases on it.

`PGServer.start()` runs ``initdb`` into a new temporary folder and starts the server
there with ``pg_ctl``, listening on a unix socket in that folder only (no TCP port, so
no clash with another server or another test session), trust authentication, and
durability off (fsync, synchronous_commit, full_page_writes: a crash may lose the data,
which no test keeps). `stop()` stops it and removes the folder.

PostgreSQL refuses to run as root. As root, the server runs as the ``postgres`` system
user (or ``nobody``) and the folder is made theirs; as anyone else, as that user.

The binaries are looked for with ``pg_config --bindir``, on PATH, then in
``/usr/lib/postgresql/*/bin`` (Debian and Ubuntu). `FILEPIPE_TEST_POSTGRES_URL`, a
server's URL (``postgresql://user@host:port/postgres``), uses that server instead: the
tests then create and drop databases on it.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

#: the databases the tests make are named PREFIX + a number
PREFIX = "fp_test_"
SUPERUSER = "postgres"
ENV_URL = "FILEPIPE_TEST_POSTGRES_URL"
#: written in the server's folder: the pid of the process that started it (for reaping)
OWNER_FILE = "filepipe-test-owner"
FOLDER_PREFIX = "filepipe-pg-"


class ServerUnavailable(RuntimeError):
    """No PostgreSQL server binary can be found on this machine."""


def find_bindir() -> Path | None:
    """The folder of `initdb`, `pg_ctl` and `postgres`, or None."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                 timeout=10, check=True).stdout.strip()
            if out:
                candidates.append(Path(out))
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                      key=lambda p: [int(x) if x.isdigit() else 0 for x in Path(p).parent.name.split(".")],
                      reverse=True)  # the newest first
    candidates += [Path(p) for p in versions]
    for c in candidates:
        if all((c / b).is_file() and os.access(c / b, os.X_OK) for b in ("initdb", "pg_ctl", "postgres")):
            return c
    return None


def _server_user() -> pwd.struct_passwd | None:
    """The user the server runs as: None (this process's own) unless this is root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise ServerUnavailable("running as root, and neither a `postgres` nor a `nobody` user "
                            "exists to run the PostgreSQL server as (it refuses root)")


class PGServer:
    """A PostgreSQL server the tests own (or one named by FILEPIPE_TEST_POSTGRES_URL)."""

    def __init__(self, admin_url: str, folder: Path | None = None, bindir: Path | None = None,
                 user: pwd.struct_passwd | None = None) -> None:
        self.admin_url = admin_url  # a libpq URL of the `postgres` database, as superuser
        self.folder = folder  # None: a server this helper did not start
        self.bindir = bindir
        self.user = user
        self._admin: Any = None
        self._names = itertools.count(1)
        self.template = f"{PREFIX}{os.getpid()}_template"  # this session's own (a shared server)
        self._template_ready = False

    # --- starting and stopping -----------------------------------------------------------
    @classmethod
    def start(cls) -> PGServer:
        """Start a server of our own (or connect to $FILEPIPE_TEST_POSTGRES_URL's)."""
        given = os.environ.get(ENV_URL)
        if given:
            server = cls(given.replace("postgresql+psycopg://", "postgresql://"))
            server._drop_leftovers()
            return server
        bindir = find_bindir()
        if bindir is None:
            raise ServerUnavailable(
                "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found via `pg_config "
                "--bindir`, PATH or /usr/lib/postgresql/*/bin: install the `postgresql` package, "
                f"or set {ENV_URL} to a server's URL")
        reap_orphans()
        user = _server_user()
        folder = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX))
        (folder / OWNER_FILE).write_text(str(os.getpid()))
        if user is not None:
            os.chown(folder, user.pw_uid, user.pw_gid)
        server = cls(f"postgresql://{SUPERUSER}@/postgres?host={folder}&port=5432", folder, bindir, user)
        try:
            server._initdb_and_start()
        except BaseException:
            server.stop()
            raise
        return server

    def _run(self, *args: str, timeout: float = 120) -> None:
        """Run a server binary as the server's user; its output in the error if it fails."""
        assert self.bindir is not None and self.folder is not None
        kwargs: dict[str, Any] = {}
        if self.user is not None:
            kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        proc = subprocess.run([str(self.bindir / args[0]), *args[1:]], cwd=self.folder, env=env,
                              capture_output=True, text=True, timeout=timeout, **kwargs)
        if proc.returncode != 0:
            log = self.folder / "server.log"
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed (exit {proc.returncode}):\n{proc.stdout}\n"
                               f"{proc.stderr}\n{tail}")

    def _initdb_and_start(self) -> None:
        assert self.folder is not None
        data = self.folder / "data"
        self._run("initdb", "-D", str(data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
                  "--locale=C", "--no-sync", "--no-instructions")
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(f"""
# a throwaway test server: durability off, a unix socket in its own folder only
listen_addresses = ''
unix_socket_directories = '{self.folder}'
port = 5432
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
log_min_messages = warning
""")
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(data), "-l",
                  str(self.folder / "server.log"))

    def stop(self) -> None:
        """Stop the server (if this helper started it) and remove its folder; drop the
        databases the tests made otherwise."""
        if self._admin is not None:
            with contextlib.suppress(Exception):
                if self.folder is None:
                    self._drop_leftovers()
                self._admin.close()
            self._admin = None
        if self.folder is None:
            return
        if (self.folder / "data" / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError, subprocess.SubprocessError):
                self._run("pg_ctl", "stop", "-D", str(self.folder / "data"), "-m", "immediate",
                          "-w", "-t", "30", timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)

    # --- databases -----------------------------------------------------------------------
    @property
    def admin(self) -> Any:
        """An autocommit psycopg connection to the `postgres` database."""
        import psycopg

        if self._admin is None or self._admin.closed:
            self._admin = psycopg.connect(self.admin_url, autocommit=True)
        return self._admin

    def create_database(self) -> str:
        """A new empty database; returns its name."""
        if not self._template_ready:
            self.admin.execute(f"DROP DATABASE IF EXISTS {self.template}")
            self.admin.execute(f"CREATE DATABASE {self.template} TEMPLATE template0 ENCODING 'UTF8' "
                               "LC_COLLATE 'C' LC_CTYPE 'C'")
            self._template_ready = True
        name = f"{PREFIX}{os.getpid()}_{next(self._names)}"
        # FILE_COPY: a copy of the template's files, much faster than WAL-logging each block
        self.admin.execute(f"CREATE DATABASE {name} TEMPLATE {self.template} STRATEGY FILE_COPY")
        return name

    def drop_database(self, name: str) -> None:
        """Drop `name`, ending the connections the test left open to it."""
        self.admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def url(self, name: str, driver: str = "postgresql+psycopg") -> str:
        """SQLAlchemy URL of the database `name`."""
        base, _, query = self.admin_url.partition("?")
        head = base.rsplit("/", 1)[0].replace("postgresql://", f"{driver}://", 1)
        return f"{head}/{name}" + (f"?{query}" if query else "")

    def _drop_leftovers(self) -> None:
        """Drop the databases (and template) this process made, or an earlier session of
        the same process id left, on a server it did not start."""
        for (name,) in self.admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                                          (f"{PREFIX}{os.getpid()}\\_%",)).fetchall():
            self.drop_database(name)


def reap_orphans(root: str | None = None) -> None:
    """Stop and remove the servers earlier test sessions started and could not stop (the
    session was killed): folders of ours whose owning process is gone."""
    for folder in Path(root or tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*"):
        owner_file = folder / OWNER_FILE
        try:
            owner = int(owner_file.read_text())
        except (OSError, ValueError):
            continue
        if _alive(owner):
            continue
        pidfile = folder / "data" / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(pidfile.read_text().splitlines()[0])
            if _alive(pid) and _is_postgres(pid, folder):
                os.kill(pid, signal.SIGQUIT)  # immediate shutdown
                deadline = time.monotonic() + 10
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_postgres(pid: int, folder: Path) -> bool:
    """Is `pid` a postgres server of `folder` (not a pid reused by another program)?"""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(cmdline) and cmdline[0].endswith(b"postgres") and str(folder).encode() in b" ".join(cmdline)
