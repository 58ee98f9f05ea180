"""Reading an untrusted web page for a model: shared by links in the prompt and web search.

`PageReader.read(url, max_words)` fetches the URL through the `PageFetcher` port (the
SSRF-safe fetcher), reduces the page to its main text in the sandboxed parser (HTML, PDF,
plain text: untrusted content is never parsed in the server's process) and keeps its first
`max_words` words. It never raises for a page that cannot be read: it answers a `ReadPage`
with status "error" and the reason, in the server's own words, so the caller can tell the
user and the model.

The helpers below turn read pages into what a model and a record need: `fit_blocks()` lays
sources out in a system block trimmed to the room the context window leaves, `excerpt()`
gives the opening words a record keeps.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from threadline.domain.documents import DocumentParser, ParseFailed
from threadline.domain.errors import FetchFailed, FetchRefused
from threadline.domain.fetching import FetchedPage, PageFetcher

EXCERPT_WORDS = 40
_WORD = re.compile(r"\S+")
_PARSED_TYPES = {
    "text/html": ("text/html", "page.html"),
    "application/xhtml+xml": ("text/html", "page.html"),
    "text/plain": ("text/plain", "page.txt"),
    "text/markdown": ("text/markdown", "page.md"),
    "application/pdf": ("application/pdf", "page.pdf"),
}

Status = Literal["ok", "error", "skipped"]
Kind = Literal["page", "youtube"]


@dataclass(frozen=True, slots=True)
class ReadPage:
    """Text read from the web for a model: a page, or a YouTube video's transcript."""

    url: str
    status: Status
    title: str = ""
    text: str = ""  # the words given to the model (already capped)
    word_count: int = 0
    truncated: bool = False  # the source had more words than the cap
    reason: str | None = None  # why it was not read (error / skipped)
    kind: Kind = "page"
    video_id: str | None = None  # a YouTube video's id (kind "youtube"), when the link has one


class PageReader:
    def __init__(self, fetcher: PageFetcher, parser: DocumentParser) -> None:
        self._fetcher = fetcher
        self._parser = parser

    async def read(self, url: str, max_words: int) -> ReadPage:
        """The page's title and first `max_words` words, or why it could not be read."""
        try:
            fetched = await self._fetcher.fetch(url)
            title, text = await self._text(fetched)
        except (FetchRefused, FetchFailed) as error:
            return ReadPage(url, "error", reason=error.reason)
        except ParseFailed as error:
            return ReadPage(url, "error", reason=f"the page could not be parsed: {error.reason}")
        return capped(url, title or host(fetched.url), text, max_words)

    async def _text(self, page: FetchedPage) -> tuple[str, str]:
        """The page's title and main text, parsed in the sandbox from a temporary file."""
        mime_type, name = _PARSED_TYPES.get(page.content_type, ("", ""))
        if not mime_type:
            raise ParseFailed(f"{page.content_type} pages are not read")
        with tempfile.TemporaryDirectory(prefix="threadline-page-") as directory:
            path = Path(directory) / name
            await asyncio.to_thread(path.write_bytes, page.body)
            parsed = await self._parser.parse(path, mime_type, name)
        text = "\n\n".join(p.text for p in parsed.pages if p.text.strip())
        if not text.strip():
            raise ParseFailed("the page has no readable text")
        title = str(parsed.metadata.get("title") or "").strip()
        return title[:300], text


def capped(url: str, title: str, text: str, max_words: int) -> ReadPage:
    """A read page whose text is cut at `max_words` words (and says so)."""
    count = len(text.split())
    return ReadPage(
        url,
        "ok",
        title=title,
        text=first_words(text, max_words),
        word_count=min(count, max_words),
        truncated=count > max_words,
    )


def first_words(text: str, limit: int) -> str:
    """The text up to its `limit`-th word, line breaks kept."""
    if limit <= 0:
        return ""
    for number, word in enumerate(_WORD.finditer(text), 1):
        if number == limit:
            return text[: word.end()]
    return text


def fit_blocks(
    instructions: str, blocks: Sequence[tuple[str, str]], notes: Sequence[str], max_chars: int
) -> str:
    """The instructions, each (heading, text) block and the notes, one paragraph each. The
    blocks' texts share what room `max_chars` leaves equally, each cut at a word."""
    fixed = len(instructions) + sum(len(note) + 2 for note in notes)
    fixed += sum(len(heading) + 3 for heading, _ in blocks)
    share = max(0, max_chars - fixed) // max(1, len(blocks))
    laid_out = [f"{heading}\n{trim(text, share)}" for heading, text in blocks]
    return "\n\n".join([instructions, *laid_out, *notes])


def trim(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars].rsplit(" ", 1)[0]
    return f"{cut} …"


def excerpt(text: str, words: int = EXCERPT_WORDS) -> str:
    """The opening words of a text, as a record shows them."""
    split = text.split()
    return " ".join(split[:words]) + (" …" if len(split) > words else "")


def host(url: str) -> str:
    return urlsplit(url).hostname or url
