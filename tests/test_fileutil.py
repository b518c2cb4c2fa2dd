"""fileutil: fingerprints, unusable entries, atomic writes (modes, blocked folders), temp cleanup."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pandas as pd
import pytest

from filepipe import fileutil
from filepipe.errors import FilepipeError
from filepipe.fileutil import TEMP_PREFIX, atomic_write, fingerprints
from filepipe.stores import TableStoreCSV, TableStoreFiledir, TableStoreParquet

T = TypeVar("T")
NON_UTF8 = os.fsdecode(b"caf\xe9.csv")  # a name some other system wrote in Latin-1


def promptly(call: Callable[[], T], fifo: Path, seconds: float = 3.0) -> T:
    """`call()`'s result; fails (instead of hanging the suite) when it blocks on `fifo`."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():  # a reader waits on the FIFO: let it go, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(seconds)
        pytest.fail(f"blocked on the FIFO {fifo} for more than {seconds} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- entries that are not data files --------------------------------------------------------

def test_fingerprints_leave_out_a_fifo_and_unusable_reason_names_it(tmp_path: Path) -> None:
    fifo, plain, odd = tmp_path / "rates.csv", tmp_path / "ok.csv", tmp_path / NON_UTF8
    os.mkfifo(fifo)
    plain.write_text("a\n1\n")
    odd.write_text("a\n1\n")
    listed = promptly(lambda: fingerprints([fifo, plain, odd, tmp_path / "absent.csv",
                                            plain / "x.csv"]), fifo)
    assert listed["path"].tolist() == [str(plain)]
    assert "not a regular file (a FIFO)" in fileutil.unusable_reason(fifo)
    assert "not a regular file (a folder)" in fileutil.unusable_reason(tmp_path)
    assert "not valid UTF-8 (rename it)" in fileutil.unusable_reason(odd)
    assert fileutil.unusable_reason(plain) is None and fileutil.unusable_reason(tmp_path / "absent.csv") is None
    assert fileutil.display_path(odd) == f"{tmp_path}/caf\\xe9.csv"


def test_single_file_parquet_at_a_fifo_never_blocks(tmp_path: Path) -> None:
    fifo = tmp_path / "t.parquet"
    os.mkfifo(fifo)
    store = TableStoreParquet(fifo, ["id"])
    assert promptly(store.list_files, fifo).empty
    assert store.skipped_files() == {str(fifo): fileutil.not_regular_reason(stat.S_IFIFO)}
    with pytest.raises(FilepipeError, match=r"t\.parquet: not a regular file \(a FIFO\)"):
        promptly(store.read_rows, fifo)


# --- atomic writes ---------------------------------------------------------------------------

def write_through(kind: str, base: Path) -> Path:
    """Write one row through a store of `kind`; the file written."""
    df = pd.DataFrame({"id": ["a"], "v": [1]})
    if kind == "csv":
        store, path = TableStoreCSV(base / "out.csv", ["id"]), base / "out.csv"
    elif kind == "parquet":
        store, path = TableStoreParquet(base / "out.parquet", ["id"]), base / "out.parquet"
    else:
        store, path = TableStoreFiledir(base / "out" / "{id}.json"), base / "out" / "a.json"
    store.upsert_rows(df)
    store.flush()
    return path


@pytest.mark.parametrize("kind", ["csv", "parquet", "folder"])
@pytest.mark.parametrize("mask, want", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)],
                         ids=["umask022", "umask027", "umask077"])
def test_new_outputs_honour_the_umask(kind: str, mask: int, want: int, tmp_path: Path) -> None:
    with umask(mask):
        path = write_through(kind, tmp_path)
    assert mode(path) == want


def test_an_existing_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    path.write_text("old")
    path.chmod(0o640)
    with umask(0o022):
        atomic_write(path, lambda tmp: tmp.write_text("new"))
    assert path.read_text() == "new" and mode(path) == 0o640


@pytest.mark.parametrize("target", ["blocker/out.csv", "blocker/deeper/out.csv"])
def test_a_file_where_a_folder_should_be_is_named(tmp_path: Path, target: str) -> None:
    (tmp_path / "blocker").write_text("I am a file")
    with pytest.raises(FilepipeError, match=rf"{tmp_path}/blocker is a file, not a folder"):
        atomic_write(tmp_path / target, lambda tmp: tmp.write_text("x"))
    assert (tmp_path / "blocker").read_text() == "I am a file"


def test_a_folder_in_the_way_of_a_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "out.csv").mkdir()
    with pytest.raises(FilepipeError, match=r"out\.csv: a folder has that name"):
        atomic_write(tmp_path / "out.csv", lambda tmp: tmp.write_text("x"))
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]  # no temp file left


# --- temp files a killed write left behind -----------------------------------------------------

def killed_write(target: Path, pattern: str | None = None) -> None:
    """Write `target` in a process SIGKILLed in the middle of writing its temp file: through
    `atomic_write`, or as a row of the folder store `pattern` when given."""
    code = textwrap.dedent(f"""
        import os, signal
        import pandas as pd
        from pathlib import Path
        from filepipe.fileutil import atomic_write
        from filepipe.stores import TableStoreFiledir

        real_write_bytes = Path.write_bytes

        def write(tmp, data=b"half"):
            real_write_bytes(tmp, data)
            os.kill(os.getpid(), signal.SIGKILL)

        target, pattern = Path({str(target)!r}), {pattern!r}
        if pattern is None:
            atomic_write(target, write)
        else:
            Path.write_bytes = write
            store = TableStoreFiledir(pattern)
            keys = store._keys_of(str(target))
            store.upsert_rows(pd.DataFrame([{{**keys, "v": 1}}]))
    """)
    done = subprocess.run([sys.executable, "-c", code], check=False, timeout=30)
    assert done.returncode == -signal.SIGKILL


def test_temp_files_of_a_killed_write_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    killed_write(out / "u1" / "a.json", pattern=f"{out}/{{u}}/{{k}}.json")
    killed_write(out / "b.json")
    killed_write(tmp_path / "report.csv")
    (out / "u1" / "keep.json").write_text("{}")
    (tmp_path / "notes.~filepipe-x.txt").write_text("not ours")
    (tmp_path / "sub").mkdir()
    killed_write(tmp_path / "sub" / "other.csv")
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob(f"{TEMP_PREFIX}*"))
    assert len(left) == 4, left
    # a folder: everywhere below it
    removed = fileutil.remove_stale_temp_files(out)
    assert sorted(p.parent for p in removed) == [out, out / "u1"]
    assert not list(out.rglob(f"{TEMP_PREFIX}*")) and (out / "u1" / "keep.json").exists()
    # a single file: its own folder only, not the folders below it
    removed = fileutil.remove_stale_temp_files(tmp_path / "report.csv")
    assert [p.parent for p in removed] == [tmp_path]
    assert [p.parent for p in tmp_path.rglob(f"{TEMP_PREFIX}*")] == [tmp_path / "sub"]
    assert (tmp_path / "notes.~filepipe-x.txt").exists()
    assert fileutil.remove_stale_temp_files(tmp_path / "report.csv") == []
    assert fileutil.remove_stale_temp_files(tmp_path / "missing" / "dir") == []
