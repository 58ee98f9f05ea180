"""Web search providers: the `WebSearcher` port over SearXNG, Brave, Tavily and ddgs.

The search service is the operator's choice and may live on a private network, so it is
called with an ordinary httpx client (timeouts, no redirects), not the SSRF-safe fetcher.
The pages it names are untrusted: the services fetch those only through that fetcher.

    searxng  GET  {base_url}/search?q=…&format=json             → results[{title, url, content}]
    brave    GET  {base_url}/res/v1/web/search?q=…&count=N
                  X-Subscription-Token: key                    → web.results[{title, url,
                                                                   description}]
    tavily   POST {base_url}/search {query, max_results, search_depth}
                  Authorization: Bearer key                    → results[{title, url, content}]
    ddgs     DDGS(timeout).text(query, max_results=N), synchronous, so run in a worker thread
             under the same time limit                         → [{title, href, body}]

A timeout is `SearchTimeout` (504); an unreachable service, an HTTP error status or an answer
that is not the provider's JSON is `SearchFailed` (502). Their messages name the provider
and the status, never the answer's body or the API key; the log gets the error's type only
(the query is the user's prompt: it stays out of the log too).
"""

from __future__ import annotations

import asyncio
import math
import os
from typing import Any

import httpx
import structlog

from threadline.domain.errors import SearchFailed, SearchTimeout
from threadline.domain.web import SearchResult, WebSearcher
from threadline.settings import SearchSettings

log = structlog.get_logger(__name__)

BRAVE_URL = "https://api.search.brave.com"
TAVILY_URL = "https://api.tavily.com"


class _HttpSearcher:
    """One HTTP request per search; subclasses say which request and how to read the answer."""

    name = ""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_seconds: float,
        api_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self._api_key = api_key
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_seconds), follow_redirects=False, transport=transport
        )

    async def search(self, query: str, count: int) -> list[SearchResult]:
        try:
            async with asyncio.timeout(self.timeout_seconds):
                response = await self._client.send(self._request(query, count))
        except (TimeoutError, httpx.TimeoutException):
            raise SearchTimeout(
                f"the web search provider ({self.name}) did not answer within "
                f"{self.timeout_seconds:g} s"
            ) from None
        except httpx.HTTPError as error:
            log.warning("search_unreachable", provider=self.name, error=type(error).__name__)
            raise SearchFailed(
                f"the web search provider ({self.name}) could not be reached"
            ) from None
        if response.status_code != 200:
            log.warning("search_refused", provider=self.name, status=response.status_code)
            raise SearchFailed(
                f"the web search provider ({self.name}) answered HTTP {response.status_code}"
                f"{self._hint(response.status_code)}"
            )
        try:
            return [r for r in self._results(response.json()) if r.url][:count]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise SearchFailed(
                f"the web search provider ({self.name}) answered with something other than "
                "its JSON search results"
            ) from None

    def _request(self, query: str, count: int) -> httpx.Request:
        raise NotImplementedError

    def _results(self, answer: Any) -> list[SearchResult]:
        raise NotImplementedError

    def _hint(self, status: int) -> str:
        return "; check its API key" if status in (401, 403) else ""

    async def aclose(self) -> None:
        await self._client.aclose()


class SearxngSearcher(_HttpSearcher):
    name = "searxng"

    def _request(self, query: str, count: int) -> httpx.Request:
        params = {"q": query, "format": "json"}  # SearXNG answers a page; no count to ask
        return self._client.build_request("GET", f"{self.base_url}/search", params=params)

    def _results(self, answer: Any) -> list[SearchResult]:
        return [_result(r["title"], r["url"], r.get("content")) for r in answer["results"]]

    def _hint(self, status: int) -> str:
        if status == 403:
            return "; is json among search.formats in its settings.yml?"
        return ""


class BraveSearcher(_HttpSearcher):
    name = "brave"

    def _request(self, query: str, count: int) -> httpx.Request:
        return self._client.build_request(
            "GET",
            f"{self.base_url}/res/v1/web/search",
            params={"q": query, "count": count},
            headers={"Accept": "application/json", "X-Subscription-Token": self._api_key or ""},
        )

    def _results(self, answer: Any) -> list[SearchResult]:
        web = answer.get("web") or {"results": []}  # no web results: no "web" at all
        return [_result(r["title"], r["url"], r.get("description")) for r in web["results"]]


class TavilySearcher(_HttpSearcher):
    name = "tavily"

    def _request(self, query: str, count: int) -> httpx.Request:
        return self._client.build_request(
            "POST",
            f"{self.base_url}/search",
            json={"query": query, "max_results": count, "search_depth": "basic"},
            headers={"Authorization": f"Bearer {self._api_key or ''}"},
        )

    def _results(self, answer: Any) -> list[SearchResult]:
        return [_result(r["title"], r["url"], r.get("content")) for r in answer["results"]]


class DdgsSearcher:
    """DuckDuckGo and other engines through the `ddgs` metasearch library (no API key)."""

    name = "ddgs"

    def __init__(self, *, timeout_seconds: float) -> None:
        self.timeout_seconds = timeout_seconds

    async def search(self, query: str, count: int) -> list[SearchResult]:
        from ddgs.exceptions import DDGSException, TimeoutException

        timeout = SearchTimeout(
            f"the web search provider (ddgs) did not answer within {self.timeout_seconds:g} s"
        )
        try:
            rows = await asyncio.wait_for(
                asyncio.to_thread(self._text, query, count), self.timeout_seconds
            )
        except (TimeoutError, TimeoutException):
            raise timeout from None
        except DDGSException as error:
            if str(error) == "No results found.":  # ddgs raises rather than answer []
                return []
            log.warning("search_failed", provider=self.name, error=type(error).__name__)
            raise SearchFailed("the web search provider (ddgs) failed") from None
        results = [_result(r.get("title"), r.get("href"), r.get("body")) for r in rows]
        return [r for r in results if r.url][:count]

    def _text(self, query: str, count: int) -> list[dict[str, Any]]:
        from ddgs import DDGS

        seconds = max(1, math.ceil(self.timeout_seconds))
        return DDGS(timeout=seconds).text(query, max_results=count)

    async def aclose(self) -> None:
        return None


def build_searcher(config: SearchSettings) -> WebSearcher | None:
    """The configured provider, or None when `[search]` names none."""
    seconds = config.timeout_seconds
    if config.provider is None:
        return None
    if config.provider == "ddgs":
        return DdgsSearcher(timeout_seconds=seconds)
    if config.provider == "searxng":
        return SearxngSearcher(config.base_url or "", timeout_seconds=seconds)
    key = _api_key(config)
    if config.provider == "brave":
        return BraveSearcher(config.base_url or BRAVE_URL, timeout_seconds=seconds, api_key=key)
    return TavilySearcher(config.base_url or TAVILY_URL, timeout_seconds=seconds, api_key=key)


def _api_key(config: SearchSettings) -> str:
    key = os.environ.get(config.api_key_env or "")
    if not key:
        raise ValueError(
            f"[search] provider {config.provider!r} needs an API key in the environment "
            f"variable {config.api_key_env}, which is not set"
        )
    return key


def _result(title: Any, url: Any, snippet: Any) -> SearchResult:
    return SearchResult(str(title or "").strip(), str(url or "").strip(), str(snippet or ""))
