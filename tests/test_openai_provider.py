"""The openai-compatible provider against a fake upstream over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator

import openai
import pytest

from tests.fake_upstream import FakeUpstream, Reply
from tests.faults import Disconnect, Hang, Raw, Status
from threadline.domain.errors import ModelError, ModelTimeout
from threadline.domain.events import ReplyEvent, TextDelta, Usage
from threadline.domain.ports import ChatMessage, ModelRequest
from threadline.providers.openai_compat import OpenAICompatibleModel
from threadline.settings import ModelConfig

KEY = "sk-upstream-secret-123"


def make_model(url: str, api_key: str | None = KEY, **config: object) -> OpenAICompatibleModel:
    settings = ModelConfig.model_validate(
        {"provider": "openai-compatible", "base_url": url, "upstream_model": "up-model", **config}
    )
    return OpenAICompatibleModel("local-gpt", settings, api_key=api_key)


def ask(text: str = "Hi", **settings: object) -> ModelRequest:
    messages = [ChatMessage("system", "Be brief."), ChatMessage("user", text)]
    return ModelRequest(messages=messages, **settings)  # type: ignore[arg-type]


async def collect(model: OpenAICompatibleModel, request: ModelRequest) -> list[ReplyEvent]:
    return [event async for event in model.stream(request)]


async def collect_until_error(
    model: OpenAICompatibleModel, request: ModelRequest
) -> tuple[list[ReplyEvent], Exception]:
    events: list[ReplyEvent] = []
    with pytest.raises(ModelError) as caught:
        async for event in model.stream(request):
            events.append(event)
    return events, caught.value


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(api_key=KEY) as up:
        yield up


@pytest.fixture
async def model(upstream: FakeUpstream) -> AsyncIterator[OpenAICompatibleModel]:
    model = make_model(upstream.url)
    yield model
    await model.aclose()


async def test_streams_deltas_then_the_upstream_usage(upstream, model):
    upstream.enqueue(Reply("Hello world again"))

    events = await collect(model, ask())

    assert events == [
        TextDelta("Hello"),
        TextDelta(" world"),
        TextDelta(" again"),
        Usage(input_tokens=3, output_tokens=3, estimated=False),
    ]


async def test_sends_an_openai_streaming_request(upstream):
    model = make_model(upstream.url, max_output_tokens=77)
    try:
        await collect(model, ask("Say hi", temperature=0.2, top_p=0.9, stop=["\n\n"]))
    finally:
        await model.aclose()

    (received,) = upstream.requests
    assert received.path == "/v1/chat/completions"
    assert received.headers["authorization"] == f"Bearer {KEY}"
    assert received == {
        "model": "up-model",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hi"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 77,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["\n\n"],
    }


async def test_max_tokens_and_stop_reach_the_upstream(upstream, model):
    upstream.enqueue(Reply("one two three four five"), Reply("one two. three"))

    truncated = await collect(model, ask(max_tokens=2))
    stopped = await collect(model, ask(stop=["."]))

    assert [e.text for e in truncated if isinstance(e, TextDelta)] == ["one", " two"]
    assert [e.text for e in stopped if isinstance(e, TextDelta)] == ["one", " two"]
    assert upstream.requests[0]["max_tokens"] == 2
    assert upstream.requests[1]["stop"] == ["."]


async def test_the_usage_says_why_the_reply_ended(upstream, model):
    upstream.enqueue(
        Reply("one two three four five"),
        Reply("one two. three"),
        Reply("one two"),
        Reply("withheld", finish_reason="content_filter"),
        Reply("called", finish_reason="tool_calls"),
    )

    cut = await collect(model, ask(max_tokens=2))
    stopped = await collect(model, ask(stop=["."]))
    ended = await collect(model, ask(max_tokens=5))
    filtered = await collect(model, ask())
    other = await collect(model, ask())

    assert cut[-1] == Usage(3, 2, finish_reason="length")
    # the fake upstream names the stop string that ended it, as vLLM's `stop_reason` does
    assert stopped[-1] == Usage(3, 2, finish_reason="stop", stop_sequence=".")
    assert ended[-1] == Usage(3, 2, finish_reason="stop")
    assert isinstance(filtered[-1], Usage) and filtered[-1].finish_reason == "content_filter"
    assert isinstance(other[-1], Usage) and other[-1].finish_reason == "stop"  # not ours: "stop"


@pytest.mark.parametrize("reason", ["length", "stop"])
async def test_a_whole_completion_answered_to_a_stream_request_keeps_its_reason(
    upstream, model, reason
):
    completion = {
        "choices": [{"index": 0, "message": {"content": "cut"}, "finish_reason": reason}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
    }
    upstream.enqueue(Raw(json.dumps(completion).encode(), content_type="application/json"))

    events = await collect(model, ask(max_tokens=1))

    assert events == [TextDelta("cut"), Usage(3, 1, finish_reason=reason)]  # type: ignore[arg-type]


async def test_without_usage_the_estimate_still_says_length(upstream, model):
    upstream.enqueue(Reply("one two three four", send_usage=False))

    events = await collect(model, ask(max_tokens=3))

    assert isinstance(events[-1], Usage)
    assert events[-1].estimated and events[-1].finish_reason == "length"


async def test_model_name_defaults_to_the_configured_name(upstream):
    settings = ModelConfig(provider="openai-compatible", base_url=upstream.url)
    model = OpenAICompatibleModel("llama-3", settings, api_key=KEY)
    try:
        await collect(model, ask())
    finally:
        await model.aclose()
    assert upstream.requests[0]["model"] == "llama-3"


async def test_estimates_usage_when_the_upstream_sends_none(upstream, model):
    upstream.enqueue(Reply("abcdefgh", send_usage=False))

    *_, usage = await collect(model, ask("Hi"))

    # 4 characters a token: "Be brief." + "Hi" = 11 chars -> 3; "abcdefgh" -> 2
    assert usage == Usage(input_tokens=3, output_tokens=2, estimated=True)


async def test_upstream_500_is_a_model_error_with_its_message(upstream, model):
    upstream.enqueue(Status(500, {"error": {"message": "boom", "type": "server_error"}}))

    with pytest.raises(ModelError) as caught:
        await collect(model, ask())

    assert type(caught.value) is ModelError
    assert caught.value.message == "model 'local-gpt': upstream returned 500: boom"


async def test_upstream_error_without_json_never_shows_its_body(upstream, model):
    upstream.enqueue(Status(503, "<html>internal stack trace: db password=hunter2</html>"))

    with pytest.raises(ModelError) as caught:
        await collect(model, ask())

    assert caught.value.message == "model 'local-gpt': upstream returned 503: Service Unavailable"


async def test_key_is_masked_if_the_upstream_echoes_it(upstream, model):
    upstream.enqueue(Status(400, {"error": {"message": f"bad request from {KEY}"}}))

    with pytest.raises(ModelError) as caught:
        await collect(model, ask())

    assert KEY not in caught.value.message
    assert caught.value.message.endswith("bad request from ***")


async def test_rejected_key_says_so(upstream):
    model = make_model(upstream.url, api_key="sk-wrong-key", api_key_env="UPSTREAM_KEY")
    try:
        with pytest.raises(ModelError) as caught:
            await collect(model, ask())
    finally:
        await model.aclose()

    message = caught.value.message
    assert "upstream returned 401" in message
    assert "rejected the configured API key" in message
    assert "$UPSTREAM_KEY" in message
    assert "sk-wrong-key" not in message


async def test_hanging_upstream_times_out(upstream):
    model = make_model(upstream.url, timeout_seconds=0.5)
    upstream.enqueue(Hang(10))
    started = time.monotonic()
    try:
        with pytest.raises(ModelTimeout) as caught:
            await collect(model, ask())
    finally:
        await model.aclose()

    assert time.monotonic() - started < 3
    assert "did not answer within 0.5s" in caught.value.message


async def test_upstream_stalling_mid_stream_times_out_after_the_first_deltas(upstream):
    model = make_model(upstream.url, timeout_seconds=0.5)
    upstream.enqueue(Hang(10, after_chunks=1, reply=Reply("first second")))
    try:
        events, error = await collect_until_error(model, ask())
    finally:
        await model.aclose()

    assert events == [TextDelta("first")]
    assert isinstance(error, ModelTimeout)


async def test_dropped_connection_mid_stream_is_a_model_error(upstream, model):
    upstream.enqueue(Disconnect(after_chunks=2, reply=Reply("one two three four")))

    events, error = await collect_until_error(model, ask())

    assert events == [TextDelta("one"), TextDelta(" two")]
    assert type(error) is ModelError
    assert "upstream closed the stream early" in str(error)


async def test_connection_dropped_before_any_answer(upstream, model):
    upstream.enqueue(Disconnect(after_chunks=0))

    with pytest.raises(ModelError) as caught:
        await collect(model, ask())

    assert "closed the connection unanswered" in caught.value.message


@pytest.mark.parametrize(
    "body",
    [b"data: {not json\n\n", b'data: ["a list"]\n\n', b"data: [DONE"],
    ids=["bad-json", "not-a-chunk", "no-end"],
)
async def test_malformed_stream_is_a_model_error(upstream, model, body):
    upstream.enqueue(Raw(body))

    with pytest.raises(ModelError) as caught:
        await collect(model, ask())

    assert "upstream closed the stream early" in caught.value.message


async def test_error_event_inside_the_stream(upstream, model):
    upstream.enqueue(Raw(b'data: {"error": {"message": "GPU out of memory"}}\n\n'))

    with pytest.raises(ModelError) as caught:
        await collect(model, ask())

    assert caught.value.message.endswith("upstream reported an error: GPU out of memory")


async def test_nothing_listening_names_the_host():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    model = make_model(f"http://127.0.0.1:{port}/v1")
    try:
        with pytest.raises(ModelError) as caught:
            await collect(model, ask())
    finally:
        await model.aclose()

    assert type(caught.value) is ModelError
    assert f"cannot connect to upstream 127.0.0.1:{port}" in caught.value.message


async def test_connections_are_kept_alive_between_requests(upstream, model):
    for _ in range(20):
        await collect(model, ask())

    assert upstream.connections_opened == 1  # one after the other: one warm connection


async def test_concurrent_requests_open_a_connection_each_then_reuse_them(upstream, model):
    upstream.default = Reply(tokens=4, delay=0.01)
    for _ in range(3):
        await asyncio.gather(*(collect(model, ask(f"n{i}")) for i in range(20)))

    assert upstream.connections_opened == 20


async def test_fifty_concurrent_streams_all_complete(upstream, model):
    upstream.default = Reply(tokens=16, delay=0.005)

    replies = await asyncio.gather(*(collect(model, ask(f"n{i}")) for i in range(50)))

    for events in replies:
        assert len([e for e in events if isinstance(e, TextDelta)]) == 16
        assert events[-1] == Usage(input_tokens=3, output_tokens=16)
    assert len(upstream.requests) == 50


# The fake upstream is only worth its tests if a real OpenAI client accepts it.


@pytest.fixture
async def sdk(upstream: FakeUpstream) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=upstream.url, api_key=KEY, max_retries=0)
    yield client
    await client.close()


async def test_fake_upstream_serves_the_openai_sdk(upstream, sdk):
    upstream.enqueue(Reply("Hi there"))
    completion = await sdk.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hello you"}]
    )
    models = await sdk.models.list()

    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "Hi there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (2, 2)
    assert [m.id for m in models.data] == ["fake-upstream-model"]


async def test_fake_upstream_streams_to_the_openai_sdk(upstream, sdk):
    upstream.enqueue(Reply("a b c d"))
    stream = await sdk.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "x"}],
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=3,
    )
    chunks = [chunk async for chunk in stream]

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert text == "a b c"
    assert finish == ["length"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


async def test_fake_upstream_rejects_a_wrong_key_like_openai(upstream):
    client = openai.AsyncOpenAI(base_url=upstream.url, api_key="nope", max_retries=0)
    try:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}]
            )
    finally:
        await client.close()
    assert caught.value.code == "invalid_api_key"


class _Chunks:
    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks

    async def __aiter__(self):
        for chunk in self.chunks:
            yield chunk


@pytest.mark.parametrize(
    "chunks",
    [
        (b'data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n',),
        (b'data: {"a":1}\r\n\r\n: keep-alive\r\n\r\nevent: x\r\ndata: {"b"', b":2}\r\n\r\n"),
        (b'data: {"a":1}\r', b'\n\r\ndata: {"b":2}\r\rdata: [DONE]'),
        tuple(bytes([b]) for b in b'data: {"a":1}\n\ndata: {"b":2}\n\n'),
    ],
    ids=["lf", "crlf-split-mid-line", "cr-and-no-final-newline", "byte-by-byte"],
)
async def test_sse_data_lines_whatever_the_line_ends_and_chunking(chunks):
    from threadline.providers.openai_compat import _data_lines

    lines = [line async for line in _data_lines(_Chunks(*chunks))]  # type: ignore[arg-type]
    assert [json.loads(x) if x.strip() != b"[DONE]" else "DONE" for x in lines][:2] == [
        {"a": 1},
        {"b": 2},
    ]


async def test_a_compressed_stream_is_decoded():
    import gzip

    body = gzip.compress(
        b'data: {"choices":[{"delta":{"content":"squeezed"}}]}\n\n'
        b'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    )

    async def gzipping(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        head = (
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            f"content-encoding: gzip\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()

    server = await asyncio.start_server(gzipping, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    model = make_model(f"http://127.0.0.1:{port}/v1")
    try:
        async with server:
            events = await collect(model, ask())
    finally:
        await model.aclose()
    assert events[0] == TextDelta("squeezed")


async def test_a_long_message_list_reaches_the_upstream_whole(upstream, model):
    """Over ENCODE_IN_THREAD messages the body is encoded in a thread: the same request."""
    upstream.enqueue(Reply("ok"))
    messages = tuple(
        ChatMessage("user" if i % 2 == 0 else "assistant", f"m{i} é") for i in range(2001)
    )
    await collect(model, ModelRequest(messages=messages))
    (received,) = upstream.requests
    assert received.headers["content-type"] == "application/json"
    assert received["messages"] == [{"role": m.role, "content": m.content} for m in messages]
    assert received["stream"] is True
