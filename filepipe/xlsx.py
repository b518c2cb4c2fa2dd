"""Excel workbooks that people open: write one sheet, keep everything else.

``write_sheet`` rewrites a single worksheet of an ``.xlsx`` file by editing the zip
package directly instead of loading and saving the whole workbook:

* every zip member is copied unchanged (same uncompressed bytes), except
  - the target sheet's XML part (replaced, or added as a new part),
  - ``xl/workbook.xml``: a new ``<sheet>`` entry; the hidden name ``_xlnm._FilterDatabase``
    of the sheet's autofilter (LibreOffice shows no autofilter without it); and
    ``fullCalcOnLoad="1"`` so that formulas elsewhere that refer to the rewritten sheet are
    recalculated when the file is opened (Excel then asks to save on close),
  - ``xl/_rels/workbook.xml.rels`` and ``[Content_Types].xml`` (new part, dropped parts),
  - ``xl/styles.xml`` (a bold font and four cell formats are appended once, then reused);
* ``xl/calcChain.xml`` is deleted (it may list cells of the replaced sheet; Excel rebuilds it);
* a replaced sheet loses its own relationships (drawings, tables, comments...): the sheet
  is filepipe's own output. Parts reachable only through them are deleted as well;
* ``docProps/app.xml`` is left alone (it caches the sheet titles; Excel does not mind).

The new workbook is built in a temporary file in the target's directory, fsynced and moved
over the target with ``os.replace``: readers see either the old or the new file. The
original file's permission bits are kept. A symlink is written through (its target is
replaced). If the original changes while filepipe is writing, nothing is replaced and a
:class:`SheetError` is raised.

Cell conventions (see :func:`write_sheet`; :func:`sheet_values` gives what a frame reads back
as, also after Excel, LibreOffice or openpyxl re-saved the workbook):

* row 1 holds the column names as text cells (:func:`cell_text`: ``2019`` → ``"2019"``,
  ``True`` → ``"TRUE"``, a date → ``"2026-11-30"``), bold, frozen, with an autofilter; two
  columns whose names give the same text are a :class:`SheetError`; the DataFrame index is
  not written;
* ints and floats are numbers of at most 15 significant digits, as Excel shows them and
  LibreOffice saves them (``29.799999999999997`` → ``29.8``, ``1234567890123456`` →
  ``1234567890123460``); NaN/None/NaT/pd.NA are empty cells (no ``<c>`` element);
  ``inf``/``-inf`` become the error value ``#NUM!`` (Excel has no infinities);
* bools are ``TRUE``/``FALSE`` cells;
* datetimes are Excel serial dates at the millisecond (Excel's precision) with a
  ``yyyy-mm-dd hh:mm:ss`` format (``.000`` added when a column has sub-second values,
  ``yyyy-mm-dd`` when it only has midnights). Timezone-aware values are converted to UTC and
  the timezone dropped. ``datetime.date`` values are dates. Dates from 1900-01-01 on are
  dates (serials 1-59 before Excel's fake 1900-02-29); values Excel cannot hold as dates
  (before 1900-01-01, or after 9999-12-31) are written as ISO-8601 text;
* ``datetime.time`` values are times of day (``hh:mm:ss``, ``.000`` with milliseconds; a
  time with a timezone is text); timedeltas (``datetime.timedelta``, ``pd.Timedelta``,
  timedelta64 columns) are durations (``[h]:mm:ss``); both at the millisecond;
* strings are inline strings; characters illegal in XML 1.0 are removed and CR LF / CR
  become LF (openpyxl and LibreOffice re-save them so); a literal ``_xHHHH_`` sequence is
  escaped so Excel does not decode it; more than 32,767 characters is a :class:`SheetError`;
* dict/list/tuple/ndarray cells are compact JSON; anything else is ``str(value)``.

Reading uses pandas' calamine engine; only empty cells are missing values (strings such as
``"NA"`` or ``"null"`` stay strings; an empty string reads back as missing). Rows at the end
whose cells are all missing are not in the sheet, so they do not come back. Header cells are
read as the text they show (:func:`cell_text`), so column names are always strings.

A file that is no .xlsx package for a reason retrying will not fix — a folder, an encrypted
workbook, an old ``.xls`` — is a :class:`SheetError` saying so. Other
``zipfile.BadZipFile`` / calamine errors, from half-written or corrupt files, are not wrapped:
callers retry those.
"""

from __future__ import annotations

import html
import json
import os
import posixpath
import queue
import re
import stat as _stat
import struct
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from typing import Any, Callable
from xml.etree import ElementTree as ET

import numpy as np
import pandas as pd

from .errors import FilepipeError

__all__ = ["SheetError", "write_sheet", "read_sheet", "sheet_names", "validate_sheet_name",
           "sheet_values", "cell_text", "header_text", "header_texts", "check_output_path",
           "excel_floats", "is_missing"]


class SheetError(FilepipeError, ValueError):
    """A sheet cannot be read or written; the message names the file and the sheet."""


# --------------------------------------------------------------------------- constants

_NS_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_NS_STRICT_MAIN = "http://purl.oclc.org/ooxml/spreadsheetml/main"
_NS_R = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_NS_PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
_NS_CT = "http://schemas.openxmlformats.org/package/2006/content-types"
_REL_BASE = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/"
_REL_OFFICE_DOC = _REL_BASE + "officeDocument"
_REL_WORKSHEET = _REL_BASE + "worksheet"
_REL_STYLES = _REL_BASE + "styles"
_REL_CALC_CHAIN = _REL_BASE + "calcChain"
_CT_WORKSHEET = "application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"
_CT_STYLES = "application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"
_CT_WORKBOOK = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"
_CT_RELS = "application/vnd.openxmlformats-package.relationships+xml"
_XML_DECL = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'

MAX_ROWS = 1_048_576
MAX_COLS = 16_384
MAX_CELL_CHARS = 32_767
MAX_SHEET_NAME = 31
MAX_COL_WIDTH = 60.0

_DATE_FMT = "yyyy-mm-dd"
_DATETIME_FMT = "yyyy-mm-dd hh:mm:ss"
_DATETIME_MS_FMT = "yyyy-mm-dd hh:mm:ss.000"
_TIME_FMT = "hh:mm:ss"
_TIME_MS_FMT = "hh:mm:ss.000"
_DURATION_FMT = "[h]:mm:ss"
_DURATION_MS_FMT = "[h]:mm:ss.000"

# Excel serial 61 is 1900-03-01; 60 is the fake 1900-02-29 of Excel's 1900 leap-year bug, so
# serials 1-59 (1900-01-01..1900-02-28) are one day less than the count of days suggests.
_EXCEL_EPOCH_OFFSET = 25569  # serial of 1970-01-01
_US_PER_DAY = 86_400_000_000
_MS_PER_DAY = 86_400_000
_LEAP_BUG_DAY = 61 - _EXCEL_EPOCH_OFFSET  # 1900-03-01, in days since 1970
_MIN_SERIAL_US = (_LEAP_BUG_DAY - 59) * _US_PER_DAY  # 1900-01-01 (serial 1)
_MAX_SERIAL_US = (2958466 - _EXCEL_EPOCH_OFFSET) * _US_PER_DAY  # 10000-01-01
_LAST_MS_OF_DAY_US = _US_PER_DAY - 1000  # 23:59:59.999: a time rounded up stays that day

_ILLEGAL_XML_CHARS = "[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]"
_ILLEGAL_XML_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
# what a cell does not keep as it is: illegal XML characters (removed) and CR (becomes LF)
_UNKEPT_TEXT = "[\x00-\x08\x0b\x0c\r\x0e-\x1f\ufffe\uffff]"

SIGNIFICANT_DIGITS = 15  # what Excel shows and LibreOffice saves
_POW10 = np.array([float(10**i) for i in range(23)])  # exact powers of ten
_MAX_FLOAT_15 = 1.79769313486231e308  # the largest finite double of 15 significant digits
_CFB_SIGNATURE = bytes.fromhex("D0CF11E0A1B11AE1")  # OLE2 container: .xls, encrypted .xlsx
_EXCEL_ESCAPE_RE = re.compile(r"_(?=x[0-9A-Fa-f]{4}_)")
# strings that need more than copying: XML specials, _xHHHH_, edge whitespace
_SPECIAL_TEXT = r"[&<>]|_x[0-9A-Fa-f]{4}_|^[ \t\n]|[ \t\n]$"
_BAD_SHEET_CHARS = set("[]:*?/\\")

_ROW_CELL_BUDGET = 150_000  # cells generated per chunk (bounds memory)
_SHEET_COMPRESS_LEVEL = 2  # deflate level of the sheet part: 3x faster than 6, ~15 % larger


# --------------------------------------------------------------------------- sheet names


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
    if _ILLEGAL_XML_RE.search(sheet):
        problems.append("it contains control characters")
    if sheet.casefold() == "history":
        problems.append("'History' is reserved by Excel")
    if problems:
        raise SheetError(f"invalid sheet name {sheet!r}{where}: " + "; ".join(problems))
    return sheet


# --------------------------------------------------------------------------- small helpers


def _col_letter(i: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA."""
    s = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        s = chr(65 + r) + s
    return s


def _attr(value: str) -> str:
    return (
        value.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("\t", "&#9;")
        .replace("\n", "&#10;")
        .replace("\r", "&#13;")
    )


def _text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_ATTR_RE = re.compile(r"""([\w:.\-]+)\s*=\s*(?:"([^"]*)"|'([^']*)')""")


def _attrs(start_tag: str) -> dict[str, str]:
    return {m.group(1): html.unescape(m.group(2) if m.group(2) is not None else m.group(3))
            for m in _ATTR_RE.finditer(start_tag)}


def _root_prefix(xml: str, local: str) -> str:
    """Namespace prefix ('' or 'x:') used by the root element `local` of `xml`."""
    m = re.search(r"<(?:([A-Za-z_][\w.\-]*):)?" + local + r"[\s>/]", xml)
    if not m:
        raise ValueError(f"no <{local}> element")
    return f"{m.group(1)}:" if m.group(1) else ""


def _decode(data: bytes) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    return data.decode("utf-8")


def _resolve(source_part: str, target: str) -> str:
    """Zip member name of a relationship target (relative to the source part's folder)."""
    if target.startswith("/"):
        return posixpath.normpath(target[1:])
    base = posixpath.dirname(source_part)
    return posixpath.normpath(posixpath.join(base, target)) if base else posixpath.normpath(target)


def _rels_name(part: str) -> str:
    d, b = posixpath.split(part)
    return posixpath.join(d, "_rels", b + ".rels") if d else f"_rels/{b}.rels"


def _part_of_rels(rels: str) -> str | None:
    d, b = posixpath.split(rels)
    if not b.endswith(".rels") or posixpath.basename(d) != "_rels":
        return None
    parent = posixpath.dirname(d)
    name = b[: -len(".rels")]
    return posixpath.join(parent, name) if parent else name


def _parse_rels(data: bytes) -> list[dict[str, str]]:
    root = ET.fromstring(data)
    return [dict(el.attrib) for el in root if el.tag.endswith("Relationship")]


def _rels_xml(rels: list[dict[str, str]]) -> bytes:
    out = [_XML_DECL, f'<Relationships xmlns="{_NS_PKG_REL}">']
    for r in rels:
        attrs = "".join(f' {k}="{_attr(v)}"' for k, v in r.items())
        out.append(f"<Relationship{attrs}/>")
    out.append("</Relationships>")
    return "".join(out).encode("utf-8")


# --------------------------------------------------------------------------- package


class _ContentTypes:
    def __init__(self, data: bytes):
        root = ET.fromstring(data)
        self.items: list[tuple[str, dict[str, str]]] = []
        for el in root:
            local = el.tag.rsplit("}", 1)[-1]
            self.items.append((local, dict(el.attrib)))

    def override(self, part: str) -> str | None:
        key = "/" + part.lower()
        for kind, a in self.items:
            if kind == "Override" and a.get("PartName", "").lower() == key:
                return a.get("ContentType")
        return None

    def content_type(self, part: str) -> str | None:
        ct = self.override(part)
        if ct is None:
            ext = part.rsplit(".", 1)[-1].lower()
            for kind, a in self.items:
                if kind == "Default" and a.get("Extension", "").lower() == ext:
                    return a.get("ContentType")
        return ct

    def set_override(self, part: str, ctype: str) -> None:
        self.remove_overrides({part})
        self.items.append(("Override", {"PartName": "/" + part, "ContentType": ctype}))

    def remove_overrides(self, parts: set[str]) -> None:
        keys = {"/" + p.lower() for p in parts}
        self.items = [(k, a) for k, a in self.items
                      if not (k == "Override" and a.get("PartName", "").lower() in keys)]

    def to_bytes(self) -> bytes:
        out = [_XML_DECL, f'<Types xmlns="{_NS_CT}">']
        for kind, a in self.items:
            attrs = "".join(f' {k}="{_attr(v)}"' for k, v in a.items())
            out.append(f"<{kind}{attrs}/>")
        out.append("</Types>")
        return "".join(out).encode("utf-8")


class _SheetEntry:
    __slots__ = ("name", "rid", "sheet_id", "span", "tag")

    def __init__(self, name: str, rid: str, sheet_id: int, span: tuple[int, int], tag: str):
        self.name, self.rid, self.sheet_id, self.span, self.tag = name, rid, sheet_id, span, tag


class _Package:
    """The parts of an xlsx package that write_sheet reads or edits."""

    def __init__(self, zf: zipfile.ZipFile, path: str):
        self.zf = zf
        self.path = path
        self.infos = [i for i in zf.infolist()]
        self.by_lower = {i.filename.lower(): i.filename for i in self.infos}
        self.ct = _ContentTypes(self.read("[Content_Types].xml"))
        root_rels = _parse_rels(self.read("_rels/.rels"))
        wb = [r for r in root_rels if r.get("Type") == _REL_OFFICE_DOC]
        if not wb:
            if any(r.get("Type", "").endswith("/officeDocument") for r in root_rels):
                raise SheetError(f"{path}: Strict Open XML workbooks are not supported; "
                                 "save it as a regular Excel workbook (.xlsx)")
            raise SheetError(f"{path}: not an Excel workbook (no officeDocument relationship)")
        self.wb_part = self.member(_resolve("", wb[0]["Target"]))
        if not self.wb_part.lower().endswith(".xml"):
            raise SheetError(f"{path}: binary workbooks (.xlsb) are not supported")
        self.wb_xml = _decode(self.read(self.wb_part))
        self.wb_rels_part = self.member(_rels_name(self.wb_part))
        self.wb_rels = _parse_rels(self.read(self.wb_rels_part)) if self.has(self.wb_rels_part) else []
        self._parse_workbook()

    # -- zip access
    def has(self, name: str) -> bool:
        return name.lower() in self.by_lower

    def member(self, name: str) -> str:
        return self.by_lower.get(name.lower(), name)

    def read(self, name: str) -> bytes:
        try:
            return self.zf.read(self.member(name))
        except KeyError:
            raise SheetError(f"{self.path}: damaged workbook, part {name} is missing") from None

    # -- workbook.xml
    def _parse_workbook(self) -> None:
        root = ET.fromstring(self.wb_xml.encode("utf-8"))
        ns = root.tag[1:].split("}")[0] if root.tag.startswith("{") else ""
        if ns == _NS_STRICT_MAIN:
            raise SheetError(f"{self.path}: Strict Open XML workbooks are not supported; "
                             "save it as a regular Excel workbook (.xlsx)")
        self.p = _root_prefix(self.wb_xml, "workbook")
        p = re.escape(self.p)
        m = re.search(r"<" + p + r"sheets\b[^>]*?(/?)>", self.wb_xml)
        if not m:
            raise SheetError(f"{self.path}: damaged workbook, no <sheets> element")
        if m.group(1):
            self.sheets_insert_at = None
            self.sheets_span = (m.start(), m.end())
            body = ""
            body_start = m.end()
        else:
            close = self.wb_xml.index("</" + self.p + "sheets>", m.end())
            self.sheets_insert_at = close
            body = self.wb_xml[m.end():close]
            body_start = m.end()
        rid_key = "{%s}id" % _NS_R
        et_sheets = [el for el in root.iter("{%s}sheet" % ns)]
        tags = list(re.finditer(r"<" + p + r"sheet\b[^>]*>", body))
        if len(tags) != len(et_sheets):
            raise SheetError(f"{self.path}: cannot parse the sheet list of {self.wb_part}")
        self.sheets: list[_SheetEntry] = []
        for el, t in zip(et_sheets, tags):
            try:
                sid = int(el.get("sheetId", "0"))
            except ValueError:
                sid = 0
            self.sheets.append(_SheetEntry(el.get("name", ""), el.get(rid_key, ""), sid,
                                           (body_start + t.start(), body_start + t.end()),
                                           t.group(0)))
        # prefix bound to the relationships namespace on the root element
        root_tag = re.search(r"<" + p + r"workbook\b[^>]*>", self.wb_xml)
        rm = re.search(r'xmlns:([A-Za-z_][\w.\-]*)\s*=\s*["\']' + re.escape(_NS_R) + r'["\']',
                       root_tag.group(0) if root_tag else "")
        self.r_prefix = rm.group(1) if rm else None

    def find_sheet(self, name: str) -> _SheetEntry | None:
        for s in self.sheets:
            if s.name == name:
                return s
        folded = name.casefold()
        for s in self.sheets:
            if s.name.casefold() == folded:
                return s
        return None

    def rel(self, rid: str) -> dict[str, str] | None:
        for r in self.wb_rels:
            if r.get("Id") == rid:
                return r
        return None

    def sheet_part(self, entry: _SheetEntry) -> tuple[str, str]:
        r = self.rel(entry.rid)
        if r is None:
            raise SheetError(f"{self.path}: damaged workbook, sheet {entry.name!r} has no part")
        return self.member(_resolve(self.wb_part, r["Target"])), r.get("Type", "")

    # -- relationship graph
    def rels_graph(self) -> dict[str, list[str]]:
        """source part (lower case, '' = package) -> internal target parts (lower case)."""
        graph: dict[str, list[str]] = {}
        for info in self.infos:
            src = _part_of_rels(info.filename)
            if src is None:
                continue
            try:
                rels = _parse_rels(self.zf.read(info))
            except ET.ParseError:
                continue
            targets = [
                _resolve(src, r["Target"]).lower()
                for r in rels
                if r.get("TargetMode") != "External" and r.get("Target")
            ]
            graph[src.lower() if src != "" else ""] = targets
        return graph


def _reachable(graph: dict[str, list[str]], roots: list[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        todo.extend(graph.get(node, ()))
    return seen


def _skeleton_workbook() -> bytes:
    """A workbook without sheets (not valid on its own; write_sheet adds the first one)."""
    import io

    ct = (_XML_DECL + f'<Types xmlns="{_NS_CT}">'
          f'<Default Extension="rels" ContentType="{_CT_RELS}"/>'
          '<Default Extension="xml" ContentType="application/xml"/>'
          f'<Override PartName="/xl/workbook.xml" ContentType="{_CT_WORKBOOK}"/>'
          f'<Override PartName="/xl/styles.xml" ContentType="{_CT_STYLES}"/>'
          "</Types>")
    root_rels = _rels_xml([{"Id": "rId1", "Type": _REL_OFFICE_DOC, "Target": "xl/workbook.xml"}])
    wb = (_XML_DECL + f'<workbook xmlns="{_NS_MAIN}" xmlns:r="{_NS_R}">'
          "<workbookPr/><bookViews><workbookView/></bookViews>"
          "<sheets></sheets><calcPr calcId=\"191029\"/></workbook>")
    wb_rels = _rels_xml([{"Id": "rId1", "Type": _REL_STYLES, "Target": "styles.xml"}])
    styles = (_XML_DECL + f'<styleSheet xmlns="{_NS_MAIN}">'
              '<fonts count="1"><font><sz val="11"/><name val="Calibri"/><family val="2"/></font></fonts>'
              '<fills count="2"><fill><patternFill patternType="none"/></fill>'
              '<fill><patternFill patternType="gray125"/></fill></fills>'
              '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
              '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
              '<cellXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/></cellXfs>'
              '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
              '<dxfs count="0"/><tableStyles count="0"/>'
              "</styleSheet>")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in (("[Content_Types].xml", ct), ("_rels/.rels", root_rels),
                           ("xl/workbook.xml", wb), ("xl/_rels/workbook.xml.rels", wb_rels),
                           ("xl/styles.xml", styles)):
            z.writestr(name, text)
    return buf.getvalue()


# --------------------------------------------------------------------------- styles.xml


class _Styles:
    """Append-only edits of styles.xml done on the text (keeps every namespace/extension)."""

    _ORDER = ["numFmts", "fonts", "fills", "borders", "cellStyleXfs", "cellXfs", "cellStyles",
              "dxfs", "tableStyles", "colors", "extLst"]

    def __init__(self, xml: str):
        self.xml = xml
        self.p = _root_prefix(xml, "styleSheet")

    def _section(self, tag: str) -> tuple[int, int, int, int] | None:
        """(start, inner_start, inner_end, end) of <tag>..</tag>; inner_start == -1 if empty."""
        p = re.escape(self.p)
        m = re.search(r"<" + p + tag + r"\b[^>]*?(/?)>", self.xml)
        if not m:
            return None
        if m.group(1):
            return (m.start(), -1, -1, m.end())
        close_tag = "</" + self.p + tag + ">"
        close = self.xml.index(close_tag, m.end())
        return (m.start(), m.end(), close, close + len(close_tag))

    def _ensure(self, tag: str) -> tuple[int, int, int, int]:
        sec = self._section(tag)
        if sec is not None and sec[1] == -1:  # <tag/> -> <tag></tag>
            start, _, _, end = sec
            open_tag = self.xml[start:end][:-2].rstrip()
            self.xml = self.xml[:start] + open_tag + "></" + self.p + tag + ">" + self.xml[end:]
            sec = self._section(tag)
        if sec is None:
            pos = None
            for later in self._ORDER[self._ORDER.index(tag) + 1:]:
                s = self._section(later)
                if s is not None:
                    pos = s[0]
                    break
            if pos is None:
                pos = self.xml.rindex("</" + self.p + "styleSheet>")
            self.xml = self.xml[:pos] + f'<{self.p}{tag} count="0"></{self.p}{tag}>' + self.xml[pos:]
            sec = self._section(tag)
        assert sec is not None
        return sec

    def _children(self, tag: str, child: str) -> list[str]:
        sec = self._section(tag)
        if sec is None or sec[1] == -1:
            return []
        inner = self.xml[sec[1]:sec[2]]
        p = re.escape(self.p)
        pat = (r"<" + p + child + r"\b[^>]*?/>|<" + p + child + r"\b[^>]*?>.*?</" + p + child + ">")
        return [m.group(0) for m in re.finditer(pat, inner, re.S)]

    def _append(self, tag: str, child_xml: str, new_count: int) -> None:
        start, inner_start, inner_end, end = self._ensure(tag)
        open_tag = self.xml[start:inner_start]
        if re.search(r'\bcount\s*=\s*["\'][^"\']*["\']', open_tag):
            open_tag = re.sub(r'\bcount\s*=\s*["\'][^"\']*["\']', f'count="{new_count}"', open_tag)
        else:
            open_tag = open_tag[:-1] + f' count="{new_count}">'
        self.xml = (self.xml[:start] + open_tag + self.xml[inner_start:inner_end] + child_xml
                    + self.xml[inner_end:])

    def num_fmt(self, code: str) -> int:
        ids = []
        for el in self._children("numFmts", "numFmt"):
            a = _attrs(el)
            try:
                fid = int(a.get("numFmtId", ""))
            except ValueError:
                continue
            if a.get("formatCode") == code:
                return fid
            ids.append(fid)
        new_id = max([163, *ids]) + 1
        self._append("numFmts", f'<{self.p}numFmt numFmtId="{new_id}" formatCode="{_attr(code)}"/>',
                     len(ids) + 1)
        return new_id

    def bold_font(self) -> int:
        fonts = self._children("fonts", "font")
        p = self.p
        if fonts:
            base = fonts[0]
            b_el = re.search(r"<" + re.escape(p) + r"b\b[^>]*/>", base)
            if b_el and re.search(r'val\s*=\s*["\'](0|false)["\']', b_el.group(0)):
                bold = base[:b_el.start()] + f"<{p}b/>" + base[b_el.end():]
            elif b_el:
                bold = base
            elif base.endswith("/>"):
                bold = base[:-2].rstrip() + f"><{p}b/></{p}font>"
            else:
                gt = base.index(">") + 1
                bold = base[:gt] + f"<{p}b/>" + base[gt:]
        else:
            bold = f'<{p}font><{p}b/><{p}sz val="11"/><{p}name val="Calibri"/><{p}family val="2"/></{p}font>'
        if bold in fonts:
            return fonts.index(bold)
        if not fonts:  # font 0 is the default of every cell: never make it bold
            plain = f'<{p}font><{p}sz val="11"/><{p}name val="Calibri"/><{p}family val="2"/></{p}font>'
            self._append("fonts", plain, 1)
            fonts = [plain]
        self._append("fonts", bold, len(fonts) + 1)
        return len(fonts)

    def cell_xf(self, num_fmt_id: int, font_id: int) -> int:
        xfs = self._children("cellXfs", "xf")
        applies = []
        if num_fmt_id:
            applies.append('applyNumberFormat="1"')
        if font_id:
            applies.append('applyFont="1"')
        xf = (f'<{self.p}xf numFmtId="{num_fmt_id}" fontId="{font_id}" fillId="0" borderId="0" '
              f'xfId="0" {" ".join(applies)}/>')
        if xf in xfs:
            return xfs.index(xf)
        if not xfs:  # xf 0 is the default of every cell
            default = f'<{self.p}xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
            self._append("cellXfs", default, 1)
            xfs = [default]
        self._append("cellXfs", xf, len(xfs) + 1)
        return len(xfs)


class _StyleIds:
    __slots__ = ("header", "date", "datetime", "datetime_ms", "time", "time_ms", "duration",
                 "duration_ms")

    def __init__(self, styles: _Styles):
        bold = styles.bold_font()
        self.header = styles.cell_xf(0, bold)
        self.date = styles.cell_xf(styles.num_fmt(_DATE_FMT), 0)
        self.datetime = styles.cell_xf(styles.num_fmt(_DATETIME_FMT), 0)
        self.datetime_ms = styles.cell_xf(styles.num_fmt(_DATETIME_MS_FMT), 0)
        self.time = styles.cell_xf(styles.num_fmt(_TIME_FMT), 0)
        self.time_ms = styles.cell_xf(styles.num_fmt(_TIME_MS_FMT), 0)
        self.duration = styles.cell_xf(styles.num_fmt(_DURATION_FMT), 0)
        self.duration_ms = styles.cell_xf(styles.num_fmt(_DURATION_MS_FMT), 0)


# --------------------------------------------------------------------------- what a cell keeps
#
# write_sheet writes `_cell_values(column)`; `sheet_values` is that, with what reading gives
# for error cells. So a frame, the sheet written of it, and that sheet re-saved by Excel,
# LibreOffice or openpyxl all read back alike (equal under filepipe.hashing.hash_rows).


def excel_floats(values: np.ndarray) -> np.ndarray:
    """Floats as a sheet keeps them: ``float(f"{v:.15g}")``, the value rounded to 15
    significant digits (Excel shows 15, LibreOffice saves 15; openpyxl saves 16, which keeps
    these), vectorised. Idempotent. float32/float16 go through their own shortest text
    (float32 0.1 is 0.1); a finite value never becomes infinite.
    """
    if values.dtype != np.float64:
        values = values.astype(str).astype(np.float64)
    out = values.copy()
    mag = np.abs(values)
    # x * 10**k (10**k exact for |k| <= 22) is within half an ulp of the exact product; its
    # nearest integer n is the 15 digits unless the product is that close to a half, and
    # n / 10**k, one correctly rounded operation, is the double nearest to them.
    slow = np.isfinite(values) & (values != 0) & ((mag < 1e-7) | (mag >= 1e36))
    fast = np.flatnonzero((mag >= 1e-7) & (mag < 1e36))
    if len(fast):
        x = values[fast]
        k = SIGNIFICANT_DIGITS - 1 - np.floor(np.log10(np.abs(x))).astype(np.int64)
        scaled = _times_pow10(x, k)
        k += (np.abs(scaled) < 1e14).astype(np.int64) - (np.abs(scaled) >= 1e15)  # log10 off by one
        scaled = _times_pow10(x, k)
        out[fast] = _times_pow10(np.rint(scaled), -k)
        half = np.abs(scaled - np.floor(scaled) - 0.5) <= 0.5 * np.spacing(np.abs(scaled))
        slow[fast[half]] = True
    slow = np.flatnonzero(slow)
    if len(slow):  # near halves, tiny or huge magnitudes: decimal formatting
        out[slow] = [float(f"{v:.{SIGNIFICANT_DIGITS}g}") for v in values[slow].tolist()]
        over = slow[np.isinf(out[slow])]
        out[over] = np.copysign(_MAX_FLOAT_15, values[over])
    return out


def _times_pow10(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """x * 10**k for integer |k| <= 22, each with one rounding."""
    p = _POW10[np.abs(k)]
    return np.where(k >= 0, x * p, x / p)


def _excel_ints(values: np.ndarray, missing: np.ndarray) -> np.ndarray | None:
    """Integers as a sheet keeps them (more than 15 digits are rounded to 15, as numbers are),
    or None when all fit. int64 when every value still does, else float64 (NaN where
    `missing`)."""
    as_float = values.astype(np.float64)
    big = (np.abs(as_float) >= 1e15) & ~missing
    if not big.any():
        return None
    rounded = excel_floats(as_float)
    if not missing.any() and (np.abs(rounded) < 2.0**63).all():
        return rounded.astype(np.int64)
    rounded[missing] = np.nan
    return rounded


def clean_text(s: pd.Series) -> pd.Series:
    """Text as a cell keeps it: characters XML 1.0 cannot hold removed, CR LF and CR as LF
    (openpyxl and LibreOffice re-save them so). Missing values stay missing."""
    try:
        t = s.astype("str")
        if not t.str.contains(_UNKEPT_TEXT, regex=True).any():
            return t
        return (t.str.replace("\r\n", "\n", regex=False).str.replace("\r", "\n", regex=False)
                 .str.replace(_ILLEGAL_XML_CHARS, "", regex=True))
    except (UnicodeEncodeError, ValueError, TypeError):  # lone surrogates cannot go to Arrow
        return pd.Series([v if is_missing(v) else _clean_one(str(v)) for v in s],
                         index=s.index, dtype="str")


def _clean_one(text: str) -> str:
    return _ILLEGAL_XML_RE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def _round_ms(us: np.ndarray) -> np.ndarray:
    """Microseconds (int64) rounded to whole milliseconds, halves to even (as pandas)."""
    q, r = np.divmod(us, 1000)
    return (q + ((r > 500) | ((r == 500) & (q % 2 == 1)))) * 1000


def _excel_datetimes(values: np.ndarray) -> np.ndarray:
    """Naive datetime64 values as a sheet keeps them: to the millisecond; those that are no
    Excel date (before 1900-01-01, from 10000-01-01 on) as ISO-8601 text (object array then)."""
    us = values.astype("datetime64[us]").view(np.int64)
    nat = np.isnat(values)
    rounded = np.where(nat, us, _round_ms(us)).view("datetime64[us]")
    outside = ~nat & ((rounded.view(np.int64) < _MIN_SERIAL_US)
                      | (rounded.view(np.int64) >= _MAX_SERIAL_US))
    if not outside.any():
        return rounded
    out = pd.Series(rounded).astype(object).to_numpy(copy=True)
    out[nat] = None
    out[outside] = np.datetime_as_string(rounded[outside], unit="auto")
    return out


def _time_us(values: np.ndarray) -> np.ndarray:
    """`datetime.time` values as microseconds since midnight, to the millisecond (a time
    rounded up to midnight stays 23:59:59.999: it is a time of that day)."""
    us = np.fromiter((((t.hour * 60 + t.minute) * 60 + t.second) * 1_000_000 + t.microsecond
                      for t in values), dtype=np.int64, count=len(values))
    return np.minimum(_round_ms(us), _LAST_MS_OF_DAY_US)


def _times_of(us: np.ndarray) -> np.ndarray:
    return pd.to_datetime(us, unit="us").time


def _excel_durations(values: Any) -> np.ndarray:
    """Timedelta-likes (NaT allowed) as timedelta64[us], to the millisecond."""
    td = pd.to_timedelta(pd.Series(values)).to_numpy().astype("timedelta64[us]")
    us = td.view(np.int64)
    return np.where(np.isnat(td), us, _round_ms(us)).view("timedelta64[us]")


def _cell_values(s: pd.Series, read: bool) -> pd.Series | None:
    """What write_sheet writes of column `s` (`read`: what reading it back gives, where error
    cells and empty text are missing), or None when that is `s` itself."""
    dtype = s.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        s = s.astype(object).where(s.notna(), None)
        new = _cell_values(s, read)
        return s if new is None else new
    if pd.api.types.is_bool_dtype(dtype):
        return None
    if pd.api.types.is_integer_dtype(dtype):
        missing = s.isna().to_numpy()
        np_dtype = getattr(dtype, "numpy_dtype", dtype)
        ints = s.to_numpy(dtype=np_dtype, na_value=0) if missing.any() else s.to_numpy(dtype=np_dtype)
        rounded = _excel_ints(ints, missing)
        return None if rounded is None else pd.Series(rounded, index=s.index, name=s.name)
    if pd.api.types.is_float_dtype(dtype):
        floats = excel_floats(s.to_numpy(dtype=getattr(dtype, "numpy_dtype", dtype), na_value=np.nan))
        if read:
            floats[np.isinf(floats)] = np.nan  # written as #NUM!, read as missing
        return pd.Series(floats, index=s.index, name=s.name)
    if pd.api.types.is_datetime64_any_dtype(dtype):
        if getattr(dtype, "tz", None) is not None:
            s = s.dt.tz_convert("UTC").dt.tz_localize(None)  # documented: UTC, naive
        return pd.Series(_excel_datetimes(s.to_numpy()), index=s.index, name=s.name)
    if pd.api.types.is_timedelta64_dtype(dtype):
        return pd.Series(_excel_durations(s.to_numpy()), index=s.index, name=s.name)
    if isinstance(dtype, pd.StringDtype):
        text = clean_text(s)
        return text.mask(text == "") if read else text
    objs = s.to_numpy(dtype=object) if dtype == object else s.astype(object).to_numpy(dtype=object)
    new = _object_cell_values(objs, read)
    if new is None:
        return None if dtype == object else pd.Series(objs, index=s.index, name=s.name)
    return pd.Series(new, index=s.index, name=s.name, dtype=object)


def _object_cell_values(values: np.ndarray, read: bool) -> np.ndarray | None:
    """`_cell_values` of a mixed object column, type by type (None: unchanged)."""
    import datetime as _dt

    types = np.frompyfunc(type, 1, 1)(values)
    codes, uniques = pd.factorize(types)
    out: np.ndarray | None = None
    for code, t in enumerate(uniques):
        idx = np.flatnonzero(codes == code)
        vals = values[idx]
        if t in (type(None), type(pd.NA), type(pd.NaT)) or issubclass(t, (bool, np.bool_)):
            continue
        if issubclass(t, (int, np.integer)):
            new = _object_ints(vals, read)
        elif issubclass(t, (float, np.floating)):
            floats = excel_floats(vals.astype(np.float64))
            if read:
                floats[np.isinf(floats)] = np.nan
            new = _obj(floats.tolist())
        elif issubclass(t, str):
            new = _object_text(vals, read)
        elif issubclass(t, (_dt.datetime, np.datetime64, _dt.date)):
            stamps = _excel_datetimes(_to_naive_utc(vals))
            new = pd.Series(stamps).astype(object).to_numpy(copy=True)
            new[pd.isna(new)] = None
        elif issubclass(t, _dt.time):
            aware = np.fromiter((v.tzinfo is not None for v in vals), dtype=bool, count=len(vals))
            new = vals.copy()  # a time with a timezone is no Excel time: it is written as text
            new[~aware] = _times_of(_time_us(vals[~aware]))
            new[aware] = _object_text(_obj(list(map(str, vals[aware]))), read)
        elif issubclass(t, (_dt.timedelta, np.timedelta64)):
            durations = _excel_durations(vals)
            new = pd.Series(durations).astype(object).to_numpy(copy=True)
            new[np.isnat(durations)] = None
        elif issubclass(t, (dict, list, tuple, np.ndarray)):
            new = _object_text(_obj(list(map(cell_json, vals))), read)
        else:  # Decimal, bytes, custom objects...: str(value)
            present = ~np.fromiter(map(is_missing, vals), bool, len(vals))
            new = vals.copy()
            new[present] = _object_text(_obj(list(map(str, vals[present]))), read)
        if new is not None:
            if out is None:
                out = values.copy()
            out[idx] = new
    return out


def _object_ints(values: np.ndarray, read: bool) -> np.ndarray | None:
    """Python/numpy ints of an object column: more than 15 digits rounded; beyond any double
    the error value #NUM! (missing when `read`). None when all fit."""
    try:
        floats = values.astype(np.float64)
    except OverflowError:
        floats = np.array([float(v) if abs(v) < 2**1023 else np.copysign(np.inf, v) for v in values])
    big = ~(np.abs(floats) < 1e15)
    if not big.any():
        return None
    new = values.copy()
    rounded = excel_floats(floats[big])
    new[big] = [int(v) if np.isfinite(v) else (None if read else v) for v in rounded.tolist()]
    return new


def _object_text(values: np.ndarray, read: bool) -> np.ndarray:
    """Strings (object array) as cells keep them; "" is missing when `read`."""
    text = clean_text(pd.Series(values, dtype=object))
    if read:
        text = text.mask(text == "")
    return text.to_numpy(dtype=object, na_value=None)


def sheet_values(df: pd.DataFrame, keep: Any = ()) -> pd.DataFrame:
    """`df` as :func:`read_sheet` gives it back once :func:`write_sheet` wrote it — and after
    Excel, LibreOffice or openpyxl re-saved that workbook: row by row equal under
    :func:`filepipe.hashing.hash_rows`. Idempotent. Columns are named by their header text
    (:func:`header_texts`); the values of the columns named in `keep` are left as they are.

    Numbers keep 15 significant digits (ints too); ``±inf`` (``#NUM!``), ``""`` and text of
    only control characters become missing; datetimes become naive UTC at the millisecond
    (ISO text outside Excel's dates), ``datetime.date`` midnight datetimes; times and durations
    are kept to the millisecond; CR becomes LF and control characters go; dict/list cells
    become JSON text and other objects ``str(value)``.
    """
    out = df.copy()
    for j, name in enumerate(df.columns):
        if name not in keep:
            new = _cell_values(df.iloc[:, j], read=True)
            if new is not None:
                out.isetitem(j, new)
    out.columns = [header_text(n) for n in df.columns]
    return out


def cell_text(value: Any) -> str | None:
    """The text of a cell value, as filepipe names headers and text keys (None: empty cell).

    Text as it is; ``TRUE``/``FALSE``; numbers in their shortest form of at most 15
    significant digits, integral ones without ``.0`` (``2019``, ``2019.5``, ``1e+20``);
    ``#NUM!`` for infinities; dates ISO (``2026-11-30``), datetimes ``2026-11-30 10:15:00``
    (UTC for aware ones); times ``13:30:00``; durations as ``[h]:mm:ss`` shows them
    (``36:00:00``); milliseconds only when present; anything else ``str(value)``.
    """
    import datetime as _dt

    if isinstance(value, str):
        return value
    if value is None or is_missing(value):
        return None
    if isinstance(value, (bool, np.bool_)):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, np.integer)) and abs(int(value)) < 10**15:
        return str(int(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        x = float(excel_floats(np.array([float(value)]))[0]) if abs(value) < 2**1023 else np.inf
        if np.isinf(x):
            return "#NUM!"
        return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)
    if isinstance(value, (_dt.datetime, np.datetime64)):
        ts = pd.Timestamp(value)
        if ts.tz is not None:
            ts = ts.tz_convert("UTC").tz_localize(None)
        return ts.date().isoformat() if ts == ts.normalize() else ts.isoformat(sep=" ")
    if isinstance(value, (_dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, (_dt.timedelta, np.timedelta64)):
        us = int(pd.Timedelta(value) / pd.Timedelta(microseconds=1))
        sign, us = ("-" if us < 0 else ""), abs(us)
        seconds, frac = divmod(us, 1_000_000)
        text = f"{sign}{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        return text + f".{frac:06d}".rstrip("0") if frac else text
    return str(value)


def header_text(name: Any) -> str:
    """The header cell text of a column name: :func:`cell_text`, as a cell keeps it."""
    return _clean_one(cell_text(name) or "")


def header_texts(columns: Any, where: str) -> list[str]:
    """Header cell texts of `columns`; SheetError when two columns get the same header or
    one is longer than a cell holds."""
    texts = [header_text(c) for c in columns]
    first: dict[str, Any] = {}
    for i, (name, text) in enumerate(zip(columns, texts)):
        if len(text) > MAX_CELL_CHARS:
            raise SheetError(f"{where}, row 1 (header), column {i + 1}: name of {len(text):,} "
                             f"characters; an Excel cell holds at most {MAX_CELL_CHARS:,}")
        if text in first:
            raise SheetError(f"{where}: columns {first[text]!r} and {name!r} would both be headed "
                             f"{text!r} (headers are text); rename one of them")
        first[text] = name
    return texts


# --------------------------------------------------------------------------- cells
#
# A chunk of rows is an object array `grid` of shape (rows, 3 + 5 * columns + 1):
#   '<row r="' | row number | '">' | per column: '<c r="B' | row number |
#   '" s="4"><v>' (attributes, opening of the value) | value text | '</v></c>' | ... | '</row>'
# An empty cell keeps its five slots ''. "".join(grid.ravel().tolist()) is the XML.
# Formatters fill the slots with numpy (masked) assignments, so no string is built per cell
# except the value text itself, made by pandas/Arrow casts and string kernels, or by
# map(repr)/map(str)/json.dumps for floats, Python ints, mixed-object cells and JSON.


def _obj(values: Any) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr


class _Ctx:
    """What the formatters need besides the values: style ids, where errors point."""

    def __init__(self, path: str, sheet: str, styles: _StyleIds | None):
        self.path, self.sheet, self.styles = path, sheet, styles
        self.column = ""
        self.rows: np.ndarray | None = None  # Excel row numbers of the current chunk
        self.labels: Any = None  # index labels of the current chunk


class _Slots:
    """The five grid columns of one sheet column, for one chunk of rows."""

    __slots__ = ("open", "row", "mid", "val", "close", "prefix", "rowstr")

    def __init__(self, grid: np.ndarray, j: int, prefix: str, rowstr: np.ndarray):
        base = 3 + 5 * j
        self.open, self.row, self.mid, self.val, self.close = (grid[:, base + k] for k in range(5))
        self.prefix, self.rowstr = prefix, rowstr

    def put(self, idx: np.ndarray | None, mid: Any, val: Any, close: str) -> None:
        """Fill the cells at chunk positions `idx` (None: all rows)."""
        if idx is None:
            self.open[:] = self.prefix
            self.row[:] = self.rowstr
            self.mid[:] = mid
            self.val[:] = val
            self.close[:] = close
        elif len(idx):
            self.open[idx] = self.prefix
            self.row[idx] = self.rowstr[idx]
            self.mid[idx] = mid
            self.val[idx] = val
            self.close[idx] = close


def _sub(idx: np.ndarray | None, sub: np.ndarray) -> np.ndarray:
    return sub if idx is None else idx[sub]


def _int_text(values: np.ndarray) -> np.ndarray:
    return pd.Series(values, copy=False).astype(str).to_numpy(dtype=object)


def _float_text(values: np.ndarray) -> np.ndarray:
    """Text of finite floats that reads back as exactly the same double.

    Values with at most 6 decimals (prices, measurements...) are formatted with integer
    arithmetic and Arrow string kernels; the others with repr() (shortest round-trip)."""
    if values.dtype != np.float64:
        return values.astype(str).astype(object)  # float16/32: their own shortest repr
    with np.errstate(invalid="ignore", over="ignore"):
        q = np.round(values * 1e6)
        short = (np.abs(q) < 2.0**53) & (q / 1e6 == values)
    if not short.any():
        return _obj(list(map(repr, values.tolist())))
    out = np.empty(len(values), dtype=object)
    qi = q[short].astype(np.int64)
    neg = qi < 0
    a = np.abs(qi)
    whole, frac = np.divmod(a, 1_000_000)
    dec = pd.Series(frac, copy=False).astype(str).str.zfill(6).str.rstrip("0")
    dec = dec.where(dec != "", "0")  # 2.0 stays "2.0", like repr (openpyxl reads "2" as int)
    text = pd.Series(whole, copy=False).astype(str) + "." + dec
    if neg.any():
        text = text.where(~neg, "-" + text)
    out[short] = text.to_numpy(dtype=object)
    rest = ~short
    if rest.any():
        out[rest] = list(map(repr, values[rest].tolist()))
    return out


def _num_mid(style: int | None) -> str:
    return f'" s="{style}"><v>' if style else '"><v>'


def _put_numbers(slots: _Slots, idx: np.ndarray | None, text: Any, style: int | None = None) -> None:
    slots.put(idx, _num_mid(style), text, "</v></c>")


def _put_floats(slots: _Slots, idx: np.ndarray | None, values: np.ndarray) -> None:
    finite = np.isfinite(values)
    if finite.all():
        _put_numbers(slots, idx, _float_text(values))
        return
    sub = np.flatnonzero(finite)
    if len(sub):
        _put_numbers(slots, _sub(idx, sub), _float_text(values[sub]))
    inf = np.flatnonzero(np.isinf(values))
    if len(inf):  # Excel has no infinities: show the error value #NUM!
        slots.put(_sub(idx, inf), '" t="e"><v>', "#NUM!", "</v></c>")


def _put_bools(slots: _Slots, idx: np.ndarray | None, values: np.ndarray) -> None:
    slots.put(idx, '" t="b"><v>', np.where(values.astype(bool), "1", "0").astype(object), "</v></c>")


def _escape_strings(values: Any, ctx: _Ctx, idx: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """XML text of strings as cells keep them (`clean_text`; no missing values) and where
    xml:space="preserve" is needed."""
    s = pd.Series(values, dtype="str", copy=False)
    lengths = s.str.len().to_numpy()
    too_long = np.flatnonzero(lengths > MAX_CELL_CHARS)
    if len(too_long):
        k = int(too_long[0])
        where = int(idx[k]) if idx is not None else k
        row = int(ctx.rows[where]) if ctx.rows is not None else 1
        label = f" (index {ctx.labels[where]!r})" if ctx.labels is not None else ""
        raise SheetError(
            f"{ctx.path}: sheet {ctx.sheet!r}, row {row}{label}, column {ctx.column!r}: "
            f"text of {int(lengths[k]):,} characters; an Excel cell holds at most "
            f"{MAX_CELL_CHARS:,}")
    text = s.to_numpy(dtype=object)
    preserve = np.zeros(len(text), dtype=bool)
    special = np.flatnonzero(s.str.contains(_SPECIAL_TEXT, regex=True).to_numpy(dtype=bool))
    if len(special):  # only the strings that need it go through the escaping passes
        t = s.iloc[special]
        preserve[special] = t.str.contains(r"^[ \t\n]|[ \t\n]$", regex=True).to_numpy(dtype=bool)
        t = (t.str.replace("&", "&amp;", regex=False)
              .str.replace("<", "&lt;", regex=False)
              .str.replace(">", "&gt;", regex=False))
        esc = t.to_numpy(dtype=object)
        maybe = np.flatnonzero(t.str.contains("_x", regex=False).to_numpy(dtype=bool))
        if len(maybe):  # Excel decodes _xHHHH_ in text: escape a literal one as _x005F_xHHHH_
            esc[maybe] = [_EXCEL_ESCAPE_RE.sub("_x005F_", v) for v in esc[maybe]]
        text[special] = esc
    return text, preserve


def _str_mids(style: int | None) -> tuple[str, str]:
    sattr = f' s="{style}"' if style else ""
    return (f'"{sattr} t="inlineStr"><is><t>',
            f'"{sattr} t="inlineStr"><is><t xml:space="preserve">')


def _put_strings(slots: _Slots, idx: np.ndarray | None, values: Any, ctx: _Ctx) -> None:
    if len(values) == 0:
        return
    text, preserve = _escape_strings(values, ctx, idx)
    plain, pres = _str_mids(None)
    mid: Any = np.where(preserve, pres, plain).astype(object) if preserve.any() else plain
    slots.put(idx, mid, text, "</t></is></c>")


def _datetime_style(us: np.ndarray, styles: _StyleIds) -> int:
    if (us % 1_000_000 != 0).any():
        return styles.datetime_ms
    if (us % _US_PER_DAY != 0).any():
        return styles.datetime
    return styles.date


def _serial_text(us: np.ndarray) -> np.ndarray:
    """Excel serial numbers of µs since 1970 (all within Excel's date range), as text.

    Whole days as integers, else 11 decimals (0.9 µs), trailing zeros removed: exact
    integer arithmetic, no float formatting. Days before 1900-03-01 are serials 1-59
    (Excel counts a 1900-02-29 that did not exist)."""
    days, frac = np.divmod(us, _US_PER_DAY)
    serials = days + _EXCEL_EPOCH_OFFSET - (days < _LEAP_BUG_DAY)
    days_text = pd.Series(serials, copy=False).astype(str)
    if not frac.any():
        return days_text.to_numpy(dtype=object)
    digits = np.rint(frac * (1e11 / _US_PER_DAY)).astype(np.int64)
    dec = pd.Series(digits, copy=False).astype(str).str.zfill(11).str.rstrip("0")
    text = days_text.where(dec == "", days_text + "." + dec)
    return text.to_numpy(dtype=object)


def _put_datetimes(slots: _Slots, idx: np.ndarray | None, values: np.ndarray, style: int) -> None:
    """`values`: naive datetime64 within Excel's dates (`_excel_datetimes`); NaT stays empty."""
    us = values.astype("datetime64[us]").view("int64")
    ok = ~np.isnat(values)
    if ok.all():
        _put_numbers(slots, idx, _serial_text(us), style)
    else:
        _put_numbers(slots, _sub(idx, np.flatnonzero(ok)), _serial_text(us[ok]), style)


def _fraction_style(us: np.ndarray, whole: int, with_ms: int) -> int:
    return with_ms if (us % 1_000_000 != 0).any() else whole


def _put_days(slots: _Slots, idx: np.ndarray | None, us: np.ndarray, style: int) -> None:
    """Times of day and durations (µs, whole milliseconds) as numbers of days."""
    _put_numbers(slots, idx, _float_text((us // 1000) / _MS_PER_DAY), style)


def _put_durations(slots: _Slots, idx: np.ndarray | None, values: np.ndarray, style: int) -> None:
    """`values`: timedelta64[us] at whole milliseconds; NaT stays empty."""
    ok = ~np.isnat(values)
    us = values.view(np.int64)
    if ok.all():
        _put_days(slots, idx, us, style)
    else:
        _put_days(slots, _sub(idx, np.flatnonzero(ok)), us[ok], style)


def _to_naive_utc(values: Any) -> np.ndarray:
    """datetime-likes (possibly tz-aware, mixed) -> naive UTC datetime64[us]."""
    dt = pd.to_datetime(pd.Series(values, dtype=object), utc=True)
    return dt.dt.tz_localize(None).to_numpy().astype("datetime64[us]")


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return str(v)


def cell_json(v: Any) -> str:
    """A dict/list cell as the compact JSON text written to (and read back from) a sheet."""
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"), default=_json_default)


def is_missing(v: Any) -> bool:
    """Is `v` a missing value (None, NaN, NaT, pd.NA)? False for anything pd.isna cannot judge."""
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _put_objects(slots: _Slots, values: np.ndarray, ctx: _Ctx) -> None:
    """Mixed object column, as `_object_cell_values` made it: group the cells by Python
    type, format each group as arrays."""
    import datetime as _dt

    if len(values) == 0:
        return
    styles = ctx.styles
    assert styles is not None
    types = np.frompyfunc(type, 1, 1)(values)
    codes, uniques = pd.factorize(types)
    for code, t in enumerate(uniques):
        idx = np.flatnonzero(codes == code)
        vals = values[idx]
        if t is type(None) or t is type(pd.NA) or t is type(pd.NaT):
            continue
        if issubclass(t, (bool, np.bool_)):
            _put_bools(slots, idx, vals.astype(bool))
        elif issubclass(t, (int, np.integer)):
            _put_numbers(slots, idx, _obj(list(map(str, map(int, vals)))))
        elif issubclass(t, (float, np.floating)):
            _put_floats(slots, idx, vals.astype(np.float64))
        elif issubclass(t, str):
            _put_strings(slots, idx, vals, ctx)
        elif issubclass(t, _dt.datetime):
            naive = _to_naive_utc(vals)
            _put_datetimes(slots, idx, naive, _datetime_style(naive.view("int64"), styles))
        elif issubclass(t, _dt.time):
            us = _time_us(vals)
            _put_days(slots, idx, us, _fraction_style(us, styles.time, styles.time_ms))
        elif issubclass(t, _dt.timedelta):
            us = _excel_durations(vals).view(np.int64)
            _put_days(slots, idx, us, _fraction_style(us, styles.duration, styles.duration_ms))
        else:
            raise TypeError(f"filepipe.xlsx: no cell format for {t.__name__} (column {ctx.column!r})")


# --------------------------------------------------------------------------- columns


class _Column:
    """One DataFrame column prepared for writing: a slot filler and a display width."""

    def __init__(self, name: str, letter: str, series: pd.Series, ctx: _Ctx):
        self.name, self.letter = name, letter
        self.prefix = f'<c r="{letter}'
        self.width_chars = 0.0
        self._fill: Callable[[slice, _Slots, _Ctx], None]
        self._prepare(series, ctx)

    def _prepare(self, s: pd.Series, ctx: _Ctx) -> None:
        styles = ctx.styles
        assert styles is not None
        converted = _cell_values(s, read=False)
        if converted is not None:
            s = converted
        dtype = s.dtype

        if pd.api.types.is_bool_dtype(dtype):
            mask = s.isna().to_numpy()
            bools = s.to_numpy(dtype=bool, na_value=False)
            self.width_chars = 5
            self._fill = self._masked(bools, mask, lambda sl, i, v: _put_bools(sl, i, v))
        elif pd.api.types.is_integer_dtype(dtype):
            mask = s.isna().to_numpy()
            np_dtype = getattr(dtype, "numpy_dtype", dtype)
            ints = s.to_numpy(dtype=np_dtype, na_value=0) if mask.any() else s.to_numpy(dtype=np_dtype)
            if (~mask).any():
                v = ints[~mask]
                self.width_chars = max(len(str(v.min())), len(str(v.max())))
            self._fill = self._masked(ints, mask, lambda sl, i, v: _put_numbers(sl, i, _int_text(v)))
        elif pd.api.types.is_float_dtype(dtype):
            floats = s.to_numpy(dtype=np.float64, na_value=np.nan)
            self.width_chars = _float_width(floats)
            self._fill = lambda sl, slots, ctx: _put_floats(slots, None, floats[sl])
        elif pd.api.types.is_datetime64_dtype(dtype):
            stamps = s.to_numpy()
            valid = ~np.isnat(stamps)
            us = stamps[valid].astype("datetime64[us]").view("int64")
            style = _datetime_style(us, styles) if valid.any() else styles.date
            self.width_chars = {styles.date: 10, styles.datetime: 19, styles.datetime_ms: 23}[style]
            self._fill = lambda sl, slots, ctx: _put_datetimes(slots, None, stamps[sl], style)
        elif pd.api.types.is_timedelta64_dtype(dtype):
            spans = s.to_numpy()
            us = spans[~np.isnat(spans)].view(np.int64)
            style = _fraction_style(us, styles.duration, styles.duration_ms)
            self.width_chars = 10 if style == styles.duration else 14
            self._fill = lambda sl, slots, ctx: _put_durations(slots, None, spans[sl], style)
        elif isinstance(dtype, pd.StringDtype):
            strs = s
            mask = strs.isna().to_numpy()
            self.width_chars = float(strs.str.len().max()) if (~mask).any() else 0

            def fill(sl: slice, slots: _Slots, ctx: _Ctx) -> None:
                part, m = strs.iloc[sl], mask[sl]
                if not m.any():
                    _put_strings(slots, None, part, ctx)
                else:
                    keep = np.flatnonzero(~m)
                    _put_strings(slots, keep, part.iloc[keep], ctx)

            self._fill = fill
        else:  # object: cell by cell type
            objs = s.to_numpy(dtype=object)
            try:
                lens = pd.Series(objs, dtype=object).str.len()  # strings only (approximate)
                self.width_chars = float(lens.max()) if lens.notna().any() else 10
            except (AttributeError, TypeError):
                self.width_chars = 10
            self._fill = lambda sl, slots, ctx: _put_objects(slots, objs[sl], ctx)

    @staticmethod
    def _masked(values: np.ndarray, mask: np.ndarray,
                put: Callable[[_Slots, np.ndarray | None, np.ndarray], None]
                ) -> Callable[[slice, _Slots, _Ctx], None]:
        def fill(sl: slice, slots: _Slots, ctx: _Ctx) -> None:
            m = mask[sl]
            if not m.any():
                put(slots, None, values[sl])
            else:
                keep = np.flatnonzero(~m)
                if len(keep):
                    put(slots, keep, values[sl][keep])
        return fill

    def fill(self, sl: slice, grid: np.ndarray, j: int, rowstr: np.ndarray, ctx: _Ctx) -> None:
        ctx.column = self.name
        self._fill(sl, _Slots(grid, j, self.prefix, rowstr), ctx)

    def width(self) -> float:
        header = len(self.name) + 2.5  # room for the autofilter button
        content = min(float(self.width_chars), MAX_COL_WIDTH) + 1.5
        return round(min(MAX_COL_WIDTH, max(header, content, 6.0)), 2)


def _float_width(vals: np.ndarray) -> float:
    finite = vals[np.isfinite(vals)]
    if not len(finite):
        return 6 if np.isinf(vals).any() else 0
    lo, hi = float(finite.min()), float(finite.max())
    big = max(abs(lo), abs(hi))
    if big >= 1e11:
        return 11  # Excel's General format switches to 1.23457E+11
    int_digits = len(str(int(big))) + (1 if lo < 0 else 0)
    for decimals in range(0, 5):
        scaled = finite * 10.0**decimals
        if np.all(np.abs(scaled - np.round(scaled)) < 1e-6 * np.maximum(1.0, np.abs(scaled))):
            return min(11, int_digits + (decimals + 1 if decimals else 0))
    return 11  # General shows at most ~11 characters


# --------------------------------------------------------------------------- sheet XML


def _sheet_xml(df: pd.DataFrame, columns: list[_Column], ctx: _Ctx,
               tab_selected: bool) -> Iterator[bytes]:
    """Yield the worksheet XML in pieces of a few MB."""
    styles = ctx.styles
    assert styles is not None
    n_rows, n_cols = len(df), len(columns)
    ref = _sheet_ref(n_rows, n_cols)
    sel = ' tabSelected="1"' if tab_selected else ""
    parts = [
        _XML_DECL,
        f'<worksheet xmlns="{_NS_MAIN}" xmlns:r="{_NS_R}">',
        f'<dimension ref="{ref}"/>',
        f'<sheetViews><sheetView{sel} workbookViewId="0">'
        '<pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" state="frozen"/>'
        '<selection pane="bottomLeft" activeCell="A2" sqref="A2"/>'
        "</sheetView></sheetViews>",
        '<sheetFormatPr defaultRowHeight="15"/>',
    ]
    if n_cols:
        parts.append("<cols>")
        for i, col in enumerate(columns, start=1):
            parts.append(f'<col min="{i}" max="{i}" width="{col.width()}" customWidth="1"/>')
        parts.append("</cols>")
    parts.append("<sheetData>")
    if n_cols:
        ctx.rows, ctx.labels, ctx.column = np.array([1]), None, "(header)"
        text, preserve = _escape_strings(_obj([c.name for c in columns]), ctx, None)
        plain, pres = _str_mids(styles.header)
        parts.append('<row r="1">')
        for col, t, p in zip(columns, text, preserve):
            parts.append(f"{col.prefix}1{pres if p else plain}{t}</t></is></c>")
        parts.append("</row>")
    yield "".join(parts).encode("utf-8")

    if n_cols and n_rows:
        chunk = max(1_000, _ROW_CELL_BUDGET // n_cols)
        index = df.index
        for lo in range(0, n_rows, chunk):
            hi = min(n_rows, lo + chunk)
            rownums = np.arange(lo + 2, hi + 2)
            rowstr = _int_text(rownums)
            ctx.rows, ctx.labels = rownums, index[lo:hi]
            grid = np.empty((hi - lo, 4 + 5 * n_cols), dtype=object)
            grid[...] = ""
            grid[:, 0] = '<row r="'
            grid[:, 1] = rowstr
            grid[:, 2] = '">'
            grid[:, -1] = "</row>"
            for j, col in enumerate(columns):
                col.fill(slice(lo, hi), grid, j, rowstr, ctx)
            yield "".join(grid.ravel().tolist()).encode("utf-8")

    tail = ["</sheetData>"]
    if n_cols:
        tail.append(f'<autoFilter ref="{ref}"/>')
    tail.append('<pageMargins left="0.7" right="0.7" top="0.75" bottom="0.75" header="0.3" footer="0.3"/>')
    tail.append("</worksheet>")
    yield "".join(tail).encode("utf-8")


def _sheet_ref(n_rows: int, n_cols: int) -> str:
    """Range of the header plus data, e.g. A1:J100001."""
    return f"A1:{_col_letter(n_cols - 1)}{n_rows + 1}" if n_cols else "A1"


def _check_shape(df: pd.DataFrame, ctx: _Ctx) -> list[str]:
    """Raise SheetError when `df` does not fit in a sheet; returns the header texts."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"write_sheet expects a pandas DataFrame, got {type(df).__name__}")
    n_rows, n_cols = df.shape
    if n_rows + 1 > MAX_ROWS:
        raise SheetError(f"{ctx.path}: sheet {ctx.sheet!r}: {n_rows:,} rows plus the header do not "
                         f"fit in an Excel sheet ({MAX_ROWS:,} rows)")
    if n_cols > MAX_COLS:
        raise SheetError(f"{ctx.path}: sheet {ctx.sheet!r}: {n_cols:,} columns do not fit in an "
                         f"Excel sheet ({MAX_COLS:,} columns)")
    return header_texts(df.columns, f"{ctx.path}: sheet {ctx.sheet!r}")


def _prepare_columns(df: pd.DataFrame, names: list[str], ctx: _Ctx) -> list[_Column]:
    return [_Column(name, _col_letter(i), df.iloc[:, i], ctx) for i, name in enumerate(names)]


# --------------------------------------------------------------------------- write_sheet


def _tab_selected(pkg: _Package, part: str) -> bool:
    try:
        with pkg.zf.open(pkg.member(part)) as f:
            start = f.read(65536).decode("utf-8", "replace")
    except KeyError:
        return False
    m = re.search(r"<(?:\w+:)?sheetView\b[^>]*>", start)
    return bool(m and re.search(r'\btabSelected\s*=\s*["\'](1|true)["\']', m.group(0)))


_WORKBOOK_AFTER_DEFINED_NAMES = ["calcPr", "oleSize", "customWorkbookViews", "pivotCaches",
                                 "smartTagPr", "smartTagTypes", "webPublishing", "fileRecoveryPr",
                                 "webPublishObjects", "extLst"]


def _insert_before_first(xml: str, p: str, tags: list[str], root: str, piece: str) -> str:
    pos = None
    for tag in tags:
        m = re.search(r"<" + re.escape(p) + tag + r"\b", xml)
        if m:
            pos = m.start()
            break
    if pos is None:
        pos = xml.rindex("</" + p + root + ">")
    return xml[:pos] + piece + xml[pos:]


def _set_filter_database(xml: str, p: str, sheet_index: int, sheet: str, ref: str | None) -> str:
    """Point the hidden name _xlnm._FilterDatabase of sheet `sheet_index` at `ref` (None: drop it).

    Excel does not need it, but LibreOffice only shows an autofilter that has this name."""
    pe = re.escape(p)
    el_re = re.compile(r"<" + pe + r"definedName\b[^>]*?(?:/>|>.*?</" + pe + r"definedName>)", re.S)
    sec = re.search(r"<" + pe + r"definedNames\b[^>]*?(/?)>", xml)
    if sec and not sec.group(1):
        close = xml.index("</" + p + "definedNames>", sec.end())
        inner = xml[sec.end():close]

        def ours(m: re.Match[str]) -> str:
            a = _attrs(m.group(0)[: m.group(0).index(">") + 1])
            if a.get("name") == "_xlnm._FilterDatabase" and a.get("localSheetId") == str(sheet_index):
                return ""
            return m.group(0)

        inner = el_re.sub(ours, inner)
        xml = xml[:sec.end()] + inner + xml[close:]
    if ref is None:
        return xml
    quoted = "'" + sheet.replace("'", "''") + "'"
    a, b = ref.split(":") if ":" in ref else (ref, ref)
    absolute = "$" + re.sub(r"(\d+)$", r"$\1", a) + ":$" + re.sub(r"(\d+)$", r"$\1", b)
    el = (f'<{p}definedName name="_xlnm._FilterDatabase" localSheetId="{sheet_index}" hidden="1">'
          f"{_text(quoted)}!{absolute}</{p}definedName>")
    sec = re.search(r"<" + pe + r"definedNames\b[^>]*?(/?)>", xml)
    if sec and sec.group(1):
        open_tag = xml[sec.start():sec.end()][:-2].rstrip() + ">"
        return xml[:sec.start()] + open_tag + el + f"</{p}definedNames>" + xml[sec.end():]
    if sec:
        close = xml.index("</" + p + "definedNames>", sec.end())
        return xml[:close] + el + xml[close:]
    return _insert_before_first(xml, p, _WORKBOOK_AFTER_DEFINED_NAMES, "workbook",
                                f"<{p}definedNames>{el}</{p}definedNames>")


def _set_full_calc_on_load(xml: str, p: str) -> str:
    m = re.search(r"<" + re.escape(p) + r"calcPr\b[^>]*?/?>", xml)
    if m:
        tag = m.group(0)
        if re.search(r"\bfullCalcOnLoad\s*=", tag):
            new = re.sub(r'\bfullCalcOnLoad\s*=\s*["\'][^"\']*["\']', 'fullCalcOnLoad="1"', tag)
        else:
            end = -2 if tag.endswith("/>") else -1
            new = tag[:end].rstrip() + ' fullCalcOnLoad="1"' + tag[end:]
        return xml[:m.start()] + new + xml[m.end():]
    return _insert_before_first(xml, p, _WORKBOOK_AFTER_DEFINED_NAMES[1:], "workbook",
                                f'<{p}calcPr fullCalcOnLoad="1"/>')


class _Plan:
    """What to write: replaced/added/deleted members of the package."""

    def __init__(self) -> None:
        self.replace: dict[str, bytes] = {}  # member (exact name) -> new bytes
        self.delete: set[str] = set()  # lower-case names
        self.sheet_part = ""
        self.tab_selected = False
        self.styles_part = ""


def _plan(pkg: _Package, sheet: str, new_workbook: bool,
          shape: tuple[int, int]) -> tuple[_Plan, _Styles]:
    plan = _Plan()
    path = pkg.path
    entry = pkg.find_sheet(sheet)
    sheet_index = pkg.sheets.index(entry) if entry is not None else len(pkg.sheets)
    wb_xml = pkg.wb_xml
    wb_rels = [dict(r) for r in pkg.wb_rels]
    ct = pkg.ct
    graph_before = pkg.rels_graph()

    if entry is not None:
        part, rtype = pkg.sheet_part(entry)
        if rtype != _REL_WORKSHEET:
            kind = rtype.rsplit("/", 1)[-1]
            raise SheetError(f"{path}: sheet {entry.name!r} is a {kind}, not a worksheet; "
                             "filepipe only replaces worksheets it wrote")
        if not part.lower().endswith(".xml"):
            raise SheetError(f"{path}: sheet {entry.name!r} is stored in an unsupported format")
        plan.sheet_part = part
        plan.tab_selected = _tab_selected(pkg, part)
        if entry.name != sheet:  # same sheet for Excel (names are case-insensitive): rename
            tag = re.sub(r'(?<![\w:.-])name\s*=\s*("[^"]*"|\'[^\']*\')', f'name="{_attr(sheet)}"',
                         entry.tag, count=1)
            s, e = entry.span
            wb_xml = wb_xml[:s] + tag + wb_xml[e:]
        if (ct.content_type(part) or "") != _CT_WORKSHEET:
            ct.set_override(part, _CT_WORKSHEET)
        sheet_rels = _rels_name(part)
        if pkg.has(sheet_rels):
            plan.delete.add(sheet_rels.lower())
    else:
        plan.tab_selected = not pkg.sheets
        wb_dir = posixpath.dirname(pkg.wb_part)
        overrides = {a.get("PartName", "").lower() for k, a in ct.items if k == "Override"}
        k = len(pkg.sheets) + 1
        while True:
            rel_target = f"worksheets/sheet{k}.xml"
            part = posixpath.join(wb_dir, rel_target) if wb_dir else rel_target
            if not (pkg.has(part) or pkg.has(_rels_name(part)) or "/" + part.lower() in overrides):
                break
            k += 1
        plan.sheet_part = part
        ids = {r.get("Id", "") for r in wb_rels}
        n = 1 + max([int(m.group(1)) for i in ids if (m := re.fullmatch(r"rId(\d+)", i))] + [0])
        while f"rId{n}" in ids:
            n += 1
        rid = f"rId{n}"
        wb_rels.append({"Id": rid, "Type": _REL_WORKSHEET, "Target": rel_target})
        ct.set_override(part, _CT_WORKSHEET)
        sheet_id = max([s.sheet_id for s in pkg.sheets] + [0]) + 1
        p = pkg.p
        if pkg.r_prefix:
            rid_attr = f'{pkg.r_prefix}:id="{rid}"'
        else:
            rid_attr = f'xmlns:fpr="{_NS_R}" fpr:id="{rid}"'
        new_el = f'<{p}sheet name="{_attr(sheet)}" sheetId="{sheet_id}" {rid_attr}/>'
        if pkg.sheets_insert_at is not None:
            pos = pkg.sheets_insert_at
            # positions after the (possible) rename above are unchanged: a new sheet is never renamed
            wb_xml = wb_xml[:pos] + new_el + wb_xml[pos:]
        else:
            s, e = pkg.sheets_span
            open_tag = wb_xml[s:e][:-2].rstrip() + ">"
            wb_xml = wb_xml[:s] + open_tag + new_el + f"</{p}sheets>" + wb_xml[e:]

    # calcChain may list cells of the replaced sheet: drop it, Excel rebuilds it.
    for r in [r for r in wb_rels if r.get("Type") == _REL_CALC_CHAIN]:
        wb_rels.remove(r)
        plan.delete.add(_resolve(pkg.wb_part, r["Target"]).lower())
    n_rows, n_cols = shape
    wb_xml = _set_filter_database(wb_xml, pkg.p, sheet_index, sheet,
                                  _sheet_ref(n_rows, n_cols) if n_cols else None)
    if not new_workbook:
        # formulas elsewhere may refer to this sheet: recalculate them when the file is opened
        wb_xml = _set_full_calc_on_load(wb_xml, pkg.p)

    # styles.xml (create it if the workbook has none)
    styles_rel = [r for r in wb_rels if r.get("Type") == _REL_STYLES]
    if styles_rel:
        styles_part = pkg.member(_resolve(pkg.wb_part, styles_rel[0]["Target"]))
        styles = _Styles(_decode(pkg.read(styles_part)))
    else:
        wb_dir = posixpath.dirname(pkg.wb_part)
        styles_part = posixpath.join(wb_dir, "styles.xml") if wb_dir else "styles.xml"
        ids = {r.get("Id", "") for r in wb_rels}
        n = 1
        while f"rId{n}" in ids:
            n += 1
        wb_rels.append({"Id": f"rId{n}", "Type": _REL_STYLES, "Target": "styles.xml"})
        ct.set_override(styles_part, _CT_STYLES)
        styles = _Styles(_XML_DECL + f'<styleSheet xmlns="{_NS_MAIN}"></styleSheet>')
        styles._ensure("fonts")
        styles._append("fonts", '<font><sz val="11"/><name val="Calibri"/><family val="2"/></font>', 1)
        styles._ensure("fills")
        styles._append("fills", '<fill><patternFill patternType="none"/></fill>'
                                '<fill><patternFill patternType="gray125"/></fill>', 2)
        styles._ensure("borders")
        styles._append("borders", "<border><left/><right/><top/><bottom/><diagonal/></border>", 1)
        styles._ensure("cellStyleXfs")
        styles._append("cellStyleXfs", '<xf numFmtId="0" fontId="0" fillId="0" borderId="0"/>', 1)
    plan.styles_part = styles_part

    # parts reachable only through the relationships we dropped
    graph_after = dict(graph_before)
    graph_after.pop(plan.sheet_part.lower(), None)
    graph_after[pkg.wb_part.lower()] = [
        _resolve(pkg.wb_part, r["Target"]).lower()
        for r in wb_rels if r.get("TargetMode") != "External" and r.get("Target")
    ]
    lost = _reachable(graph_before, [""]) - _reachable(graph_after, [""])
    lost.discard(plan.sheet_part.lower())
    for name in lost:
        if name in pkg.by_lower:
            plan.delete.add(name)
            if _rels_name(name).lower() in pkg.by_lower:
                plan.delete.add(_rels_name(name).lower())
    ct.remove_overrides({pkg.by_lower.get(n, n) for n in plan.delete})

    plan.replace[pkg.wb_part] = wb_xml.encode("utf-8")
    plan.replace[pkg.wb_rels_part] = _rels_xml(wb_rels)
    plan.replace[pkg.member("[Content_Types].xml")] = ct.to_bytes()
    return plan, styles


def _zipinfo(name: str, like: zipfile.ZipInfo | None = None) -> zipfile.ZipInfo:
    if like is not None:
        zi = zipfile.ZipInfo(like.filename, like.date_time)
        zi.compress_type = like.compress_type
        zi.external_attr = like.external_attr
        zi.create_system = like.create_system
        zi.comment = like.comment
        zi.file_size = like.file_size
        return zi
    zi = zipfile.ZipInfo(name, time.localtime()[:6])
    zi.compress_type = zipfile.ZIP_DEFLATED
    zi.external_attr = 0o600 << 16
    return zi


_ZIP_WRITER_ATTRS = ("fp", "start_dir", "filelist", "NameToInfo", "_writing", "_didModify", "_seekable")


def _copy_raw(src: Any, info: zipfile.ZipInfo, zout: zipfile.ZipFile) -> bool:
    """Copy a member's compressed bytes as they are (no inflate/deflate).

    zipfile has no public API for this; it uses the same ZipFile attributes as
    ZipFile.writestr. Returns False, having written nothing, when that is not possible
    (then the caller recompresses)."""
    if info.flag_bits & 0x1 or not all(hasattr(zout, a) for a in _ZIP_WRITER_ATTRS):
        return False
    if zout._writing or not zout._seekable:
        return False
    src.seek(info.header_offset)
    fh = src.read(30)
    if len(fh) != 30 or fh[:4] != b"PK\x03\x04":
        return False
    name_len, extra_len = struct.unpack("<HH", fh[26:30])
    zi = _zipinfo(info.filename, info)
    zi.CRC = info.CRC
    zi.compress_size = info.compress_size
    zi.file_size = info.file_size
    zi.flag_bits = info.flag_bits & 0x06  # compression options only; sizes go in the header
    fp = zout.fp
    fp.seek(zout.start_dir)
    zi.header_offset = fp.tell()
    zout._didModify = True
    fp.write(zi.FileHeader())
    src.seek(info.header_offset + 30 + name_len + extra_len)
    remaining = info.compress_size
    while remaining:
        buf = src.read(min(remaining, 1 << 20))
        if not buf:
            raise zipfile.BadZipFile(f"member {info.filename} is truncated")
        fp.write(buf)
        remaining -= len(buf)
    zout.filelist.append(zi)
    zout.NameToInfo[zi.filename] = zi
    zout.start_dir = fp.tell()
    return True


def _write_pieces(dst: Any, pieces: Iterator[bytes]) -> None:
    """Write `pieces` to `dst` in a second thread: deflate (which releases the GIL) runs
    while the next piece of XML is generated."""
    q: queue.Queue[bytes | None] = queue.Queue(maxsize=2)
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            while (piece := q.get()) is not None:
                dst.write(piece)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            errors.append(e)
            while q.get() is not None:
                pass

    worker = threading.Thread(target=consume, name="filepipe-xlsx-deflate", daemon=True)
    worker.start()
    try:
        for piece in pieces:
            if errors:
                break
            q.put(piece)
    finally:
        q.put(None)
        worker.join()
    if errors:
        raise errors[0]


def _write_package(src: Any, zin: zipfile.ZipFile, zout: zipfile.ZipFile, pkg: _Package,
                   plan: _Plan, sheet_chunks: Iterator[bytes], styles_xml: bytes,
                   est_size: int) -> None:
    done: set[str] = set()
    replace = dict(plan.replace)
    replace[pkg.member(plan.styles_part)] = styles_xml

    def write_sheet_part(name: str) -> None:
        with zout.open(name, "w", force_zip64=est_size > 1_500_000_000) as dst:
            _write_pieces(dst, sheet_chunks)

    for info in pkg.infos:
        lower = info.filename.lower()
        if lower in plan.delete or lower in done:
            continue
        done.add(lower)
        if lower == plan.sheet_part.lower():
            write_sheet_part(info.filename)
        elif info.filename in replace:
            zi = _zipinfo(info.filename, info)
            zi.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(zi, replace.pop(info.filename))
        elif not _copy_raw(src, info, zout):
            zi = _zipinfo(info.filename, info)
            with zin.open(info) as f, zout.open(zi, "w") as dst:
                while buf := f.read(1 << 20):
                    dst.write(buf)
    for name, data in replace.items():  # parts that did not exist (e.g. a new styles.xml)
        if name.lower() not in done:
            zout.writestr(_zipinfo(name), data)
            done.add(name.lower())
    if plan.sheet_part.lower() not in done:
        write_sheet_part(plan.sheet_part)
    zout.comment = zin.comment


def _verify_zip(f: Any, expected: list[str]) -> None:
    """Cheap structural check of the file just written: central directory and every local
    header (no decompression)."""
    f.seek(0)
    with zipfile.ZipFile(f) as z:
        names = z.namelist()
        if names != expected:
            raise RuntimeError(f"filepipe.xlsx wrote an unexpected member list: {names}")
        for info in z.infolist():
            z.open(info).close()


def _umask() -> int:
    """The process umask, read without changing it where the OS allows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no way to read it without setting it elsewhere
    os.umask(mask)
    return mask


def _fsync_dir(directory: str) -> None:
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


def write_sheet(path: str | os.PathLike, sheet: str, df: pd.DataFrame) -> None:
    """Write `df` as sheet `sheet` of the workbook at `path`, keeping every other sheet.

    Creates the workbook if `path` does not exist. An existing sheet of the same name
    (compared case-insensitively, as Excel does) is replaced in place, keeping its position
    (and renamed if only the case differs); a new sheet goes last. See the module docstring
    for what is kept, what is changed and how values are written.
    Raises SheetError for invalid names, frames that do not fit in a sheet, over-long cell
    text, and workbooks that cannot be edited; the file is then left untouched.
    """
    import io

    path_s = os.fspath(path)
    validate_sheet_name(sheet, path_s)
    check_output_path(path_s)
    real = os.path.realpath(path_s)
    directory = os.path.dirname(real) or "."
    try:
        before = os.stat(real)
    except FileNotFoundError:
        before = None
    if before is not None and not _stat.S_ISREG(before.st_mode):
        raise SheetError(f"{path_s}: not a regular file")

    ctx = _Ctx(path_s, sheet, None)
    src = io.BytesIO(_skeleton_workbook()) if before is None else open(real, "rb")
    try:
        zin = zipfile.ZipFile(src)
    except zipfile.BadZipFile:
        src.close()
        _check_workbook_file(path_s)
        raise
    with src, zin:
        pkg = _Package(zin, path_s)
        names = _check_shape(df, ctx)
        plan, styles = _plan(pkg, sheet, new_workbook=before is None, shape=df.shape)
        ctx.styles = _StyleIds(styles)
        columns = _prepare_columns(df, names, ctx)
        chunks = _sheet_xml(df, columns, ctx, plan.tab_selected)
        est_size = df.shape[0] * max(df.shape[1], 1) * 64

        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".~filepipe-", suffix=".xlsx")
        try:
            with os.fdopen(fd, "w+b") as f:
                with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED,
                                     compresslevel=_SHEET_COMPRESS_LEVEL) as zout:
                    _write_package(src, zin, zout, pkg, plan, chunks,
                                   styles.xml.encode("utf-8"), est_size)
                    expected = zout.namelist()
                _verify_zip(f, expected)
                f.flush()
                os.fsync(f.fileno())
            mode = _stat.S_IMODE(before.st_mode) if before is not None else 0o666 & ~_umask()
            os.chmod(tmp, mode)
            if before is not None:
                now = os.stat(real)
                if (now.st_size, now.st_mtime_ns, now.st_ino) != (
                        before.st_size, before.st_mtime_ns, before.st_ino):
                    raise SheetError(f"{path_s}: the workbook changed while filepipe was writing "
                                     f"sheet {sheet!r}; nothing was written, try again")
            elif os.path.lexists(real):
                raise SheetError(f"{path_s}: the workbook appeared while filepipe was writing "
                                 f"sheet {sheet!r}; nothing was written, try again")
            os.replace(tmp, real)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
    _fsync_dir(directory)


# --------------------------------------------------------------------------- reading


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


def _check_workbook_file(path: str) -> None:
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


def _open_package(path: str) -> tuple[zipfile.ZipFile, _Package]:
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile):
        _check_workbook_file(path)
        raise
    try:
        return zf, _Package(zf, path)
    except BaseException:
        zf.close()
        raise


def sheet_names(path: str | os.PathLike) -> list[str]:
    """Names of all sheets of the workbook at `path` (worksheets and chart sheets), in tab order."""
    path_s = os.fspath(path)
    zf, pkg = _open_package(path_s)
    with zf:
        return [s.name for s in pkg.sheets]


def read_sheet(path: str | os.PathLike, sheet: str | None = None) -> pd.DataFrame:
    """Read one sheet (the first worksheet when None) with the calamine engine.

    The first row gives the column names (an empty one becomes ``"Unnamed: i"``, a repeated
    one ``"name.1"``, as pandas does). Cell types are kept as the file stores them: text
    stays text even when it looks like a number ("01234" is not 1234); numbers are ints when
    integral, else floats; cells with a date format come back as datetimes; only empty cells
    are missing. Column dtypes follow from the values as in ``pd.Series(list)``, except
    that a numeric column with an empty cell is float64 and an all-empty one float64 NaN.
    A sheet name that matches only case-insensitively is accepted, as in Excel.
    """
    from python_calamine import CalamineWorkbook, SheetTypeEnum

    path_s = os.fspath(path)
    try:
        wb = CalamineWorkbook.from_path(path_s)
    except Exception:
        _check_workbook_file(path_s)
        raise
    try:
        names = [m.name for m in wb.sheets_metadata if m.typ == SheetTypeEnum.WorkSheet]
        if sheet is None:
            if not names:
                raise SheetError(f"{path_s}: the workbook has no worksheet")
            name = names[0]
        elif sheet in names:
            name = sheet
        else:
            folded = [n for n in names if n.casefold() == str(sheet).casefold()]
            if not folded:
                listed = ", ".join(repr(n) for n in names) or "none"
                raise SheetError(f"{path_s}: sheet {sheet!r} not found; worksheets: {listed}")
            name = folded[0]
        rows = wb.get_sheet_by_name(name).to_python(skip_empty_area=False)
    finally:
        close = getattr(wb, "close", None)
        if close is not None:
            close()
    return _frame_from_cells(rows)


def _header_names(header: list[Any]) -> list[str]:
    """Column names from the header cells: the text each shows (`cell_text`)."""
    names: list[str] = []
    seen: set[str] = set()
    for i, cell in enumerate(header):
        v = cell_text(cell)
        if v is None or v == "":
            v = f"Unnamed: {i}"
        base, k = v, 0
        while v in seen:  # pandas' mangling of repeated names: a, a.1, a.2
            k += 1
            v = f"{base}.{k}"
        seen.add(v)
        names.append(v)
    return names


def _frame_from_cells(rows: list[list[Any]]) -> pd.DataFrame:
    """DataFrame from calamine's rows of typed cells (first row = names)."""
    if not rows:
        return pd.DataFrame()
    names = _header_names(rows[0])
    body = rows[1:]
    if not body:
        return pd.DataFrame({n: pd.Series([], dtype=object) for n in names}, columns=names)
    width = len(names)
    grid = np.empty((len(body), width), dtype=object)
    try:
        grid[:] = body
    except ValueError:  # ragged rows (calamine's are rectangular; be safe)
        grid[:] = [list(r[:width]) + [None] * (width - len(r)) for r in body]
    return pd.DataFrame({n: _series_from_cells(grid[:, j].copy()) for j, n in enumerate(names)},
                        columns=names)


def _series_from_cells(arr: np.ndarray) -> pd.Series:
    """Series from one column of typed cells (object array, modified in place)."""
    import datetime as _dt

    types = np.frompyfunc(type, 1, 1)(arr)
    is_str = types == str
    missing = np.zeros(len(arr), dtype=bool)
    if is_str.any():
        missing[is_str] = arr[is_str] == ""  # calamine gives "" for empty (and error) cells
    missing |= types == type(None)
    present = set(pd.unique(types[~missing]))
    if not present:
        return pd.Series(np.full(len(arr), np.nan))
    if present <= {float, int}:
        vals = np.full(len(arr), np.nan)
        vals[~missing] = arr[~missing].astype(float)
        ok = vals[~missing]
        if (not missing.any() and np.all(np.mod(ok, 1) == 0)
                and np.all(np.abs(ok) < 2.0**63)):
            if int in present:  # exact ints (xls/ods) stay exact
                return pd.Series(arr.astype(np.int64))
            return pd.Series(ok.astype(np.int64))
        return pd.Series(vals)
    if present <= {_dt.datetime, _dt.date}:
        arr[missing] = None
        return pd.Series(pd.to_datetime(pd.Series(arr, dtype=object))).astype("datetime64[us]")
    arr[missing] = None
    floats = np.flatnonzero(types == float)
    if len(floats):  # 1.0 -> 1 in mixed columns, as pandas' readers do
        arr[floats] = [int(v) if v.is_integer() else v for v in arr[floats]]
    dates = np.flatnonzero(types == _dt.date)
    if len(dates):  # date-only cells are datetimes at midnight, as in a date column
        arr[dates] = [_dt.datetime(v.year, v.month, v.day) for v in arr[dates]]
    return pd.Series(arr.tolist())
