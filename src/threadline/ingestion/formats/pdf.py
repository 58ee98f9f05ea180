"""PDF: the text layer of every page with PDFium, and OCR for pages that are only pictures.

Page sizes are reported in points (1/72 inch, so pixels at 72 dpi) as the page is displayed,
that is with its /Rotate applied; `rotation` keeps the angle. A page without a single text
character but with an image on it is an *image page* (a scan): its text comes from Tesseract
when OCR is available, otherwise a note says which pages could not be read. OCR happens after
the text pass, and stops early (with a note) when the time limit is near, so a long scan
still yields the text found so far.

What a document is and where each page sits in it go with the text, for contextual chunks
(`services/retrieval_context.py`): the outline (bookmarks) as `metadata["outline"]`, a list of
[0-based page, level, title] (without bookmarks, the headings that font sizes show,
`pdf_headings.py`), and, when the document information has no title, the largest
text on the first page with text (a font-size cue: a title page's title) as
`metadata["title"]`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from threadline.domain.documents import ParsedDocument, ParsedPage, ParseFailed
from threadline.ingestion.formats import ocr
from threadline.ingestion.formats.job import (
    MAX_HEADING_CHARS,
    MAX_OUTLINE_ENTRIES,
    Job,
    clean_text,
    page_list,
    require_text,
)
from threadline.ingestion.formats.pdf_headings import Line, headings_from_fonts, line_sizes

if TYPE_CHECKING:
    import pypdfium2 as pdfium

OCR_DPI = 300
MAX_RENDER_SIDE = 5000  # pixels; a poster-sized page is rendered below 300 dpi
METADATA_KEYS = ("Title", "Author", "Subject", "Keywords", "Creator", "Producer")
MAX_METADATA_CHARS = 500
TITLE_PAGES = 3  # the title is looked for on the first pages with text
TITLE_CHARS = 4000  # characters of such a page whose font size is read


def extract(path: Path, job: Job) -> ParsedDocument:
    import pypdfium2 as pdfium

    pdf = _open(pdfium, path)
    try:
        job.check_page_count(len(pdf))
        outline = _safe_outline(pdf)
        lines: list[Line] | None = None if outline else []  # font-size cues, for no outline
        pages = [_read_page(pdf, number, lines) for number in range(len(pdf))]
        pages, notes = _ocr_image_pages(pdf, pages, job)
        metadata = _metadata(pdf)
        metadata.update(_structure(pdf, metadata, outline or _font_outline(lines)))
    finally:
        pdf.close()
    require_text(pages, _why_no_text(pages, job))
    return ParsedDocument(pages=tuple(pages), notes=tuple(notes), metadata=metadata)


def _open(pdfium: Any, path: Path) -> pdfium.PdfDocument:
    try:
        return pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as error:
        if error.err_code in (pdfium.raw.FPDF_ERR_PASSWORD, pdfium.raw.FPDF_ERR_SECURITY):
            raise ParseFailed(
                "encrypted PDF: it needs a password to open; upload a copy without one"
            ) from None
        raise ParseFailed("the file is damaged or is not a valid PDF") from None


def _read_page(pdf: pdfium.PdfDocument, number: int, lines: list[Line] | None) -> ParsedPage:
    """The page's text; with `lines`, each of its lines' font size is added there."""
    page = pdf[number]
    try:
        width, height = page.get_size()
        textpage = page.get_textpage()
        try:
            chars = textpage.count_chars()
            raw = textpage.get_text_range() if chars else ""
            text = clean_text(raw)
            if lines is not None and raw:
                with contextlib.suppress(Exception):  # a hint: never a reason to fail
                    lines.extend(line_sizes(textpage, raw, number))
        finally:
            textpage.close()
        return ParsedPage(
            number=number,
            text=text,
            width=round(width),
            height=round(height),
            rotation=page.get_rotation(),
            is_image_page=chars == 0 and _has_image(page),
        )
    finally:
        page.close()


def _has_image(page: pdfium.PdfPage) -> bool:
    import pypdfium2.raw as pdfium_c

    images = page.get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_IMAGE,), max_depth=4)
    return next(iter(images), None) is not None


def _ocr_image_pages(
    pdf: pdfium.PdfDocument, pages: list[ParsedPage], job: Job
) -> tuple[list[ParsedPage], list[str]]:
    """OCR every image page while time allows; notes for the pages left unread."""
    todo = [page.number for page in pages if page.is_image_page]
    if not todo:
        return pages, []
    unavailable = ocr.unavailable_reason(job)
    if unavailable:
        return pages, [f"{page_list(todo)}: no text found; {unavailable}"]
    unread: dict[str, list[int]] = {}
    for index, number in enumerate(todo):
        try:
            text = ocr.read_text(_render(pdf, number), job, dpi=OCR_DPI)
        except ocr.OcrUnfinished as stop:
            unread.setdefault(stop.reason, []).append(number)
            if stop.out_of_time:
                unread[stop.reason].extend(todo[index + 1 :])
                break
            continue
        old = pages[number]
        pages[number] = ParsedPage(
            number, text, old.width, old.height, old.rotation, is_image_page=True
        )
    notes = [f"{page_list(numbers)}: no text found; {why}" for why, numbers in unread.items()]
    return pages, notes


def _render(pdf: pdfium.PdfDocument, number: int) -> Any:
    page = pdf[number]
    try:
        width, height = page.get_size()
        scale = min(OCR_DPI / 72, MAX_RENDER_SIDE / max(width, height, 1))
        bitmap = page.render(scale=scale, grayscale=True, may_draw_forms=False)
        return bitmap.to_pil()
    finally:
        page.close()


def _metadata(pdf: pdfium.PdfDocument) -> dict[str, Any]:
    metadata: dict[str, Any] = {"format": "PDF", "pdf_version": _version(pdf)}
    info = pdf.get_metadata_dict(skip_empty=True)
    for key in METADATA_KEYS:
        value = info.get(key)
        if value:
            metadata[key.lower()] = clean_text(value)[:MAX_METADATA_CHARS]
    return metadata


def _safe_outline(pdf: pdfium.PdfDocument) -> list[list[Any]]:
    """The outline (bookmarks); [] when there is none or it is malformed."""
    try:
        return _outline(pdf)
    except Exception:  # PDFium raises several kinds on broken structures
        return []


def _font_outline(lines: list[Line] | None) -> list[list[Any]]:
    """Headings from font-size cues (`pdf_headings.py`), for a PDF without an outline."""
    try:
        return headings_from_fonts(lines or [])
    except Exception:  # a hint: never a reason to fail
        return []


def _structure(
    pdf: pdfium.PdfDocument, metadata: dict[str, Any], outline: list[list[Any]]
) -> dict[str, Any]:
    """The outline (bookmarks, else font-size headings), and a title from font sizes when
    the metadata has none. A malformed outline or font table leaves them out: they help
    retrieval, the text does not need them."""
    found: dict[str, Any] = {}
    try:
        if outline:
            found["outline"] = outline
        if not metadata.get("title"):
            title = _title_from_fonts(pdf)
            if title:
                found["title"] = title
    except Exception:  # PDFium raises several kinds on broken structures
        pass
    return found


def _outline(pdf: pdfium.PdfDocument) -> list[list[Any]]:
    entries: list[list[Any]] = []
    for bookmark in pdf.get_toc(max_depth=8):
        dest = bookmark.get_dest()
        index = dest.get_index() if dest is not None else None
        title = clean_text(bookmark.get_title() or "").strip()[:MAX_HEADING_CHARS]
        if index is None or index < 0 or not title:
            continue
        entries.append([int(index), int(bookmark.level), title])
        if len(entries) == MAX_OUTLINE_ENTRIES:
            break
    return entries


def _title_from_fonts(pdf: pdfium.PdfDocument) -> str | None:
    """The characters set at (nearly) the largest font size of the first page with text,
    when that size stands out from the page's body text (1.2x its median)."""
    import pypdfium2.raw as pdfium_c

    for number in range(min(TITLE_PAGES, len(pdf))):
        page = pdf[number]
        textpage = page.get_textpage()
        try:
            count = min(textpage.count_chars(), TITLE_CHARS)
            if count == 0:
                continue
            sizes = [pdfium_c.FPDFText_GetFontSize(textpage, i) for i in range(count)]
            text = textpage.get_text_range(0, count)
        finally:
            textpage.close()
            page.close()
        biggest = max(sizes)
        if biggest < 1.2 * sorted(sizes)[len(sizes) // 2]:
            return None
        kept = [
            ch if size >= 0.85 * biggest and not ch.isspace() else " "
            for ch, size in zip(text, sizes, strict=False)
        ]
        title = " ".join("".join(kept).split())[:MAX_HEADING_CHARS]
        return title or None
    return None


def _version(pdf: pdfium.PdfDocument) -> str | None:
    version = pdf.get_version()
    return f"{version // 10}.{version % 10}" if version else None


def _why_no_text(pages: list[ParsedPage], job: Job) -> str:
    if not pages:
        return "the PDF has no pages"
    if any(page.is_image_page for page in pages):
        unavailable = ocr.unavailable_reason(job)
        return f"the pages are scanned images and {unavailable or 'OCR read no text on them'}"
    return "the PDF has no text layer and no images (blank pages or drawings only)"
