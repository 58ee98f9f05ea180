"""A fake OpenAI-compatible embeddings upstream: a real HTTP server on 127.0.0.1 that speaks
`POST /v1/embeddings` and fails on cue.

Why it exists: the `openai-compatible` embedder is tested over real TCP (status codes, stalls,
garbled bodies, dropped connections) without the network. It is the standard library's
threading HTTP server, so a hanging answer blocks only its own thread, never the test's
event loop.

    with FakeEmbeddings(api_key="sk-test", dim=8) as up:   # up.url == "http://127.0.0.1:N/v1"
        up.enqueue(Status(500, {"error": {"message": "boom"}}))  # the next request gets this
        up.enqueue(Hang(5))                                  # read the request, answer nothing
        up.enqueue(Raw(b"not json"))                         # these exact body bytes
        up.enqueue(Vectors(shuffle=True))                    # data[] in reverse index order
        up.requests[0]["input"], up.requests[0].headers["authorization"]

The faults are tests/faults.py's: `Status` with `body=None` sends OpenAI's error shape, `Raw`
is sent with status 200 (application/json unless it names a type), `Hang` waits `seconds`
(or until the server stops) and closes, `Disconnect` closes at once.

With nothing enqueued, a request gets `Vectors()`: one vector per input, `dim` long, made
from the text (the same text always gets the same vector), deliberately *not* unit length.
A request without the right bearer key (when `api_key` is set) gets OpenAI's 401.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from tests.faults import Disconnect, Hang, Raw, Script, Status
from tests.local_site import LocalSite, OnSite, SiteHandler


@dataclass(frozen=True)
class Vectors:
    """A normal answer. `dim` overrides the server's; `drop` leaves out the last N vectors;
    `shuffle` sends `data` in reverse order (each item keeps its `index`)."""

    dim: int | None = None
    drop: int = 0
    shuffle: bool = False


ScriptItem = Vectors | Status | Hang | Raw | Disconnect


class ReceivedRequest(dict[str, Any]):
    """The JSON body of a received request, plus its path and headers (lower-case names)."""

    def __init__(self, body: dict[str, Any], path: str, headers: dict[str, str]) -> None:
        super().__init__(body)
        self.path = path
        self.headers = headers


def fake_vector(text: str, dim: int) -> list[float]:
    """The vector the fake sends for `text`: deterministic, length between 1 and 3."""
    digest = hashlib.sha256(text.encode()).digest()
    while len(digest) < dim:
        digest += hashlib.sha256(digest).digest()
    return [(byte - 127.5) / 64 for byte in digest[:dim]]


class FakeEmbeddings(OnSite):
    def __init__(self, *, api_key: str | None = None, dim: int = 8) -> None:
        self.api_key = api_key
        self.dim = dim
        self.requests: list[ReceivedRequest] = []
        self.script: Script[ScriptItem] = Script(Vectors)
        self.site = LocalSite(_handler_for(self))

    @property
    def url(self) -> str:
        return self.site.url("/v1")

    def enqueue(self, *items: ScriptItem) -> None:
        self.script.enqueue(*items)

    def answer(self, body: dict[str, Any], item: Vectors) -> dict[str, Any]:
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        dim = item.dim or self.dim
        data = [
            {"object": "embedding", "index": i, "embedding": fake_vector(str(text), dim)}
            for i, text in enumerate(texts)
        ]
        data = data[: len(data) - item.drop]
        if item.shuffle:
            data.reverse()
        tokens = sum(len(str(text).split()) for text in texts)
        return {
            "object": "list",
            "data": data,
            "model": body.get("model"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }


def _error(message: str, type_: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": None}}


def _handler_for(fake: FakeEmbeddings) -> type[SiteHandler]:
    class Handler(SiteHandler):
        def do_POST(self) -> None:
            raw = self.body()
            headers = {name.lower(): value for name, value in self.headers.items()}
            try:
                body = json.loads(raw)
            except ValueError:
                self.send(400, _error("body is not JSON", "invalid_request_error"))
                return
            fake.requests.append(ReceivedRequest(body, self.path, headers))
            if self.path != "/v1/embeddings":
                self.send(404, _error(f"no route {self.path}", "invalid_request_error"))
                return
            if fake.api_key and headers.get("authorization") != f"Bearer {fake.api_key}":
                self.send(401, _error("Incorrect API key provided.", "invalid_api_key"))
                return
            self._play(fake.script.next(), body)

        def _play(self, item: ScriptItem, body: dict[str, Any]) -> None:
            if isinstance(item, Vectors):
                self.send(200, fake.answer(body, item))
            else:
                self.play_fault(item, _error("failed", "server_error"))

    return Handler
