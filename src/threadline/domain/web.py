"""The web beyond a single link: search providers and video transcripts, as ports.

A `WebSearcher` asks a search service (SearXNG, Brave, Tavily, DuckDuckGo through ddgs) for
the top results of a query; a `TranscriptSource` gives the spoken text of a YouTube video.
Both are implemented in `tools/` and called by the services, which fetch the result pages
themselves through the SSRF-safe `PageFetcher`: a search service only names pages.

Errors: a search raises `SearchFailed` (502) or `SearchTimeout` (504); a transcript that
cannot be had raises `TranscriptUnavailable`, whose reason is shown to the user.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class SearchResult:
    title: str
    url: str
    snippet: str = ""  # the search service's own summary of the page


class WebSearcher(Protocol):
    name: str  # the provider, as configured ("searxng", "brave", ...), for messages

    async def search(self, query: str, count: int) -> list[SearchResult]:
        """Up to `count` results, best first. Raises `SearchFailed` / `SearchTimeout`."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Transcript:
    video_id: str
    text: str
    title: str = ""  # when the video's title could be had
    language: str = ""  # e.g. "English (auto-generated)"


class TranscriptSource(Protocol):
    async def transcript(self, video_id: str) -> Transcript:
        """The video's transcript. Raises `TranscriptUnavailable` with a reason to show."""
        ...
