"""The default OCR engine: RapidOCR (PP-OCRv4 models on onnxruntime), installed by pip alone.

Its detection, orientation and recognition models ship inside the `rapidocr_onnxruntime`
wheel, so a fresh `pip install` reads scans with no system package and nothing downloaded.
The engine is loaded once per sandbox child (about half a second) and kept for the child's
later files; onnxruntime runs one thread, as Tesseract does, because the machine is shared.

RapidOCR answers with text boxes, not lines: `lines_of` puts boxes that share a baseline
band on one line, left to right, so a page reads as a person would read it.

Runs in the sandbox child only.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL.Image import Image

MIN_SCORE = 0.5
"""Boxes read with less confidence than this are dropped (RapidOCR's own default)."""
MAX_SIDE = 2600
"""Pictures are scaled down to this many pixels on their long side before reading (an A4
scan to about 220 dpi). RapidOCR's own 2000 (170 dpi) runs the words of 10 pt text together:
"paidtothestreet" is not found by a search for "street"."""
MIN_MEMORY_MB = 2048
"""The address space the engine needs: OpenCV and onnxruntime reserve about 500 MB when they
load, and reading a page at `MAX_SIDE` peaks near 1.5 GB (RLIMIT_AS counts reservations)."""


class EngineMissing(Exception):
    """RapidOCR (or a library it needs, such as OpenCV's libGL) cannot be imported."""


@functools.cache
def _engine() -> Any:
    try:
        from rapidocr_onnxruntime import RapidOCR
    except ImportError as error:  # also OSError-like loader failures surface as ImportError
        raise EngineMissing(str(error)) from None
    logging.getLogger("RapidOCR").setLevel(logging.ERROR)
    logging.getLogger("OrtInferSession").setLevel(logging.ERROR)
    import cv2

    cv2.setNumThreads(1)
    return RapidOCR(intra_op_num_threads=1, inter_op_num_threads=1, max_side_len=MAX_SIDE)


def missing_reason(memory_mb: int) -> str | None:
    """Why RapidOCR cannot run here, or None when it can (loads the engine on first call)."""
    if memory_mb < MIN_MEMORY_MB:
        return f"OCR needs documents.parse_memory_mb of at least {MIN_MEMORY_MB}"
    try:
        _engine()
    except EngineMissing:
        return "OCR is not installed (pip install rapidocr_onnxruntime)"
    return None


def read_text(image: Image) -> str:
    """The text RapidOCR finds in `image`, line by line (possibly "")."""
    import numpy as np

    rgb = image if image.mode == "RGB" else image.convert("RGB")
    pixels = np.asarray(rgb)[:, :, ::-1]  # RapidOCR takes OpenCV's BGR order
    result, _ = _engine()(pixels, use_cls=True)
    boxes = [(box, str(text)) for box, text, score in result or () if float(score) >= MIN_SCORE]
    return "\n".join(lines_of(boxes))


def lines_of(boxes: Sequence[tuple[Sequence[Sequence[float]], str]]) -> list[str]:
    """Boxes (four corner points, text) as lines of text: top to bottom, left to right.
    A box joins the current line when its vertical middle lies within that line's band."""
    placed = sorted(
        (
            (min(y for _, y in box), max(y for _, y in box), min(x for x, _ in box), text)
            for box, text in boxes
            if text.strip()
        ),
        key=lambda item: (item[0], item[2]),
    )
    lines: list[list[tuple[float, str]]] = []
    band = (0.0, -1.0)
    for top, bottom, left, text in placed:
        middle = (top + bottom) / 2
        if lines and band[0] <= middle <= band[1]:
            lines[-1].append((left, text))
            band = (min(band[0], top), max(band[1], bottom))
        else:
            lines.append([(left, text)])
            band = (top, bottom)
    return [" ".join(text.strip() for _, text in sorted(line)) for line in lines]
