"""Threadline on a real uvicorn, in front of a fake OpenAI-compatible upstream over real
HTTP: streamed replies, upstream failures on cue, and clients that hang up."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fake_upstream import FakeUpstream, Reply
from tests.faults import Disconnect, Hang, Status
from tests.helpers import make_settings, sse_events
from tests.live_server import LiveServer
from threadline.container import create_app
from threadline.settings import Credits, ModelConfig

UPSTREAM_KEY = "sk-upstream-test-key"


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(api_key=UPSTREAM_KEY) as server:
        yield server


@pytest.fixture
def live(
    tmp_path: Path, db_url: str, upstream: FakeUpstream, monkeypatch
) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", UPSTREAM_KEY)
    model = ModelConfig(
        provider="openai-compatible",
        base_url=upstream.url,
        api_key_env="FAKE_UPSTREAM_KEY",
        upstream_model="fake-upstream-model",
        timeout_seconds=1.0,
        credits=Credits(input_per_1k=1000, output_per_1k=1000),
    )
    settings = make_settings(
        tmp_path, db_url, models={"gpt-4o-mini": model}, default_model="gpt-4o-mini"
    )
    server = LiveServer(create_app(settings))
    base = server.start()
    key = server.call(server.app.state.container.bootstrap()).secret
    yield {
        "base": base,
        "key": key,
        "headers": {"API-KEY": key, "Content-Type": "application/json"},
    }
    server.stop()


def chat(live, prompt: str, stream: bool, conversation_id: str | None = None) -> httpx.Response:
    prompt_object: dict[str, Any] = {"prompt": prompt}
    if conversation_id:
        prompt_object["conversationId"] = conversation_id
    url = f"{live['base']}/api/chat-with-ai" + ("?isStreaming=true" if stream else "")
    body = {"type": "UNIFY_CHAT_WITH_AI", "model": "gpt-4o-mini", "promptObject": prompt_object}
    return httpx.post(url, headers=live["headers"], json=body, timeout=30)


def new_conversation(live) -> str:
    r = httpx.post(
        f"{live['base']}/api/conversations",
        headers=live["headers"],
        json={"title": "live", "type": "CHAT_WITH_AI", "model": "gpt-4o-mini"},
    )
    return str(r.json()["conversation"]["uuid"])


def messages(live, cid: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{live['base']}/api/conversations/{cid}", headers=live["headers"])
    return list(r.json()["conversation"]["messages"])


def test_streamed_reply_through_the_upstream(live, upstream):
    upstream.enqueue(Reply("Paris is the capital of France."))
    r = chat(live, "What is the capital of France?", stream=True)
    events = sse_events(r.text)
    text = "".join(data["content"] for name, data in events if name == "content")
    assert text == "Paris is the capital of France."
    assert [name for name, _ in events][-2:] == ["result", "done"]
    record = events[-2][1]["aiRecord"]
    usage = record["usage"]
    assert usage["outputTokens"] == 6  # the upstream's own count: one token a word
    assert usage["credits"] == usage["inputTokens"] + usage["outputTokens"]
    assert record["teamUser"]["usedCredit"] == usage["credits"]
    sent = upstream.requests[-1]
    assert sent["model"] == "fake-upstream-model"
    assert sent["messages"][-1] == {"role": "user", "content": "What is the capital of France?"}
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_seed_example_verbatim_with_requests(live, upstream):
    upstream.enqueue(Reply("Quantum computing is a type of computing that uses qubits."))
    import requests

    url = f"{live['base']}/api/chat-with-ai"
    headers = {"Content-Type": "application/json", "API-KEY": live["key"]}
    data = {
        "type": "UNIFY_CHAT_WITH_AI",
        "model": "gpt-4o-mini",
        "promptObject": {"prompt": "Explain quantum computing in simple terms"},
    }
    response = requests.post(url, headers=headers, json=data)
    body = response.json()
    assert body["aiRecord"]["aiRecordDetail"]["resultObject"] == [
        "Quantum computing is a type of computing that uses qubits."
    ]


def test_upstream_500_is_a_clear_502_and_a_failed_record(live, upstream):
    cid = new_conversation(live)
    upstream.enqueue(Status(500, {"error": {"message": "boom", "type": "server_error"}}))
    r = chat(live, "Hi", stream=False, conversation_id=cid)
    assert r.status_code == 502
    error = r.json()["error"]
    assert error["code"] == "MODEL_ERROR"
    assert "500" in error["message"] and "boom" in error["message"]
    assert UPSTREAM_KEY not in r.text
    assert [(m["role"], m["status"]) for m in messages(live, cid)] == [
        ("user", "FAILED"),
        ("assistant", "FAILED"),
    ]


def test_upstream_timeout_is_504(live, upstream):
    upstream.enqueue(Hang(seconds=5))
    started = time.monotonic()
    r = chat(live, "Hi", stream=False)
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "MODEL_TIMEOUT"
    assert time.monotonic() - started < 4


def test_upstream_drop_mid_stream_keeps_the_partial_text(live, upstream):
    cid = new_conversation(live)
    upstream.enqueue(Disconnect(after_chunks=2, reply=Reply("one two three four")))
    r = chat(live, "Count", stream=True, conversation_id=cid)
    events = sse_events(r.text)
    assert [name for name, _ in events] == ["content", "content", "error"]
    assert events[-1][1]["error"]["code"] == "MODEL_ERROR"
    assistant = messages(live, cid)[-1]
    assert (assistant["status"], assistant["content"]) == ("FAILED", "one two")


def test_client_disconnect_does_not_stop_or_duplicate_the_reply(live, upstream):
    cid = new_conversation(live)
    upstream.enqueue(Reply(tokens=20, delay=0.05))
    body = {
        "type": "UNIFY_CHAT_WITH_AI",
        "model": "gpt-4o-mini",
        "promptObject": {"prompt": "Tell me a long story", "conversationId": cid},
    }
    url = f"{live['base']}/api/chat-with-ai?isStreaming=true"
    with httpx.stream("POST", url, headers=live["headers"], json=body, timeout=30) as r:
        for line in r.iter_lines():
            if line.startswith("data:") and "content" in json.loads(line[5:]):
                break  # hang up after the first chunk
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        stored = messages(live, cid)
        if len(stored) == 2 and stored[1]["status"] != "PENDING":
            break
        time.sleep(0.1)
    assert [(m["role"], m["status"]) for m in stored] == [
        ("user", "SUCCESS"),
        ("assistant", "SUCCESS"),
    ]
    assert stored[1]["content"] == "".join(Reply(tokens=20).pieces())
    time.sleep(0.3)
    assert len(messages(live, cid)) == 2


# ---- why a reply ended ----


def test_a_reply_cut_at_max_tokens_is_length_for_the_openai_sdk(live, upstream):
    import openai

    client = openai.OpenAI(base_url=f"{live['base']}/v1", api_key=live["key"], max_retries=0)
    ask = [{"role": "user", "content": "Tell me a story"}]
    upstream.enqueue(
        Reply("Once upon a time there was"),
        Reply("Once upon a time there was"),
        Reply("The end."),
    )

    whole = client.chat.completions.create(model="gpt-4o-mini", messages=ask, max_tokens=3)
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=ask, max_tokens=3, stream=True
    )
    chunks = list(stream)
    ended = client.chat.completions.create(model="gpt-4o-mini", messages=ask, max_tokens=30)

    assert whole.choices[0].message.content == "Once upon a"
    assert whole.choices[0].finish_reason == "length"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Once upon a"
    assert ended.choices[0].finish_reason == "stop"
    assert [r["max_tokens"] for r in upstream.requests] == [3, 3, 30]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_the_ai_record_says_the_reply_was_cut(live, upstream, stream):
    upstream.enqueue(Reply("Half an ans", finish_reason="length"), Reply("Whole."))

    cut, whole = chat(live, "Explain", stream=stream), chat(live, "Explain", stream=stream)

    def detail(r: httpx.Response) -> dict[str, Any]:
        record = sse_events(r.text)[-2][1] if stream else r.json()
        return dict(record["aiRecord"]["aiRecordDetail"])

    assert detail(cut)["finishReason"] == "length"
    assert detail(cut)["resultObject"] == ["Half an ans"]
    assert detail(whole)["finishReason"] == "stop"
