"""Images in a chat request: what a vision model is given, and what is known of an image.

An image reaches the engine as bytes whose type was read from the bytes themselves (never
from a file name or a Content-Type header). A vision model receives it as an `ImagePart` of
the user's message; a text-only model receives `ImageFacts` and the image's OCR text instead.

Pure data; nothing here imports a library beyond the standard one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image sent with a message to a vision model: canonical MIME type and bytes."""

    mime_type: str  # "image/png", "image/jpeg", "image/gif", "image/webp"
    data: bytes


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """What an image's header says: its type and, when the header gives it, its size."""

    mime_type: str  # canonical, from the bytes
    format: str  # "PNG", "JPEG", "GIF", "WebP", "TIFF", "BMP"
    width: int | None = None  # pixels
    height: int | None = None


ImageInspector = Callable[[bytes], ImageFacts | None]
"""The facts of an image from its bytes, or None when the bytes are not an image."""
