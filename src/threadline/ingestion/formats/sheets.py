"""Excel (.xlsx) and CSV: a table becomes lines of ` | `-separated cells.

A workbook becomes one page per worksheet (chart sheets have no cells and are skipped), each
starting with `Sheet: <name>`; empty rows and trailing empty cells are dropped. Formulas give
their last computed value, as Excel shows them. openpyxl reads in streaming (read-only) mode
with the sheet's declared dimensions ignored, so a lying `A1:XFD1048576` costs nothing. A CSV
is one page; its dialect (comma, semicolon, tab, pipe) is sniffed from its head.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from threadline.domain.documents import ParsedDocument, ParsedPage, ParseFailed
from threadline.ingestion.formats.job import Job, clean_text, require_text
from threadline.ingestion.formats.ooxml import DAMAGED, check_package
from threadline.ingestion.formats.text import decode_text

SNIFF_CHARS = 64 * 1024
MAX_CELL_CHARS = 32767  # Excel's own limit for one cell


def extract_xlsx(path: Path, job: Job) -> ParsedDocument:
    check_package(path, job)
    import openpyxl

    try:
        workbook = openpyxl.load_workbook(str(path), read_only=True, data_only=True)
    except (KeyError, ValueError, TypeError, IndexError):
        raise ParseFailed(DAMAGED) from None
    try:
        sheets = workbook.worksheets
        job.check_page_count(len(sheets))
        pages = tuple(ParsedPage(number, _sheet_text(sheet)) for number, sheet in enumerate(sheets))
        names = [sheet.title for sheet in sheets]
    finally:
        workbook.close()
    require_text(pages, "the worksheets are empty" if pages else "the workbook has no worksheets")
    return ParsedDocument(pages=pages, metadata={"format": "XLSX", "sheets": names})


def extract_csv(path: Path, job: Job) -> ParsedDocument:
    text, notes = decode_text(path.read_bytes())
    try:
        dialect = csv.Sniffer().sniff(text[:SNIFF_CHARS], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    try:
        body = _rows_text(csv.reader(io.StringIO(text, newline=""), dialect))
    except csv.Error as error:
        notes.append(f"the file could not be read as CSV ({error}); its text is used as is")
        body = text
    page = ParsedPage(0, clean_text(body))
    require_text([page], "the file is empty")
    return ParsedDocument(pages=(page,), notes=tuple(notes), metadata={"format": "CSV"})


def _sheet_text(sheet: Any) -> str:
    sheet.reset_dimensions()
    body = _rows_text(sheet.iter_rows(values_only=True))
    return f"Sheet: {sheet.title}\n{body}" if body else ""


def _rows_text(rows: Iterable[Sequence[Any]]) -> str:
    lines = []
    for row in rows:
        cells = [_cell_text(value) for value in row]
        while cells and not cells[-1]:
            cells.pop()
        if cells:
            lines.append(" | ".join(cells))
    return "\n".join(lines)


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, dt.datetime) and value.time() == dt.time(0):
        return value.date().isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return " ".join(str(value)[:MAX_CELL_CHARS].split())
