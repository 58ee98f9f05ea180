"""A fake web search service on 127.0.0.1 speaking three real protocols, failing on cue.

A stdlib `ThreadingHTTPServer` in a background thread (real HTTP over real TCP):

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

import contextlib
import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


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


class SearchEngine:
    def __init__(self, *, api_key: str = "test-search-key") -> None:
        self.api_key = api_key
        self.results: list[Hit] = []
        self.requests: list[Seen] = []
        self._cues: deque[tuple[str, Any]] = deque()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail_next(self, status: int) -> None:
        self._cues.append(("fail", status))

    def stall_next(self, seconds: float) -> None:
        self._cues.append(("stall", seconds))

    def garble_next(self) -> None:
        self._cues.append(("garble", None))

    def next_cue(self) -> tuple[str, Any] | None:
        return self._cues.popleft() if self._cues else None

    def __enter__(self) -> SearchEngine:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(engine: SearchEngine) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def handle(self) -> None:
            with contextlib.suppress(ConnectionResetError):  # a client closing a kept-alive one
                super().handle()

        def do_GET(self) -> None:
            self._serve("GET", None)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
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
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                if not self._cued():
                    self._answer(method, parts.path, query, headers, body)

        def _cued(self) -> bool:
            cue = engine.next_cue()
            if cue is None:
                return False
            kind, value = cue
            if kind == "fail":
                self._send(value, {"error": "engine exploded; internal detail xyz"})
                return True
            if kind == "stall":
                time.sleep(value)
                return False
            self._send(200, b"<html>Service temporarily unavailable</html>", "text/html")
            return True

        def _answer(
            self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: Any
        ) -> None:
            hits = engine.results
            if method == "GET" and path == "/search":
                if query.get("format") != "json":
                    self._send(403, b"Forbidden", "text/plain")
                    return
                results = [{"title": h.title, "url": h.url, "content": h.snippet} for h in hits]
                self._send(200, {"query": query.get("q", ""), "results": results})
            elif method == "GET" and path == "/res/v1/web/search":
                if headers.get("x-subscription-token") != engine.api_key:
                    self._send(401, {"error": {"code": "SUBSCRIPTION_TOKEN_INVALID"}})
                    return
                count = int(query.get("count", "20"))
                web = [{"title": h.title, "url": h.url, "description": h.snippet} for h in hits]
                answer = {"type": "search", "web": {"type": "search", "results": web[:count]}}
                self._send(200, answer)
            elif method == "POST" and path == "/search":
                if headers.get("authorization") != f"Bearer {engine.api_key}":
                    refusal = {"detail": {"error": "Unauthorized: missing or invalid API key."}}
                    self._send(401, refusal)
                    return
                count = int(body.get("max_results", 5))
                results = [
                    {"title": h.title, "url": h.url, "content": h.snippet, "score": 0.9}
                    for h in hits
                ]
                self._send(200, {"query": body.get("query"), "results": results[:count]})
            else:
                self._send(404, b"no such endpoint", "text/plain")

        def _send(self, status: int, body: Any, kind: str = "application/json") -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
