"""``xl/styles.xml``: the bold header fonts and the number formats of filepipe's cells,
appended once to the workbook's styles and then reused; the cell formats (xfs) a user made,
told apart from filepipe's, and derived with another number format."""

from __future__ import annotations

import re

from .numfmt import (
    BUILTIN,
    BUILTIN_IDS,
    DATE_FMT,
    DATETIME_FMT,
    DATETIME_MS_FMT,
    DURATION_FMT,
    DURATION_MS_FMT,
    FLOAT_FMT,
    INT_FMT,
    NORMAL_DEFAULTS,
    TIME_FMT,
    TIME_MS_FMT,
    is_date_code,
    normal_code,
)
from .xmltext import NS_MAIN, XML_DECL, attr, attrs, opened, root_prefix, start_tag

_CHILD_RE = re.compile(r"<(?:[\w.-]+:)?([\w.-]+)\b([^>]*?)/?>")
_TRUE = {"1", "true"}
_BOOL_FONT_TAGS = {"b", "i", "strike", "condense", "extend", "outline", "shadow"}
_IGNORED_FONT_TAGS = {"family", "charset", "scheme"}  # no visible difference
#: alignment attributes and the values that leave a cell as it is by default
_PLAIN_ALIGNMENT = {"horizontal": {"general"}, "vertical": {"bottom"}, "textRotation": {"0"},
                    "wrapText": {"0", "false"}, "indent": {"0"}, "relativeIndent": {"0"},
                    "justifyLastLine": {"0", "false"}, "shrinkToFit": {"0", "false"},
                    "readingOrder": {"0"}}
_PLAIN_PROTECTION = {"locked": {"1", "true"}, "hidden": {"0", "false"}}


class Styles:
    """Append-only edits of styles.xml done on the text (keeps every namespace/extension)."""

    _ORDER = ["numFmts", "fonts", "fills", "borders", "cellStyleXfs", "cellXfs", "cellStyles",
              "dxfs", "tableStyles", "colors", "extLst"]

    def __init__(self, xml: str):
        self.xml = xml
        self.p = root_prefix(xml, "styleSheet")
        self._cache: dict[tuple[str, str], list[str]] = {}
        self.frozen = False  # set once the part is written: no format may be added then

    @classmethod
    def minimal(cls) -> Styles:
        """The styles of a workbook that has none: one font, the two fills, one border and
        one cell style format Excel expects."""
        styles = cls(XML_DECL + f'<styleSheet xmlns="{NS_MAIN}"></styleSheet>')
        styles._append("fonts", '<font><sz val="11"/><name val="Calibri"/><family val="2"/></font>', 1)
        styles._append("fills", '<fill><patternFill patternType="none"/></fill>'
                                '<fill><patternFill patternType="gray125"/></fill>', 2)
        styles._append("borders", "<border><left/><right/><top/><bottom/><diagonal/></border>", 1)
        styles._append("cellStyleXfs", '<xf numFmtId="0" fontId="0" fillId="0" borderId="0"/>', 1)
        return styles

    def _section(self, tag: str) -> tuple[int, int, int, int] | None:
        """(start, inner_start, inner_end, end) of <tag>..</tag>; inner_start == -1 if empty."""
        m = start_tag(self.xml, self.p, tag)
        if not m:
            return None
        if m.group(1):
            return (m.start(), -1, -1, m.end())
        close_tag = "</" + self.p + tag + ">"
        close = self.xml.index(close_tag, m.end())
        return (m.start(), m.end(), close, close + len(close_tag))

    def _ensure(self, tag: str) -> tuple[int, int, int, int]:
        """The section <tag>, made non-empty, or added where the schema's order puts it."""
        sec = self._section(tag)
        if sec is not None and sec[1] == -1:  # <tag/> -> <tag></tag>
            start, _, _, end = sec
            self.xml = (self.xml[:start] + opened(self.xml[start:end]) + "</" + self.p + tag + ">"
                        + self.xml[end:])
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
        """The <child> elements of section <tag>, as text (cached until the next edit)."""
        found = self._cache.get((tag, child))
        if found is not None:
            return found
        sec = self._section(tag)
        if sec is None or sec[1] == -1:
            found = []
        else:
            inner = self.xml[sec[1]:sec[2]]
            p = re.escape(self.p)
            pat = (r"<" + p + child + r"\b[^>]*?/>|<" + p + child + r"\b[^>]*?>.*?</" + p + child + ">")
            found = [m.group(0) for m in re.finditer(pat, inner, re.S)]
        self._cache[(tag, child)] = found
        return found

    def _append(self, tag: str, child_xml: str, new_count: int) -> None:
        if self.frozen:
            raise RuntimeError(f"filepipe.xlsx: a <{tag}> entry was added to styles.xml after it "
                               "was written")
        self._cache.clear()
        start, inner_start, inner_end, end = self._ensure(tag)
        open_tag = self.xml[start:inner_start]
        if re.search(r'\bcount\s*=\s*["\'][^"\']*["\']', open_tag):
            open_tag = re.sub(r'\bcount\s*=\s*["\'][^"\']*["\']', f'count="{new_count}"', open_tag)
        else:
            open_tag = open_tag[:-1] + f' count="{new_count}">'
        self.xml = (self.xml[:start] + open_tag + self.xml[inner_start:inner_end] + child_xml
                    + self.xml[inner_end:])

    # ----------------------------------------------------------------- number formats

    def num_fmt(self, code: str) -> int:
        """The id of the number format `code`: a built-in one, or a custom one (added when
        missing)."""
        if code in BUILTIN_IDS:
            return BUILTIN_IDS[code]
        ids = []
        for el in self._children("numFmts", "numFmt"):
            a = attrs(el)
            try:
                fid = int(a.get("numFmtId", ""))
            except ValueError:
                continue
            if a.get("formatCode") == code:
                return fid
            ids.append(fid)
        new_id = max([163, *ids]) + 1
        self._append("numFmts", f'<{self.p}numFmt numFmtId="{new_id}" formatCode="{attr(code)}"/>',
                     len(ids) + 1)
        return new_id

    def num_fmt_code(self, fid: int) -> str | None:
        """The code of number format `fid` (None: unknown id)."""
        for el in self._children("numFmts", "numFmt"):
            a = attrs(el)
            if a.get("numFmtId") == str(fid):
                return a.get("formatCode")
        return BUILTIN.get(fid)

    def shows_dates(self, fid: int) -> bool:
        """Does number format `fid` show numbers as dates, times or durations (so that
        readers give its cells back as such)?"""
        if 14 <= fid <= 22 or 45 <= fid <= 47 or 27 <= fid <= 36 or 50 <= fid <= 58:
            return True  # built-in (and East Asian locale) dates and times
        code = self.num_fmt_code(fid)
        return code is not None and is_date_code(code)

    # ----------------------------------------------------------------- fonts

    def _bolded(self, font: str) -> str:
        """The font element `font` made bold."""
        p = self.p
        b_el = re.search(r"<" + re.escape(p) + r"b\b[^>]*/>", font)
        if b_el and re.search(r'val\s*=\s*["\'](0|false)["\']', b_el.group(0)):
            return font[:b_el.start()] + f"<{p}b/>" + font[b_el.end():]
        if b_el:
            return font
        if font.endswith("/>"):
            return font[:-2].rstrip() + f"><{p}b/></{p}font>"
        gt = font.index(">") + 1
        return font[:gt] + f"<{p}b/>" + font[gt:]

    def bold_font(self) -> int:
        """The id of the bold variant of font 0, added when missing."""
        fonts = self._children("fonts", "font")
        p = self.p
        if fonts:
            bold = self._bolded(fonts[0])
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

    # ----------------------------------------------------------------- cell formats

    def cell_xf(self, num_fmt_id: int, font_id: int, right: bool = False) -> int:
        """The id of the cell format with this number format and font (right-aligned when
        `right`), added when missing."""
        applies = []
        if num_fmt_id:
            applies.append('applyNumberFormat="1"')
        if font_id:
            applies.append('applyFont="1"')
        if right:
            applies.append('applyAlignment="1"')
        xf = (f'<{self.p}xf numFmtId="{num_fmt_id}" fontId="{font_id}" fillId="0" borderId="0" '
              f'xfId="0" {" ".join(applies)}')
        xf = (xf + f'><{self.p}alignment horizontal="right"/></{self.p}xf>') if right else xf + "/>"
        return self._add_xf(xf)

    def _add_xf(self, xf: str) -> int:
        """The id of the cell format `xf` (element text), added when missing."""
        xfs = self._children("cellXfs", "xf")
        if xf in xfs:
            return xfs.index(xf)
        if not xfs:  # xf 0 is the default of every cell
            default = f'<{self.p}xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
            self._append("cellXfs", default, 1)
            xfs = [default]
        self._append("cellXfs", xf, len(xfs) + 1)
        return len(xfs)

    def xf_count(self) -> int:
        return len(self._children("cellXfs", "xf"))

    def xf_num_fmt(self, xf_id: int) -> int:
        """The number format id of cell format `xf_id` (0 for an unknown one)."""
        xfs = self._children("cellXfs", "xf")
        if not 0 <= xf_id < len(xfs):
            return 0
        try:
            return int(attrs(_start(xfs[xf_id])).get("numFmtId", "0"))
        except ValueError:
            return 0

    def derived_xf(self, xf_id: int, num_fmt_id: int) -> int:
        """The id of cell format `xf_id` with number format `num_fmt_id` instead of its own
        (font, fill, border, alignment kept), added when missing."""
        xfs = self._children("cellXfs", "xf")
        if not 0 <= xf_id < len(xfs):
            return self.cell_xf(num_fmt_id, 0)
        if self.xf_num_fmt(xf_id) == num_fmt_id:
            return xf_id
        el = xfs[xf_id]
        tag = _start(el)
        body = el[len(tag):]
        new = _set_attr(tag, "numFmtId", str(num_fmt_id))
        new = _set_attr(new, "applyNumberFormat", "1" if num_fmt_id else "0")
        return self._add_xf(new + body)

    def is_plain(self, xf_id: int, header: bool = False) -> bool:
        """Does cell format `xf_id` look as filepipe's do, apart from its number format: the
        default font (bold for a `header`), no fill, no border, default alignment (a header
        may be right-aligned), no protection change, no named cell style? Formats a user made
        (a fill, a font, a border, a named style) are not plain."""
        xfs = self._children("cellXfs", "xf")
        if not 0 <= xf_id < len(xfs):
            return True
        el = xfs[xf_id]
        a = attrs(_start(el))
        if a.get("xfId", "0") != "0":
            return False
        try:
            font, fill, border = (int(a.get(k, "0")) for k in ("fontId", "fillId", "borderId"))
        except ValueError:
            return False
        fonts = self._children("fonts", "font")
        if fonts and 0 <= font < len(fonts):
            bold, rest = _font_key(fonts[font])
            bold0, rest0 = _font_key(fonts[0])
            if rest != rest0 or bold != (header or bold0):
                return False
        if not (self._plain_fill(fill) and self._plain_border(border)):
            return False
        for tag, tag_attrs in _CHILD_RE.findall(el[len(_start(el)):]):
            if tag == "alignment":
                allowed = dict(_PLAIN_ALIGNMENT)
                if header:
                    allowed["horizontal"] = {"general", "right"}
                got = attrs(tag_attrs)
                if any(got[k] not in allowed.get(k, set()) for k in got):
                    return False
            elif tag == "protection":
                got = attrs(tag_attrs)
                if any(got[k] not in _PLAIN_PROTECTION.get(k, set()) for k in got):
                    return False
        return True

    def plain_defaults(self) -> set[int]:
        """The cell formats that look as filepipe's data cells do, number format included
        (one of filepipe's defaults): a cell of one of them is never formatted by a user."""
        out = set()
        for i in range(self.xf_count()):
            code = self.num_fmt_code(self.xf_num_fmt(i))
            if code is not None and normal_code(code) in NORMAL_DEFAULTS and self.is_plain(i):
                out.add(i)
        return out

    def _plain_fill(self, fill_id: int) -> bool:
        if fill_id == 0:
            return True
        fills = self._children("fills", "fill")
        if not 0 <= fill_id < len(fills):
            return True
        f = fills[fill_id]
        if "gradientFill" in f:
            return False
        m = re.search(r'patternType\s*=\s*["\']([^"\']*)["\']', f)
        return m is None or m.group(1) == "none"

    def _plain_border(self, border_id: int) -> bool:
        if border_id == 0:
            return True
        borders = self._children("borders", "border")
        if not 0 <= border_id < len(borders):
            return True
        styles = re.findall(r'\bstyle\s*=\s*["\']([^"\']*)["\']', borders[border_id])
        return all(s == "none" for s in styles)


def _start(el: str) -> str:
    """The start tag of the element text `el`."""
    return el[: el.index(">") + 1]


def _set_attr(tag: str, name: str, value: str) -> str:
    """The start tag `tag` with attribute `name` set to `value`."""
    pat = r"(?<![\w:.-])" + name + r'\s*=\s*("[^"]*"|\'[^\']*\')'
    if re.search(pat, tag):
        return re.sub(pat, f'{name}="{value}"', tag, count=1)
    end = len(tag) - (2 if tag.endswith("/>") else 1)
    return tag[:end].rstrip() + f' {name}="{value}"' + tag[end:]


def _font_key(font: str) -> tuple[bool, frozenset]:
    """What a font element shows: bold or not, and the rest (tags other writers add or drop
    without a visible difference left out)."""
    bold = False
    rest: set[tuple] = set()
    for tag, tag_attrs in _CHILD_RE.findall(font):
        if tag == "font" or tag in _IGNORED_FONT_TAGS:
            continue
        a = attrs(tag_attrs)
        if tag in _BOOL_FONT_TAGS:
            on = a.get("val", "1") in _TRUE
            if tag == "b":
                bold = on
            elif on:
                rest.add((tag,))
            continue
        if tag == "color" and (a.get("theme") == "1" or a.get("rgb", "").upper()[-6:] == "000000"
                               or a.get("auto") in _TRUE):
            continue  # the default text colour
        if tag == "u" and a.get("val", "single") == "none":
            continue
        rest.add((tag, tuple(sorted(a.items()))))
    return bold, frozenset(rest)


class StyleIds:
    """The cell format ids the sheet writer uses by default: the headers' (bold; and
    right-aligned, over numbers), and those of ints, floats, dates, times and durations (with
    and without milliseconds)."""

    __slots__ = ("header", "header_right", "int", "float", "date", "datetime", "datetime_ms",
                 "time", "time_ms", "duration", "duration_ms", "styles")

    def __init__(self, styles: Styles):
        self.styles = styles
        bold = styles.bold_font()
        self.header = styles.cell_xf(0, bold)
        self.header_right = styles.cell_xf(0, bold, right=True)
        self.int = styles.cell_xf(styles.num_fmt(INT_FMT), 0)
        self.float = styles.cell_xf(styles.num_fmt(FLOAT_FMT), 0)
        self.date = styles.cell_xf(styles.num_fmt(DATE_FMT), 0)
        self.datetime = styles.cell_xf(styles.num_fmt(DATETIME_FMT), 0)
        self.datetime_ms = styles.cell_xf(styles.num_fmt(DATETIME_MS_FMT), 0)
        self.time = styles.cell_xf(styles.num_fmt(TIME_FMT), 0)
        self.time_ms = styles.cell_xf(styles.num_fmt(TIME_MS_FMT), 0)
        self.duration = styles.cell_xf(styles.num_fmt(DURATION_FMT), 0)
        self.duration_ms = styles.cell_xf(styles.num_fmt(DURATION_MS_FMT), 0)
