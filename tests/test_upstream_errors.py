"""One mapping of upstream failures for every HTTP provider (chat, embeddings, images).

A real server on 127.0.0.1 answers each status (and hangs, drops, or is not there at all);
the chat model, the embedder and the image model must each turn it into the same domain
error, worded the same way after their own subject."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from tests.local_site import LocalSite
from threadline.domain.errors import ModelError, ModelTimeout
from threadline.domain.image_generation import GenerationRequest
from threadline.domain.ports import ChatMessage, ModelRequest
from threadline.providers.openai_compat import OpenAICompatibleModel
from threadline.providers.openai_embeddings import OpenAICompatibleEmbedder
from threadline.providers.openai_images import OpenAICompatibleImageModel
from threadline.settings import EmbeddingConfig, ModelConfig

KEY = "sk-upstream-secret-42"
KEY_ENV = "UPSTREAM_ERRORS_KEY"
TIMEOUT = 0.5  # seconds: every provider's read timeout here


@dataclass
class Answer:
    """What the fake upstream does with the next request: a status and body, or a fault."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    hang: float = 0.0  # seconds slept before answering
    drop: bool = False  # close the connection without a word


class _Script:
    def __init__(self) -> None:
        self.answer = Answer()
        self.release = threading.Event()  # ends a hang early when the test is done


def _handler(script: _Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            answer = script.answer
            if answer.hang:
                script.release.wait(answer.hang)
            if answer.drop:
                self.close_connection = True
                return
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            if 300 <= answer.status < 400:
                self.send_header("Location", "http://127.0.0.1:9/elsewhere")
            self.end_headers()
            self.wfile.write(answer.body)

    return Handler


@pytest.fixture
def upstream() -> Iterator[tuple[LocalSite, _Script]]:
    script = _Script()
    with LocalSite(_handler(script)) as site:
        yield site, script
        script.release.set()


Call = Callable[[str], Awaitable[None]]


async def _chat(base_url: str) -> None:
    config = ModelConfig(
        provider="openai-compatible",
        base_url=base_url,
        api_key_env=KEY_ENV,
        timeout_seconds=TIMEOUT,
    )
    model = OpenAICompatibleModel("gpt", config, api_key=KEY)
    try:
        async for _ in model.stream(ModelRequest([ChatMessage("user", "hi")])):
            pass
    finally:
        await model.aclose()


async def _embeddings(base_url: str) -> None:
    config = EmbeddingConfig(
        provider="openai-compatible",
        base_url=base_url,
        model="emb",
        api_key_env=KEY_ENV,
        timeout_seconds=TIMEOUT,
    )
    embedder = OpenAICompatibleEmbedder(config, api_key=KEY)
    try:
        await embedder.embed(["hi"], "query")
    finally:
        await embedder.aclose()


async def _images(base_url: str) -> None:
    config = ModelConfig(
        provider="openai-compatible",
        kind="images",
        base_url=base_url,
        api_key_env=KEY_ENV,
        timeout_seconds=TIMEOUT,
    )
    model = OpenAICompatibleImageModel("painter", config, api_key=KEY)
    try:
        await model.generate(GenerationRequest("a cat", 1, "1024x1024", "png"))
    finally:
        await model.aclose()


# provider -> (call, its subject, the setting that names the upstream's model)
PROVIDERS: dict[str, tuple[Call, str, str]] = {
    "chat": (_chat, "model 'gpt'", "upstream_model"),
    "embeddings": (_embeddings, "embeddings 'openai-compatible:emb'", "model"),
    "images": (_images, "model 'painter'", "upstream_model"),
}


def _error(message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()


HTML = b"<html>stack trace, db password=hunter2</html>"
KEY_HINT = f"it rejected the configured API key (check the key in ${KEY_ENV})"

# status, body, what follows "<subject>: upstream returned <status>: "
STATUSES = [
    (301, b"", "a redirect, which is not followed (check base_url)"),
    (400, _error(f"size is wrong for {KEY}"), "size is wrong for ***"),
    (401, _error("invalid key"), KEY_HINT),
    (403, _error("org is blocked"), f"{KEY_HINT}: org is blocked"),
    (404, b"", "Not Found (check base_url and {model_key})"),
    (404, _error("no such model"), "no such model"),
    (413, HTML, "Request Entity Too Large"),
    (422, _error("  bad\n  prompt  "), "bad prompt"),
    (429, _error("slow down"), "slow down"),
    (500, HTML, "Internal Server Error"),
    (502, b"{}", "Bad Gateway"),
    (503, _error("overloaded"), "overloaded"),
]


async def _failure(call: Call, base_url: str) -> ModelError:
    with pytest.raises(ModelError) as caught:
        await call(base_url)
    return caught.value


@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize(("status", "body", "said"), STATUSES)
async def test_each_status_is_the_same_error_from_every_provider(
    upstream: tuple[LocalSite, _Script], provider: str, status: int, body: bytes, said: str
) -> None:
    site, script = upstream
    call, subject, model_key = PROVIDERS[provider]
    content_type = "text/html" if body == HTML else "application/json"
    script.answer = Answer(status, body, content_type)

    error = await _failure(call, site.url("/v1"))

    assert type(error) is ModelError and error.status == 502
    expected = f"{subject}: upstream returned {status}: {said.format(model_key=model_key)}"
    assert error.message == expected
    assert KEY not in error.message and "hunter2" not in error.message


@pytest.mark.parametrize("provider", list(PROVIDERS))
async def test_a_silent_upstream_is_a_timeout_naming_the_host_and_the_wait(
    upstream: tuple[LocalSite, _Script], provider: str
) -> None:
    site, script = upstream
    call, subject, _ = PROVIDERS[provider]
    script.answer = Answer(hang=10)
    started = time.monotonic()

    error = await _failure(call, site.url("/v1"))

    assert time.monotonic() - started < 5
    assert type(error) is ModelTimeout and error.status == 504
    assert error.message == f"{subject}: upstream {site.host_port} did not answer within 0.5s"


@pytest.mark.parametrize("provider", list(PROVIDERS))
async def test_a_dropped_connection_is_said_the_same_way(
    upstream: tuple[LocalSite, _Script], provider: str
) -> None:
    site, script = upstream
    call, subject, _ = PROVIDERS[provider]
    script.answer = Answer(drop=True)

    error = await _failure(call, site.url("/v1"))

    assert type(error) is ModelError
    assert error.message == f"{subject}: upstream {site.host_port} closed the connection unanswered"


@pytest.mark.parametrize("provider", list(PROVIDERS))
async def test_nothing_listening_is_said_the_same_way(provider: str) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    call, subject, _ = PROVIDERS[provider]

    error = await _failure(call, f"http://127.0.0.1:{port}/v1")

    assert type(error) is ModelError
    assert error.message.startswith(f"{subject}: cannot connect to upstream 127.0.0.1:{port}: ")


async def test_no_key_configured_says_where_to_set_it(upstream: tuple[LocalSite, _Script]) -> None:
    site, script = upstream
    script.answer = Answer(401, _error("missing key"))
    config = ModelConfig(provider="openai-compatible", base_url=site.url("/v1"))
    model = OpenAICompatibleModel("gpt", config, api_key=None)
    try:
        with pytest.raises(ModelError) as caught:
            async for _ in model.stream(ModelRequest([ChatMessage("user", "hi")])):
                pass
    finally:
        await model.aclose()
    assert caught.value.message == (
        "model 'gpt': upstream returned 401: it rejected the configured API key "
        '(no API key is configured: set api_key_env in [models."gpt"])'
    )
