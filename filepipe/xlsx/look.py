"""The look of the sheet being written: filepipe's defaults, the formats a pipeline
declares, and what the user gave the sheet it replaces, kept.

What is kept of the old sheet, matched to the new one by column name (header text) and,
for single cells and rows, by the key of their row (``row_origin``):

* per column: its width (one the user set; filepipe's own widths are recognised by their
  fraction, :data:`AUTO_FRACTION`, and recomputed), its hidden and outline state, the cell
  format of its header, and the cell format of its data cells (the one most of them have,
  or the column's own): a fill, a font, a border, an alignment, a number format. It applies
  to every data cell, rows added later included, and becomes the column's style;
* single cells and rows formatted otherwise than their column, by the key of their row;
* conditional formats and data validations, their ranges moved with their columns and
  stretched with the data (a range reaching the last row reaches the new last row);
* the sheet's tab colour and other properties, view (zoom, grid lines, frozen panes),
  default row height and print set-up.

A cell format is the user's when it is not one filepipe makes: a fill, a border, a font
other than the workbook's default (bold for headers), an alignment, a named style, or a
number format other than filepipe's defaults. A number format declared by the pipeline
(``formats=``) is applied over whatever the file holds, and so is a declared width: the
pipeline decides what it names, the user the rest. A number format that would make a
reader give the cells back as another kind (a date format on numbers, a number format on
dates) is not applied to them: the sheet must read back as it was written.

Not kept: the format of single cells outside filepipe's columns (whole columns to the right
keep theirs), of cells and rows whose key is gone, and of single cells when the writer is not
told where each row was (``row_origin``); merged cells, an active filter, comments, drawings
and tables (the sheet's relationships). Formulas in conditional formats and validations are
not rewritten when columns move.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .limits import col_letter
from .numfmt import NORMAL_DEFAULTS, normal_code
from .oldsheet import CELLS, TAIL, OldSheet, col_index, row_look
from .styles import StyleIds, Styles
from .xmltext import NS_R, attr, attrs

OURS = -1  # the class of cells that look as filepipe makes them
AUTO_FRACTION = 2.0**-16  # filepipe's own column widths end in it (Excel's end in 1/256ths)
MAX_WIDTH = 255.0
DEFAULT_MARGINS = '<pageMargins left="0.7" right="0.7" top="0.75" bottom="0.75" header="0.3" footer="0.3"/>'
_FROZEN_PANE = ('<pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" state="frozen"/>'
                '<selection pane="bottomLeft" activeCell="A2" sqref="A2"/>')
_EXT_KEPT = {"{78C0D931-6437-407d-A8EE-F0AAD7539E65}",  # x14 conditional formats
             "{CCE6A557-97BC-4b89-ADB6-D9C93CAAB3DF}"}  # x14 data validations
_COL_KEPT = ("hidden", "outlineLevel", "collapsed")

RowOrigin = Callable[[], "np.ndarray | None"]
"""For each row written, the row number it had in the sheet being replaced (-1: new)."""


def is_auto_width(width: float) -> bool:
    """Is `width` one of filepipe's own (computed) column widths?"""
    return abs(width - round(width) - AUTO_FRACTION) < 1e-12


def auto_width(chars: float) -> float:
    """The column width filepipe writes for `chars` characters (marked as its own)."""
    return float(round(chars)) + AUTO_FRACTION


class XfResolver:
    """The cell format of a column's cells, from the one filepipe would give each by
    default: the user's format kept (`base`), with the number format declared by the
    pipeline, the user's own, or the default."""

    def __init__(self, styles: Styles, base: int | None, declared: int | None,
                 keep_num_fmt: bool) -> None:
        self.styles, self.base, self.declared, self.keep = styles, base, declared, keep_num_fmt
        self._cache: dict[int | None, int | None] = {}

    @property
    def identity(self) -> bool:
        return self.base is None and self.declared is None

    def default_of(self, xf: int | None) -> int | None:
        """The default format a cell of format `xf` (given by this resolver) had."""
        if self.identity:
            return xf
        for default, got in self._cache.items():
            if got == xf:
                return default
        return xf

    def __call__(self, default: int | None) -> int | None:
        """The format of a cell whose value filepipe formats `default` by default: None
        for text and booleans (which no number format changes), 0 for a number in General.
        A number format that would turn numbers into dates or dates into numbers when the
        sheet is read back is not applied (the default's is)."""
        if self.identity:
            return default
        try:
            return self._cache[default]
        except KeyError:
            pass
        styles = self.styles
        own = styles.xf_num_fmt(default) if default else 0
        dates = styles.shows_dates(own)

        def fits(num_fmt: int) -> bool:
            return default is None or styles.shows_dates(num_fmt) == dates

        num_fmt = own
        if self.declared is not None and fits(self.declared):
            num_fmt = self.declared
        elif self.declared is None and self.keep and self.base is not None:
            kept = styles.xf_num_fmt(self.base)
            if fits(kept):
                num_fmt = kept
        start = self.base if self.base is not None else (default or 0)
        xf: int | None = styles.derived_xf(start, num_fmt)
        self._cache[default] = xf = xf or (None if default is None else 0)
        return xf


class ColumnLook:
    """How one column is written: header format, data cell formats, width, <col> extras,
    and the cells formatted otherwise than the column (chunk-independent positions)."""

    def __init__(self, header_xf: int, resolve: XfResolver, width: float, col_attrs: str,
                 exceptions: tuple[np.ndarray, list[XfResolver]] | None = None) -> None:
        self.header_xf, self.resolve, self.width = header_xf, resolve, width
        self.col_attrs = col_attrs
        self.exceptions = exceptions  # (new row positions, sorted; their resolvers)


class SheetLook:
    """Everything of the sheet's look outside its columns."""

    def __init__(self) -> None:
        self.root_extra = ""  # namespace declarations carried over to <worksheet>
        self.sheet_pr = ""
        self.view_attrs = ""  # <sheetView> attributes other than tabSelected
        self.view_inner = _FROZEN_PANE
        self.sheet_format = '<sheetFormatPr defaultRowHeight="15"/>'
        self.extra_cols: list[str] = []  # <col> elements right of the data
        self.header_row = ""  # attributes of row 1
        self.row_default = ""  # attributes of every data row
        self.row_exceptions: tuple[np.ndarray, np.ndarray] | None = None  # positions, attrs
        self.tail: list[str] = [DEFAULT_MARGINS]  # after <autoFilter>, in order
        self.carried: set[str] = set()  # what the next write must read back (oldsheet.mark)
        self.columns: list[ColumnLook] = []


class ColumnFacts:
    """What the look needs to know of a column being written."""

    def __init__(self, name: str, numeric: bool, main_xf: int | None, auto_chars: float) -> None:
        self.name, self.numeric, self.main_xf, self.auto_chars = name, numeric, main_xf, auto_chars


def plan_look(old: OldSheet | None, columns: Sequence[ColumnFacts], ids: StyleIds,
              n_rows: int, formats: Mapping[str, str] | None = None,
              widths: Mapping[str, float] | None = None,
              row_origin: RowOrigin | None = None) -> SheetLook:
    """The look of a sheet of `columns` and `n_rows` data rows replacing `old` (None: a new
    sheet, or one of which nothing is kept)."""
    styles = ids.styles
    look = SheetLook()
    formats, widths = formats or {}, widths or {}
    old_index: dict[str, int] = {}
    if old is not None:
        for i, name in enumerate(old.names):
            if name is not None and name not in old_index:
                old_index[name] = i
    colmap = {oc: j for j, c in enumerate(columns) if (oc := old_index.get(c.name)) is not None}
    col_specs = _col_specs(old) if old is not None else {}
    origin: list[np.ndarray | None] = []

    def origins() -> np.ndarray | None:
        if not origin:
            got = row_origin() if row_origin is not None else None
            origin.append(None if got is None or len(got) != n_rows else np.asarray(got))
        return origin[0]

    for c in columns:
        oc = old_index.get(c.name)
        declared = styles.num_fmt(formats[c.name]) if c.name in formats else None
        look.columns.append(_column_look(c, oc, old, col_specs.get(oc, {}) if oc is not None else {},
                                         ids, declared, widths.get(c.name), origins))
        if look.columns[-1].exceptions is not None:
            look.carried.add(CELLS)
    if old is not None:
        _sheet_parts(old, look, len(columns), n_rows, colmap, origins)
    return look


# --------------------------------------------------------------------------- columns


def _col_specs(old: OldSheet) -> dict[int, dict[str, str]]:
    """The <col> attributes of each column of the old sheet that has data (0-based)."""
    n = max(len(old.names), 1)
    specs: dict[int, dict[str, str]] = {}
    for lo, hi, a in old.cols:
        for i in range(lo - 1, min(hi, n)):
            specs[i] = a
    return specs


def _is_users(styles: Styles, xf: int, declared: int | None, header: bool = False) -> bool:
    """Is cell format `xf` one the user made (see the module docstring)?"""
    if not styles.is_plain(xf, header):
        return True
    if header or declared is not None:
        return False
    code = styles.num_fmt_code(styles.xf_num_fmt(xf))
    return code is not None and normal_code(code) not in NORMAL_DEFAULTS


def _column_look(c: ColumnFacts, oc: int | None, old: OldSheet | None, spec: dict[str, str],
                 ids: StyleIds, declared: int | None, width: float | None,
                 origins: Callable[[], np.ndarray | None]) -> ColumnLook:
    styles = ids.styles
    header_xf = ids.header_right if c.numeric else ids.header
    base: int | None = None
    exceptions = None
    if old is not None and oc is not None:
        hx = old.header_xfs.get(oc)
        if hx is not None and _is_users(styles, hx, None, header=True):
            header_xf = hx
        col_style = _int(spec.get("style"))
        if col_style is not None and not _is_users(styles, col_style, declared):
            col_style = None
        dominant, classes = _dominant(old, oc, styles, declared)
        base = dominant if dominant != OURS else col_style
        if classes is not None:
            exceptions = _exceptions(classes, dominant, origins, styles, declared)
    resolve = XfResolver(styles, base, declared, _keeps_num_fmt(styles, base, declared))
    if width is None:
        old_width = _float(spec.get("width"))
        if old_width is None or is_auto_width(old_width) or (old is not None and old.unmarked_own):
            width = auto_width(c.auto_chars)
        else:
            width = old_width
    extras = "".join(f' {k}="{attr(spec[k])}"' for k in _COL_KEPT if k in spec)
    if base is not None:
        style = resolve(c.main_xf)
        if style:
            extras = f' style="{style}"' + extras
    return ColumnLook(header_xf, resolve, width, extras, exceptions)


def _keeps_num_fmt(styles: Styles, base: int | None, declared: int | None) -> bool:
    if base is None or declared is not None:
        return False
    code = styles.num_fmt_code(styles.xf_num_fmt(base))
    return code is not None and normal_code(code) not in NORMAL_DEFAULTS


def _dominant(old: OldSheet, oc: int, styles: Styles,
              declared: int | None) -> tuple[int, np.ndarray | None]:
    """The class (a user's cell format, or OURS) most data cells of old column `oc` have,
    and the class of each old row when some rows differ from it (else None)."""
    if not old.scanned or old.n_rows == 0:
        return OURS, None
    mask = old.cell_cols == oc
    if not mask.any():
        return OURS, None
    xfs, rows = old.cell_xfs[mask], old.cell_rows[mask]
    distinct = np.unique(xfs)
    classes = {int(x): (int(x) if _is_users(styles, int(x), declared) else OURS) for x in distinct}
    cls = np.array([classes[int(x)] for x in distinct])[np.searchsorted(distinct, xfs)]
    users = cls != OURS
    if not users.any():
        return OURS, None
    kinds, counts = np.unique(cls[users], return_counts=True)
    best = int(np.argmax(counts))
    n_ours = old.n_rows - int(users.sum())
    dominant = int(kinds[best]) if counts[best] > n_ours else OURS
    if dominant != OURS and len(kinds) == 1:
        return dominant, None  # no cell formatted otherwise (plain cells follow the column)
    by_row = np.full(old.last_row + 1, OURS, dtype=np.int64)
    by_row[rows] = cls
    return dominant, by_row


def _exceptions(by_row: np.ndarray, dominant: int, origins: Callable[[], np.ndarray | None],
                styles: Styles, declared: int | None) -> tuple[np.ndarray, list[XfResolver]] | None:
    """The new rows whose cell in this column was formatted otherwise than the column,
    with the resolver of each."""
    origin = origins()
    if origin is None:
        return None
    known = (origin >= 2) & (origin < len(by_row))
    cls = np.full(len(origin), dominant, dtype=np.int64)
    cls[known] = by_row[origin[known]]
    pos = np.flatnonzero((cls != dominant) & (cls != OURS))  # a cell left plain follows its column
    if not len(pos):
        return None
    resolvers: dict[int, XfResolver] = {}
    out = []
    for k in cls[pos].tolist():
        r = resolvers.get(k)
        if r is None:
            base = None if k == OURS else k
            r = resolvers[k] = XfResolver(styles, base, declared, _keeps_num_fmt(styles, base, declared))
        out.append(r)
    return pos, out


# --------------------------------------------------------------------------- the sheet


def _sheet_parts(old: OldSheet, look: SheetLook, n_cols: int, n_rows: int,
                 colmap: dict[int, int], origins: Callable[[], np.ndarray | None]) -> None:
    look.root_extra = _namespaces(old.root_tag)
    if old.sheet_pr:
        look.sheet_pr = _strip_rids(re.sub(r'\sfilterMode\s*=\s*("[^"]*"|\'[^\']*\')', "",
                                           old.sheet_pr))
    if old.sheet_view:
        tag = old.sheet_view[: old.sheet_view.index(">") + 1]
        a = attrs(tag)
        a.pop("tabSelected", None)
        a.setdefault("workbookViewId", "0")
        look.view_attrs = "".join(f' {k}="{attr(v)}"' for k, v in a.items())
        inner = old.sheet_view[len(tag):]
        if re.search(r'<(?:\w+:)?pane\b[^>]*state="frozen', inner):
            look.view_inner = inner[: inner.rindex("</")] if not tag.endswith("/>") else ""
    if old.sheet_format:
        look.sheet_format = old.sheet_format
    look.extra_cols = _extra_cols(old, n_cols)
    look.header_row = row_look(old.header_row)
    if old.scanned and old.row_attrs:
        _row_looks(old, look, origins)
    old_last, new_last = old.last_row, n_rows + 1
    tail = []
    margins = DEFAULT_MARGINS
    for tag, el in old.tail:
        if tag == "conditionalFormatting":
            el = _remap_element(el, "sqref", colmap, old_last, new_last)
        elif tag == "dataValidations":
            el = _remap_validations(el, colmap, old_last, new_last)
        elif tag == "extLst":
            el = _remap_ext(el, colmap, old_last, new_last)
        elif tag == "pageMargins":
            margins = el
            continue
        elif tag == "pageSetup":
            el = _strip_rids(el)
        if el:
            tail.append((tag, el))
    order = ["conditionalFormatting", "dataValidations", "printOptions", "pageMargins",
             "pageSetup", "headerFooter", "extLst"]
    tail.append(("pageMargins", margins))
    tail.sort(key=lambda t: order.index(t[0]))  # stable: conditional formats keep their order
    look.tail = [el for _, el in tail]
    if len(tail) > 1 or margins != DEFAULT_MARGINS:
        look.carried.add(TAIL)


def _namespaces(root_tag: str) -> str:
    """The namespace declarations (and mc:Ignorable) of the old <worksheet> that carried
    pieces may use, other than the main and relationships namespaces filepipe declares."""
    out = []
    for m in re.finditer(r'\s(xmlns:([\w.-]+)|[\w.-]+:Ignorable)\s*=\s*("[^"]*"|\'[^\']*\')', root_tag):
        name, prefix = m.group(1), m.group(2)
        if prefix == "r" and m.group(3)[1:-1] == NS_R:
            continue
        if prefix == "r":
            continue
        out.append(f" {name}={m.group(3)}")
    return "".join(out)


def _strip_rids(el: str) -> str:
    """`el` without relationship ids (the sheet's relationships are not kept)."""
    return re.sub(r'\s[\w.-]+:id\s*=\s*("rId[^"]*"|\'rId[^\']*\')', "", el)


def _extra_cols(old: OldSheet, n_cols: int) -> list[str]:
    """The old sheet's <col> elements right of its data, moved right of the new data."""
    n_old = len(old.names)
    out = []
    for lo, hi, a in old.cols:
        if hi <= n_old:
            continue
        lo = max(lo, n_old + 1)
        shift = n_cols - n_old
        lo, hi = lo + shift, min(hi + shift, 16384)
        if lo > hi or lo < n_cols + 1:
            continue
        extra = "".join(f' {k}="{attr(v)}"' for k, v in a.items())
        out.append(f'<col min="{lo}" max="{hi}"{extra}/>')
    return out


def _row_looks(old: OldSheet, look: SheetLook, origins: Callable[[], np.ndarray | None]) -> None:
    """Row heights and styles: the one most data rows have for every row, others by key."""
    rows = {r: a for r, a in old.row_attrs.items() if r >= 2}
    if not rows:
        return
    values, counts = np.unique(np.array(list(rows.values()), dtype=object), return_counts=True)
    best = int(np.argmax(counts))
    n_plain = old.n_rows - len(rows)
    default = str(values[best]) if counts[best] > n_plain else ""
    look.row_default = default
    if default:
        look.carried.add(CELLS)
    origin = origins()
    if origin is None:
        return
    by_row = np.full(old.last_row + 1, "", dtype=object)
    for r, a in rows.items():
        if r <= old.last_row:
            by_row[r] = a
    known = (origin >= 2) & (origin < len(by_row))
    got = np.full(len(origin), default, dtype=object)
    got[known] = by_row[origin[known]]
    pos = np.flatnonzero((got != default) & (got != ""))  # a plain row follows the others
    if len(pos):
        look.row_exceptions = (pos, got[pos])
        look.carried.add(CELLS)


# --------------------------------------------------------------------------- ranges


_REF_RE = re.compile(r"\$?([A-Z]{1,3})?\$?(\d+)?(?::\$?([A-Z]{1,3})?\$?(\d+)?)?")


def remap_sqref(sqref: str, colmap: Mapping[int, int], old_last: int, new_last: int) -> str:
    """The ranges of `sqref` (space separated) with their columns moved as `colmap` says
    (old → new 0-based index; ranges on a column no longer written are dropped) and their
    rows stretched: a range reaching the old last row reaches the new one."""
    out = []
    for ref in sqref.split():
        m = _REF_RE.fullmatch(ref)
        if not m or not (m.group(1) or m.group(2)):
            continue
        c1, r1, c2, r2 = m.groups()
        if not m.group(0).count(":"):
            c2, r2 = c1, r1
        cols: list[str | None] = []
        for c in (c1, c2):
            if c is None:
                cols.append(None)
                continue
            j = colmap.get(col_index(c))
            if j is None:
                break
            cols.append(col_letter(j))
        else:
            if cols[0] is not None and cols[1] is not None and col_index(cols[1]) < col_index(cols[0]):
                continue
            rows: list[Any] = [int(r1) if r1 else None, int(r2) if r2 else None]
            if rows[1] is not None and old_last >= 2 and rows[1] >= old_last:
                rows[1] = new_last if rows[1] == old_last else max(rows[1], new_last)
            if rows[0] is not None and rows[1] is not None and rows[0] > rows[1]:
                continue
            a = f"{cols[0] or ''}{rows[0] or ''}"
            b = f"{cols[1] or ''}{rows[1] or ''}"
            out.append(a if a == b and ":" not in ref else f"{a}:{b}")
    return " ".join(dict.fromkeys(out))


def _remap_element(el: str, name: str, colmap: Mapping[int, int], old_last: int,
                   new_last: int) -> str:
    """`el` with the ranges of its start tag's attribute `name` remapped ("" when none is left)."""
    tag = el[: el.index(">") + 1]
    m = re.search(r'(?<![\w:.-])' + name + r'\s*=\s*"([^"]*)"', tag)
    if not m:
        return el
    new = remap_sqref(m.group(1), colmap, old_last, new_last)
    if not new:
        return ""
    return el[: m.start(1)] + new + el[m.end(1):]


def _remap_validations(el: str, colmap: Mapping[int, int], old_last: int, new_last: int) -> str:
    """<dataValidations> with each validation's ranges remapped; "" when none is left."""
    n = 0

    def one(m: re.Match[str]) -> str:
        nonlocal n
        new = _remap_element(m.group(0), "sqref", colmap, old_last, new_last)
        n += bool(new)
        return new

    inner = re.sub(r"<(?:[\w.-]+:)?dataValidation\b[^>]*?(?:/>|>.*?</(?:[\w.-]+:)?dataValidation>)",
                   one, el, flags=re.S)
    if not n:
        return ""
    return re.sub(r'(<(?:[\w.-]+:)?dataValidations\b[^>]*?\bcount\s*=\s*")\d+', rf"\g<1>{n}", inner,
                  count=1)


def _remap_ext(el: str, colmap: Mapping[int, int], old_last: int, new_last: int) -> str:
    """<extLst> with only the x14 conditional formats and data validations, their ranges
    (<xm:sqref>) remapped; "" when nothing is left."""
    kept = []
    for m in re.finditer(r"<((?:[\w.-]+:)?)ext\b[^>]*>.*?</\1ext>", el, re.S):
        uri = re.search(r'\buri\s*=\s*"([^"]*)"', m.group(0)[: m.group(0).index(">")])
        if not uri or uri.group(1) not in _EXT_KEPT:
            continue

        def one(item: re.Match[str]) -> str:
            sq = re.search(r"<((?:[\w.-]+:)?)sqref>(.*?)</\1sqref>", item.group(0), re.S)
            if not sq:
                return item.group(0)
            new = remap_sqref(sq.group(2), colmap, old_last, new_last)
            if not new:
                return ""
            return item.group(0)[: sq.start(2)] + new + item.group(0)[sq.end(2):]

        ext = re.sub(r"<((?:[\w.-]+:)?)(conditionalFormatting|dataValidation)\b[^>]*>.*?</\1\2>",
                     one, m.group(0), flags=re.S)
        if re.search(r"<(?:[\w.-]+:)?sqref>", ext):
            n = len(re.findall(r"<(?:[\w.-]+:)?dataValidation\b", ext))
            ext = re.sub(r'(<(?:[\w.-]+:)?dataValidations\b[^>]*?\bcount\s*=\s*")\d+',
                         rf"\g<1>{n}", ext, count=1)
            kept.append(ext)
    if not kept:
        return ""
    tag = el[: el.index(">") + 1]
    close = el[el.rindex("</"):]
    return tag + "".join(kept) + close


def _int(v: str | None) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def _float(v: str | None) -> float | None:
    try:
        return float(v) if v is not None else None
    except ValueError:
        return None
