"""A fake web search service on 127.0.0.1 speaking three real protocols, failing on cue.

A `LocalSite` (tests/local_site.py): real HTTP over real TCP:

    GET  /search?q=…&format=json            SearXNG's JSON API  → {"query", "results": [
                                                                  {title, url, content}]}
    GET  /res/v1/web/search?q=…&count=N     Brave Search API    → {"web": {"results": [
         X-Subscription-Token: KEY                                {title, url, description}]}}
    POST /search {query, max_results}       Tavily              → {"query", "results": [
         Authorization: Bearer KEY                                {title, url, content}]}

Brave and Tavily answer 401 to a wrong key, as they do; SearXNG answers 403 unless `format`
is json (an instance without the JSON format turned on). Results come from `results`:

    with SearchEngine(api_key="k") as engine:
        engine.results = [Hit("The Tide Mill", "http://…/article", "A tide mill …")]
        engine.fail_next(500)      # the next request answers HTTP 500
        engine.stall_next(3.0)     # the next request waits 3 s before answering
        engine.garble_next()       # the next request answers 200 with HTML, not JSON
        engine.requests[-1]        # Seen(method, path, query, headers, body)
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.local_site import LocalSite, OnSite, SiteHandler


@dataclass(frozen=True)
class Hit:
    title: str
    url: str
    snippet: str = ""


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


class SearchEngine(OnSite):
    def __init__(self, *, api_key: str = "test-search-key") -> None:
        self.api_key = api_key
        self.results: list[Hit] = []
        self.requests: list[Seen] = []
        self._cues: deque[tuple[str, Any]] = deque()
        self.site = LocalSite(_handler(self))

    @property
    def url(self) -> str:
        return self.site.url("")

    def fail_next(self, status: int) -> None:
        self._cues.append(("fail", status))

    def stall_next(self, seconds: float) -> None:
        self._cues.append(("stall", seconds))

    def garble_next(self) -> None:
        self._cues.append(("garble", None))

    def next_cue(self) -> tuple[str, Any] | None:
        return self._cues.popleft() if self._cues else None


def _handler(engine: SearchEngine) -> type[SiteHandler]:
    class Handler(SiteHandler):
        def do_GET(self) -> None:
            self._serve("GET", None)

        def do_POST(self) -> None:
            raw = self.body()
            try:
                body = json.loads(raw or b"null")
            except ValueError:
                body = raw
            self._serve("POST", body)

        def _serve(self, method: str, body: Any) -> None:
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            headers = {k.lower(): v for k, v in self.headers.items()}
            engine.requests.append(Seen(method, parts.path, query, headers, body))
            if not self._cued():
                self._answer(method, parts.path, query, headers, body)

        def _cued(self) -> bool:
            cue = engine.next_cue()
            if cue is None:
                return False
            kind, value = cue
            if kind == "fail":
                self.send(value, {"error": "engine exploded; internal detail xyz"})
                return True
            if kind == "stall":
                engine.site.stopping.wait(value)
                return False
            self.send(200, b"<html>Service temporarily unavailable</html>", "text/html")
            return True

        def _answer(
            self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: Any
        ) -> None:
            hits = engine.results
            if method == "GET" and path == "/search":
                if query.get("format") != "json":
                    self.send(403, b"Forbidden", "text/plain")
                    return
                results = [{"title": h.title, "url": h.url, "content": h.snippet} for h in hits]
                self.send(200, {"query": query.get("q", ""), "results": results})
            elif method == "GET" and path == "/res/v1/web/search":
                if headers.get("x-subscription-token") != engine.api_key:
                    self.send(401, {"error": {"code": "SUBSCRIPTION_TOKEN_INVALID"}})
                    return
                count = int(query.get("count", "20"))
                web = [{"title": h.title, "url": h.url, "description": h.snippet} for h in hits]
                answer = {"type": "search", "web": {"type": "search", "results": web[:count]}}
                self.send(200, answer)
            elif method == "POST" and path == "/search":
                if headers.get("authorization") != f"Bearer {engine.api_key}":
                    refusal = {"detail": {"error": "Unauthorized: missing or invalid API key."}}
                    self.send(401, refusal)
                    return
                count = int(body.get("max_results", 5))
                results = [
                    {"title": h.title, "url": h.url, "content": h.snippet, "score": 0.9}
                    for h in hits
                ]
                self.send(200, {"query": body.get("query"), "results": results[:count]})
            else:
                self.send(404, b"no such endpoint", "text/plain")

    return Handler
