"""Which paths can hold a workbook, and why a file is no .xlsx package when retrying will
not fix it (a folder, an encrypted workbook, an old .xls)."""

from __future__ import annotations

import os

from .limits import SheetError

_CFB_SIGNATURE = bytes.fromhex("D0CF11E0A1B11AE1")  # OLE2 container: .xls, encrypted .xlsx


def check_output_path(path: str | os.PathLike) -> None:
    """Raise SheetError when no workbook can be written at `path`: a folder is there, or a
    file stands where one of its parent folders should be."""
    path_s = os.fspath(path)
    if os.path.isdir(path_s):
        raise SheetError(f"{path_s} is a folder, not a workbook: name an .xlsx file (such as "
                         f"{os.path.join(path_s, 'report.xlsx')}) or move the folder away")
    folder = os.path.dirname(os.path.abspath(path_s))
    while not os.path.exists(folder):
        if os.path.dirname(folder) == folder:
            return
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise SheetError(f"{path_s}: {folder} is a file, not a folder, so no workbook can be "
                         "created under it; move that file away or choose another path")


def check_workbook_file(path: str) -> None:
    """Raise SheetError saying why `path` is no .xlsx package when it is a folder, under a
    file, an encrypted workbook or an old .xls file; else return (a half-written or damaged
    file: the caller re-raises its error, which callers retry)."""
    check_output_path(path)
    try:
        with open(path, "rb") as f:
            if f.read(len(_CFB_SIGNATURE)) != _CFB_SIGNATURE:
                return
            data = f.read()
    except OSError:
        return
    if "EncryptionInfo".encode("utf-16-le") in data:
        raise SheetError(f"{path} is password-protected (encrypted); save it without a password "
                         "(Excel: File > Info > Protect Workbook > Encrypt with Password, empty "
                         "the password; LibreOffice: File > Save As without 'Save with password')")
    raise SheetError(f"{path} is an old .xls workbook (or another Office binary file), not an "
                     ".xlsx; open it and save it as .xlsx (Excel Workbook)")
