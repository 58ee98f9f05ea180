"""The per-format extractors. They run in the sandbox child, never in the server.

Each takes the file's path and a `Job` (name, limits, clock) and returns a `ParsedDocument`,
or raises `ParseFailed` with a sentence a person understands. A format's module, and the
libraries behind it, is imported the first time a file of that format arrives: a child that
only ever sees PDFs never loads openpyxl.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from threadline.domain.documents import ParsedDocument, ParseFailed
from threadline.ingestion import detect
from threadline.ingestion.formats.job import Job

__all__ = ["EXTRACTORS", "Extractor", "Job", "extractor_for"]

Extractor = Callable[[Path, Job], ParsedDocument]

EXTRACTORS: dict[str, tuple[str, str]] = {
    detect.PDF: ("pdf", "extract"),
    detect.DOCX: ("office", "extract_docx"),
    detect.PPTX: ("office", "extract_pptx"),
    detect.XLSX: ("sheets", "extract_xlsx"),
    detect.CSV: ("sheets", "extract_csv"),
    detect.HTML: ("text", "extract_html"),
    detect.MARKDOWN: ("text", "extract_markdown"),
    detect.TEXT: ("text", "extract_plain"),
    **{mime: ("images", "extract") for mime in detect.IMAGE_TYPES},
}
"""Canonical MIME type → (module in this package, function)."""


def extractor_for(mime_type: str) -> Extractor:
    try:
        module_name, function = EXTRACTORS[mime_type]
    except KeyError:
        raise ParseFailed(f"unsupported file type: {mime_type}") from None
    module = importlib.import_module(f"{__name__}.{module_name}")
    extract: Extractor = getattr(module, function)
    return extract
