"""Plain text, Markdown and HTML: decoding bytes a person typed, and the main text of a page.

Text is decoded as UTF-8 (a BOM picks UTF-16 or UTF-32); bytes that are not valid UTF-8 are
read as Windows-1252, the usual culprit, and a note says so. HTML goes through trafilatura,
which keeps an article's text and drops menus, footers and ads; when it finds nothing (a short
page, a page of links) every visible text of the page is kept instead, with a note.
Each of these formats is one page. A Markdown file's `#` headings (outside fenced code) and
an HTML page's h1-h6 that its kept text holds are its `metadata["outline"]`, for the chunks'
context lines (`services/retrieval_context.py`).
"""

from __future__ import annotations

import codecs
import re
from html.parser import HTMLParser
from pathlib import Path

from threadline.domain.documents import ParsedDocument, ParsedPage
from threadline.ingestion.formats.job import (
    MAX_OUTLINE_ENTRIES,
    Job,
    Outline,
    clean_text,
    require_text,
)

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode_text(data: bytes) -> tuple[str, list[str]]:
    """The text of `data` and the notes a person should read about its decoding."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data.decode(encoding, "replace"), []
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError:
        pass
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return text, ["the file is not valid UTF-8; it was read as Windows-1252"]


def extract_plain(path: Path, job: Job) -> ParsedDocument:
    text, notes = decode_text(path.read_bytes())
    page = ParsedPage(0, clean_text(text))
    require_text([page], "the file is empty or holds only blank space")
    return ParsedDocument(pages=(page,), notes=tuple(notes), metadata={"format": "text"})


def extract_markdown(path: Path, job: Job) -> ParsedDocument:
    document = extract_plain(path, job)
    metadata: dict[str, object] = {"format": "Markdown"}
    outline = markdown_outline(document.pages[0].text)
    if outline:
        metadata["outline"] = list(outline)
    return ParsedDocument(document.pages, document.notes, metadata)


_ATX = re.compile(r" {0,3}(#{1,6})[ \t]+(\S.*)")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
MAX_HEADING_LINE = 1000  # characters; a longer line is no heading (and costs no regex time)


def markdown_outline(text: str) -> Outline:
    """The `#` headings outside fenced code blocks, level 0 for `#` (a closing run of `#`
    left out)."""
    outline = Outline()
    fence = ""
    for line in text.splitlines():
        if len(line) > MAX_HEADING_LINE:
            continue
        opening = _FENCE.match(line)
        if opening and (not fence or opening.group(1).startswith(fence)):
            fence = "" if fence else opening.group(1)[0] * 3
            continue
        heading = None if fence else _ATX.match(line)
        if heading:
            outline.add(0, len(heading.group(1)) - 1, _without_closing_hashes(heading.group(2)))
    return outline


def _without_closing_hashes(title: str) -> str:
    title = title.rstrip()
    bare = title.rstrip("#")
    if bare != title and (not bare or bare[-1] in " \t"):
        return bare.rstrip()
    return title


def extract_html(path: Path, job: Job) -> ParsedDocument:
    import trafilatura

    html, notes = decode_text(path.read_bytes())
    main_text = trafilatura.extract(
        html,
        include_comments=False,
        include_tables=True,
        include_links=False,
        favor_recall=True,
        deduplicate=False,
    )
    visible = _VisibleText.of(html)
    if main_text and main_text.strip():
        text = clean_text(main_text)
    else:
        text = clean_text(visible.text())
        notes.append("no main article text was found; all the page's visible text is used")
    page = ParsedPage(0, text)
    require_text([page], "the page has no visible text")
    metadata: dict[str, object] = {"format": "HTML"}
    if visible.title:
        metadata["title"] = visible.title
    outline = _kept_headings(visible.headings, text)
    if outline:
        metadata["outline"] = list(outline)
    return ParsedDocument(pages=(page,), notes=tuple(notes), metadata=metadata)


MAX_MISSED_HEADINGS = 50  # headings not in the kept text, looked for before giving up


def _kept_headings(headings: list[tuple[int, str]], text: str) -> Outline:
    """The h1-h6 headings the kept text holds, in order (the main text leaves a menu's
    out). Each is looked for after the last one found; after `MAX_MISSED_HEADINGS` that
    are not there, no more are (each miss reads the rest of the text)."""
    flat = " ".join(text.split())
    outline = Outline()
    position = missed = 0
    for level, heading in headings:
        at = flat.find(heading, position) if heading else -1
        if at < 0:
            missed += 1
            if missed == MAX_MISSED_HEADINGS:
                break
            continue
        outline.add(0, level, heading)
        position = at + len(heading)
    return outline


_HEADINGS = {f"h{n}": n - 1 for n in range(1, 7)}


class _VisibleText(HTMLParser):
    """Every text a browser would show, block elements on their own lines; the title, and
    the h1-h6 headings (level 0 for h1)."""

    HIDDEN = frozenset({"script", "style", "noscript", "template", "svg", "iframe"})
    BLOCKS = frozenset(
        {"address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt"}
        | {"figcaption", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header"}
        | {"hr", "li", "main", "nav", "ol", "p", "pre", "section", "table", "td", "th", "tr"}
        | {"ul"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden_depth = 0
        self.in_title = False
        self.title = ""
        self.headings: list[tuple[int, str]] = []
        self._heading: tuple[int, list[str]] | None = None

    @classmethod
    def of(cls, html: str) -> _VisibleText:
        parser = cls()
        parser.feed(html)
        parser.close()
        parser.title = " ".join(parser.title.split())[:500]
        return parser

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.in_title = tag == "title"
        if tag in _HEADINGS and not self.hidden_depth:
            self._heading = (_HEADINGS[tag], [])
        if tag in self.HIDDEN:
            self.hidden_depth += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        self.in_title = False
        if tag in _HEADINGS and self._heading is not None:
            level, words = self._heading
            if len(self.headings) < MAX_OUTLINE_ENTRIES:
                self.headings.append((level, " ".join("".join(words).split())))
            self._heading = None
        if tag in self.HIDDEN:
            self.hidden_depth = max(0, self.hidden_depth - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title += data
        elif not self.hidden_depth:
            self.parts.append(data)
            if self._heading is not None:
                self._heading[1].append(data)

    def text(self) -> str:
        lines = (" ".join(line.split()) for line in "".join(self.parts).split("\n"))
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines))
