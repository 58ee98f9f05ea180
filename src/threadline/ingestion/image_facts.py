"""An image's type and pixel size, read from its header bytes: bounded work, no decoding.

Why it exists: a chat request's images are described to the model and in the reply's
record (format, width x height) whether or not they are OCRed, and a vision model's image
is never decoded by Threadline at all. Reading a handful of header fields is the same kind
of work as `detect.py`'s magic bytes, so it runs in the server's process; anything that
decodes pixels (OCR) runs in the sandboxed parser.

`inspect_image(data)` answers `ImageFacts` (width and height None when the header does not
say, e.g. a truncated file), or None when the bytes are not a PNG, JPEG, GIF, WebP, TIFF or
BMP image.
"""

from __future__ import annotations

import struct

from threadline.domain.images import ImageFacts
from threadline.ingestion.detect import (
    BMP,
    GIF,
    HEAD_BYTES,
    IMAGE_TYPES,
    JPEG,
    PNG,
    TIFF,
    WEBP,
    detect_type,
)

FORMATS = {PNG: "PNG", JPEG: "JPEG", GIF: "GIF", WEBP: "WebP", TIFF: "TIFF", BMP: "BMP"}
_JPEG_FRAMES = frozenset({*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC)}) | {
    0xCD,
    0xCE,
    0xCF,
}
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xDA)})
_TIFF_WIDTH, _TIFF_HEIGHT = 256, 257

Size = tuple[int, int] | None


def inspect_image(data: bytes) -> ImageFacts | None:
    """The image's facts, or None when `data` is not an image Threadline reads."""
    mime = detect_type(data[:HEAD_BYTES], "")
    if mime not in IMAGE_TYPES:
        return None
    try:
        size = _READERS[mime](data)
    except (struct.error, IndexError):
        size = None
    if size is not None and min(size) <= 0:
        size = None
    width, height = size if size is not None else (None, None)
    return ImageFacts(mime, FORMATS[mime], width, height)


def _png(data: bytes) -> Size:
    if data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def _gif(data: bytes) -> Size:
    width, height = struct.unpack("<HH", data[6:10])
    return int(width), int(height)


def _bmp(data: bytes) -> Size:
    if int.from_bytes(data[14:18], "little") == 12:  # OS/2 BITMAPCOREHEADER
        width, height = struct.unpack("<HH", data[18:22])
    else:
        width, height = struct.unpack("<ii", data[18:26])
    return abs(int(width)), abs(int(height))  # a negative height: stored top-down


def _webp(data: bytes) -> Size:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return int(width) & 0x3FFF, int(height) & 0x3FFF
    if chunk == b"VP8L":
        b0, b1, b2, b3 = data[21:25]
        return 1 + (b0 | (b1 & 0x3F) << 8), 1 + (b1 >> 6 | b2 << 2 | (b3 & 0x0F) << 10)
    if chunk == b"VP8X":
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    return None


def _jpeg(data: bytes) -> Size:
    """The size in the first start-of-frame segment, walking the segments before it."""
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _JPEG_STANDALONE:
            at += 2
            continue
        if marker in _JPEG_FRAMES:
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            return int(width), int(height)
        at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return None


def _tiff(data: bytes) -> Size:
    """Width and height of the first image file directory."""
    order = "<" if data[:2] == b"II" else ">"
    (offset,) = struct.unpack(order + "I", data[4:8])
    (count,) = struct.unpack(order + "H", data[offset : offset + 2])
    found: dict[int, int] = {}
    for n in range(min(count, 512)):
        entry = offset + 2 + 12 * n
        tag, kind = struct.unpack(order + "HH", data[entry : entry + 4])
        if tag in (_TIFF_WIDTH, _TIFF_HEIGHT):
            fmt = "H" if kind == 3 else "I"
            value = data[entry + 8 : entry + 8 + struct.calcsize(fmt)]
            (found[tag],) = struct.unpack(order + fmt, value)
    if _TIFF_WIDTH in found and _TIFF_HEIGHT in found:
        return found[_TIFF_WIDTH], found[_TIFF_HEIGHT]
    return None


_READERS = {PNG: _png, GIF: _gif, BMP: _bmp, WEBP: _webp, JPEG: _jpeg, TIFF: _tiff}
