"""What a reply was grounded on, kept with its record as plain facts.

Why it exists: a reply may read the pages its prompt links to, search the web, look at images
and recall the user's memories. The record keeps what each of those gave the model, so a
client can see it, but in no vendor's shape: each dialect's encode.py names the fields its API
uses (1min.ai's `linkContentList`, `searchContentList`, `imageContentList`, `memoryList`), and
storage keeps them in a column of its own (storage/records.py).

`None` and `()` differ: `ReplySources.links is None` means the reply did not read links at
all; `()` means it did and the prompt had none.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID


@dataclass(frozen=True, slots=True)
class PageSource:
    """A web page (or a YouTube transcript) read for the model, or why it was not read.

    `kind` is "page" or "youtube"; `snippet` is a web search result's own snippet (None for a
    link of the prompt); `excerpt` the opening words of what was read."""

    url: str
    status: str  # "ok", or why it was not read ("error", "skipped", ...)
    kind: str = "page"
    title: str = ""
    video_id: str | None = None
    snippet: str | None = None
    word_count: int = 0
    truncated: bool = False
    excerpt: str = ""
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ImageSource:
    """An image of the request and how the model got it: "vision" (as itself) or "text" (as
    its facts and the text OCR read of it, `text` being the opening words of that)."""

    reference: str  # as the client sent it
    name: str
    format: str
    mime_type: str
    width: int | None
    height: int | None
    size: int  # bytes
    mode: str
    text: str | None = None
    note: str | None = None  # what the user should know (no text found, not sent as is)


@dataclass(frozen=True, slots=True)
class RecalledMemory:
    """A memory of the user's that the model was given."""

    id: UUID
    content: str


@dataclass(frozen=True, slots=True)
class ReplySources:
    """Everything the reply read beside its documents (whose excerpts are its citations)."""

    links: tuple[PageSource, ...] | None = None
    search: tuple[PageSource, ...] | None = None
    images: tuple[ImageSource, ...] | None = None
    memories: tuple[RecalledMemory, ...] | None = None

    @property
    def empty(self) -> bool:
        return (self.links, self.search, self.images, self.memories) == (None,) * 4
