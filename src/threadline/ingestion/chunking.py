"""Splitting parsed pages into chunks for retrieval.

A chunk is at most about `size` characters of consecutive text of one page, cut at a
paragraph, sentence or word boundary, so an answer can cite the exact page ("page 3").
Within a page, chunks overlap by about `overlap` characters so a sentence cut at a
boundary is whole in one of them. (Chunks keep a page span in the schema; a future chunker
may let a chunk run across a page break.) Pure and fast: a benchmark measures the whole
ingestion pipeline against raw PDF text extraction.

Linear in the text, whatever its shape (one line, no punctuation, no whitespace), and no
single regex or string call sees more than a window of `WINDOW` characters: ingestion runs the
chunker in a thread, and a C call holds the GIL (the event loop's too) until it returns. A
page longer than a window is read window by window, each ending at a paragraph break, a line
break or a space near its end when there is one, so a window's end acts as a paragraph break.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from threadline.domain.documents import Chunk, ParsedPage

_PARAGRAPHS = re.compile(r"\n\s*\n")
_SPACES = re.compile(r"[ \t\r\f\v]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
WINDOW = 64 * 1024


def chunk_pages(
    document_id: int, pages: Sequence[ParsedPage], size: int = 1200, overlap: int = 150
) -> list[Chunk]:
    chunks: list[Chunk] = []
    window: list[tuple[int, str]] = []  # (page, piece) of the chunk being built
    length = 0
    for page, piece in _pieces(pages, size):
        new_page = bool(window) and window[-1][0] != page
        if window and (new_page or length + len(piece) + 1 > size):
            chunks.append(_chunk(document_id, len(chunks), window))
            window = [] if new_page else _overlap(window, overlap)
            length = sum(len(p) + 1 for _, p in window)
        window.append((page, piece))
        length += len(piece) + 1
    if window:
        chunks.append(_chunk(document_id, len(chunks), window))
    return chunks


def _chunk(document_id: int, ordinal: int, window: list[tuple[int, str]]) -> Chunk:
    text = " ".join(piece for _, piece in window)
    return Chunk(document_id, ordinal, window[0][0], window[-1][0], text)


def _overlap(window: list[tuple[int, str]], overlap: int) -> list[tuple[int, str]]:
    """The end of a finished chunk that starts the next one: whole trailing pieces up to
    `overlap` characters, or the tail of the last piece cut at a word boundary."""
    if overlap <= 0:
        return []
    kept: list[tuple[int, str]] = []
    total = 0
    for page, piece in reversed(window):
        if total + len(piece) > overlap:
            if not kept:
                tail = piece[-overlap:]
                space = tail.find(" ")
                tail = tail[space + 1 :] if 0 <= space < len(tail) - 1 else tail
                kept.append((page, tail))
            break
        kept.append((page, piece))
        total += len(piece) + 1
    return kept[::-1]


def _pieces(pages: Sequence[ParsedPage], size: int) -> Iterator[tuple[int, str]]:
    """(page number, text) pieces no longer than `size`: paragraphs, else sentences,
    else hard cuts at word boundaries."""
    for page in pages:
        for window in _windows(page.text, WINDOW):
            for paragraph in _PARAGRAPHS.split(window):
                paragraph = _SPACES.sub(" ", paragraph).replace("\n", " ").strip()
                if not paragraph:
                    continue
                if len(paragraph) <= size:
                    yield page.number, paragraph
                    continue
                for sentence in _SENTENCE_END.split(paragraph):
                    yield from ((page.number, part) for part in _hard_cut(sentence, size))


def _windows(text: str, width: int) -> Iterator[str]:
    """`text` in consecutive slices of at most `width` characters, each cut at the last
    paragraph break, else line break, else space of its second half (else at `width`)."""
    start, end = 0, len(text)
    while end - start > width:
        limit = start + width
        cut = -1
        for separator in ("\n\n", "\n", " "):
            cut = text.rfind(separator, limit - width // 2, limit)
            if cut >= 0:
                break
        cut = cut + 1 if cut >= 0 else limit
        yield text[start:cut]
        start = cut
    if start < end:
        yield text[start:] if start else text


def _hard_cut(text: str, size: int) -> Iterator[str]:
    """`text` in pieces of at most `size` characters, cut at the last space of each piece's
    second half (else at `size`); walks an index, never re-slices the rest (linear)."""
    start, end = 0, len(text)
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    while end - start > size:
        cut = text.rfind(" ", start, start + size)
        cut = cut if cut > start + size // 2 else start + size
        piece = text[start:cut].strip()
        if piece:
            yield piece
        start = cut
        while start < end and text[start].isspace():
            start += 1
    if start < end:
        yield text[start:end]
