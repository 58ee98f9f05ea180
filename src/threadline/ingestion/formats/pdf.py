"""PDF: the text layer of every page with PDFium, and OCR for pages that are only pictures.

Page sizes are reported in points (1/72 inch, so pixels at 72 dpi) as the page is displayed,
that is with its /Rotate applied; `rotation` keeps the angle. A page without a single text
character but with an image on it is an *image page* (a scan): its text comes from Tesseract
when OCR is available, otherwise a note says which pages could not be read. OCR happens after
the text pass, and stops early (with a note) when the time limit is near, so a long scan
still yields the text found so far.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from threadline.domain.documents import ParsedDocument, ParsedPage, ParseFailed
from threadline.ingestion.formats import ocr
from threadline.ingestion.formats.job import Job, clean_text, page_list, require_text

if TYPE_CHECKING:
    import pypdfium2 as pdfium

OCR_DPI = 300
MAX_RENDER_SIDE = 5000  # pixels; a poster-sized page is rendered below 300 dpi
METADATA_KEYS = ("Title", "Author", "Subject", "Keywords", "Creator", "Producer")
MAX_METADATA_CHARS = 500


def extract(path: Path, job: Job) -> ParsedDocument:
    import pypdfium2 as pdfium

    pdf = _open(pdfium, path)
    try:
        job.check_page_count(len(pdf))
        pages = [_read_page(pdf, number) for number in range(len(pdf))]
        pages, notes = _ocr_image_pages(pdf, pages, job)
        metadata = _metadata(pdf)
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


def _read_page(pdf: pdfium.PdfDocument, number: int) -> ParsedPage:
    page = pdf[number]
    try:
        width, height = page.get_size()
        textpage = page.get_textpage()
        try:
            chars = textpage.count_chars()
            text = clean_text(textpage.get_text_range()) if chars else ""
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
