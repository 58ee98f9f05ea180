"""A fake rerank upstream: a real HTTP server on 127.0.0.1 that speaks Cohere's and Jina's
`POST /v1/rerank` (as llama-server --reranking, text-embeddings-inference and the hosted
APIs do) and fails on cue.

    with FakeReranker(api_key="sk-test") as up:     # up.url == "http://127.0.0.1:N/v1"
        up.favour("colorscale")      # passages holding this word score highest
        up.enqueue(Status(500))      # the next request gets this (tests/faults.py)
        up.enqueue(Scores(shuffle=True, drop=1))
        up.requests[0]["documents"]

With nothing enqueued a request gets `Scores()`: every document scored, results sorted by
score as the real servers send them, each passage's score the share of the query's words it
holds, plus 10 when it holds the favoured word. A request without the right bearer key
(when `api_key` is set) gets a 401.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from tests.faults import Disconnect, Hang, Raw, Script, Status
from tests.local_site import LocalSite, OnSite, SiteHandler


@dataclass(frozen=True)
class Scores:
    """A normal answer; `drop` leaves out the last N results, `shuffle` sends them in index
    order reversed instead of by score."""

    drop: int = 0
    shuffle: bool = False


ScriptItem = Scores | Status | Hang | Raw | Disconnect
_WORD = re.compile(r"\w+")


class FakeReranker(OnSite):
    def __init__(self, *, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.favoured: str | None = None
        self.script: Script[ScriptItem] = Script(Scores)
        self.site = LocalSite(_handler_for(self))

    @property
    def url(self) -> str:
        return self.site.url("/v1")

    def favour(self, word: str | None) -> None:
        self.favoured = word

    def enqueue(self, *items: ScriptItem) -> None:
        self.script.enqueue(*items)

    def score(self, query: str, document: str) -> float:
        words = set(_WORD.findall(query.lower()))
        held = set(_WORD.findall(document.lower()))
        share = len(words & held) / max(len(words), 1)
        return share + (10.0 if self.favoured and self.favoured in held else 0.0)

    def answer(self, body: dict[str, Any], item: Scores) -> dict[str, Any]:
        documents = body["documents"]
        results = [
            {"index": i, "relevance_score": self.score(body["query"], str(d))}
            for i, d in enumerate(documents)
        ]
        results.sort(key=lambda r: -r["relevance_score"])
        results = results[: len(results) - item.drop]
        if item.shuffle:
            results.sort(key=lambda r: -r["index"])
        return {"model": body.get("model"), "results": results, "usage": {"total_tokens": 1}}


def _handler_for(fake: FakeReranker) -> type[SiteHandler]:
    class Handler(SiteHandler):
        def do_POST(self) -> None:
            raw = self.body()
            headers = {name.lower(): value for name, value in self.headers.items()}
            fake.paths.append(self.path)
            try:
                body = json.loads(raw)
            except ValueError:
                self.send(400, {"error": {"message": "body is not JSON"}})
                return
            fake.requests.append(body)
            if self.path != "/v1/rerank":
                self.send(404, {"error": {"message": f"no route {self.path}"}})
                return
            if fake.api_key and headers.get("authorization") != f"Bearer {fake.api_key}":
                self.send(401, {"error": {"message": "invalid api key"}})
                return
            self._play(fake.script.next(), body)

        def _play(self, item: ScriptItem, body: dict[str, Any]) -> None:
            if isinstance(item, Scores):
                self.send(200, fake.answer(body, item))
            else:
                self.play_fault(item, {"error": {"message": "failed"}})

    return Handler
