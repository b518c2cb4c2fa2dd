"""What writing one sheet changes in a workbook package: the edited workbook.xml, its
relationships and content types, the styles part, and the parts to delete.

A replaced sheet keeps its position (renamed if only the case differs) and loses its own
relationships; a new sheet goes last. ``xl/calcChain.xml`` is dropped (Excel rebuilds
it), and so is every part reachable only through a dropped relationship.
"""

from __future__ import annotations

import posixpath
import re

from .limits import SheetError, sheet_ref
from .package import (
    CT_STYLES,
    CT_WORKSHEET,
    REL_CALC_CHAIN,
    REL_STYLES,
    REL_WORKSHEET,
    Package,
    SheetEntry,
    internal_targets,
    reachable,
    rels_name,
    rels_xml,
    resolve,
)
from .styles import Styles
from .xmltext import NS_R, attr, attrs, decode, insert_before_first, opened, start_tag, text

_WORKBOOK_AFTER_DEFINED_NAMES = ["calcPr", "oleSize", "customWorkbookViews", "pivotCaches",
                                 "smartTagPr", "smartTagTypes", "webPublishing", "fileRecoveryPr",
                                 "webPublishObjects", "extLst"]


class Plan:
    """What to write: replaced/added/deleted members of the package; while it is made, the
    workbook.xml text and workbook relationships being edited."""

    def __init__(self, pkg: Package) -> None:
        self.replace: dict[str, bytes] = {}  # member (exact name) -> new bytes
        self.delete: set[str] = set()  # lower-case names
        self.sheet_part = ""
        self.tab_selected = False
        self.styles_part = ""
        self.wb_xml = pkg.wb_xml
        self.wb_rels = [dict(r) for r in pkg.wb_rels]


def plan_edit(pkg: Package, sheet: str, new_workbook: bool,
              shape: tuple[int, int]) -> tuple[Plan, Styles]:
    """The plan of writing sheet `sheet`, of `shape` (data rows, columns), into `pkg`, and
    the workbook's styles (to add the sheet's formats to). Edits `pkg.ct` in place."""
    plan = Plan(pkg)
    entry = pkg.find_sheet(sheet)
    sheet_index = pkg.sheets.index(entry) if entry is not None else len(pkg.sheets)
    graph_before = pkg.rels_graph()
    if entry is not None:
        _replace_sheet(pkg, plan, entry, sheet)
    else:
        _add_sheet(pkg, plan, sheet)
    _drop_calc_chain(pkg, plan)
    n_rows, n_cols = shape
    plan.wb_xml = _set_filter_database(plan.wb_xml, pkg.p, sheet_index, sheet,
                                       sheet_ref(n_rows, n_cols) if n_cols else None)
    if not new_workbook:
        # formulas elsewhere may refer to this sheet: recalculate them when the file is opened
        plan.wb_xml = _set_full_calc_on_load(plan.wb_xml, pkg.p)
    styles = _styles(pkg, plan)
    _drop_unreachable(pkg, plan, graph_before)
    plan.replace[pkg.wb_part] = plan.wb_xml.encode("utf-8")
    plan.replace[pkg.wb_rels_part] = rels_xml(plan.wb_rels)
    plan.replace[pkg.member("[Content_Types].xml")] = pkg.ct.to_bytes()
    return plan, styles


# --------------------------------------------------------------------------- the sheet


def _replace_sheet(pkg: Package, plan: Plan, entry: SheetEntry, sheet: str) -> None:
    """Plan replacing the worksheet `entry` in place, named `sheet`; it loses its own
    relationships."""
    part, rtype = pkg.sheet_part(entry)
    if rtype != REL_WORKSHEET:
        kind = rtype.rsplit("/", 1)[-1]
        raise SheetError(f"{pkg.path}: sheet {entry.name!r} is a {kind}, not a worksheet; "
                         "filepipe only replaces worksheets it wrote")
    if not part.lower().endswith(".xml"):
        raise SheetError(f"{pkg.path}: sheet {entry.name!r} is stored in an unsupported format")
    plan.sheet_part = part
    plan.tab_selected = _tab_selected(pkg, part)
    if entry.name != sheet:  # same sheet for Excel (names are case-insensitive): rename
        tag = re.sub(r'(?<![\w:.-])name\s*=\s*("[^"]*"|\'[^\']*\')', f'name="{attr(sheet)}"',
                     entry.tag, count=1)
        s, e = entry.span
        plan.wb_xml = plan.wb_xml[:s] + tag + plan.wb_xml[e:]
    if (pkg.ct.content_type(part) or "") != CT_WORKSHEET:
        pkg.ct.set_override(part, CT_WORKSHEET)
    sheet_rels = rels_name(part)
    if pkg.has(sheet_rels):
        plan.delete.add(sheet_rels.lower())


def _tab_selected(pkg: Package, part: str) -> bool:
    """Is the worksheet `part` the selected tab?"""
    try:
        with pkg.zf.open(pkg.member(part)) as f:
            start = f.read(65536).decode("utf-8", "replace")
    except KeyError:
        return False
    m = re.search(r"<(?:\w+:)?sheetView\b[^>]*>", start)
    return bool(m and re.search(r'\btabSelected\s*=\s*["\'](1|true)["\']', m.group(0)))


def _add_sheet(pkg: Package, plan: Plan, sheet: str) -> None:
    """Plan a new worksheet `sheet`, last: its part, relationship, content type and
    <sheet> element."""
    plan.tab_selected = not pkg.sheets
    part, rel_target = _new_sheet_part(pkg)
    plan.sheet_part = part
    ids = [int(m.group(1)) for r in plan.wb_rels if (m := re.fullmatch(r"rId(\d+)", r.get("Id", "")))]
    rid = _free_rid(plan, 1 + max(ids + [0]))
    plan.wb_rels.append({"Id": rid, "Type": REL_WORKSHEET, "Target": rel_target})
    pkg.ct.set_override(part, CT_WORKSHEET)
    sheet_id = max([s.sheet_id for s in pkg.sheets] + [0]) + 1
    if pkg.r_prefix:
        rid_attr = f'{pkg.r_prefix}:id="{rid}"'
    else:
        rid_attr = f'xmlns:fpr="{NS_R}" fpr:id="{rid}"'
    new_el = f'<{pkg.p}sheet name="{attr(sheet)}" sheetId="{sheet_id}" {rid_attr}/>'
    # the positions pkg found are still right: a new sheet renames no other one
    if pkg.sheets_insert_at is not None:
        pos = pkg.sheets_insert_at
        plan.wb_xml = plan.wb_xml[:pos] + new_el + plan.wb_xml[pos:]
    else:
        s, e = pkg.sheets_span
        plan.wb_xml = (plan.wb_xml[:s] + opened(plan.wb_xml[s:e]) + new_el + f"</{pkg.p}sheets>"
                       + plan.wb_xml[e:])


def _new_sheet_part(pkg: Package) -> tuple[str, str]:
    """A free part name ``worksheets/sheetN.xml`` beside the workbook part: the member name
    and the target relative to the workbook."""
    overrides = pkg.ct.overridden()
    k = len(pkg.sheets) + 1
    while True:
        rel_target = f"worksheets/sheet{k}.xml"
        part = _beside_workbook(pkg, rel_target)
        if not (pkg.has(part) or pkg.has(rels_name(part)) or "/" + part.lower() in overrides):
            return part, rel_target
        k += 1


def _beside_workbook(pkg: Package, rel_target: str) -> str:
    """The member name of `rel_target`, relative to the workbook part's folder."""
    wb_dir = posixpath.dirname(pkg.wb_part)
    return posixpath.join(wb_dir, rel_target) if wb_dir else rel_target


def _free_rid(plan: Plan, n: int) -> str:
    """The first relationship id ``rId<n>``, from `n` on, that no workbook relationship has."""
    ids = {r.get("Id", "") for r in plan.wb_rels}
    while f"rId{n}" in ids:
        n += 1
    return f"rId{n}"


# --------------------------------------------------------------------------- the rest of the workbook


def _drop_calc_chain(pkg: Package, plan: Plan) -> None:
    """calcChain may list cells of the replaced sheet: drop it, Excel rebuilds it."""
    for r in [r for r in plan.wb_rels if r.get("Type") == REL_CALC_CHAIN]:
        plan.wb_rels.remove(r)
        plan.delete.add(resolve(pkg.wb_part, r["Target"]).lower())


def _set_filter_database(xml: str, p: str, sheet_index: int, sheet: str, ref: str | None) -> str:
    """Point the hidden name _xlnm._FilterDatabase of sheet `sheet_index` at `ref` (None: drop it).

    Excel does not need it, but LibreOffice only shows an autofilter that has this name."""
    xml = _drop_filter_database(xml, p, sheet_index)
    if ref is None:
        return xml
    quoted = "'" + sheet.replace("'", "''") + "'"
    a, b = ref.split(":") if ":" in ref else (ref, ref)
    absolute = "$" + re.sub(r"(\d+)$", r"$\1", a) + ":$" + re.sub(r"(\d+)$", r"$\1", b)
    el = (f'<{p}definedName name="_xlnm._FilterDatabase" localSheetId="{sheet_index}" hidden="1">'
          f"{text(quoted)}!{absolute}</{p}definedName>")
    sec = start_tag(xml, p, "definedNames")
    if sec and sec.group(1):
        return xml[:sec.start()] + opened(sec.group(0)) + el + f"</{p}definedNames>" + xml[sec.end():]
    if sec:
        close = xml.index("</" + p + "definedNames>", sec.end())
        return xml[:close] + el + xml[close:]
    return insert_before_first(xml, p, _WORKBOOK_AFTER_DEFINED_NAMES, "workbook",
                               f"<{p}definedNames>{el}</{p}definedNames>")


def _drop_filter_database(xml: str, p: str, sheet_index: int) -> str:
    """`xml` without the _xlnm._FilterDatabase name of sheet `sheet_index`."""
    sec = start_tag(xml, p, "definedNames")
    if not sec or sec.group(1):
        return xml
    pe = re.escape(p)
    el_re = re.compile(r"<" + pe + r"definedName\b[^>]*?(?:/>|>.*?</" + pe + r"definedName>)", re.S)
    close = xml.index("</" + p + "definedNames>", sec.end())

    def ours(m: re.Match[str]) -> str:
        a = attrs(m.group(0)[: m.group(0).index(">") + 1])
        if a.get("name") == "_xlnm._FilterDatabase" and a.get("localSheetId") == str(sheet_index):
            return ""
        return m.group(0)

    return xml[:sec.end()] + el_re.sub(ours, xml[sec.end():close]) + xml[close:]


def _set_full_calc_on_load(xml: str, p: str) -> str:
    """`xml` with ``fullCalcOnLoad="1"`` on <calcPr> (added when missing)."""
    m = re.search(r"<" + re.escape(p) + r"calcPr\b[^>]*?/?>", xml)
    if m:
        tag = m.group(0)
        if re.search(r"\bfullCalcOnLoad\s*=", tag):
            new = re.sub(r'\bfullCalcOnLoad\s*=\s*["\'][^"\']*["\']', 'fullCalcOnLoad="1"', tag)
        else:
            end = -2 if tag.endswith("/>") else -1
            new = tag[:end].rstrip() + ' fullCalcOnLoad="1"' + tag[end:]
        return xml[:m.start()] + new + xml[m.end():]
    return insert_before_first(xml, p, _WORKBOOK_AFTER_DEFINED_NAMES[1:], "workbook",
                               f'<{p}calcPr fullCalcOnLoad="1"/>')


def _styles(pkg: Package, plan: Plan) -> Styles:
    """The workbook's styles; a styles part (with its relationship and content type) is
    planned when the workbook has none."""
    styles_rel = [r for r in plan.wb_rels if r.get("Type") == REL_STYLES]
    if styles_rel:
        plan.styles_part = pkg.member(resolve(pkg.wb_part, styles_rel[0]["Target"]))
        return Styles(decode(pkg.read(plan.styles_part)))
    plan.styles_part = _beside_workbook(pkg, "styles.xml")
    plan.wb_rels.append({"Id": _free_rid(plan, 1), "Type": REL_STYLES, "Target": "styles.xml"})
    pkg.ct.set_override(plan.styles_part, CT_STYLES)
    return Styles.minimal()


def _drop_unreachable(pkg: Package, plan: Plan, graph_before: dict[str, list[str]]) -> None:
    """Plan deleting the parts reachable only through the relationships dropped (those of
    the replaced sheet, calcChain's), with their own relationship parts and overrides."""
    graph_after = dict(graph_before)
    graph_after.pop(plan.sheet_part.lower(), None)
    graph_after[pkg.wb_part.lower()] = internal_targets(pkg.wb_part, plan.wb_rels)
    lost = reachable(graph_before, [""]) - reachable(graph_after, [""])
    lost.discard(plan.sheet_part.lower())
    for name in lost:
        if name in pkg.by_lower:
            plan.delete.add(name)
            if rels_name(name).lower() in pkg.by_lower:
                plan.delete.add(rels_name(name).lower())
    pkg.ct.remove_overrides({pkg.by_lower.get(n, n) for n in plan.delete})
