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
  - ``xl/styles.xml`` (a bold font and filepipe's cell formats are appended once, then reused;
    formats derived from the user's, with another number format, are appended as needed);
* ``xl/calcChain.xml`` is deleted (it may list cells of the replaced sheet; Excel rebuilds it);
* a replaced sheet loses its own relationships (drawings, tables, comments...): the sheet
  is filepipe's own output. Parts reachable only through them are deleted as well. The look
  the user gave it is kept (:mod:`.look`): column widths and styles, header and cell formats,
  conditional formats, data validations, tab colour, view and print set-up;
* ``docProps/app.xml`` is left alone (it caches the sheet titles; Excel does not mind).

The new workbook is built in a temporary file in the target's directory, fsynced and moved
over the target with ``os.replace``: readers see either the old or the new file. The
original file's permission bits are kept. A symlink is written through (its target is
replaced). If the original changes while filepipe is writing, nothing is replaced and a
:class:`SheetError` is raised.

Cell conventions (see :func:`write_sheet`; :func:`sheet_values` gives what a frame reads back
as, also after Excel, LibreOffice or openpyxl re-saved the workbook):

* row 1 holds the column names as text cells (:func:`cell_text`: ``2019`` → ``"2019"``,
  ``True`` → ``"TRUE"``, a date → ``"2026-11-30"``), bold (right-aligned over a column of
  numbers or dates), frozen, with an autofilter; two columns whose names give the same text
  are a :class:`SheetError`; the DataFrame index is not written;
* ints and floats are numbers of at most 15 significant digits, as Excel shows them and
  LibreOffice saves them (``29.799999999999997`` → ``29.8``, ``1234567890123456`` →
  ``1234567890123460``); NaN/None/NaT/pd.NA are empty cells (no ``<c>`` element);
  ``inf``/``-inf`` become the error value ``#NUM!`` (Excel has no infinities). Ints are shown
  in full (format ``0``), and so are float columns of whole numbers; other floats with two to
  eight decimals (``#,##0.00######``: 9 → ``9.00``, 1/3 → ``0.33333333``; the cell keeps its
  15 digits), or in General when some lie outside 1e-4..1e15;
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
* dict/list/tuple/ndarray cells are compact JSON; anything else is ``str(value)``;
* columns are as wide as their widest value or header (bounded at 60 characters); filepipe's
  own widths end in 1/65536 of a character, so a width someone set is told apart and kept;
* ``formats`` and ``widths`` (by column name) override the number formats and widths;
* the sheet part's zip member comment (``filepipe``, ``filepipe:cells,tail``) says what of
  the user's look it carries beyond its head, so that a rewrite of a sheet filepipe wrote
  reads no more of the old sheet than it must (:mod:`.oldsheet`).

Reading uses pandas' calamine engine; only empty cells are missing values (strings such as
``"NA"`` or ``"null"`` stay strings; an empty string reads back as missing). Rows at the end
whose cells are all missing are not in the sheet, so they do not come back. Header cells are
read as the text they show (:func:`cell_text`), so column names are always strings.

A file that is no .xlsx package for a reason retrying will not fix — a folder, an encrypted
workbook, an old ``.xls`` — is a :class:`SheetError` saying so. Other
``zipfile.BadZipFile`` / calamine errors, from half-written or corrupt files, are not wrapped:
callers retry those.

The modules, each importing only those above it (and ``filepipe.errors``/``fileutil``):

* ``xmltext``: namespaces, escaping, start tags — XML edited as text;
* ``limits``: :class:`SheetError`, Excel's limits, sheet names, cell references;
* ``paths``: which paths can hold a workbook, why a file is no .xlsx package;
* ``package``: the zip package: parts, content types, relationships, the sheet list;
* ``numfmt``: number-format codes: built-in, filepipe's defaults, checks, which show dates;
* ``styles``: the header fonts and cell formats appended to ``styles.xml``, the user's told
  apart from filepipe's;
* ``values``: what a cell keeps of a value (:func:`sheet_values`, :func:`cell_text`);
* ``cellxml``: cells as XML, filled column by column into a grid of row chunks;
* ``oldsheet``: the look of the sheet being replaced, read as a stream;
* ``look``: the look of the sheet being written: defaults, declared formats, the user's kept;
* ``sheet``: the worksheet XML of a DataFrame;
* ``plan``: what writing one sheet changes in the package;
* ``zipio``: the new zip package written, members copied as they are, and checked;
* ``read``: :func:`sheet_names`, and :func:`read_sheet` with calamine;
* ``write``: :func:`write_sheet`, the atomic replace of the workbook.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .limits import MAX_CELL_CHARS, MAX_COLS, MAX_ROWS, SheetError, sheet_name_from, validate_sheet_name
from .look import RowOrigin
from .numfmt import check_format_code
from .numfmt import is_date_code as shows_dates
from .paths import check_output_path
from .read import read_sheet, sheet_names
from .values import (
    cell_text,
    datetimes_from_serials,
    excel_floats,
    header_text,
    header_texts,
    is_missing,
    serials_from_datetimes,
    sheet_values,
)
from .write import check_look
from .write import write_sheet as _write_sheet
from .zipio import verify_zip as _verify_zip

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SheetError", "write_sheet", "read_sheet", "sheet_names", "validate_sheet_name", "sheet_name_from",
           "sheet_values", "cell_text", "header_text", "header_texts", "check_output_path",
           "excel_floats", "is_missing", "check_format_code", "check_look", "shows_dates", "datetimes_from_serials",
           "serials_from_datetimes", "MAX_ROWS", "MAX_COLS", "MAX_CELL_CHARS"]


def write_sheet(path: str | os.PathLike, sheet: str, df: pd.DataFrame,
                formats: Mapping[str, str] | None = None, widths: Mapping[str, float] | None = None,
                row_origin: RowOrigin | None = None) -> None:
    """Write `df` as sheet `sheet` of the workbook at `path`, keeping every other sheet
    and the look the user gave this one (:func:`filepipe.xlsx.write.write_sheet` says how).

    The new file is checked with this package's ``_verify_zip`` as it is when called: the
    tests replace it to play another program saving the workbook meanwhile.
    """
    _write_sheet(path, sheet, df, verify=_verify_zip, formats=formats, widths=widths,
                 row_origin=row_origin)
