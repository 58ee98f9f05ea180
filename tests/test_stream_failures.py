"""A stream that has started and then fails in the server (here: the model sends text that
cannot be encoded, a lone surrogate, after a first chunk went out) ends with the dialect's
own error event, never a connection dropped with no word: 1min.ai's `event: error`, the
Conversation Service's `event: error`, OpenAI's `data: {"error": ...}` (and no `[DONE]`).
The legacy raw-text stream of `/api/features` has no error event: it is cut off (an
incomplete chunked body), as documented."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.helpers import make_settings
from tests.live_server import LiveServer
from threadline.container import create_app

SURROGATE = "\ud800"
MODEL = "gpt-4o-mini"
BAD_SCRIPT = ["Hello", f" bad {SURROGATE} text", " more"]


def sse_blocks(text: str) -> list[dict[str, str]]:
    blocks = []
    for block in text.strip().split("\n\n"):
        lines = [line for line in block.splitlines() if line and not line.startswith(":")]
        if lines:
            blocks.append(dict(line.split(": ", 1) for line in lines))
    return blocks


@pytest.fixture
def bearer(admin_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_key}", "Content-Type": "application/json"}


async def test_chat_with_ai_stream_ends_with_its_error_event(client, admin, fakes):
    fakes[MODEL].enqueue(BAD_SCRIPT)
    body = {"model": MODEL, "promptObject": {"prompt": "hi"}}
    r = await client.post("/api/chat-with-ai?isStreaming=true", headers=admin, json=body)
    assert r.status_code == 200
    blocks = sse_blocks(r.text)
    assert [b["event"] for b in blocks] == ["content", "error"], r.text
    assert json.loads(blocks[0]["data"]) == {"content": "Hello"}
    error = json.loads(blocks[-1]["data"])
    assert error["success"] is False and error["error"]["code"] == "INTERNAL_ERROR"
    record_id = r.headers["X-AI-Record-Id"]
    assert error["error"]["aiRecordId"] == record_id
    assert blocks[-1]["id"] == f"{record_id}:5"  # the client has "Hello": it may resume from it


async def test_stream_chat_ends_with_its_error_event(client, bearer, fakes):
    me = (await client.get("/api/me", headers=bearer)).json()["user"]
    org = me["teamId"]
    base = "/api/conversation"
    r = await client.post(f"{base}/create?org_id={org}", headers=bearer, json={"title": "t"})
    models = (await client.get("/api/models", headers=bearer)).json()["models"]
    model_id = next(m["id"] for m in models if m["name"] == MODEL)
    session = await client.post(
        f"{base}/create_session?org_id={org}",
        headers=bearer,
        json={"conversation_id": r.json()["id"], "model_id": model_id},
    )
    fakes[MODEL].enqueue(BAD_SCRIPT)
    body = {"chat_session_id": session.json()["id"], "message": "hi"}
    r = await client.post(f"{base}/stream_chat?org_id={org}", headers=bearer, json=body)
    assert r.status_code == 200
    blocks = sse_blocks(r.text)
    assert [b["event"] for b in blocks] == ["start", "content", "error"], r.text
    error = json.loads(blocks[-1]["data"])
    assert error["code"] == "INTERNAL_ERROR" and error["detail"], error


async def test_openai_stream_ends_with_an_error_chunk_and_no_done(client, bearer, fakes):
    fakes[MODEL].enqueue(BAD_SCRIPT)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    r = await client.post("/v1/chat/completions", headers=bearer, json=body)
    assert r.status_code == 200
    data = [b["data"] for b in sse_blocks(r.text)]
    assert "[DONE]" not in data, r.text
    chunks: list[dict[str, Any]] = [json.loads(d) for d in data]
    assert chunks[1]["choices"][0]["delta"] == {"content": "Hello"}
    error = chunks[-1]["error"]
    assert error["type"] == "server_error" and error["code"] == "internal_error", error


async def test_a_fault_in_any_frame_after_the_first_ends_with_the_error_event(
    client, admin, fakes, monkeypatch
):
    """Not only text: whatever raises while the stream runs (here the final record, as a
    store failing at the end would) becomes the error event."""
    from threadline.services.record_views import RecordViews

    async def broken(*_: Any) -> dict[str, Any]:
        raise RuntimeError("the store went away")

    monkeypatch.setattr(RecordViews, "finished", broken)
    fakes[MODEL].enqueue(["Hello", " world"])
    body = {"model": MODEL, "promptObject": {"prompt": "hi"}}
    r = await client.post("/api/chat-with-ai?isStreaming=true", headers=admin, json=body)
    blocks = sse_blocks(r.text)
    assert [b["event"] for b in blocks] == ["content", "content", "error"], r.text
    assert "the store went away" not in r.text  # the cause is logged, not sent


def test_the_legacy_raw_text_stream_is_cut_off(tmp_path, db_url, fakes):
    app = create_app(make_settings(tmp_path, db_url), model_factory=fakes.factory)
    server = LiveServer(app)
    server.start()
    try:
        key = server.call(app.state.container.bootstrap()).secret
        fakes[MODEL].enqueue(BAD_SCRIPT)
        body = {"type": "CHAT_WITH_AI", "model": MODEL, "promptObject": {"prompt": "hi"}}
        received = b""
        with (
            pytest.raises(httpx.RemoteProtocolError),
            httpx.stream(
                "POST",
                f"{server.base_url}/api/features?isStreaming=true",
                headers={"API-KEY": key},
                json=body,
                timeout=30,
            ) as r,
        ):
            assert r.status_code == 200
            for chunk in r.iter_bytes():
                received += chunk
        assert received == b"Hello"
    finally:
        server.stop()
