"""The `openai-compatible` provider: any server speaking OpenAI's chat completions API.

Why it exists: at scale, models are served by vLLM, Ollama, llama-server or hosted APIs, and
all of them take OpenAI's `POST /chat/completions` with SSE streaming. This module turns such
a stream into the core's reply events, and every failure (HTTP status, refused connection,
timeout, dropped or garbled stream) into a domain error whose message says what to fix and
never carries the API key or the upstream's raw body.

Connections are pooled per model (`http1.Http1Transport`) and shared by all its requests,
sized for hundreds of concurrent streams. The upstream is always asked to stream, with usage
included.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import httpx

from threadline import __version__
from threadline.domain.errors import ModelError
from threadline.domain.events import ReplyEvent, TextDelta, Usage, finish_reason
from threadline.domain.ports import ChatMessage, ModelRequest
from threadline.providers.chunk_shape import ChunkShape
from threadline.providers.http1 import Http1Transport
from threadline.providers.upstream import (
    TRANSPORT_ERRORS,
    Upstream,
    UpstreamErrors,
    error_message,
)
from threadline.settings import ModelConfig

MAX_CONNECTIONS = 1024  # per model, open at once
ENCODE_IN_THREAD = 500  # messages: a longer request body is encoded in a thread
MAX_KEEPALIVE = 512  # per model, kept alive between requests

_ERROR_BODY_CAP = 64 * 1024  # bytes of an error response read to find its message


class _StreamBroken(Exception):
    """The upstream's stream is not one an OpenAI-compatible server would send."""


class OpenAICompatibleModel:
    """A ChatModel served by an OpenAI-compatible HTTP server."""

    def __init__(
        self,
        name: str,
        config: ModelConfig,
        *,
        api_key: str | None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._upstream = Upstream.at(config.base_url, api_key, f"model {name!r}")
        self._errors = UpstreamErrors.for_model(self._upstream, name, config)
        self.name = name
        self.config = config
        self.upstream_model = config.upstream_model or name
        # Loading the CA bundle takes ~100 ms, on the event loop of the first request to this
        # model: only for an https upstream.
        tls = httpx.create_ssl_context() if str(config.base_url).startswith("https:") else None
        self._transport = transport or Http1Transport(
            ssl_context=tls,
            max_connections=MAX_CONNECTIONS,
            max_keepalive=MAX_KEEPALIVE,
        )
        # Requests go to the transport itself: an httpx client would add cookie, auth and
        # redirect handling (none of which applies here) and a wrapper around every read.
        self._endpoint = self._upstream.endpoint("chat/completions")
        self._headers = httpx.Headers(
            {
                "Accept": "*/*",
                "Accept-Encoding": "gzip, deflate",
                "Connection": "keep-alive",
                "User-Agent": f"threadline/{__version__}",
                **({"Authorization": f"Bearer {api_key}"} if api_key else {}),
            }
        )
        timeout = httpx.Timeout(config.timeout_seconds, connect=config.connect_timeout_seconds)
        self._extensions = {"timeout": timeout.as_dict()}

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def stream(self, request: ModelRequest) -> AsyncIterator[ReplyEvent]:
        """TextDeltas as the upstream sends them, then one Usage; failures as domain errors."""
        answered = False
        try:
            if len(request.messages) > ENCODE_IN_THREAD:  # a long list: encoded off the loop
                content = await asyncio.to_thread(self._encoded, request)
                upstream_request = httpx.Request(
                    "POST",
                    self._endpoint,
                    headers={**self._headers, "Content-Type": "application/json"},
                    content=content,
                    extensions=self._extensions,
                )
            else:
                upstream_request = httpx.Request(
                    "POST",
                    self._endpoint,
                    headers=self._headers,
                    json=self.request_body(request),
                    extensions=self._extensions,
                )
            response = await self._transport.handle_async_request(upstream_request)
            response.request = upstream_request
            async with contextlib.aclosing(response):
                answered = True
                if response.status_code != 200:
                    body = await _read_capped(response)
                    raise self._errors.status(
                        response.status_code,
                        body,
                        response.reason_phrase,
                        response.headers.get("retry-after"),
                    )
                async for event in self._events(response, request):
                    yield event
        except _StreamBroken as exc:
            message = f"model {self.name!r}: upstream closed the stream early ({exc})"
            raise ModelError(message) from None
        except TRANSPORT_ERRORS as exc:
            raise self._errors.transport(exc, answered=answered) from exc

    def _encoded(self, request: ModelRequest) -> bytes:
        body = self.request_body(request)
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()

    def request_body(self, request: ModelRequest) -> dict[str, Any]:
        """The JSON sent upstream. `request.extra` is not forwarded: it is not OpenAI's."""
        max_tokens = request.max_tokens
        body: dict[str, Any] = {
            "model": self.upstream_model,
            "messages": [_message(m) for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": self.config.max_output_tokens if max_tokens is None else max_tokens,
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.stop:
            body["stop"] = list(request.stop)
        return body

    # -- reading the answer

    async def _events(
        self, response: httpx.Response, request: ModelRequest
    ) -> AsyncIterator[ReplyEvent]:
        state = _StreamState()
        if response.headers.get("content-type", "").startswith("application/json"):
            whole = state.whole_completion(await response.aread())  # it ignored "stream"
            if whole:
                yield TextDelta(whole)
        else:
            pending = b""
            async for chunk in _body(response):  # the data lines split here: no generator
                payloads, pending = _data_payloads(pending, chunk)
                for payload in payloads:
                    # Reads on past [DONE] to the body's end so the connection can be reused.
                    if state.done:
                        continue
                    text = state.data(payload)
                    if text:
                        yield TextDelta(text)
                    elif state.error is not None:
                        break
                if state.error is not None:
                    break
            else:
                if pending.startswith(b"data:"):  # a last line without its end
                    text = None if state.done else state.data(pending[5:])
                    if text:
                        yield TextDelta(text)
            if not (state.done or state.finish_reason):
                raise _StreamBroken("connection ended before the reply was complete")
        if state.error is not None:
            detail = self._clean(state.error)
            raise ModelError(f"model {self.name!r}: upstream reported an error: {detail}")
        yield state.usage(request)

    def _clean(self, text: str | None) -> str:
        return self._upstream.clean(text)


class _StreamState:
    """What the stream said so far, besides its text: end marker, finish reason, usage."""

    __slots__ = (
        "done",
        "error",
        "finish_reason",
        "output_chars",
        "reported",
        "shape",
        "stop_reason",
    )

    def __init__(self) -> None:
        self.shape = ChunkShape()  # the usual chunk, read without json.loads
        self.done = False
        self.error: str | None = None
        self.finish_reason: str | None = None
        self.output_chars = 0
        self.reported: dict[str, Any] | None = None
        self.stop_reason: object = None  # vLLM's: the stop string that ended the reply

    def data(self, payload: bytes) -> str | None:
        """The text of one `data:` payload (None when it carries none)."""
        text = self.shape.read(payload)
        if text is not None:
            self.output_chars += len(text)
            return text
        if payload.strip() == b"[DONE]":  # not JSON: checked before json.loads raises
            self.done = True
            return None
        try:
            chunk = json.loads(payload)
        except ValueError:
            raise _StreamBroken("an event that is not JSON") from None
        if type(chunk) is not dict:
            raise _StreamBroken("an event that is not a JSON object")
        try:
            if chunk.get("error"):
                self.error = error_message(chunk) or "no error message"
                self.done = True
                return None
            plain = not chunk.get("usage")
            if not plain:
                self.reported = chunk["usage"]
            choices = chunk.get("choices")
            if not choices:
                return None
            choice = choices[0]
            if choice.get("finish_reason"):
                plain = False
                self.finish_reason = choice["finish_reason"]
                self.stop_reason = choice.get("stop_reason")
            text = (choice.get("delta") or {}).get("content")
        except (AttributeError, IndexError, KeyError, TypeError):
            raise _StreamBroken("an event that is not a chat.completion.chunk") from None
        if not isinstance(text, str):
            return None
        if plain:  # text and nothing else: the shape the next chunks probably have
            self.shape.learn(payload, chunk, text)
        self.output_chars += len(text)
        return text

    def whole_completion(self, raw: bytes) -> str:
        """The text of a non-streamed `chat.completion` body."""
        try:
            completion = json.loads(raw)
            choice = completion["choices"][0]
            text = choice["message"].get("content") or ""
            self.reported = completion.get("usage")
            self.finish_reason = choice.get("finish_reason") or "stop"
            self.stop_reason = choice.get("stop_reason")
        except (ValueError, AttributeError, IndexError, KeyError, TypeError):
            raise _StreamBroken("a JSON body that is not a chat.completion") from None
        self.output_chars = len(text)
        self.done = True
        return str(text)

    def usage(self, request: ModelRequest) -> Usage:
        """The upstream's counts, else an estimate of about 4 characters per token; and its
        finish reason."""
        reported = self.reported if isinstance(self.reported, dict) else {}
        prompt, completion = reported.get("prompt_tokens"), reported.get("completion_tokens")
        finish = finish_reason(self.finish_reason)
        matched = self.stop_reason if finish == "stop" else None
        stop = matched if isinstance(matched, str) and matched in request.stop else None
        if isinstance(prompt, int) and isinstance(completion, int):
            return Usage(prompt, completion, finish_reason=finish, stop_sequence=stop)
        prompt_chars = sum(len(m.content) for m in request.messages)
        output = _tokens(self.output_chars)
        return Usage(
            _tokens(prompt_chars), output, estimated=True, finish_reason=finish, stop_sequence=stop
        )


def _message(message: ChatMessage) -> dict[str, Any]:
    """One message in OpenAI's shape; with images, content parts (the text, then each image
    as a base64 data URL), which vision models on OpenAI-compatible servers take."""
    if not message.images:
        return {"role": message.role, "content": message.content}
    parts: list[dict[str, Any]] = [{"type": "text", "text": message.content}]
    for image in message.images:
        encoded = base64.b64encode(image.data).decode("ascii")
        url = f"data:{image.mime_type};base64,{encoded}"
        parts.append({"type": "image_url", "image_url": {"url": url}})
    return {"role": message.role, "content": parts}


def _tokens(chars: int) -> int:
    return max(1, math.ceil(chars / 4))


def _body(response: httpx.Response) -> AsyncIterable[bytes]:
    """The body as it arrives: the transport's stream itself when it is not compressed (the
    usual for SSE), skipping httpx's decoding and re-chunking layers; else `aiter_bytes()`."""
    stream = response.stream
    if "content-encoding" in response.headers or not isinstance(stream, httpx.AsyncByteStream):
        return response.aiter_bytes()
    return stream


async def _data_lines(body: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """The payloads of an SSE body's `data:` lines as they arrive, split on the bytes (lines
    end in LF, CRLF or CR); blank separators, `: keep-alive` comments and other fields are
    skipped. A last line without its end is still read (some servers end on `data: [DONE]`)."""
    pending = b""
    async for chunk in body:
        payloads, pending = _data_payloads(pending, chunk)
        for payload in payloads:
            yield payload
    if pending.startswith(b"data:"):
        yield pending[5:]


def _data_payloads(pending: bytes, chunk: bytes) -> tuple[list[bytes], bytes]:
    """The `data:` payloads of the lines that `chunk` completes after `pending` (the start
    of a line not ended yet), and what is pending after it."""
    if not chunk:
        return [], pending
    lines = (pending + chunk).splitlines() if pending else chunk.splitlines()
    pending = b"" if chunk.endswith((b"\n", b"\r")) or not lines else lines.pop()
    return [line[5:] for line in lines if line.startswith(b"data:")], pending


async def _read_capped(response: httpx.Response) -> bytes:
    data = bytearray()
    async for part in response.aiter_bytes():
        data += part
        if len(data) >= _ERROR_BODY_CAP:
            break
    return bytes(data)
