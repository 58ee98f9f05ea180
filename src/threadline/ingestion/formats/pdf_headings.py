"""Section headings of a PDF without an outline, from font-size cues.

Contextual chunks (`services/retrieval_context.py`) put the heading of a chunk's page in its
context; most PDFs give it in their outline (bookmarks), but many have none (a LaTeX paper
built without hyperref, a converted report). Their headings still stand out the way a reader
sees them: set larger than the body text. So, for such a PDF only, the parser notes the font
size of the first character of every line (one PDFium call per line, not per character:
about fifty a page) and keeps the short lines set at least `SIZE_RATIO` times the body's
size, the body's being the size most lines start with across the document. Each larger size
is a heading level, the largest first (at most `MAX_LEVELS`); a line that recurs on several
pages is a running header, no heading; and when such lines are not rare (more than
`MAX_SHARE` of all lines) the sizes mark something else than sections, and nothing is kept.
The result has the outline's shape, [0-based page, level, title], so the rest of the
pipeline does not know where it came from.

Headings set in bold at the body's size (a man page's `Shell Variables`) are not found: a
weight is a much weaker cue than a size, and PDFium reports it unreliably.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

__all__ = ["Line", "headings_from_fonts", "line_sizes"]

SIZE_RATIO = 1.08
MAX_LEVELS = 3
MAX_LINE_CHARS = 120  # a longer line is text, not a heading
MIN_LETTERS = 2  # a large accent or symbol alone is no heading
MAX_SHARE = 0.15  # of all lines, at most, set larger than the body
MAX_REPEATS = 3  # pages a heading's text may appear on (more: a running header)
MAX_ENTRIES = 2000
MAX_TITLE_CHARS = 160

Line = tuple[int, float, str]  # (0-based page, font size of its first character, text)


def line_sizes(textpage: Any, raw: str, page: int) -> list[Line]:
    """Every non-blank line of a page's raw text (`get_text_range()`, whose character
    indexes are PDFium's) with the font size of its first character; the text is kept only
    for lines short enough to be a heading."""
    import pypdfium2.raw as pdfium_c

    lines: list[Line] = []
    index = 0
    for line in raw.split("\n"):
        offset = len(line) - len(line.lstrip())
        text = line.strip()
        if text:
            size = float(pdfium_c.FPDFText_GetFontSize(textpage, index + offset))
            lines.append((page, round(size, 1), text if len(text) <= MAX_LINE_CHARS else ""))
        index += len(line) + 1
    return lines


def headings_from_fonts(lines: Sequence[Line]) -> list[list[Any]]:
    """Outline entries [page, level, title] from the lines' font sizes (see the module
    docstring); [] when the sizes mark no headings."""
    sizes = Counter(size for _, size, _ in lines if size > 0)
    if not sizes:
        return []
    body = sizes.most_common(1)[0][0]
    larger = [
        (page, size, text)
        for page, size, text in lines
        if size >= SIZE_RATIO * body and sum(ch.isalpha() for ch in text) >= MIN_LETTERS
    ]
    if not larger or len(larger) > MAX_SHARE * len(lines):
        return []
    pages_of: dict[str, set[int]] = {}
    for page, _, text in larger:
        pages_of.setdefault(text, set()).add(page)
    levels = {size: level for level, size in enumerate(sorted({s for _, s, _ in larger})[::-1])}
    entries: list[list[Any]] = []
    for page, size, text in larger:
        if levels[size] < MAX_LEVELS and len(pages_of[text]) <= MAX_REPEATS:
            entries.append([page, levels[size], " ".join(text.split())[:MAX_TITLE_CHARS]])
            if len(entries) == MAX_ENTRIES:
                break
    return entries
