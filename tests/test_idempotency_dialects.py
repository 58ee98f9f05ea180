"""`Idempotency-Key` on every dialect's POSTs that create or charge: the Conversation
Service (create, stream_chat), the OpenAI API (completions, streamed or not; images), AI Hub
Converse (a multipart create: a new boundary on every attempt is the same request) and
1min.ai's conversations and assets. Each conflict is a 422 in the dialect's own shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import frames_of
from tests.idem_server import UPSTREAM_KEY, Live, live_server
from threadline.services.sessions import model_id_of
from threadline.settings import Credits, ModelConfig

SESSIONS = "/api/conversation"
IMAGES = {"sketcher": ModelConfig(provider="fake", kind="images", credits=Credits(per_image=10))}


@pytest.fixture
def live(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Live]:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", UPSTREAM_KEY)
    with live_server(tmp_path, db_url, models=IMAGES) as server:
        yield server


def twice(live: Live, key: str, path: str, **request: Any) -> tuple[httpx.Response, ...]:
    first = httpx.post(live.url(path), headers=live.headers(key), timeout=30, **request)
    again = httpx.post(live.url(path), headers=live.headers(key), timeout=30, **request)
    assert first.status_code < 300, first.text
    assert again.headers.get("idempotent-replayed") == "true"
    assert (again.status_code, again.content) == (first.status_code, first.content)
    return first, again


def sse_post(live: Live, key: str, path: str, body: dict[str, Any]) -> tuple[str, list[Any]]:
    with httpx.stream(
        "POST", live.url(path), headers=live.headers(key), json=body, timeout=30
    ) as r:
        assert r.status_code == 200, r.read()
        return r.headers.get("x-ai-record-id", ""), list(frames_of(r.iter_lines()))


def test_conversation_service(live: Live) -> None:
    org = httpx.get(live.url("/api/me"), headers=live.headers()).json()["user"]["teamId"]
    create = f"{SESSIONS}/create?org_id={org}"
    first, _ = twice(live, "c-1", create, json={"title": "Plans"})
    conversation = first.json()["id"]
    body = {"conversation_id": conversation, "model_id": str(model_id_of("gpt-4o-mini"))}
    session = twice(live, "s-1", f"{SESSIONS}/create_session?org_id={org}", json=body)[0]

    chat = {"chat_session_id": session.json()["id"], "message": "Hello"}
    stream = f"{SESSIONS}/stream_chat?org_id={org}"
    record, frames = sse_post(live, "m-1", stream, chat)
    again, replayed = sse_post(live, "m-1", stream, chat)
    assert again == record
    assert next(f["event"] for f in frames) == "start"
    assert replayed == frames  # the same frames: ids, message ids, text, end
    assert len(live.upstream.requests) == 1

    other = {**chat, "message": "Something else"}
    conflict = httpx.post(live.url(stream), headers=live.headers("m-1"), json=other)
    assert conflict.status_code == 422
    assert conflict.json()["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert "m-1" in conflict.json()["detail"]


def test_openai_api(live: Live) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
    first, _ = twice(live, "o-1", "/v1/chat/completions", json=body)
    assert first.json()["choices"][0]["message"]["content"] == "one two three four five six"

    streamed = {**body, "stream": True}
    _, chunks = sse_post(live, "o-2", "/v1/chat/completions", streamed)
    _, again = sse_post(live, "o-2", "/v1/chat/completions", streamed)
    ids = {json.loads(c["data"])["id"] for c in chunks if c["data"] != "[DONE]"}
    assert len(ids) == 1
    assert again == chunks
    assert len(live.upstream.requests) == 2

    conflict = httpx.post(
        live.url("/v1/chat/completions"), headers=live.headers("o-1"), json=streamed
    )
    assert conflict.status_code == 422
    error = conflict.json()["error"]
    assert "o-1" in error["message"] and error["code"] == "idempotency_key_reused"

    images = {"model": "sketcher", "prompt": "a mill", "response_format": "b64_json"}
    made, _ = twice(live, "i-1", "/v1/images/generations", json=images)
    assert made.json()["data"][0]["b64_json"]
    assert live.charges()[0] == 3


def test_converse_and_oneminai_uploads(live: Live) -> None:
    """httpx draws a new multipart boundary for every request: still the same request."""
    files = {"files": ("notes.txt", b"The mill opens at nine.", "text/plain")}
    form = {"name": "Mill", "description": "notes"}
    first, _again = twice(live, "v-1", "/api/v2/conversations", data=form, files=files)
    assert first.status_code == 201
    listed = httpx.get(live.url("/api/v2/conversations"), headers=live.headers()).json()
    assert len(listed["conversations"]) == 1
    changed = {"files": ("notes.txt", b"The mill opens at ten.", "text/plain")}
    conflict = httpx.post(
        live.url("/api/v2/conversations"), headers=live.headers("v-1"), data=form, files=changed
    )
    assert conflict.status_code == 422 and "v-1" in conflict.json()["message"]

    upload = {"asset": ("a.txt", b"hello there", "text/plain")}
    asset = twice(live, "a-1", "/api/assets", files=upload)[0].json()["asset"]
    assert asset["uuid"]
    chat = {"title": "Mill", "type": "UNIFY_CHAT_WITH_AI", "model": "gpt-4o-mini"}
    twice(live, "n-1", "/api/conversations", json=chat)
    assets = httpx.get(live.url("/api/assets"), headers=live.headers()).json()["assets"]
    assert sorted(a["name"] for a in assets) == ["a.txt", "notes.txt"]  # Converse's file too
    conversations = httpx.get(live.url("/api/conversations"), headers=live.headers()).json()
    assert conversations["total"] == 2  # Converse's and 1min.ai's, one each
