"""What a sheet may be: the error for what it cannot be, Excel's limits, valid sheet names
and cell references."""

from __future__ import annotations

import os

from ..errors import SheetError
from .xmltext import ILLEGAL_XML_RE

MAX_ROWS = 1_048_576
MAX_COLS = 16_384
MAX_CELL_CHARS = 32_767
MAX_SHEET_NAME = 31

_BAD_SHEET_CHARS = set("[]:*?/\\")


def sheet_name_from(text: str) -> str:
    """`text` made a sheet name Excel accepts: forbidden characters become ``_``, at most
    31 characters, no quote at either end ("Sheet1" if nothing is left, or "History",
    which Excel reserves)."""
    name = "".join("_" if ch in _BAD_SHEET_CHARS else ch for ch in text).strip("'")
    name = name[:MAX_SHEET_NAME].strip("'")
    return "Sheet1" if not name or name.casefold() == "history" else name


def validate_sheet_name(sheet: object, path: str | os.PathLike | None = None) -> str:
    """Return `sheet` if Excel accepts it as a sheet name, else raise SheetError."""
    where = f" (workbook {os.fspath(path)})" if path is not None else ""
    if not isinstance(sheet, str):
        raise SheetError(f"sheet name must be a string, got {type(sheet).__name__}{where}")
    problems = []
    if not sheet:
        problems.append("it is empty")
    if len(sheet) > MAX_SHEET_NAME:
        problems.append(f"it has {len(sheet)} characters (Excel allows {MAX_SHEET_NAME})")
    bad = sorted(set(sheet) & _BAD_SHEET_CHARS)
    if bad:
        problems.append("it contains " + " ".join(bad) + " (Excel forbids [ ] : * ? / \\)")
    if sheet.startswith("'") or sheet.endswith("'"):
        problems.append("it starts or ends with an apostrophe")
    if ILLEGAL_XML_RE.search(sheet):
        problems.append("it contains control characters")
    if sheet.casefold() == "history":
        problems.append("'History' is reserved by Excel")
    if problems:
        raise SheetError(f"invalid sheet name {sheet!r}{where}: " + "; ".join(problems))
    return sheet


def col_letter(i: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA."""
    s = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        s = chr(65 + r) + s
    return s


def sheet_ref(n_rows: int, n_cols: int) -> str:
    """Range of the header plus data, e.g. A1:J100001."""
    return f"A1:{col_letter(n_cols - 1)}{n_rows + 1}" if n_cols else "A1"
