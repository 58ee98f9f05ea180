"""Images (PNG, JPEG, GIF, WebP, TIFF, BMP): their text is whatever OCR reads in them.

An image is one page (a multi-page TIFF, one page per frame), sized in pixels, always an
image page. Without OCR an image has no text, so it fails with "no text found: ... OCR is not
installed" (or "turned off"): a document that retrieval can never find is worse than an honest
failure. Pillow refuses images whose pixel count would not fit the child's memory (the
classic decompression bomb: a small PNG of a huge blank canvas) before decoding them.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from threadline.domain.documents import ParsedDocument, ParsedPage, ParseFailed
from threadline.ingestion.formats import ocr
from threadline.ingestion.formats.job import Job, page_list, require_text

MAX_PIXELS = 89_478_485  # Pillow's own default warning threshold
BYTES_PER_PIXEL_BUDGET = 12  # decoded image, greyscale copy, and Tesseract's working copies


def extract(path: Path, job: Job) -> ParsedDocument:
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = _max_pixels(job)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return _read(image, job)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise job.memory_failure("the image has too many pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise ParseFailed("the file is damaged or is not a valid image") from None


def _read(image: Any, job: Job) -> ParsedDocument:
    from PIL import ImageOps

    frames = getattr(image, "n_frames", 1) if image.format in ("TIFF", "MPO") else 1
    job.check_page_count(frames)
    metadata = {
        "format": image.format,
        "width": image.width,
        "height": image.height,
        "mode": image.mode,
        "frames": getattr(image, "n_frames", 1),
    }
    unavailable = ocr.unavailable_reason(job)
    if unavailable:
        raise ParseFailed(f"no text found: the file is an image and {unavailable}")
    pages: list[ParsedPage] = []
    unread: dict[str, list[int]] = {}
    for number in range(frames):
        image.seek(number)
        frame = ImageOps.exif_transpose(image)
        text = ""
        try:
            text = ocr.read_text(frame, job)
        except ocr.OcrUnfinished as stop:
            unread.setdefault(stop.reason, []).append(number)
        pages.append(ParsedPage(number, text, frame.width, frame.height, is_image_page=True))
    if ocr.OUT_OF_TIME in unread and not any(page.text for page in pages):
        raise job.timeout_failure()
    require_text(pages, "OCR read no text in the image" + "".join(f"; {why}" for why in unread))
    notes = [f"{page_list(numbers)}: no text found; {why}" for why, numbers in unread.items()]
    return ParsedDocument(pages=tuple(pages), notes=tuple(notes), metadata=metadata)


def _max_pixels(job: Job) -> int:
    return min(MAX_PIXELS, job.memory_mb * 1024 * 1024 // BYTES_PER_PIXEL_BUDGET)
