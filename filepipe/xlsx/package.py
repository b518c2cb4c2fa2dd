"""The zip package of a workbook: its parts, content types and relationships, and the
sheet list of ``workbook.xml``, as the sheet writer reads them."""

from __future__ import annotations

import io
import posixpath
import re
import zipfile
from xml.etree import ElementTree as ET

from .limits import SheetError
from .paths import check_workbook_file
from .xmltext import NS_CT, NS_MAIN, NS_PKG_REL, NS_R, NS_STRICT_MAIN, XML_DECL, attr, decode, root_prefix, start_tag

REL_BASE = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/"
REL_OFFICE_DOC = REL_BASE + "officeDocument"
REL_WORKSHEET = REL_BASE + "worksheet"
REL_STYLES = REL_BASE + "styles"
REL_CALC_CHAIN = REL_BASE + "calcChain"
CT_WORKSHEET = "application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"
CT_STYLES = "application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"
_CT_WORKBOOK = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"
_CT_RELS = "application/vnd.openxmlformats-package.relationships+xml"
_STRICT = "Strict Open XML workbooks are not supported; save it as a regular Excel workbook (.xlsx)"


# --------------------------------------------------------------------------- relationships


def resolve(source_part: str, target: str) -> str:
    """Zip member name of a relationship target (relative to the source part's folder)."""
    if target.startswith("/"):
        return posixpath.normpath(target[1:])
    base = posixpath.dirname(source_part)
    return posixpath.normpath(posixpath.join(base, target)) if base else posixpath.normpath(target)


def rels_name(part: str) -> str:
    """The relationships part of `part` (``xl/_rels/workbook.xml.rels``)."""
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


def rels_xml(rels: list[dict[str, str]]) -> bytes:
    """A relationships part holding `rels`."""
    return _empty_elements_xml("Relationships", NS_PKG_REL, [("Relationship", r) for r in rels])


def internal_targets(source_part: str, rels: list[dict[str, str]]) -> list[str]:
    """Parts (lower case) that the relationships `rels` of `source_part` point at inside the
    package."""
    return [resolve(source_part, r["Target"]).lower()
            for r in rels if r.get("TargetMode") != "External" and r.get("Target")]


def reachable(graph: dict[str, list[str]], roots: list[str]) -> set[str]:
    """The parts reachable from `roots` in a relationship graph (`Package.rels_graph`)."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        todo.extend(graph.get(node, ()))
    return seen


def _empty_elements_xml(root: str, ns: str, items: list[tuple[str, dict[str, str]]]) -> bytes:
    out = [XML_DECL, f'<{root} xmlns="{ns}">']
    for kind, a in items:
        attrs = "".join(f' {k}="{attr(v)}"' for k, v in a.items())
        out.append(f"<{kind}{attrs}/>")
    out.append(f"</{root}>")
    return "".join(out).encode("utf-8")


# --------------------------------------------------------------------------- content types


class ContentTypes:
    """``[Content_Types].xml``: Default (by extension) and Override (by part) entries."""

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

    def overridden(self) -> set[str]:
        """Part names (``/xl/...``, lower case) that have an Override."""
        return {a.get("PartName", "").lower() for k, a in self.items if k == "Override"}

    def set_override(self, part: str, ctype: str) -> None:
        self.remove_overrides({part})
        self.items.append(("Override", {"PartName": "/" + part, "ContentType": ctype}))

    def remove_overrides(self, parts: set[str]) -> None:
        keys = {"/" + p.lower() for p in parts}
        self.items = [(k, a) for k, a in self.items
                      if not (k == "Override" and a.get("PartName", "").lower() in keys)]

    def to_bytes(self) -> bytes:
        return _empty_elements_xml("Types", NS_CT, self.items)


# --------------------------------------------------------------------------- the package


class SheetEntry:
    """One ``<sheet>`` of workbook.xml: its name, relationship id, sheetId, and where its
    start tag `tag` stands in the workbook XML (`span`)."""

    __slots__ = ("name", "rid", "sheet_id", "span", "tag")

    def __init__(self, name: str, rid: str, sheet_id: int, span: tuple[int, int], tag: str):
        self.name, self.rid, self.sheet_id, self.span, self.tag = name, rid, sheet_id, span, tag


class Package:
    """The parts of an xlsx package that write_sheet reads or edits."""

    def __init__(self, zf: zipfile.ZipFile, path: str):
        self.zf = zf
        self.path = path
        self.infos = [i for i in zf.infolist()]
        self.by_lower = {i.filename.lower(): i.filename for i in self.infos}
        self.ct = ContentTypes(self.read("[Content_Types].xml"))
        self.wb_part = self._workbook_part()
        self.wb_xml = decode(self.read(self.wb_part))
        self.wb_rels_part = self.member(rels_name(self.wb_part))
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

    def _workbook_part(self) -> str:
        """The workbook part the package's officeDocument relationship names."""
        root_rels = _parse_rels(self.read("_rels/.rels"))
        wb = [r for r in root_rels if r.get("Type") == REL_OFFICE_DOC]
        if not wb:
            if any(r.get("Type", "").endswith("/officeDocument") for r in root_rels):
                raise SheetError(f"{self.path}: {_STRICT}")
            raise SheetError(f"{self.path}: not an Excel workbook (no officeDocument relationship)")
        part = self.member(resolve("", wb[0]["Target"]))
        if not part.lower().endswith(".xml"):
            raise SheetError(f"{self.path}: binary workbooks (.xlsb) are not supported")
        return part

    # -- workbook.xml
    def _parse_workbook(self) -> None:
        """The prefix `p`, the <sheets> element, the sheet entries and the prefix bound to
        the relationships namespace (`r_prefix`) of workbook.xml."""
        root = ET.fromstring(self.wb_xml.encode("utf-8"))
        ns = root.tag[1:].split("}")[0] if root.tag.startswith("{") else ""
        if ns == NS_STRICT_MAIN:
            raise SheetError(f"{self.path}: {_STRICT}")
        self.p = root_prefix(self.wb_xml, "workbook")
        m = start_tag(self.wb_xml, self.p, "sheets")
        if not m:
            raise SheetError(f"{self.path}: damaged workbook, no <sheets> element")
        if m.group(1):
            self.sheets_insert_at = None
            self.sheets_span = (m.start(), m.end())
            body = ""
        else:
            close = self.wb_xml.index("</" + self.p + "sheets>", m.end())
            self.sheets_insert_at = close
            body = self.wb_xml[m.end():close]
        self.sheets = self._sheet_entries(root, ns, body, m.end())
        root_tag = start_tag(self.wb_xml, self.p, "workbook")
        rm = re.search(r'xmlns:([A-Za-z_][\w.\-]*)\s*=\s*["\']' + re.escape(NS_R) + r'["\']',
                       root_tag.group(0) if root_tag else "")
        self.r_prefix = rm.group(1) if rm else None

    def _sheet_entries(self, root: ET.Element, ns: str, body: str,
                       body_start: int) -> list[SheetEntry]:
        """The <sheet> elements, parsed by ElementTree and located in the text `body` of
        <sheets> (which starts at `body_start`)."""
        rid_key = f"{{{NS_R}}}id"
        et_sheets = list(root.iter(f"{{{ns}}}sheet"))
        tags = list(re.finditer(r"<" + re.escape(self.p) + r"sheet\b[^>]*>", body))
        if len(tags) != len(et_sheets):
            raise SheetError(f"{self.path}: cannot parse the sheet list of {self.wb_part}")
        sheets = []
        for el, t in zip(et_sheets, tags):
            try:
                sid = int(el.get("sheetId", "0"))
            except ValueError:
                sid = 0
            sheets.append(SheetEntry(el.get("name", ""), el.get(rid_key, ""), sid,
                                     (body_start + t.start(), body_start + t.end()), t.group(0)))
        return sheets

    def find_sheet(self, name: str) -> SheetEntry | None:
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

    def sheet_part(self, entry: SheetEntry) -> tuple[str, str]:
        r = self.rel(entry.rid)
        if r is None:
            raise SheetError(f"{self.path}: damaged workbook, sheet {entry.name!r} has no part")
        return self.member(resolve(self.wb_part, r["Target"])), r.get("Type", "")

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
            graph[src.lower() if src != "" else ""] = internal_targets(src, rels)
        return graph


def open_package(path: str) -> tuple[zipfile.ZipFile, Package]:
    """The open zip file and package of the workbook at `path` (SheetError when it is no
    .xlsx package for a reason retrying will not fix)."""
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile):
        check_workbook_file(path)
        raise
    try:
        return zf, Package(zf, path)
    except BaseException:
        zf.close()
        raise


def skeleton_workbook() -> bytes:
    """A workbook without sheets (not valid on its own; write_sheet adds the first one)."""
    ct = (XML_DECL + f'<Types xmlns="{NS_CT}">'
          f'<Default Extension="rels" ContentType="{_CT_RELS}"/>'
          '<Default Extension="xml" ContentType="application/xml"/>'
          f'<Override PartName="/xl/workbook.xml" ContentType="{_CT_WORKBOOK}"/>'
          f'<Override PartName="/xl/styles.xml" ContentType="{CT_STYLES}"/>'
          "</Types>")
    root_rels = rels_xml([{"Id": "rId1", "Type": REL_OFFICE_DOC, "Target": "xl/workbook.xml"}])
    wb = (XML_DECL + f'<workbook xmlns="{NS_MAIN}" xmlns:r="{NS_R}">'
          "<workbookPr/><bookViews><workbookView/></bookViews>"
          "<sheets></sheets><calcPr calcId=\"191029\"/></workbook>")
    wb_rels = rels_xml([{"Id": "rId1", "Type": REL_STYLES, "Target": "styles.xml"}])
    styles = (XML_DECL + f'<styleSheet xmlns="{NS_MAIN}">'
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
