"""Anthropic's Messages API (`/v1/messages`) through the official `anthropic` SDK, sync and
async, streamed and not, on a real uvicorn in front of the fake OpenAI-compatible upstream,
on SQLite and PostgreSQL: what the SDK returns, what the upstream receives, what is stored
and charged, and every error in Anthropic's shape."""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import anthropic
import httpx
import pytest

from tests.fake_upstream import FakeUpstream, Reply
from tests.faults import Disconnect, Status
from tests.helpers import make_settings, sse_events
from tests.image_server import ImageServer
from tests.live_server import LiveServer
from threadline.container import Container, create_app
from threadline.settings import Credits, FetchSettings, ModelConfig

UPSTREAM_KEY = "sk-upstream-anthropic-test"
MODEL = "claude-local"  # priced 1 credit a token each way
HI = [{"role": "user", "content": "Say hi"}]
PNG = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAA"
    "AABJRU5ErkJggg=="
)


@dataclass
class Live:
    server: LiveServer
    container: Container
    key: str
    upstream: FakeUpstream
    images: ImageServer

    @property
    def base(self) -> str:
        return self.server.base_url

    def client(self, key: str | None = None) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.base, api_key=key or self.key, max_retries=0)

    def async_client(self) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(base_url=self.base, api_key=self.key, max_retries=0)

    def post(self, body: dict[str, Any], path: str = "/v1/messages", **headers: str):
        sent = {"x-api-key": self.key, "anthropic-version": "2023-06-01", **headers}
        return httpx.post(f"{self.base}{path}", headers=sent, json=body, timeout=30)

    def used_credit(self) -> int:
        me = httpx.get(f"{self.base}/api/me", headers={"API-KEY": self.key}).json()
        return int(me["user"]["usedCredit"])

    def record(self, message_id: str) -> Any:
        principal = self.server.call(self.container.accounts.authenticate(self.key))
        record_id = UUID(message_id.removeprefix("msg_"))
        return self.server.call(self.container.record_store.get(principal.org_id, record_id))


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    """One server per database for the module (each test scripts its own upstream replies)."""
    tmp = tmp_path_factory.mktemp("anthropic")
    if request.param == "sqlite":
        shutil.copyfile(request.getfixturevalue("migrated_sqlite"), tmp / "threadline.db")
        db_url = f"sqlite+aiosqlite:///{tmp / 'threadline.db'}"
    else:
        pg = request.getfixturevalue("postgres")
        db_url = str(pg.create_database(f"a_{os.urandom(6).hex()}", "threadline_migrated"))
    os.environ["ANTHROPIC_TEST_UPSTREAM_KEY"] = UPSTREAM_KEY
    dot = ("image/png", base64.b64decode(PNG))
    with FakeUpstream(api_key=UPSTREAM_KEY) as upstream, ImageServer({"/dot.png": dot}) as images:
        model = ModelConfig(
            provider="openai-compatible",
            base_url=upstream.url,
            api_key_env="ANTHROPIC_TEST_UPSTREAM_KEY",
            upstream_model="upstream-model",
            vision=True,
            timeout_seconds=5.0,
            credits=Credits(input_per_1k=1000, output_per_1k=1000),
        )
        fetch = FetchSettings(allow_private_hosts=[images.host_port], timeout_seconds=5)
        settings = make_settings(
            tmp, db_url, models={MODEL: model}, default_model=MODEL, fetch=fetch
        )
        app = create_app(settings)
        server = LiveServer(app)
        server.start()
        try:
            container = app.state.container
            key = server.call(container.bootstrap()).secret
            yield Live(server, container, key, upstream, images)
        finally:
            server.stop()


# ---- non-streamed


def test_create_with_system_turns_and_settings(live):
    live.upstream.enqueue(Reply("Hi there, friend."))
    before = live.used_credit()
    message = live.client().messages.create(
        model=MODEL,
        max_tokens=100,
        system="You are terse.",
        messages=[
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": [{"type": "text", "text": "Hello."}]},
            {"role": "user", "content": [{"type": "text", "text": "Say hi"}]},
        ],
        stop_sequences=["END"],
        extra_body={"temperature": 0.5, "top_p": 0.9},  # no longer the SDK's arguments
        metadata={"user_id": "user-42"},
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.model == MODEL
    assert [block.text for block in message.content] == ["Hi there, friend."]
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    assert message.usage.output_tokens == 3  # the upstream's count: one token a word
    sent = live.upstream.requests[-1]
    assert sent["model"] == "upstream-model"
    assert sent["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Say hi"},
    ]
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"]) == (100, 0.5, 0.9)
    assert sent["stop"] == ["END"]
    usage = message.usage
    assert live.used_credit() - before == usage.input_tokens + usage.output_tokens
    record = live.record(message.id)
    assert record.type == "ANTHROPIC_MESSAGE"
    assert record.conversation_id is None  # stateless, as /v1/chat/completions
    assert record.result_text == "Hi there, friend."
    assert record.metadata == {"user_id": "user-42"}


def test_system_blocks_and_a_base64_image(live):
    live.upstream.enqueue(Reply("A red dot."))
    image = {"type": "base64", "media_type": "image/png", "data": PNG}
    message = live.client().messages.create(
        model=MODEL,
        max_tokens=50,
        system=[{"type": "text", "text": "Describe."}, {"type": "text", "text": "Be brief."}],
        messages=[
            {
                "role": "user",
                "content": [{"type": "image", "source": image}, {"type": "text", "text": "What?"}],
            }
        ],
    )
    assert message.content[0].text == "A red dot."
    sent = live.upstream.requests[-1]["messages"]
    assert sent[0] == {"role": "system", "content": "Describe.\n\nBe brief."}
    parts = sent[-1]["content"]
    assert {"type": "text", "text": "What?"} in parts
    urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert len(urls) == 1 and urls[0].startswith("data:image/png;base64,")


def test_a_url_image(live):
    live.upstream.enqueue(Reply("A dot."))
    source = {"type": "url", "url": live.images.url("/dot.png")}
    content = [{"type": "text", "text": "What?"}, {"type": "image", "source": source}]
    message = live.client().messages.create(
        model=MODEL, max_tokens=50, messages=[{"role": "user", "content": content}]
    )
    assert message.content[0].text == "A dot."
    assert live.images.hits["/dot.png"] == 1
    parts = live.upstream.requests[-1]["messages"][-1]["content"]
    urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert len(urls) == 1 and urls[0].startswith("data:image/png;base64,")  # fetched, sent


def test_max_tokens_and_stop_sequence_reasons(live):
    live.upstream.enqueue(Reply(tokens=10))
    cut = live.client().messages.create(model=MODEL, max_tokens=3, messages=HI)
    assert (cut.stop_reason, cut.usage.output_tokens) == ("max_tokens", 3)
    live.upstream.enqueue(Reply("one two STOP three"))
    stopped = live.client().messages.create(
        model=MODEL, max_tokens=50, messages=HI, stop_sequences=["STOP", "never"]
    )
    assert stopped.content[0].text == "one two "
    assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", "STOP")


def test_count_tokens(live):
    count = live.client().messages.count_tokens
    before, asked = live.used_credit(), len(live.upstream.requests)
    short = count(model=MODEL, messages=HI)
    longer = count(model=MODEL, system="x" * 400, messages=HI)
    assert short.input_tokens > 0
    assert longer.input_tokens == short.input_tokens + 100 + 4  # 4 characters a token
    assert live.used_credit() == before  # nothing charged, the model not asked
    assert len(live.upstream.requests) == asked
    with pytest.raises(anthropic.NotFoundError):
        count(model="nope", messages=HI)


async def test_async_create(live):
    live.upstream.enqueue(Reply("async hello"))
    message = await live.async_client().messages.create(model=MODEL, max_tokens=20, messages=HI)
    assert message.content[0].text == "async hello"


# ---- streamed


def test_stream_helper_sync(live):
    live.upstream.enqueue(Reply("Streaming is fun."))
    before = live.used_credit()
    with live.client().messages.stream(model=MODEL, max_tokens=50, messages=HI) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Streaming is fun."
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 3 and final.usage.input_tokens > 0
    assert live.used_credit() - before == final.usage.input_tokens + final.usage.output_tokens
    assert live.record(final.id).result_text == text


def test_stream_events_on_the_wire(live):
    live.upstream.enqueue(Reply("one two"))
    r = live.post({"model": MODEL, "max_tokens": 20, "stream": True, "messages": HI})
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    assert (start["role"], start["content"], start["stop_reason"]) == ("assistant", [], None)
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert deltas == [{"type": "text_delta", "text": "one"}, {"type": "text_delta", "text": " two"}]
    end = events[-2][1]
    assert end["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert end["usage"]["output_tokens"] == 2


async def test_async_create_stream_true(live):
    live.upstream.enqueue(Reply("a b c"))
    stream = await live.async_client().messages.create(
        model=MODEL, max_tokens=20, messages=HI, stream=True
    )
    kinds, text = [], ""
    async for event in stream:
        kinds.append(event.type)
        if event.type == "content_block_delta":
            text += event.delta.text
    assert text == "a b c"
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"


async def test_async_stream_helper(live):
    live.upstream.enqueue(Reply("async streamed"))
    async with live.async_client().messages.stream(
        model=MODEL, max_tokens=20, messages=HI
    ) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "async streamed" == final.content[0].text


def test_failure_mid_stream_is_an_error_event(live):
    live.upstream.enqueue(Disconnect(after_chunks=2, reply=Reply("one two three four")))
    r = live.post({"model": MODEL, "max_tokens": 20, "stream": True, "messages": HI})
    events = sse_events(r.text)
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "content_block_start"] and names[-1] == "error"
    assert "message_stop" not in names
    error = events[-1][1]
    assert error["type"] == "error" and error["error"]["type"] == "api_error"
    assert error["error"]["message"]
    live.upstream.enqueue(Disconnect(after_chunks=1, reply=Reply("one two three")))
    client = live.client()
    with (
        pytest.raises(anthropic.APIStatusError),
        client.messages.stream(model=MODEL, max_tokens=20, messages=HI) as stream,
    ):
        list(stream.text_stream)


# ---- errors in Anthropic's shape


def _error(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
    return response.status_code, body["error"]["type"], body["error"]["message"]


def test_upstream_failure_is_an_api_error(live):
    live.upstream.enqueue(Status(500, {"error": {"message": "boom", "type": "server_error"}}))
    with pytest.raises(anthropic.InternalServerError) as caught:
        live.client().messages.create(model=MODEL, max_tokens=20, messages=HI)
    assert caught.value.status_code == 502
    assert caught.value.body["error"]["type"] == "api_error"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"model": MODEL, "messages": HI}, "max_tokens: Field required"),
        ({"model": MODEL, "max_tokens": 5, "messages": []}, "messages"),
        ({"model": MODEL, "max_tokens": 5, "messages": HI, "tools": [{"name": "t"}]}, "tools"),
        ({"model": MODEL, "max_tokens": 5, "messages": HI, "bogus": 1}, "bogus"),
        ({"model": MODEL, "max_tokens": 5, "messages": HI, "temperature": 1.5}, "temperature"),
        ({"model": MODEL, "max_tokens": 5, "messages": HI, "top_k": 5}, "top_k"),
        (
            {
                "model": MODEL,
                "max_tokens": 5,
                "messages": [*HI, {"role": "assistant", "content": "x"}],
            },
            "prefill",
        ),
        (
            {
                "model": MODEL,
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}],
            },
            "'document' blocks",
        ),
    ],
)
def test_invalid_requests_are_400(live, body, fragment):
    status, kind, message = _error(live.post(body))
    assert (status, kind) == (400, "invalid_request_error")
    assert fragment in message


def test_auth_model_routes_and_size_errors(live):
    assert _error(live.post({}, **{"x-api-key": "tl_nope"}))[:2] == (401, "authentication_error")
    with pytest.raises(anthropic.AuthenticationError):
        live.client(key="tl_000000000000_bad").messages.create(
            model=MODEL, max_tokens=5, messages=HI
        )
    unknown = live.post({"model": "nope", "max_tokens": 5, "messages": HI})
    assert _error(unknown)[:2] == (404, "not_found_error")
    with pytest.raises(anthropic.NotFoundError):
        live.client().messages.create(model="nope", max_tokens=5, messages=HI)
    wrong_method = httpx.get(f"{live.base}/v1/messages", headers={"x-api-key": live.key})
    assert _error(wrong_method)[:2] == (405, "invalid_request_error")
    no_route = live.post({}, path="/v1/messages/batches")
    assert _error(no_route)[:2] == (404, "not_found_error")
    huge = live.post(
        {
            "model": MODEL,
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "x" * 3_000_000}],
        }
    )
    assert _error(huge)[:2] == (413, "request_too_large")


def test_bearer_and_api_key_headers_work_too(live):
    live.upstream.enqueue(Reply("ok"), Reply("ok"))
    body = {"model": MODEL, "max_tokens": 5, "messages": HI}
    bearer = httpx.post(
        f"{live.base}/v1/messages", headers={"Authorization": f"Bearer {live.key}"}, json=body
    )
    native = httpx.post(f"{live.base}/v1/messages", headers={"API-KEY": live.key}, json=body)
    assert bearer.status_code == native.status_code == 200
    assert bearer.json()["content"] == [{"type": "text", "text": "ok"}]


def test_no_credit_is_403_then_the_rate_limit_429(tmp_path, db_url):
    """Credits and limits as on every dialect, in Anthropic's shape (one small server)."""
    from tests.helpers import Fakes

    fakes = Fakes()
    settings = make_settings(tmp_path, db_url, default_credit_limit=0, rate_limit_per_minute=2)
    app = create_app(settings, model_factory=fakes.factory)
    server = LiveServer(app)
    server.start()
    try:
        key = server.call(app.state.container.bootstrap()).secret
        client = anthropic.Anthropic(base_url=server.base_url, api_key=key, max_retries=0)
        with pytest.raises(anthropic.PermissionDeniedError) as denied:
            client.messages.create(model="gpt-4o-mini", max_tokens=5, messages=HI)
        assert denied.value.body["error"]["type"] == "permission_error"
        assert "credit" in denied.value.body["error"]["message"]
        client.messages.count_tokens(model="gpt-4o-mini", messages=HI)  # the second request
        with pytest.raises(anthropic.RateLimitError) as limited:
            client.messages.create(model="gpt-4o-mini", max_tokens=5, messages=HI)
        assert limited.value.body["error"]["type"] == "rate_limit_error"
        assert int(limited.value.response.headers["retry-after"]) >= 1
        assert fakes["gpt-4o-mini"].requests == []
    finally:
        server.stop()
