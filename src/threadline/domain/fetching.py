"""Fetching untrusted URLs: the port services call, and what it answers.

Every URL a user (or a web result) names is fetched through one `PageFetcher`, implemented
by `tools.fetcher.SafeFetcher`, which refuses private addresses on every redirect hop and
caps size and time. It answers a `FetchedPage` or raises `FetchRefused` / `FetchFailed`
(domain errors whose `reason` is safe to show).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class FetchedPage:
    url: str  # the final URL, after redirects
    content_type: str  # lower case, without parameters: "text/html", "application/pdf"
    body: bytes  # at most the fetcher's byte cap, already content-decoded
    charset: str | None = None  # as the server declared it, if it did


class PageFetcher(Protocol):
    async def fetch(self, url: str) -> FetchedPage:
        """GET `url`. Raises `FetchRefused` (will not) or `FetchFailed` (could not)."""
        ...
