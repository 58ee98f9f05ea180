"""What the server and a sandbox child say to each other.

The parent writes one request per line on the child's stdin (JSON). The child answers each
with one frame on its stdout: the payload's length in ASCII digits, a newline, then that many
bytes of JSON: `{"document": ...}` or `{"failed": reason, "discard": bool, "error": type}`.
A frame, not a line, because a document's text can be many megabytes; a length the parent
checks before reading, so a runaway child cannot make the server buffer without bound.
A page text longer than `TEXT_PART_CHARS` does not go in the JSON: its place there says
`{"parts": n}` and n frames of raw UTF-8 follow the JSON frame, in page order. One
`json.loads` of a 45 MB answer holds the GIL, and with it the server's event loop, for
150 ms or more; decoding parts of 1 MB each takes a millisecond each.

The child parses hostile files, so the parent checks the shape of what it gets back.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from threadline.domain.documents import ParsedDocument, ParsedPage


class MalformedAnswer(Exception):
    """The child's answer does not have the shape of one."""


@dataclass(frozen=True, slots=True)
class Request:
    path: str
    mime_type: str
    name: str
    max_pages: int
    memory_mb: int
    timeout_seconds: float
    ocr: bool
    ocr_languages: str
    ocr_engine: str = "rapidocr"

    def encode(self) -> bytes:
        return json.dumps(asdict(self), ensure_ascii=False).encode() + b"\n"

    @classmethod
    def decode(cls, line: bytes) -> Request:
        return cls(**json.loads(line))


TEXT_PART_CHARS = 1 << 20


def frame(answer: dict[str, Any]) -> bytes:
    """The answer's frame, then the frames of its long page texts' parts."""
    parts: list[bytes] = []
    document = answer.get("document")
    for row in document.get("pages", ()) if isinstance(document, dict) else ():
        text = row[1]
        if isinstance(text, str) and len(text) > TEXT_PART_CHARS:
            pieces = [
                text[start : start + TEXT_PART_CHARS].encode("utf-8", "replace")
                for start in range(0, len(text), TEXT_PART_CHARS)
            ]
            row[1] = {"parts": len(pieces)}
            parts.extend(pieces)
    payload = json.dumps(answer, ensure_ascii=False, default=str).encode("utf-8", "replace")
    return b"".join(b"%d\n" % len(piece) + piece for piece in (payload, *parts))


def text_parts(answer: dict[str, Any]) -> list[tuple[list[Any], int]]:
    """(page row, number of parts) of the page texts that follow the answer's frame."""
    document = answer.get("document")
    pages = document.get("pages") if isinstance(document, dict) else None
    found = []
    for row in pages if isinstance(pages, list) else ():
        if isinstance(row, list) and len(row) > 1 and isinstance(row[1], dict):
            count = row[1].get("parts")
            if not isinstance(count, int) or count < 0:
                raise MalformedAnswer("bad text parts")
            found.append((row, count))
    return found


def encode_document(document: ParsedDocument) -> dict[str, Any]:
    pages = [
        [p.number, p.text, p.width, p.height, p.rotation, p.is_image_page] for p in document.pages
    ]
    return {"pages": pages, "notes": list(document.notes), "metadata": document.metadata}


def decode_document(data: Any) -> ParsedDocument:
    try:
        pages = tuple(_page(row) for row in data["pages"])
        notes = tuple(str(note) for note in data["notes"])
        metadata = data["metadata"]
    except (KeyError, TypeError, ValueError) as error:
        raise MalformedAnswer(str(error)) from None
    if not isinstance(metadata, dict):
        raise MalformedAnswer("metadata is not an object")
    return ParsedDocument(pages=pages, notes=notes, metadata=metadata)


def _page(row: Any) -> ParsedPage:
    number, text, width, height, rotation, is_image_page = row
    if not isinstance(text, str):
        raise ValueError("page text is not a string")
    return ParsedPage(
        int(number), text, int(width), int(height), int(rotation), bool(is_image_page)
    )
