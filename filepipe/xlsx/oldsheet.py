"""The look of the sheet about to be replaced, read from its XML as a stream: the head
(sheet properties, view, column widths and styles), the header row (the column names and
their styles), the styles of the data cells and rows, and the pieces after the data
(conditional formats, data validations, print set-up).

Reading it all means inflating the whole sheet part and scanning its cells (about 0.1 s
per 100,000 styled cells). filepipe marks the sheet parts it writes with a zip member
comment saying what else than the head it carried over (:data:`MARK`): a sheet filepipe
wrote with no cell styles or trailing pieces of the user's is read no further than its
header row. Any other program saving the workbook rewrites the zip, and the mark with it.
"""

from __future__ import annotations

import html
import re
import zipfile
import zlib
from collections.abc import Iterable
from typing import IO

import numpy as np

from .package import REL_BASE, Package, resolve
from .values import cell_text
from .xmltext import NS_MAIN, NS_R, XML_DECL

MARK = b"filepipe"  # + b":" + what was carried: b"cells", b"tail", comma separated
CELLS, TAIL = "cells", "tail"
REL_SHARED_STRINGS = REL_BASE + "sharedStrings"
_CHUNK = 1 << 20
_MAX_HEAD = 64 << 20  # a head (or header row) larger than this is not read: no look kept
#: the pieces after the data that make a sheet's look, in the schema's order
TAIL_TAGS = ("conditionalFormatting", "dataValidations", "printOptions", "pageMargins",
             "pageSetup", "headerFooter", "extLst")
_NAME = r"(?:[A-Za-z_][\w.-]*:)?"


def mark(carried: set[str]) -> bytes:
    """The zip member comment of a sheet part that carries `carried` of the user's look."""
    return MARK + (b":" + ",".join(sorted(carried)).encode() if carried else b"")


def _marked(comment: bytes) -> set[str] | None:
    """What a marked sheet part carries (None: not marked, everything must be read)."""
    if comment == MARK:
        return set()
    if comment.startswith(MARK + b":"):
        return set(comment[len(MARK) + 1:].decode("ascii", "replace").split(","))
    return None


def col_index(letters: str) -> int:
    """0-based column index of column letters: A -> 0, AA -> 26."""
    n = 0
    for ch in letters:
        n = n * 26 + (ord(ch) - 64)
    return n - 1


class OldSheet:
    """The look of a sheet: what :func:`read_old_sheet` found."""

    def __init__(self) -> None:
        self.root_tag = ""  # the <worksheet ...> start tag
        self.p = ""  # prefix of the main namespace ("" or "x:")
        self.sheet_pr: str | None = None
        self.sheet_view: str | None = None  # the first <sheetView> element
        self.sheet_format: str | None = None
        self.cols: list[tuple[int, int, dict[str, str]]] = []  # min, max (1-based), attributes
        self.names: list[str | None] = []  # header text of each column (0-based)
        self.header_xfs: dict[int, int] = {}  # column (0-based) -> cell format of its header
        self.header_row: dict[str, str] = {}  # attributes of row 1
        self.last_row = 1  # the last row number seen (1: no data rows)
        self.scanned = False  # the cells and rows below were read
        self.cell_cols = np.empty(0, dtype=np.int64)  # styled data cells: column (0-based),
        self.cell_rows = np.empty(0, dtype=np.int64)  # row number,
        self.cell_xfs = np.empty(0, dtype=np.int64)  # cell format (never 0)
        self.row_attrs: dict[int, str] = {}  # row number -> its height / style attributes
        self.tail: list[tuple[str, str]] = []  # (tag, element text) after the data
        #: written by a filepipe from before sheets were marked, and not saved by anything
        #: else since: its widths are filepipe's own too
        self.unmarked_own = False

    @property
    def n_rows(self) -> int:
        """Data rows below the header."""
        return max(self.last_row - 1, 0)


def read_old_sheet(pkg: Package, part: str, plain: Iterable[int] = ()) -> OldSheet | None:
    """The look of the worksheet `part` of `pkg` (None: it cannot be read as a worksheet,
    so nothing of it is kept). Data cells of the formats `plain` (those no user made) are
    not collected."""
    member = pkg.member(part)
    try:
        info = pkg.zf.getinfo(member)
    except KeyError:
        return None
    carried = _marked(info.comment)
    old = OldSheet()
    try:
        with pkg.zf.open(info) as f:
            if not _read_head(f, old, pkg, carried is None or CELLS in carried,
                              carried is None or TAIL in carried, set(plain)):
                return None
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, ValueError, KeyError, IndexError):
        return None  # a damaged sheet part: its look is not kept (the data is written)
    return old


class _Stream:
    """A sheet part read in chunks, with the text not yet used."""

    def __init__(self, f: IO[bytes]):
        self.f = f
        self.buf = b""
        self.eof = False

    def more(self) -> bool:
        if self.eof:
            return False
        chunk = self.f.read(_CHUNK)
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def find(self, needle: bytes, start: int = 0, limit: int = _MAX_HEAD) -> int:
        """Position of `needle` in the buffer from `start`, reading on as needed (-1: not
        within `limit` bytes or the end)."""
        pos = self.buf.find(needle, start)
        while pos < 0 and len(self.buf) < limit and self.more():
            pos = self.buf.find(needle, max(start, len(self.buf) - _CHUNK - len(needle)))
        return pos


def _read_head(f: IO[bytes], old: OldSheet, pkg: Package, cells: bool, tail: bool,
               plain: set[int]) -> bool:
    s = _Stream(f)
    s.more()
    if s.buf.startswith((b"\xff\xfe", b"\xfe\xff")):
        return False  # UTF-16: no look kept
    m = re.search(rb"<(" + _NAME.encode() + rb")worksheet\b[^>]*>", s.buf)
    while m is None and len(s.buf) < _MAX_HEAD and s.more():
        m = re.search(rb"<(" + _NAME.encode() + rb")worksheet\b[^>]*>", s.buf)
    if m is None:
        return False
    old.root_tag = m.group(0).decode("utf-8")
    old.p = m.group(1).decode("utf-8")
    p = old.p.encode()
    start = s.find(b"<" + p + b"sheetData", m.end())
    if start < 0:
        return False
    head = s.buf[:start].decode("utf-8")
    _parse_head(head, old)
    old.unmarked_own = cells and tail and bool(_OWN_HEAD.match(head))
    # the header row: from <sheetData> to the end of the first row
    s.buf = s.buf[start:]
    gt = s.find(b">")
    if gt < 0:
        return False
    if s.buf[gt - 1:gt] == b"/":  # <sheetData/>: no rows
        s.buf = s.buf[gt + 1:]
        if tail:
            _read_tail(s, old, found_end=True)
        return True
    first_row = re.compile(rb"<" + re.escape(p) + rb"row\b([^>]*?)(/?)>")
    rm = first_row.search(s.buf, gt)
    while rm is None and len(s.buf) < _MAX_HEAD and s.more():
        rm = first_row.search(s.buf, gt)
    pos = gt + 1
    if rm is not None and _row_number(rm.group(1)) in (1, None):
        if rm.group(2):
            end = rm.end()
            row_xml = b""
        else:
            end = s.find(b"</" + p + b"row>", rm.end())
            if end < 0:
                return False
            row_xml = s.buf[rm.end():end]
            end += len(b"</" + p + b"row>")
        _parse_header_row(rm.group(1).decode("utf-8"), row_xml.decode("utf-8"), old, pkg)
        pos = end
    s.buf = s.buf[pos:]
    if cells:
        _scan_rows(s, old, plain)
    if tail:
        _read_tail(s, old, found_end=cells)
    return True


#: the head of a sheet filepipe wrote before it marked them (so no other program saved it)
_OWN_HEAD = re.compile(
    re.escape(XML_DECL + f'<worksheet xmlns="{NS_MAIN}" xmlns:r="{NS_R}">') + r'<dimension ref="[A-Z0-9:]+"/>'
    + re.escape("<sheetViews><sheetView") + r'(?: tabSelected="1")?'
    + re.escape(' workbookViewId="0"><pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" '
                'state="frozen"/><selection pane="bottomLeft" activeCell="A2" sqref="A2"/>'
                '</sheetView></sheetViews><sheetFormatPr defaultRowHeight="15"/>')
    + r'(?:<cols>(?:<col min="\d+" max="\d+" width="[\d.]+" customWidth="1"/>)*</cols>)?$')


def _row_number(row_attrs: bytes) -> int | None:
    m = re.search(rb'\br="(\d+)"', row_attrs)
    return int(m.group(1)) if m else None


# --------------------------------------------------------------------------- the head


def _element(xml: str, p: str, tag: str) -> str | None:
    """The first element `tag` (prefix `p`) of `xml`, as text."""
    pe = re.escape(p)
    m = re.search(r"<" + pe + tag + r"\b[^>]*?(?:/>|>.*?</" + pe + tag + ">)", xml, re.S)
    return m.group(0) if m else None


def _attrs(tag_text: str) -> dict[str, str]:
    from .xmltext import attrs

    return attrs(tag_text)


def _parse_head(head: str, old: OldSheet) -> None:
    p = old.p
    old.sheet_pr = _element(head, p, "sheetPr")
    old.sheet_view = _element(head, p, "sheetView")
    old.sheet_format = _element(head, p, "sheetFormatPr")
    dim = re.search(r"<" + re.escape(p) + r'dimension\b[^>]*?\bref="[A-Z]*\d*:?[A-Z]*(\d+)"', head)
    if dim:
        old.last_row = max(int(dim.group(1)), 1)
    cols = _element(head, p, "cols")
    if cols:
        for m in re.finditer(r"<" + re.escape(p) + r"col\b([^>]*?)/?>", cols):
            a = _attrs(m.group(1))
            try:
                lo, hi = int(a.pop("min")), int(a.pop("max"))
            except (KeyError, ValueError):
                continue
            if 1 <= lo <= hi:
                old.cols.append((lo, hi, a))


def _parse_header_row(row_attrs: str, row_xml: str, old: OldSheet, pkg: Package) -> None:
    """Column names and header cell formats from the first row's XML."""
    old.header_row = _attrs(row_attrs)
    pe = re.escape(old.p)
    cells = list(re.finditer(r"<" + pe + r"c\b([^>]*?)(?:/>|>(.*?)</" + pe + r"c>)", row_xml, re.S))
    texts: dict[int, str | None] = {}
    shared: dict[int, int] = {}
    j = -1
    for m in cells:
        a = _attrs(m.group(1))
        ref = re.match(r"([A-Z]{1,3})\d*$", a.get("r", ""))
        j = col_index(ref.group(1)) if ref else j + 1
        if a.get("s", "0").isdigit() and a.get("s", "0") != "0":
            old.header_xfs[j] = int(a["s"])
        inner = m.group(2) or ""
        t = a.get("t", "n")
        if t == "inlineStr":
            texts[j] = _run_text(inner, old.p)
            continue
        v = re.search(r"<" + pe + r"v\b[^>]*>(.*?)</" + pe + r"v>", inner, re.S)
        value = html.unescape(v.group(1)) if v else None
        if value is None:
            texts[j] = None
        elif t == "s" and value.strip().isdigit():
            shared[j] = int(value)
        elif t == "b":
            texts[j] = "TRUE" if value.strip() in ("1", "true") else "FALSE"
        elif t in ("str", "e"):
            texts[j] = value
        else:
            try:
                texts[j] = cell_text(float(value))
            except ValueError:
                texts[j] = value
    if shared:
        strings = _shared_strings(pkg, max(shared.values()))
        for j, k in shared.items():
            texts[j] = strings[k] if k < len(strings) else None
    if texts:
        old.names = [texts.get(j) for j in range(max(texts) + 1)]


def _run_text(inner: str, p: str) -> str:
    """The text of an <is> or <si> element's content: its <t> elements, phonetic runs left out."""
    pe = re.escape(p)
    inner = re.sub(r"<" + pe + r"rPh\b.*?</" + pe + r"rPh>", "", inner, flags=re.S)
    parts = re.findall(r"<" + pe + r"t\b[^>]*?(?:/>|>(.*?)</" + pe + r"t>)", inner, re.S)
    text = html.unescape("".join(parts))
    return re.sub(r"_x([0-9A-Fa-f]{4})_", lambda m: chr(int(m.group(1), 16)), text)


def _shared_strings(pkg: Package, last: int) -> list[str]:
    """The shared strings 0..`last` of the workbook (fewer if it has fewer)."""
    rel = [r for r in pkg.wb_rels if r.get("Type") == REL_SHARED_STRINGS]
    if not rel:
        return []
    try:
        f = pkg.zf.open(pkg.member(resolve(pkg.wb_part, rel[0]["Target"])))
    except KeyError:
        return []
    out: list[str] = []
    with f:
        s = _Stream(f)
        s.more()
        m = re.search(rb"<(" + _NAME.encode() + rb")sst\b", s.buf)
        p = m.group(1).decode() if m else ""
        si = re.compile(r"<" + re.escape(p) + r"si\b[^>]*?(?:/>|>(.*?)</" + re.escape(p) + r"si>)", re.S)
        pos = 0
        while len(out) <= last:
            text = s.buf.decode("utf-8", "ignore")
            for m2 in si.finditer(text, pos):
                out.append(_run_text(m2.group(1) or "", p))
                pos = m2.end()
                if len(out) > last:
                    break
            if len(out) > last or not s.more():
                break
            done = len(text[:pos].encode("utf-8"))
            s.buf, pos = s.buf[done:], 0
    return out


# --------------------------------------------------------------------------- rows and cells


def _scan_rows(s: _Stream, old: OldSheet, plain: set[int]) -> None:
    """The cells of a format other than 0 and `plain`, and the rows with a height or style
    of their own, up to </sheetData>; leaves the stream just after it."""
    p = re.escape(old.p.encode())
    skip = b"|".join(str(x).encode() for x in sorted(plain) if x)
    not_plain = rb'(?!(?:' + skip + rb')")' if skip else b""
    cell_re = re.compile(rb"<" + p + rb'c r="([A-Z]{1,3})(\d+)" s="' + not_plain + rb'([1-9]\d*)"')
    row_re = re.compile(rb"<" + p + rb'row r="(\d+)"([^>]*)>')
    custom_re = re.compile(rb'(?:customFormat|customHeight)="(?:1|true)"')
    last_re = re.compile(rb"<" + p + rb'row r="(\d+)"')
    end_tag = b"</" + old.p.encode() + b"sheetData>"
    found: list[np.ndarray] = []
    last_row = 1
    while True:
        end = s.buf.find(end_tag)
        if end >= 0:
            chunk, s.buf = s.buf[:end], s.buf[end + len(end_tag):]
        else:
            cut = s.buf.rfind(b"<")
            if cut < 0 or not s.more():
                chunk, s.buf = s.buf, b""
                end = 0  # the end of the part: stop
            else:
                chunk, s.buf = s.buf[:cut], s.buf[cut:]
        matches = cell_re.findall(chunk)
        if matches:
            found.append(np.array(matches, dtype="S"))
        for rm in row_re.finditer(chunk):
            if custom_re.search(rm.group(2)):
                old.row_attrs[int(rm.group(1))] = _row_look(rm.group(2).decode("utf-8"))
        at = chunk.rfind(b"<" + old.p.encode() + b'row r="')
        lm = last_re.match(chunk, at) if at >= 0 else None
        if lm:
            last_row = max(last_row, int(lm.group(1)))
        if end >= 0:
            break
    old.last_row = max(last_row, old.last_row) if last_row == 1 else last_row
    old.scanned = True
    if found:
        cells = np.concatenate(found)
        rows = cells[:, 1].astype(np.int64)
        data = rows >= 2
        letters, inverse = np.unique(cells[data, 0], return_inverse=True)
        index = np.array([col_index(x.decode()) for x in letters], dtype=np.int64)
        old.cell_cols = index[inverse] if len(letters) else np.empty(0, dtype=np.int64)
        old.cell_rows = rows[data]
        old.cell_xfs = cells[data, 2].astype(np.int64)


def _row_look(row_attrs: str) -> str:
    """The attributes of a row that make its look (a height, a style), as written."""
    a = _attrs(row_attrs)
    out = []
    if a.get("customHeight") in ("1", "true") and "ht" in a:
        out.append(f' ht="{a["ht"]}" customHeight="1"')
    if a.get("customFormat") in ("1", "true") and a.get("s", "0").isdigit():
        out.append(f' s="{a["s"]}" customFormat="1"')
    return "".join(out)


def row_look(attrs: dict[str, str]) -> str:
    """:func:`_row_look` of parsed attributes."""
    return _row_look(" ".join(f'{k}="{v}"' for k, v in attrs.items()))


# --------------------------------------------------------------------------- after the data


def _read_tail(s: _Stream, old: OldSheet, found_end: bool) -> None:
    """The look pieces after the data: the stream is at (or, `found_end`, past) the rows."""
    p = old.p.encode()
    if not found_end:
        end_tag = b"</" + p + b"sheetData>"
        while True:
            end = s.buf.find(end_tag)
            if end >= 0:
                s.buf = s.buf[end + len(end_tag):]
                break
            keep = s.buf[-len(end_tag):]
            s.buf = keep
            if not s.more():
                return
    while s.more():
        if len(s.buf) > _MAX_HEAD:
            return
    text = s.buf.decode("utf-8")
    pe = re.escape(old.p)
    for tag in TAIL_TAGS:
        pat = r"<" + pe + tag + r"\b[^>]*?(?:/>|>.*?</" + pe + tag + ">)"
        for m in re.finditer(pat, text, re.S):
            old.tail.append((tag, m.group(0)))
