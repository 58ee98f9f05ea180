"""What kind of file is this upload? Content first, name second, the client's word last.

An upload's declared MIME type and its extension are claims; the bytes are evidence. Binary
formats are recognised by their magic bytes (and, for the ZIP-based Office formats, by the
part names in the archive's central directory), so `report.docx` that is really a PDF is parsed
as a PDF and an executable called `notes.txt` is refused. Text formats have no magic, so they
are recognised by extension (or by the declared type when the name has none), and only when
the head of the file looks like text.

`detect_file` answers with a canonical MIME type from `SUPPORTED_TYPES`, or None when the file
is not something Threadline can parse; the caller then answers 422 with `unsupported_message`.
Nothing here decompresses or parses the file: listing a ZIP's central directory is bounded work.
"""

from __future__ import annotations

import zipfile
from pathlib import Path, PurePath

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
TEXT = "text/plain"
MARKDOWN = "text/markdown"
CSV = "text/csv"
HTML = "text/html"
PNG = "image/png"
JPEG = "image/jpeg"
GIF = "image/gif"
WEBP = "image/webp"
TIFF = "image/tiff"
BMP = "image/bmp"

SUPPORTED_TYPES: dict[str, str] = {
    PDF: "PDF",
    DOCX: "Word document (.docx)",
    PPTX: "PowerPoint presentation (.pptx)",
    XLSX: "Excel workbook (.xlsx)",
    CSV: "CSV",
    HTML: "HTML",
    MARKDOWN: "Markdown",
    TEXT: "plain text",
    PNG: "PNG image",
    JPEG: "JPEG image",
    GIF: "GIF image",
    WEBP: "WebP image",
    TIFF: "TIFF image",
    BMP: "BMP image",
}
"""Canonical MIME type → the name a person knows it by."""

IMAGE_TYPES = frozenset({PNG, JPEG, GIF, WEBP, TIFF, BMP})
TEXT_TYPES = frozenset({TEXT, MARKDOWN, CSV, HTML})

HEAD_BYTES = 8192
"""How much of the file `detect_file` reads (and `detect_type` wants)."""

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", PDF),
    (b"\x89PNG\r\n\x1a\n", PNG),
    (b"\xff\xd8\xff", JPEG),
    (b"GIF87a", GIF),
    (b"GIF89a", GIF),
    (b"II*\x00", TIFF),
    (b"MM\x00*", TIFF),
)

_BMP_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")

# Binary formats we know we do not parse: a text extension never rescues these.
_FOREIGN_MAGIC = (
    b"\x7fELF",
    b"\x1f\x8b",  # gzip
    b"\xfd7zXZ\x00",
    b"7z\xbc\xaf\x27\x1c",
    b"Rar!",
    b"\xd0\xcf\x11\xe0",  # OLE2: legacy .doc/.xls/.ppt
    b"\xca\xfe\xba\xbe",
    b"\x00asm",
)

_TEXT_EXTENSIONS = {
    ".txt": TEXT,
    ".text": TEXT,
    ".log": TEXT,
    ".md": MARKDOWN,
    ".markdown": MARKDOWN,
    ".csv": CSV,
    ".html": HTML,
    ".htm": HTML,
    ".xhtml": HTML,
}

_DECLARED_ALIASES = {
    "text/plain": TEXT,
    "text/markdown": MARKDOWN,
    "text/x-markdown": MARKDOWN,
    "text/csv": CSV,
    "application/csv": CSV,
    "text/html": HTML,
    "application/xhtml+xml": HTML,
}

# A part every package of the kind has (ECMA-376 Part 1: the main part's usual name).
_OOXML_MAIN_PARTS = (
    ("word/document.xml", DOCX),
    ("ppt/presentation.xml", PPTX),
    ("xl/workbook.xml", XLSX),
)


def detect_file(path: Path, name: str, declared: str | None = None) -> str | None:
    """The canonical MIME type of the file at `path` (uploaded as `name`), or None."""
    with path.open("rb") as f:
        head = f.read(HEAD_BYTES)
    if head.startswith(_ZIP_MAGIC):
        return _ooxml_type(path)
    return detect_type(head, name, declared)


def detect_type(head: bytes, name: str, declared: str | None = None) -> str | None:
    """Like `detect_file`, from the first `HEAD_BYTES` of the file. A ZIP cannot be told
    apart from its head (its directory is at the end), so ZIP-based types need `detect_file`."""
    for magic, mime in _MAGIC:
        if head.startswith(magic):
            return mime
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    if _is_bmp(head):
        return BMP
    if head.startswith(_ZIP_MAGIC) or head.startswith(_FOREIGN_MAGIC):
        return None
    text_type = _TEXT_EXTENSIONS.get(PurePath(name).suffix.lower())
    if text_type is None and not PurePath(name).suffix:
        text_type = _DECLARED_ALIASES.get(_bare_mime(declared))
    if text_type is None or not looks_like_text(head):
        return None
    return text_type


def looks_like_text(head: bytes) -> bool:
    """No NUL bytes (outside UTF-16, which announces itself with a BOM) and few control
    characters: what any text file's first few kilobytes look like."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return True
    if b"\x00" in head:
        return False
    controls = sum(1 for byte in head if byte < 32 and byte not in b"\t\n\r\f\x1b")
    return controls <= len(head) // 100


def unsupported_message(name: str) -> str:
    """The sentence a 422 answer carries for a file `detect_file` refused."""
    kinds = ", ".join(SUPPORTED_TYPES.values())
    return f"unsupported file type: {name!r} is not a file Threadline can read; supported: {kinds}"


def _ooxml_type(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    if "[Content_Types].xml" not in names:
        return None
    for part, mime in _OOXML_MAIN_PARTS:
        if part in names:
            return mime
    return None


def _is_bmp(head: bytes) -> bool:
    """The bytes "BM" alone are too weak (a text may start so): also want a DIB header size."""
    return head[:2] == b"BM" and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES


def _bare_mime(declared: str | None) -> str:
    return (declared or "").split(";", 1)[0].strip().lower()
