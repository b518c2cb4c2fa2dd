"""write_sheet: one sheet of a workbook rewritten, every other part kept, the file replaced
atomically (through :func:`filepipe.fileutil.atomic_write`) unless someone else changed it
meanwhile."""

from __future__ import annotations

import io
import os
import stat
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

import pandas as pd

from ..fileutil import Fingerprint, atomic_write
from .cellxml import Ctx
from .limits import SheetError, validate_sheet_name
from .look import RowOrigin, plan_look
from .numfmt import check_format_code
from .oldsheet import mark, read_old_sheet
from .package import Package, skeleton_workbook
from .paths import check_output_path, check_workbook_file
from .plan import plan_edit
from .sheet import check_shape, prepare_columns, sheet_xml, use_look
from .styles import StyleIds
from .zipio import verify_zip, write_package

_SHEET_COMPRESS_LEVEL = 2  # deflate level of the sheet part: 3x faster than 6, ~15 % larger

Verify = Callable[[IO[bytes], list[str]], None]


def write_sheet(path: str | os.PathLike, sheet: str, df: pd.DataFrame,
                verify: Verify = verify_zip, formats: Mapping[str, str] | None = None,
                widths: Mapping[str, float] | None = None,
                row_origin: RowOrigin | None = None) -> None:
    """Write `df` as sheet `sheet` of the workbook at `path`, keeping every other sheet.

    Creates the workbook if `path` does not exist. An existing sheet of the same name
    (compared case-insensitively, as Excel does) is replaced in place, keeping its position
    (and renamed if only the case differs); a new sheet goes last. See the package docstring
    for what is kept, what is changed and how values are written. `verify(file, members)`
    checks the new file before it replaces the old one.

    `formats` (header text → Excel number-format code) and `widths` (header text → column
    width in characters) override filepipe's defaults for those columns. The look the user
    gave the sheet being replaced is kept (:mod:`filepipe.xlsx.look`); `row_origin()` gives,
    for each row of `df`, the row number it had in that sheet (-1 for a new row), so that
    cells and rows formatted apart keep their format (without it they do not).
    Raises SheetError for invalid names, frames that do not fit in a sheet, over-long cell
    text, and workbooks that cannot be edited; the file is then left untouched.
    """
    path_s = os.fspath(path)
    validate_sheet_name(sheet, path_s)
    formats, widths = dict(formats or {}), dict(widths or {})
    check_look(formats, widths, f"{path_s}: sheet {sheet!r}")
    check_output_path(path_s)
    real = os.path.realpath(path_s)
    before = _regular_stat(real, path_s)
    ctx = Ctx(path_s, sheet, None)
    src = io.BytesIO(skeleton_workbook()) if before is None else open(real, "rb")
    try:
        zin = zipfile.ZipFile(src)
    except zipfile.BadZipFile:
        src.close()
        check_workbook_file(path_s)
        raise
    with src, zin:
        pkg = Package(zin, path_s)
        names = check_shape(df, ctx)
        plan, styles = plan_edit(pkg, sheet, new_workbook=before is None, shape=df.shape)
        old = (read_old_sheet(pkg, plan.sheet_part, styles.plain_defaults())
               if pkg.has(plan.sheet_part) else None)
        ctx.styles = StyleIds(styles)
        columns = prepare_columns(df, names, ctx)
        look = plan_look(old, [c.facts() for c in columns], ctx.styles, len(df), formats, widths,
                         row_origin)
        use_look(columns, look)
        styles.frozen = True  # every cell format the sheet uses exists: the part can be written
        chunks = sheet_xml(df, columns, ctx, plan.tab_selected, look)
        est_size = df.shape[0] * max(df.shape[1], 1) * 64

        def write(tmp: Path) -> None:
            with open(tmp, "w+b") as f:
                with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED,
                                     compresslevel=_SHEET_COMPRESS_LEVEL) as zout:
                    write_package(src, zin, zout, pkg, plan, chunks,
                                  styles.xml.encode("utf-8"), est_size, mark(look.carried))
                    expected = zout.namelist()
                verify(f, expected)
                # synced before the check below, so that little time passes between it and
                # the replace (atomic_write's own fsync then has nothing left to write)
                f.flush()
                os.fsync(f.fileno())
            _check_unchanged(real, before, path_s, sheet)

        atomic_write(Path(real), write)
    _fsync_dir(os.path.dirname(real) or ".")


def check_look(formats: Mapping[str, str], widths: Mapping[str, float], where: str) -> None:
    """Raise SheetError for a number-format code or a width Excel would not take."""
    for name, code in formats.items():
        problem = check_format_code(code)
        if problem:
            raise SheetError(f"{where}: formats[{name!r}]: {problem}")
    for name, width in widths.items():
        if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= 255:
            raise SheetError(f"{where}: widths[{name!r}] is {width!r}; a column width is a number "
                             "of characters, more than 0 and at most 255")


def _regular_stat(real: str, path: str) -> os.stat_result | None:
    """The stat of the workbook at `real` (None: there is none); SheetError when it is no
    regular file."""
    try:
        st = os.stat(real)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise SheetError(f"{path}: not a regular file")
    return st


def _check_unchanged(real: str, before: os.stat_result | None, path: str, sheet: str) -> None:
    """Raise SheetError when the workbook changed (or appeared) since `before`: another
    program saved it while filepipe was writing, and its save must not be overwritten."""
    if before is not None:
        if Fingerprint.of_stat(os.stat(real)) != Fingerprint.of_stat(before):
            raise SheetError(f"{path}: the workbook changed while filepipe was writing "
                             f"sheet {sheet!r}; nothing was written, try again")
    elif os.path.lexists(real):
        raise SheetError(f"{path}: the workbook appeared while filepipe was writing "
                         f"sheet {sheet!r}; nothing was written, try again")


def _fsync_dir(directory: str) -> None:
    """Make the rename in `directory` durable (where the OS allows opening a folder)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
