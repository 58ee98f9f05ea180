"""Contextual chunks: what document a chunk is from and which section it sits under.

A chunk of a manual rarely says which manual it is from ("A value of ignoredups causes
...": the bash man page or the Bash Reference Manual?), nor which section it is in. Each
chunk is therefore indexed and embedded with a context line: the document's file name, its
title and the heading of its page, from the PDF outline (bookmarks). The context is stored
in its own column (`chunks.context`), searched with its own weight beside the text, and put
before the text when the chunk is embedded; the text itself is kept as it was, for the
prompt and the citations.

Headings are per page (a chunk never runs across a page break, see `chunking.py`): the
outline path open at the top of the page ("Shell Variables", then "Bash Variables", joined
by an angle quote), plus the titles of the sections that start on the page.

A document of one page (a Word file, Markdown: the parser gives their headings from
paragraph styles and `#` lines) would get one heading for all its chunks that way, so there
each heading is found in the chunks' text, in order: a chunk gets the path open where it
starts, plus the titles of the sections that start in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["MAX_CONTEXT_CHARS", "chunk_context", "contexts", "located_headings", "page_headings"]

MAX_CONTEXT_CHARS = 400
MAX_HEADING_CHARS = 240
MAX_STARTING = 3  # titles of sections that start on a page, at most
MAX_DEPTH = 8


def page_headings(outline: Any, page_count: int) -> list[str]:
    """The heading of every page (0-based), from an outline of [page, level, title]
    entries in document order (`metadata["outline"]`); "" where there is none. Malformed
    entries are skipped: the outline is a hint, never a reason to fail."""
    starts: dict[int, list[tuple[int, str]]] = {}
    for entry in outline if isinstance(outline, list) else ():
        if not (isinstance(entry, list | tuple) and len(entry) == 3):
            continue
        page, level, title = entry
        usable = isinstance(page, int) and isinstance(level, int) and isinstance(title, str)
        if usable and 0 <= page < page_count and title.strip():
            starts.setdefault(page, []).append((min(max(level, 0), MAX_DEPTH), title))
    headings: list[str] = []
    trail: list[str] = []  # the open section titles, by level
    for page in range(page_count):
        open_path = " › ".join(trail)
        starting = starts.get(page, [])
        for level, title in starting:
            trail = [*trail[:level], title.strip()]
        parts = [open_path] if open_path else []
        parts += [title.strip() for _, title in starting[:MAX_STARTING]]
        headings.append("; ".join(parts)[:MAX_HEADING_CHARS])
    return headings


LOOK_AHEAD = 3  # headings a chunk may skip (one whose text was not found) to find the next


def located_headings(outline: Any, texts: Sequence[str]) -> list[str]:
    """The heading of each chunk of a one-page document (`texts` in order), its outline's
    titles found in the chunks' text one after another. A title that is not found holds
    the ones after it only for `LOOK_AHEAD` titles; the outline is a hint, never a reason
    to fail."""
    entries = [
        (min(max(level, 0), MAX_DEPTH), " ".join(title.split()))
        for entry in (outline if isinstance(outline, list) else ())
        if isinstance(entry, list | tuple) and len(entry) == 3
        for page, level, title in [entry]
        if page == 0 and isinstance(level, int) and isinstance(title, str) and title.strip()
    ]
    headings: list[str] = []
    trail: list[str] = []
    next_entry = 0
    for text in texts:
        open_path = " › ".join(trail)
        flat = " ".join(text.split()).lower()
        position, starting = 0, []
        while next_entry < len(entries):
            window = entries[next_entry : next_entry + LOOK_AHEAD]
            found = [(flat.find(title.lower(), position), n) for n, (_, title) in enumerate(window)]
            hits = [(at, n) for at, n in found if at >= 0]
            if not hits:
                break
            at, n = min(hits)
            level, title = window[n]
            trail = [*trail[:level], title]
            starting.append(title)
            position = at + len(title)
            next_entry += n + 1
        parts = [open_path] if open_path else []
        parts += starting[:MAX_STARTING]
        headings.append("; ".join(parts)[:MAX_HEADING_CHARS])
    return headings


def chunk_context(name: str, title: str | None, heading: str | None) -> str:
    """One line: file name · title · heading (the parts that exist, a title that only
    repeats the name left out)."""
    parts = [name.strip()]
    if title and title.strip() and title.strip().lower() != name.strip().lower():
        parts.append(" ".join(title.split()))
    if heading:
        parts.append(heading)
    return " · ".join(p for p in parts if p)[:MAX_CONTEXT_CHARS]


def contexts(
    name: str, metadata: dict[str, Any], chunks: Sequence[tuple[int, str]], page_count: int
) -> list[str]:
    """The context of each chunk, given each chunk's first page and its text."""
    title = metadata.get("title")
    outline = metadata.get("outline")
    if page_count == 1:
        located = located_headings(outline, [text for _, text in chunks])
    else:
        by_page = page_headings(outline, page_count)
        located = [by_page[p] if 0 <= p < len(by_page) else "" for p, _ in chunks]
    return [
        chunk_context(name, title if isinstance(title, str) else None, heading)
        for heading in located
    ]
