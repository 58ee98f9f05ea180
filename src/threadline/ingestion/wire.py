"""What the server and a sandbox child say to each other.

The parent writes one request per line on the child's stdin (JSON). The child answers each
with one frame on its stdout: the payload's length in ASCII digits, a newline, then that many
bytes of JSON: `{"document": ...}` or `{"failed": reason, "discard": bool, "error": type}`.
A frame, not a line, because a document's text can be many megabytes; a length the parent
checks before reading, so a runaway child cannot make the server buffer without bound.

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

    def encode(self) -> bytes:
        return json.dumps(asdict(self), ensure_ascii=False).encode() + b"\n"

    @classmethod
    def decode(cls, line: bytes) -> Request:
        return cls(**json.loads(line))


def frame(answer: dict[str, Any]) -> bytes:
    payload = json.dumps(answer, ensure_ascii=False, default=str).encode("utf-8", "replace")
    return b"%d\n" % len(payload) + payload


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
