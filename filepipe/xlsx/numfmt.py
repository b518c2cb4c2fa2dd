"""Excel number-format codes: the built-in ones, the defaults filepipe writes, a check of
codes a pipeline declares, and which codes show dates."""

from __future__ import annotations

import re

from .xmltext import ILLEGAL_XML_RE

MAX_CODE_CHARS = 255  # Excel's limit for a format code

INT_FMT = "0"  # integers in full, no thousands separator (ids, years, counts)
FLOAT_FMT = "#,##0.00######"  # 9 -> 9.00, 6.75 -> 6.75, 1/3 -> 0.33333333
DATE_FMT = "yyyy-mm-dd"
DATETIME_FMT = "yyyy-mm-dd hh:mm:ss"
DATETIME_MS_FMT = "yyyy-mm-dd hh:mm:ss.000"
TIME_FMT = "hh:mm:ss"
TIME_MS_FMT = "hh:mm:ss.000"
DURATION_FMT = "[h]:mm:ss"
DURATION_MS_FMT = "[h]:mm:ss.000"

#: floats shown with FLOAT_FMT lie in this range (of |x|, zero aside); others in General,
#: which switches to scientific notation
FLOAT_FMT_RANGE = (1e-4, 1e15)

#: built-in formats every reader knows without a <numFmt> (ECMA-376 18.8.30); ids 14-22
#: are dates shown in the reader's locale
BUILTIN = {
    0: "General", 1: "0", 2: "0.00", 3: "#,##0", 4: "#,##0.00", 9: "0%", 10: "0.00%",
    11: "0.00E+00", 12: "# ?/?", 13: "# ??/??", 14: "mm-dd-yy", 15: "d-mmm-yy", 16: "d-mmm",
    17: "mmm-yy", 18: "h:mm AM/PM", 19: "h:mm:ss AM/PM", 20: "h:mm", 21: "h:mm:ss",
    22: "m/d/yy h:mm", 37: "#,##0 ;(#,##0)", 38: "#,##0 ;[Red](#,##0)",
    39: "#,##0.00;(#,##0.00)", 40: "#,##0.00;[Red](#,##0.00)", 45: "mm:ss", 46: "[h]:mm:ss",
    47: "mmss.0", 48: "##0.0E+0", 49: "@",
}
#: codes written by their built-in id (plain numbers, shown alike by every reader)
BUILTIN_IDS = {BUILTIN[i]: i for i in (1, 2, 3, 4, 9, 10, 11, 12, 13, 49)}

#: the number formats filepipe writes by default: a cell holding one of them shows
#: filepipe's choice, not the user's
DEFAULT_CODES = ("General", INT_FMT, FLOAT_FMT, DATE_FMT, DATETIME_FMT, DATETIME_MS_FMT,
                 TIME_FMT, TIME_MS_FMT, DURATION_FMT, DURATION_MS_FMT)

_QUOTED = re.compile(r'"[^"]*"|\\.|\[[^\]]*\]')


def normal_code(code: str) -> str:
    """`code` as compared with another: case and the escapes writers add (``yyyy\\-mm``)
    ignored."""
    return re.sub(r"\\(.)", r"\1", code).casefold().strip()


NORMAL_DEFAULTS = frozenset(normal_code(c) for c in DEFAULT_CODES)


def is_date_code(code: str) -> bool:
    """Does the format `code` show a number as a date or time (as Excel and calamine decide:
    a d, m, y, h or s outside quotes, escapes and brackets, elapsed time ``[h]`` included)?"""
    if re.search(r"\[(h+|m+|s+)\]", code, re.I):
        return True
    bare = _QUOTED.sub("", code.split(";")[0])
    return bool(re.search(r"[dmyhs]", bare, re.I)) and not re.fullmatch(r"(?i)general", bare)


def check_format_code(code: object) -> str | None:
    """Why `code` is no Excel number-format code (None: it is one, as far as a check
    without Excel can tell)."""
    if not isinstance(code, str):
        return f"a number format is a text code such as '#,##0.00', got {code!r}"
    if not code.strip():
        return "the number format is empty"
    if len(code) > MAX_CODE_CHARS:
        return f"the number format has {len(code)} characters; Excel allows {MAX_CODE_CHARS}"
    if ILLEGAL_XML_RE.search(code):
        return f"the number format {code!r} holds control characters"
    if code.count('"') % 2:
        return f"the number format {code!r} has an unclosed quote"
    if code.endswith("\\"):
        return f"the number format {code!r} ends with a lone backslash"
    bare = _QUOTED.sub("", code)
    if "[" in bare or "]" in bare:
        return f"the number format {code!r} has an unbalanced bracket"
    if bare.count(";") > 3:
        return f"the number format {code!r} has more than four sections (separated by ';')"
    return None
