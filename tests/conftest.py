"""Shared fixtures: a real SQLite metadata index in a temporary folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from filepipe import DataStore, DBConn


@pytest.fixture
def dbconn(tmp_path: Path) -> DBConn:
    conn = DBConn(f"sqlite:///{tmp_path / 'meta.sqlite'}")
    yield conn
    conn.dispose()


@pytest.fixture
def ds(dbconn: DBConn) -> DataStore:
    return DataStore(dbconn)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test with the temporary folder as working directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def age(path: Path, seconds: float = 10.0) -> None:
    """Set a file's mtime into the past, so it is not 'racy' (re-hashed) on the next sync."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))
