"""Paths, fingerprints and atomic writes for file-backed stores."""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import IO, TYPE_CHECKING, NamedTuple

from .errors import FilepipeError, NotRegularFileError

if TYPE_CHECKING:
    import pandas as pd

FINGERPRINT_COLUMNS = ["path", "size", "mtime_ns", "inode"]
TEMP_PREFIX = ".~filepipe-"
NOT_UTF8 = "file name is not valid UTF-8 (rename it)"
NOT_UTF8_FOLDER = "folder name is not valid UTF-8 (rename it)"
_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


_base_dir: ContextVar[Path | None] = ContextVar("filepipe_base_dir", default=None)


@contextmanager
def base_dir(path: str | os.PathLike) -> Iterator[None]:
    """Resolve relative store paths against `path` (the pipeline file's folder) inside."""
    token = _base_dir.set(Path(path).resolve())
    try:
        yield
    finally:
        _base_dir.reset(token)


def current_base_dir() -> Path | None:
    """The folder relative store paths resolve against now (set by `base_dir`), if any."""
    return _base_dir.get()


def resolve_path(path: str | os.PathLike) -> Path:
    """`path` made absolute against the pipeline's folder, else the working directory."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    return (_base_dir.get() or Path.cwd()) / p


def is_utf8(name: str) -> bool:
    """Is `name` valid UTF-8 (no bytes `os.fsdecode` had to escape as lone surrogates)?"""
    if name.isascii():
        return True
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def display_path(path: str | os.PathLike) -> str:
    """`path` printable whatever its bytes: undecodable ones shown as ``\\xe9``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def not_regular_reason(mode: int) -> str:
    """Why an entry of this `st_mode` is never read as a data file."""
    kind = next((name for test, name in _KINDS if test(mode)), "not a file")
    return f"not a regular file ({kind}): filepipe never opens it; remove it or move it away"


def unusable_reason(path: str | os.PathLike) -> str | None:
    """Why the existing entry at `path` cannot be a data file (not a regular file, or a
    name that is not UTF-8); None when it can, or when nothing is there."""
    try:
        st = os.stat(path)
    except OSError:  # absent, a dangling link, a file where a folder should be
        return None
    if not stat.S_ISREG(st.st_mode):
        return not_regular_reason(st.st_mode)
    return None if is_utf8(os.fspath(path)) else NOT_UTF8


class Fingerprint(NamedTuple):
    """What tells that a file changed without reading it: (size, mtime_ns, inode)."""

    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of_stat(cls, st: os.stat_result) -> Fingerprint:
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)


def fingerprint_of(path: str | os.PathLike, regular_only: bool = False) -> Fingerprint | None:
    """The fingerprint of the file at `path`; None when nothing is there (or, with
    `regular_only`, when it is not a regular file: a FIFO, a folder)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if regular_only and not stat.S_ISREG(st.st_mode):
        return None
    return Fingerprint.of_stat(st)


def fingerprints(paths: list[Path]) -> pd.DataFrame:
    """(path, size, mtime_ns, inode) of the usable files among `paths` (see `unusable_reason`)."""
    import pandas as pd

    rows = []
    for p in paths:
        try:
            st = os.stat(p)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if stat.S_ISREG(st.st_mode) and is_utf8(str(p)):
            rows.append((str(p), *Fingerprint.of_stat(st)))
    return pd.DataFrame(rows, columns=FINGERPRINT_COLUMNS).astype(
        {"size": "int64", "mtime_ns": "int64", "inode": "int64"})


def open_regular(path: str | os.PathLike) -> IO[bytes]:
    """`path` opened for binary reading; raises `NotRegularFileError` instead of opening a
    FIFO (which would block forever), socket, device or folder."""
    try:  # O_NONBLOCK: opening a FIFO does not wait for a writer (no effect on files)
        f = open(path, "rb", opener=_open_nonblocking)  # returned open: the caller closes it
    except IsADirectoryError:
        raise NotRegularFileError(
            f"{display_path(path)}: {not_regular_reason(stat.S_IFDIR)}") from None
    mode = os.fstat(f.fileno()).st_mode
    if not stat.S_ISREG(mode):
        f.close()
        raise NotRegularFileError(f"{display_path(path)}: {not_regular_reason(mode)}")
    return f


def _open_nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | getattr(os, "O_NONBLOCK", 0))


def not_a_file_reason(entry: os.DirEntry) -> str | None:
    """Why a listed entry that is not a regular file is reported; None for a folder or a
    link to nothing (silently not data, like a missing file)."""
    try:
        return None if entry.is_dir() else not_regular_reason(entry.stat().st_mode)
    except OSError:
        return None


def check_folder(folder: Path, what: str | os.PathLike) -> None:
    """Raise a `FilepipeError` when `folder` cannot exist because it, or one of its
    ancestors, is a file; `what` (a path) names what needs the folder."""
    if folder.is_dir():
        return
    for p in [*reversed(folder.parents), folder]:
        if not p.is_dir():
            if p.exists() or p.is_symlink():
                raise FilepipeError(f"{display_path(p)} is a file, not a folder: "
                                    f"{display_path(what)} needs a folder there; move or "
                                    "rename the file")
            return


def row_name(keys: pd.DataFrame, i: int) -> str:
    """``region='EU', id=2``: the values of row `i` of the key columns `keys`, for messages."""
    row = keys.iloc[[i]].to_dict("records")[0]
    return ", ".join(f"{k}={v!r}" for k, v in row.items())


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call `write(tmp)` on a temp file beside `path`, fsync it, then rename it over `path`.

    A new file gets the mode the umask (or the folder's default ACL) gives, like any file
    the user creates; a replaced file keeps its mode. On any error the temp file is
    removed and `path` is left as it was; a file where a folder of `path` should be, or a
    folder at `path`, raises a `FilepipeError` naming it.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        check_folder(path.parent, path)
        raise
    tmp = _create_temp(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if path.exists():
            shutil.copymode(path, tmp)
        try:
            os.replace(tmp, path)
        except IsADirectoryError:
            raise FilepipeError(f"cannot write {display_path(path)}: a folder has that name; "
                                "move or rename it, or write the output elsewhere") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _create_temp(path: Path) -> Path:
    """A new empty file ``.~filepipe-<random><suffix>`` beside `path`, created with mode
    0666 so the kernel applies the umask (`mkstemp` would make it 0600)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.with_name(f"{TEMP_PREFIX}{secrets.token_hex(4)}{path.suffix}")
        try:
            os.close(os.open(tmp, flags, 0o666))
        except FileExistsError:
            continue
        return tmp


def remove_stale_temp_files(root: Path) -> list[Path]:
    """Remove the temp files filepipe's writes (`atomic_write`, the sheet writer) left
    when the process was killed: everywhere under the folder `root`, or, when `root` is
    a file (or absent), in its own folder only. Returns the files removed.

    Only call it while holding the project's lock (no write of ours is in flight).
    """
    folders: Iterator[tuple[Path, list[str]]]
    if root.is_dir():
        folders = ((Path(d), names) for d, _, names in os.walk(root))
    else:
        try:
            folders = iter([(root.parent, os.listdir(root.parent))])
        except (FileNotFoundError, NotADirectoryError):
            return []
    removed = []
    for folder, names in folders:
        for name in names:
            p = folder / name
            if name.startswith(TEMP_PREFIX) and p.is_file() and not p.is_symlink():
                p.unlink(missing_ok=True)
                removed.append(p)
    return sorted(removed)


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
