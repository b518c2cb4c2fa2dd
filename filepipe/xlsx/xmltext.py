"""XML as text: the namespaces of an .xlsx package, escaping, and reading start tags.

The package edits XML parts as text (to keep every namespace, extension and byte the
editor does not touch), so these are the few primitives that needs.
"""

from __future__ import annotations

import html
import re

NS_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
NS_STRICT_MAIN = "http://purl.oclc.org/ooxml/spreadsheetml/main"
NS_R = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
NS_PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
NS_CT = "http://schemas.openxmlformats.org/package/2006/content-types"
XML_DECL = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'

ILLEGAL_XML_CHARS = "[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]"
ILLEGAL_XML_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")

_ATTR_RE = re.compile(r"""([\w:.\-]+)\s*=\s*(?:"([^"]*)"|'([^']*)')""")


def attr(value: str) -> str:
    """`value` escaped for a double-quoted attribute."""
    return (
        value.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("\t", "&#9;")
        .replace("\n", "&#10;")
        .replace("\r", "&#13;")
    )


def text(value: str) -> str:
    """`value` escaped for element content."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def attrs(start_tag: str) -> dict[str, str]:
    """The attributes of a start tag, unescaped."""
    return {m.group(1): html.unescape(m.group(2) if m.group(2) is not None else m.group(3))
            for m in _ATTR_RE.finditer(start_tag)}


def root_prefix(xml: str, local: str) -> str:
    """Namespace prefix ('' or 'x:') used by the root element `local` of `xml`."""
    m = re.search(r"<(?:([A-Za-z_][\w.\-]*):)?" + local + r"[\s>/]", xml)
    if not m:
        raise ValueError(f"no <{local}> element")
    return f"{m.group(1)}:" if m.group(1) else ""


def decode(data: bytes) -> str:
    """The text of an XML part (UTF-8, with or without BOM, or UTF-16)."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    return data.decode("utf-8")


def insert_before_first(xml: str, p: str, tags: list[str], root: str, piece: str) -> str:
    """`piece` inserted before the first of the elements `tags` found in `xml` (prefix `p`),
    else before the closing tag of `root`."""
    pos = None
    for tag in tags:
        m = re.search(r"<" + re.escape(p) + tag + r"\b", xml)
        if m:
            pos = m.start()
            break
    if pos is None:
        pos = xml.rindex("</" + p + root + ">")
    return xml[:pos] + piece + xml[pos:]


def start_tag(xml: str, p: str, tag: str, pos: int = 0) -> re.Match[str] | None:
    """The first start tag of `tag` (prefix `p`) in `xml` from `pos`; group 1 is "/" when
    the element is empty (``<tag/>``)."""
    return re.compile(r"<" + re.escape(p) + tag + r"\b[^>]*?(/?)>").search(xml, pos)


def opened(empty_tag: str) -> str:
    """The start tag of an empty element: ``<x a="1"/>`` -> ``<x a="1">``."""
    return empty_tag[:-2].rstrip() + ">"
