"""Paths, fingerprints and atomic writes for file-backed stores."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

FINGERPRINT_COLUMNS = ["path", "size", "mtime_ns", "inode"]
TEMP_PREFIX = ".~filepipe-"

_base_dir: ContextVar[Path | None] = ContextVar("filepipe_base_dir", default=None)


@contextmanager
def base_dir(path: str | os.PathLike) -> Iterator[None]:
    """Resolve relative store paths against `path` (the pipeline file's folder) inside."""
    token = _base_dir.set(Path(path).resolve())
    try:
        yield
    finally:
        _base_dir.reset(token)


def resolve_path(path: str | os.PathLike) -> Path:
    """`path` made absolute against the pipeline's folder, else the working directory."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    return (_base_dir.get() or Path.cwd()) / p


def fingerprints(paths: list[Path]) -> pd.DataFrame:
    """(path, size, mtime_ns, inode) of the files that exist among `paths`."""
    import pandas as pd

    rows = []
    for p in paths:
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        rows.append((str(p), st.st_size, st.st_mtime_ns, st.st_ino))
    return pd.DataFrame(rows, columns=FINGERPRINT_COLUMNS).astype(
        {"size": "int64", "mtime_ns": "int64", "inode": "int64"})


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temp file beside `path`, fsync it, then rename it over `path`.

    On any error the temp file is removed and `path` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX, suffix=path.suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if path.exists():
            shutil.copymode(path, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def backup_path(path: Path) -> Path:
    """A timestamped sibling name for a backup: ``report.2026-11-27T10-15-00.bak.xlsx``."""
    stamp = time.strftime("%Y-%m-%dT%H-%M-%S")
    candidate = path.with_name(f"{path.stem}.{stamp}.bak{path.suffix}")
    n = 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}.{stamp}-{n}.bak{path.suffix}")
    return candidate


def is_temp_name(name: str) -> bool:
    """Names other programs (and filepipe) use for lock, temp and swap files."""
    return (name.startswith(("~$", ".~lock.", TEMP_PREFIX, ".#"))
            or name.endswith(("~", ".tmp", ".swp", ".swx", ".part", ".crdownload", ".osl-tmp"))
            or name in (".DS_Store", "Thumbs.db"))
