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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["MAX_CONTEXT_CHARS", "chunk_context", "page_headings"]

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
    name: str, metadata: dict[str, Any], pages: Sequence[int], page_count: int
) -> list[str]:
    """The context of each chunk, given each chunk's first page."""
    title = metadata.get("title")
    headings = page_headings(metadata.get("outline"), page_count)
    return [
        chunk_context(
            name,
            title if isinstance(title, str) else None,
            headings[p] if 0 <= p < len(headings) else "",
        )
        for p in pages
    ]
