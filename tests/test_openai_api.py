"""The OpenAI-compatible dialect, judged by the official `openai` SDK (sync and async,
streaming and not) against a real uvicorn server on 127.0.0.1, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from tests.helpers import Fakes, make_settings
from tests.live_server import LiveServer
from threadline.container import Container, create_app
from threadline.domain.errors import ModelError
from threadline.domain.events import Usage
from threadline.settings import Settings

MODEL = "gpt-4o-mini"  # priced 1 credit per input token, 2 per output token
HI = [{"role": "user", "content": "Say hi"}]


@dataclass
class Live:
    server: LiveServer
    container: Container
    key: str

    @property
    def v1(self) -> str:
        return f"{self.server.base_url}/v1"

    def client(self, key: str | None = None) -> OpenAI:
        return OpenAI(base_url=self.v1, api_key=key or self.key, max_retries=0)

    def async_client(self) -> AsyncOpenAI:
        return AsyncOpenAI(base_url=self.v1, api_key=self.key, max_retries=0)

    def used_credit(self) -> int:
        headers = {"Authorization": f"Bearer {self.key}"}
        me = httpx.get(f"{self.server.base_url}/api/me", headers=headers).json()
        return int(me["user"]["usedCredit"])


@contextmanager
def serve(settings: Settings, fakes: Fakes) -> Iterator[Live]:
    app = create_app(settings, model_factory=fakes.factory)
    server = LiveServer(app)
    server.start()
    try:
        container = app.state.container
        issued = server.call(container.bootstrap())
        yield Live(server, container, issued.secret)
    finally:
        server.stop()


@pytest.fixture
def live(settings: Settings, fakes: Fakes) -> Iterator[Live]:
    with serve(settings, fakes) as running:
        yield running


# ---- models ----


def test_models_list_and_retrieve(live):
    client = live.client()
    assert {m.id for m in client.models.list()} == {"fake", "gpt-4o-mini", "other-model"}
    model = client.models.retrieve(MODEL)
    assert (model.id, model.object, model.owned_by) == (MODEL, "model", "fake")
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("gpt-17")
    assert caught.value.body["code"] == "model_not_found"


# ---- completions: sync ----


def test_sync_completion_with_system_prompt_multi_turn_and_settings(live, fakes):
    fakes[MODEL].enqueue(["Hello", " there!", Usage(21, 3)])
    before = live.used_credit()
    completion = live.client().chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": [{"type": "text", "text": "Again"}]},
        ],
        max_tokens=7,
        temperature=0.3,
        top_p=0.9,
        stop=["END"],
        user="end-user-42",
    )
    assert completion.choices[0].message.content == "Hello there!"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == MODEL and completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (21, 3, 24)
    assert live.used_credit() - before == 21 + 2 * 3
    request = fakes[MODEL].requests[-1]
    assert [(m.role, m.content) for m in request.messages] == [
        ("system", "You are terse."),
        ("user", "Hi"),
        ("assistant", "Hello."),
        ("user", "Again"),
    ]
    assert (request.max_tokens, request.temperature, request.top_p) == (7, 0.3, 0.9)
    assert tuple(request.stop) == ("END",)


def test_max_completion_tokens_and_a_single_stop_string(live, fakes):
    live.client().chat.completions.create(
        model=MODEL, messages=HI, max_completion_tokens=11, stop="\n\n"
    )
    request = fakes[MODEL].requests[-1]
    assert request.max_tokens == 11 and tuple(request.stop) == ("\n\n",)


def test_sync_streaming_with_usage(live, fakes):
    fakes[MODEL].enqueue(["One", " two", " three", Usage(5, 3)])
    stream = live.client().chat.completions.create(
        model=MODEL, messages=HI, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "One two three"
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == "stop" and set(finish[:-1]) == {None}
    assert chunks[-1].choices == []
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (5, 3)
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1


def test_streaming_without_include_usage_sends_no_usage_chunk(live, fakes):
    fakes[MODEL].enqueue(["a", "b"])
    chunks = list(live.client().chat.completions.create(model=MODEL, messages=HI, stream=True))
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


# ---- completions: async ----


async def test_async_completion(live, fakes):
    fakes[MODEL].enqueue(["async", " reply", Usage(4, 2)])
    async with live.async_client() as client:
        completion = await client.chat.completions.create(model=MODEL, messages=HI)
    assert completion.choices[0].message.content == "async reply"
    assert completion.usage.total_tokens == 6


async def test_async_streaming(live, fakes):
    fakes[MODEL].enqueue(["stream", "ed", " async", Usage(4, 3)])
    async with live.async_client() as client:
        stream = await client.chat.completions.create(
            model=MODEL, messages=HI, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "streamed async"
    )
    assert chunks[-1].usage.completion_tokens == 3


# ---- failures of the model ----


def test_model_failure_is_a_server_error_in_openai_shape(live, fakes):
    fakes[MODEL].enqueue(["partial", ModelError("upstream returned 500")])
    with pytest.raises(openai.InternalServerError) as caught:
        live.client().chat.completions.create(model=MODEL, messages=HI)
    assert caught.value.status_code == 502
    assert caught.value.body["type"] == "server_error"
    assert "upstream returned 500" in caught.value.body["message"]


def test_model_failure_mid_stream_raises_in_the_sdk(live, fakes):
    fakes[MODEL].enqueue(["partial", ModelError("upstream dropped")])
    stream = live.client().chat.completions.create(model=MODEL, messages=HI, stream=True)
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    assert "partial" in received
    assert "upstream dropped" in caught.value.message


# ---- refused requests, in OpenAI's error shape ----


@pytest.mark.parametrize(
    ("extra", "param", "fragment"),
    [
        ({"n": 2}, "n", "n=2 is not supported"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "not supported"),
        ({"logprobs": True}, "logprobs", "not supported"),
        ({"presence_penalty": 0.5}, "presence_penalty", "not supported"),
        ({"response_format": {"type": "json_object"}}, "response_format", "not supported"),
        ({"stream_options": {"include_usage": True}}, "stream_options", "only allowed when"),
        ({"temperature": 3}, "temperature", "Invalid value for 'temperature'"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
        ({"max_tokens": 0}, "max_tokens", "Invalid value"),
        ({"frobnicate": True}, "frobnicate", "Unrecognized request argument supplied"),
    ],
)
def test_unsupported_or_invalid_arguments_are_400(live, fakes, extra, param, fragment):
    with pytest.raises(openai.BadRequestError) as caught:
        live.client().chat.completions.create(model=MODEL, messages=HI, extra_body=extra)
    body = caught.value.body
    assert body["type"] == "invalid_request_error"
    assert body["param"] == param
    assert fragment in body["message"]
    assert fakes[MODEL].requests == []


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "tool", "content": "42", "tool_call_id": "x"}, "messages[0].role"),
        (
            {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x"}}]},
            "messages[0].content[0]",
        ),
        ({"role": "user", "content": "hi", "name": "bob"}, "messages[0].name"),
    ],
)
def test_unsupported_messages_are_400(live, message, param):
    """(image_url parts are taken: tests/test_images.py)"""
    with pytest.raises(openai.BadRequestError) as caught:
        live.client().chat.completions.create(model=MODEL, messages=[message])
    assert caught.value.body["param"] == param


def test_error_shape_on_the_wire(live):
    headers = {"Authorization": f"Bearer {live.key}"}
    r = httpx.post(f"{live.v1}/chat/completions", headers=headers, json={"model": MODEL})
    assert r.status_code == 400
    assert r.json() == {
        "error": {
            "message": "Missing required parameter: 'messages'.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "missing_required_parameter",
        }
    }
    r = httpx.post(
        f"{live.v1}/chat/completions",
        headers={**headers, "Content-Type": "application/json"},
        content=b"{not json",
    )
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_bad_key_is_401(live):
    with pytest.raises(openai.AuthenticationError) as caught:
        live.client("tl_000000000000_wrong").chat.completions.create(model=MODEL, messages=HI)
    assert caught.value.body["code"] == "invalid_api_key"
    r = httpx.get(f"{live.v1}/models")
    assert r.status_code == 401 and r.json()["error"]["type"] == "invalid_request_error"


def test_unknown_model_is_404(live):
    with pytest.raises(openai.NotFoundError) as caught:
        live.client().chat.completions.create(model="gpt-17", messages=HI)
    assert caught.value.body["param"] == "model"
    assert caught.value.body["code"] == "model_not_found"
    assert "gpt-4o-mini" in caught.value.body["message"]


def test_no_credit_left_is_403(tmp_path: Path, db_url: str, fakes: Fakes):
    settings = make_settings(tmp_path, db_url, default_credit_limit=0)
    with serve(settings, fakes) as live:
        with pytest.raises(openai.PermissionDeniedError) as caught:
            live.client().chat.completions.create(model=MODEL, messages=HI)
        assert caught.value.body["type"] == "permission_error"
        assert "credit" in caught.value.body["message"]
        assert fakes[MODEL].requests == []


def test_rate_limit_is_429_with_retry_after(tmp_path: Path, db_url: str, fakes: Fakes):
    settings = make_settings(tmp_path, db_url, rate_limit_per_minute=1)
    with serve(settings, fakes) as live:
        client = live.client()
        client.models.list()
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model=MODEL, messages=HI)
        assert caught.value.body["code"] == "rate_limit_exceeded"
        assert int(caught.value.response.headers["retry-after"]) >= 1
        assert fakes[MODEL].requests == []


def test_a_scripted_length_reaches_the_sdk_and_the_stored_record(live, fakes):
    fakes[MODEL].enqueue(["cut sh", Usage(2, 2, finish_reason="length")])
    fakes[MODEL].enqueue(["filtered", Usage(2, 1, finish_reason="content_filter")])
    client = live.client()
    cut = client.chat.completions.create(model=MODEL, messages=HI)
    streamed = list(client.chat.completions.create(model=MODEL, messages=HI, stream=True))

    assert cut.choices[0].finish_reason == "length"
    assert [c.choices[0].finish_reason for c in streamed if c.choices][-1] == "content_filter"
    principal = live.server.call(live.container.accounts.authenticate(live.key))
    record_id = UUID(cut.id.removeprefix("chatcmpl-"))
    record: Any = live.server.call(live.container.record_store.get(principal.org_id, record_id))
    assert record.finish_reason == "length"


def test_completion_is_recorded_as_an_openai_record(live, fakes):
    fakes[MODEL].enqueue(["recorded", Usage(2, 1)])
    completion = live.client().chat.completions.create(model=MODEL, messages=HI)
    record_id = UUID(completion.id.removeprefix("chatcmpl-"))
    principal = live.server.call(live.container.accounts.authenticate(live.key))
    record: Any = live.server.call(live.container.record_store.get(principal.org_id, record_id))
    assert record.type == "OPENAI_CHAT_COMPLETION"
    assert record.result_text == "recorded"
    assert record.conversation_id is None
