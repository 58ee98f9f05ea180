"""Reading text out of pictures (scanned PDF pages, uploaded images): one of two engines.

`documents.ocr_engine` chooses. "rapidocr" (the default) runs RapidOCR in this process, its
models from its wheel (see `rapid_ocr`): pip alone installs it. "tesseract" runs Debian's
`tesseract` as its own process, fed a greyscale PNM on stdin and read back on stdout: no
temporary files (the sandbox child may not write any), and a timeout that kills it. Without
the chosen engine, or with OCR turned off in the settings, the callers say so in a note or a
reason instead of silently returning nothing.

Runs in the sandbox child only; Pillow is imported by the callers, not here.
"""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
from typing import TYPE_CHECKING

from threadline.ingestion.formats import rapid_ocr
from threadline.ingestion.formats.job import Job, clean_text

if TYPE_CHECKING:
    from PIL.Image import Image

ENGINES = ("rapidocr", "tesseract")
OUT_OF_TIME = "OCR ran out of time"
RESERVE_SECONDS = 1.0
"""Time kept back from OCR so the child can still answer before the parent's deadline."""


class OcrUnfinished(Exception):
    """The engine could not read this picture; `reason` says why, for a note. When
    `out_of_time`, there is no point in trying the next one."""

    def __init__(self, reason: str, *, out_of_time: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.out_of_time = out_of_time


@functools.cache
def tesseract_command() -> str | None:
    return shutil.which("tesseract")


def unavailable_reason(job: Job) -> str | None:
    """Why OCR cannot run for this job ("OCR is not installed"), or None when it can."""
    if not job.ocr:
        return "OCR is turned off"
    if job.ocr_engine == "tesseract":
        return "OCR is not installed" if tesseract_command() is None else None
    return rapid_ocr.missing_reason(job.memory_mb)


def read_text(image: Image, job: Job, *, dpi: int | None = None) -> str:
    """The text the job's engine finds in `image` (possibly ""). Raises `OcrUnfinished`."""
    if job.ocr_engine == "tesseract":
        return _tesseract(image, job, dpi)
    if job.seconds_left() - RESERVE_SECONDS <= 0:
        raise OcrUnfinished(OUT_OF_TIME, out_of_time=True)
    reason = rapid_ocr.missing_reason(job.memory_mb)
    if reason:
        raise OcrUnfinished(reason)
    try:
        return clean_text(rapid_ocr.read_text(image))
    except rapid_ocr.EngineMissing:
        raise OcrUnfinished("OCR is not installed (pip install rapidocr_onnxruntime)") from None


def _tesseract(image: Image, job: Job, dpi: int | None) -> str:
    command = tesseract_command()
    if command is None:
        raise OcrUnfinished("OCR is not installed")
    timeout = job.seconds_left() - RESERVE_SECONDS
    if timeout <= 0:
        raise OcrUnfinished(OUT_OF_TIME, out_of_time=True)
    gray = image if image.mode == "L" else image.convert("L")
    buffer = io.BytesIO()
    gray.save(buffer, format="PPM")
    argv = [command, "stdin", "stdout", "-l", job.ocr_languages, "--psm", "3"]
    if dpi:
        argv += ["--dpi", str(dpi)]
    try:
        done = subprocess.run(
            argv, input=buffer.getvalue(), capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise OcrUnfinished(OUT_OF_TIME, out_of_time=True) from None
    except OSError:
        raise OcrUnfinished("OCR could not start") from None
    if done.returncode != 0:
        raise OcrUnfinished("OCR failed")
    return clean_text(done.stdout.decode("utf-8", "replace"))
