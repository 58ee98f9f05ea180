"""Word (.docx) and PowerPoint (.pptx): text in reading order, tables as ` | ` rows.

A Word document has no pages until a word processor lays it out, so it becomes one page (its
size is the first section's paper size, in points). A presentation becomes one page per slide,
the slide's size in points, with the speaker notes after the slide's text. Both packages pass
`ooxml.check_package` (no ZIP bombs, no DTDs) before their XML is parsed.

Their structure goes to `metadata["outline"]` for the chunks' context lines
(`services/retrieval_context.py`): a Word document's paragraphs styled "Heading 1"-"Heading
9" (a "Title" paragraph is its title when the properties name none), a slide's title.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from threadline.domain.documents import ParsedDocument, ParsedPage, ParseFailed
from threadline.ingestion.formats.job import Job, Outline, clean_text, require_text
from threadline.ingestion.formats.ooxml import DAMAGED, check_package

EMU_PER_POINT = 12700
MAX_PROPERTY_CHARS = 500


def extract_docx(path: Path, job: Job) -> ParsedDocument:
    check_package(path, job)
    import docx
    from docx.table import Table

    document = _open(docx.Document, path)
    blocks: list[str] = []
    outline, titles = Outline(), []
    style_names = _style_names(document)
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            blocks.append(_table_rows(block.rows))
            continue
        blocks.append(block.text)
        style = style_names.get(block._p.style or "", "")
        level = _heading_level(style)
        if level is not None:
            outline.add(0, level, block.text)
        elif style == "Title" and block.text.strip():
            titles.append(block.text)
    width, height = _paper_size(document)
    page = ParsedPage(0, clean_text("\n".join(blocks)), width, height)
    require_text([page], "the document is empty")
    metadata: dict[str, Any] = {"format": "DOCX", **_core_properties(document.core_properties)}
    if titles and "title" not in metadata:
        metadata["title"] = " ".join(clean_text(titles[0]).split())[:MAX_PROPERTY_CHARS]
    if outline:
        metadata["outline"] = list(outline)
    return ParsedDocument(pages=(page,), metadata=metadata)


def _style_names(document: Any) -> dict[str, str]:
    """Paragraph style id -> name, read once: `paragraph.style` looks the style up in the
    styles part on every call (10 s for 20,000 paragraphs). {} when that part is malformed."""
    try:
        return {
            str(style.style_id): str(style.name or "")
            for style in document.styles
            if style.style_id is not None
        }
    except (AttributeError, KeyError, ValueError):
        return {}


def _heading_level(style: str) -> int | None:
    """0 for "Heading 1" ... 8 for "Heading 9"; None for any other style."""
    prefix, _, number = style.rpartition(" ")
    if prefix == "Heading" and number.isdigit() and 1 <= int(number) <= 9:
        return int(number) - 1
    return None


def extract_pptx(path: Path, job: Job) -> ParsedDocument:
    check_package(path, job)
    import pptx

    presentation = _open(pptx.Presentation, path)
    slides = list(presentation.slides)
    job.check_page_count(len(slides))
    width = _points(presentation.slide_width)
    height = _points(presentation.slide_height)
    pages = tuple(
        ParsedPage(number, _slide_text(slide), width, height) for number, slide in enumerate(slides)
    )
    require_text(pages, "the slides have no text" if pages else "the presentation has no slides")
    metadata: dict[str, Any] = {
        "format": "PPTX",
        "slides": len(slides),
        **_core_properties(presentation.core_properties),
    }
    outline = Outline()
    for number, slide in enumerate(slides):
        title = slide.shapes.title  # the title placeholder, if the slide has one
        if title is not None and title.has_text_frame:
            outline.add(number, 0, title.text_frame.text)
    if outline:
        metadata["outline"] = list(outline)
    return ParsedDocument(pages=pages, metadata=metadata)


def _open(opener: Any, path: Path) -> Any:
    from lxml import etree

    try:
        return opener(str(path))
    except (KeyError, ValueError, AttributeError, etree.XMLSyntaxError):
        # python-docx and python-pptx signal a missing or malformed part this way
        raise ParseFailed(DAMAGED) from None


def _table_rows(rows: Iterable[Any]) -> str:
    """One line per row; a merged cell (python-docx repeats it) appears once."""
    lines = []
    for row in rows:
        cells: list[Any] = []
        for cell in row.cells:
            if not cells or cell._tc is not cells[-1]._tc:
                cells.append(cell)
        texts = [" ".join(cell.text.split()) for cell in cells]
        if any(texts):
            lines.append(" | ".join(texts))
    return "\n".join(lines)


def _slide_text(slide: Any) -> str:
    parts = list(_shape_texts(slide.shapes))
    if slide.has_notes_slide:
        notes = slide.notes_slide.notes_text_frame
        if notes is not None and notes.text.strip():
            parts.append("Notes: " + notes.text)
    return clean_text("\n".join(parts))


def _shape_texts(shapes: Iterable[Any]) -> Iterator[str]:
    """Text frames and tables, in the slide's order, groups opened."""
    for shape in shapes:
        if getattr(shape, "shapes", None) is not None:  # a group shape
            yield from _shape_texts(shape.shapes)
        elif getattr(shape, "has_table", False):
            yield _table_rows(shape.table.rows)
        elif getattr(shape, "has_text_frame", False) and shape.text_frame.text.strip():
            yield shape.text_frame.text


def _paper_size(document: Any) -> tuple[int, int]:
    sections = document.sections
    if not len(sections):
        return 0, 0
    first = sections[0]
    return _points(first.page_width), _points(first.page_height)


def _points(emu: int | None) -> int:
    return round(emu / EMU_PER_POINT) if emu else 0


def _core_properties(properties: Any) -> dict[str, str]:
    found = {}
    for key in ("title", "author", "subject"):
        value = getattr(properties, key, None)
        if isinstance(value, str) and value.strip():
            found[key] = clean_text(value)[:MAX_PROPERTY_CHARS]
    return found
