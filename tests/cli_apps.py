"""What tests that run `filepipe` commands in-process share: the apps the commands load,
closing their index afterwards (as the end of a process would), and failure texts."""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from click.testing import Result

import filepipe.app

_loaded: list[filepipe.app.FilepipeApp] = []


@contextmanager
def recording_loaded_apps() -> Iterator[None]:
    """Remember every app `load_app` loads (the CLI's and the tests'), so `close_apps` can
    close their index; closes what is left at the end."""
    real = filepipe.app.load_app

    def load_app(spec: str | None = None) -> filepipe.app.FilepipeApp:
        app = real(spec)
        _loaded.append(app)
        return app

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(filepipe.app, "load_app", load_app)
        yield
    close_apps()


def close_apps() -> None:
    """Dispose the metadata connections, as the end of a `filepipe` process would.

    The index is SQLite in WAL mode: while a connection is open, commits go to meta.sqlite-wal
    and reads touch meta.sqlite-shm. Closing the last connection checkpoints the WAL into
    meta.sqlite, so file bytes and mtimes compare like those of separate processes, and a
    project can be copied or replaced with nothing open in it.
    """
    while _loaded:
        ds = getattr(_loaded.pop(), "_ds", None)
        if ds is not None:
            ds.meta_dbconn.dispose()


def explain(result: Result, what: str = "") -> str:
    """A failed command's exit code, output and traceback, for an assertion message."""
    exc = ""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        exc = "".join(traceback.format_exception(*result.exc_info))
    head = f"`{what}`: " if what else ""
    return (f"{head}exit code {result.exit_code}\n--- stdout\n{result.stdout}\n--- stderr\n"
            f"{result.stderr}\n{exc}")
