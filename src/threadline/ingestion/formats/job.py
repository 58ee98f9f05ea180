"""What an extractor is given (the file's name, the limits, the clock) and the few rules
every extractor follows when it gives back a `ParsedDocument`.

Runs in the sandbox child only. Page numbers in `ParsedPage` are 0-based; page numbers in
sentences a person reads (notes, reasons) are 1-based, as every viewer shows them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from threadline.domain.documents import ParsedPage, ParseFailed


@dataclass(slots=True)
class Job:
    """One file to parse, with the limits the parent chose for it."""

    name: str
    max_pages: int
    memory_mb: int
    timeout_seconds: float
    ocr: bool = True
    ocr_languages: str = "eng"
    ocr_engine: str = "rapidocr"
    started: float = field(default_factory=time.monotonic)

    def seconds_left(self) -> float:
        return self.timeout_seconds - (time.monotonic() - self.started)

    def check_page_count(self, count: int) -> None:
        """Refuse a file with more pages (slides, sheets, frames) than the limit."""
        if count > self.max_pages:
            raise ParseFailed(f"the file has {count} pages; the limit is {self.max_pages}")

    def memory_failure(self, detail: str = "") -> ParseFailed:
        reason = memory_reason(self.memory_mb)
        return ParseFailed(f"{reason}: {detail}" if detail else reason)

    def timeout_failure(self) -> ParseFailed:
        return ParseFailed(f"parsing took longer than {self.timeout_seconds:g} s")


def memory_reason(memory_mb: int) -> str:
    return f"the file needs more than {memory_mb} MB to parse (a decompression bomb?)"


def require_text(pages: Sequence[ParsedPage], why: str) -> None:
    """A document without any text is of no use to retrieval: fail it, saying why."""
    if not any(page.text.strip() for page in pages):
        raise ParseFailed(f"no text found: {why}")


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")
_BLANK_RUN = re.compile(r"\n{3,}")


def clean_text(text: str) -> str:
    """Normalise line ends, drop control characters, squeeze runs of blank lines."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    lines = (line.rstrip() for line in text.split("\n"))
    return _BLANK_RUN.sub("\n\n", "\n".join(lines)).strip()


def page_list(numbers: Iterable[int]) -> str:
    """0-based page numbers as a person reads them: "page 3" or "pages 1-4, 7"."""
    ordered = sorted(set(numbers))
    spans: list[list[int]] = []
    for number in ordered:
        if spans and number == spans[-1][1] + 1:
            spans[-1][1] = number
        else:
            spans.append([number, number])
    text = ", ".join(f"{a + 1}" if a == b else f"{a + 1}-{b + 1}" for a, b in spans)
    return f"page {text}" if len(ordered) == 1 else f"pages {text}"


MAX_OUTLINE_ENTRIES = 2000  # headings kept of one document (`metadata["outline"]`)
MAX_HEADING_CHARS = 160


class Outline(list[list[Any]]):
    """`metadata["outline"]`: [0-based page, level, title] entries in document order (what
    `services/retrieval_context.py` reads), titles cleaned and cut, at most
    `MAX_OUTLINE_ENTRIES`."""

    def add(self, page: int, level: int, title: str) -> None:
        title = " ".join(clean_text(title).split())[:MAX_HEADING_CHARS]
        if title and len(self) < MAX_OUTLINE_ENTRIES:
            self.append([page, level, title])
