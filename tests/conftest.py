"""Shared fixtures: a real metadata index in a temporary folder — SQLite, and, in the engine
test modules, also PostgreSQL on a throwaway server (tests/pgserver.py).

A module (or test) marked ``pytest.mark.backends("sqlite", "postgresql")`` runs each test
that uses `backend` (through `meta_url`, `dbconn`, `ds` or `databases`) once per backend,
with ids ``[sqlite]`` and ``[postgresql]``; unmarked ones run on SQLite only, with their
ids unchanged. ``pytest -m "not postgresql"`` leaves out the PostgreSQL cases.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from filepipe import DataStore, DBConn

BACKENDS = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "backends(*names, reason=None): the metadata-index backends the tests of this "
        "module or test run on (default: sqlite); `reason` says why a test keeps to fewer")
    config.addinivalue_line("markers", "sqlite: a test case whose index is on SQLite")
    config.addinivalue_line("markers", "postgresql: a test case whose index is on PostgreSQL")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("backends")
    names = tuple(marker.args) if marker else ("sqlite",)
    unknown = set(names) - set(BACKENDS)
    assert not unknown, f"unknown backends {unknown}: use some of {BACKENDS}"
    if names == ("sqlite",):
        return  # the default: no parameter, the test keeps its id
    metafunc.parametrize("backend", [pytest.param(n, id=n, marks=[getattr(pytest.mark, n)])
                                     for n in names], indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The database the metadata index lives in: "sqlite" or "postgresql"."""
    return getattr(request, "param", "sqlite")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """A PostgreSQL server for the whole session, stopped and removed at its end."""
    from pgserver import PGServer, ServerUnavailable

    try:
        server = PGServer.start()
    except ServerUnavailable as exc:
        pytest.skip(f"PostgreSQL cases skipped: {exc}")
    yield server
    server.stop()


class Databases:
    """Fresh empty databases of one backend for one test, each a SQLAlchemy URL; the
    PostgreSQL ones are dropped at the end of the test (or by `drop`)."""

    def __init__(self, backend: str, folder: Path, server: Any = None) -> None:
        self.backend, self.folder, self.server = backend, folder, server
        self._made: list[str] = []
        self._count = 0

    def new(self) -> str:
        self._count += 1
        if self.server is None:
            folder = self.folder / f"db{self._count}"
            folder.mkdir(parents=True)
            url = f"sqlite:///{folder / 'meta.sqlite'}"
        else:
            url = self.server.url(self.server.create_database())
        self._made.append(url)
        return url

    def drop(self, url: str) -> None:
        """Drop a database made by `new` (PostgreSQL; an SQLite file stays in the folder)."""
        if self.server is not None and url in self._made:
            import sqlalchemy as sa

            self.server.drop_database(sa.engine.make_url(url).database)
        if url in self._made:
            self._made.remove(url)

    def close(self) -> None:
        for url in list(self._made):
            self.drop(url)


@pytest.fixture
def databases(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Databases]:
    """A factory of fresh databases on the test's backend (`databases.new()` → URL)."""
    server = request.getfixturevalue("pg_server") if backend == "postgresql" else None
    made = Databases(backend, tmp_path / "databases", server)
    yield made
    made.close()


@pytest.fixture
def meta_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of the test's metadata index: ``<tmp>/meta.sqlite``, or a fresh empty
    PostgreSQL database (dropped after the test)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'meta.sqlite'}"
        return
    server = request.getfixturevalue("pg_server")
    name = server.create_database()
    yield server.url(name)
    server.drop_database(name)


@pytest.fixture
def dbconn(meta_url: str) -> Iterator[DBConn]:
    conn = DBConn(meta_url)
    yield conn
    conn.dispose()


@pytest.fixture
def ds(dbconn: DBConn, tmp_path: Path) -> DataStore:
    # the history in <tmp>/history on either backend (an SQLite index keeps it beside itself)
    return DataStore(dbconn, history=tmp_path / "history")


@pytest.fixture
def project_index(backend: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """On PostgreSQL, every FilepipeApp the test builds without ``meta=`` keeps its index in
    the test's PostgreSQL database (as ``FilepipeApp(..., meta="postgresql://...")`` does);
    on SQLite, apps keep theirs in ``.filepipe/meta.sqlite``. The URL, or None."""
    if backend == "sqlite":
        return None
    from filepipe.app import FilepipeApp

    url: str = request.getfixturevalue("meta_url")
    real = FilepipeApp.__init__

    def init(self: FilepipeApp, catalog: Any, pipeline: Any, meta: str | None = None,
             *args: Any, **kwargs: Any) -> None:
        real(self, catalog, pipeline, meta or url, *args, **kwargs)

    monkeypatch.setattr(FilepipeApp, "__init__", init)
    return url


@pytest.fixture
def new_db(databases: Databases) -> Callable[[], str]:
    """Another fresh database of the test's backend (the URL)."""
    return databases.new


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test with the temporary folder as working directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def age(path: Path, seconds: float = 10.0) -> None:
    """Set a file's mtime into the past, so it is not 'racy' (re-hashed) on the next sync."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))
