"""Checks an image an upstream made and encodes it in the format the caller asked for.

Why it exists: an OpenAI-compatible server answers PNG unless it understands `output_format`
(GPT image models do, DALL-E-style servers do not), and nothing should be stored as
`image/webp` that is not a WebP picture. So every image is opened with Pillow: one already in
the wanted format is kept byte for byte, any other is re-encoded. Only `UPSTREAM_FORMATS` are
opened (what an images API answers), never Pillow's other plugins (EPS would run Ghostscript
in the server's process); a picture larger than `MAX_PIXELS` is refused before it is decoded.
"""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

from threadline.domain.image_generation import MIME_TYPES, GeneratedImage, ImageFormat

MAX_PIXELS = 64 * 1024 * 1024  # 8192 x 8192
_PILLOW_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
UPSTREAM_FORMATS = tuple(_PILLOW_FORMATS.values())


class NotAnImage(Exception):
    """The bytes are not a picture Pillow can read (`reason` says why, for a person)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def encode_as(data: bytes, output_format: ImageFormat) -> GeneratedImage:
    """The image in `output_format` (unchanged if it already is), with its size. Blocking:
    call it off the event loop."""
    wanted = _PILLOW_FORMATS[output_format]
    try:
        with Image.open(io.BytesIO(data), formats=UPSTREAM_FORMATS) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise NotAnImage(f"an image of {width}x{height} pixels is too large")
            if image.format == wanted:
                image.verify()  # reads it through: a truncated file fails here
                return GeneratedImage(data, MIME_TYPES[output_format], width, height)
            image.load()
            out = io.BytesIO()
            converted = image.convert("RGB") if wanted == "JPEG" else _keep_alpha(image)
            converted.save(out, format=wanted)
            return GeneratedImage(out.getvalue(), MIME_TYPES[output_format], width, height)
    except NotAnImage:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise NotAnImage("the data is not an image that can be read") from None


def _keep_alpha(image: Image.Image) -> Image.Image:
    return image if image.mode in ("RGB", "RGBA", "L", "LA") else image.convert("RGBA")
