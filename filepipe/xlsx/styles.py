"""``xl/styles.xml``: the bold header font and the number formats of dates, times and
durations, appended once to the workbook's styles and then reused."""

from __future__ import annotations

import re

from .xmltext import NS_MAIN, XML_DECL, attr, attrs, opened, root_prefix, start_tag

DATE_FMT = "yyyy-mm-dd"
DATETIME_FMT = "yyyy-mm-dd hh:mm:ss"
DATETIME_MS_FMT = "yyyy-mm-dd hh:mm:ss.000"
TIME_FMT = "hh:mm:ss"
TIME_MS_FMT = "hh:mm:ss.000"
DURATION_FMT = "[h]:mm:ss"
DURATION_MS_FMT = "[h]:mm:ss.000"

class Styles:
    """Append-only edits of styles.xml done on the text (keeps every namespace/extension)."""

    _ORDER = ["numFmts", "fonts", "fills", "borders", "cellStyleXfs", "cellXfs", "cellStyles",
              "dxfs", "tableStyles", "colors", "extLst"]

    def __init__(self, xml: str):
        self.xml = xml
        self.p = root_prefix(xml, "styleSheet")

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
        """The id of the number format `code`, added when missing."""
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

    def cell_xf(self, num_fmt_id: int, font_id: int) -> int:
        """The id of the cell format with this number format and font, added when missing."""
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


class StyleIds:
    """The cell format ids the sheet writer uses: the header's and those of dates, times
    and durations (with and without milliseconds)."""

    __slots__ = ("header", "date", "datetime", "datetime_ms", "time", "time_ms", "duration",
                 "duration_ms")

    def __init__(self, styles: Styles):
        bold = styles.bold_font()
        self.header = styles.cell_xf(0, bold)
        self.date = styles.cell_xf(styles.num_fmt(DATE_FMT), 0)
        self.datetime = styles.cell_xf(styles.num_fmt(DATETIME_FMT), 0)
        self.datetime_ms = styles.cell_xf(styles.num_fmt(DATETIME_MS_FMT), 0)
        self.time = styles.cell_xf(styles.num_fmt(TIME_FMT), 0)
        self.time_ms = styles.cell_xf(styles.num_fmt(TIME_MS_FMT), 0)
        self.duration = styles.cell_xf(styles.num_fmt(DURATION_FMT), 0)
        self.duration_ms = styles.cell_xf(styles.num_fmt(DURATION_MS_FMT), 0)
