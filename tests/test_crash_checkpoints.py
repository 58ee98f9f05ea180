"""A crash keeps what was streamed: a real `threadline serve` process killed with SIGKILL in
the middle of a reply, then started again on the same data dir and database.

The reply's text is checkpointed while it streams (`stream_checkpoint_seconds`, 0.5 s here),
so the record the restart fails holds at least the text up to the last checkpoint, a prefix
of what the client received; a client that resumes with the last id it saw gets the stored
text it lacks (if any) and then the dialect's failure event, on both resume routes, never a
400. On SQLite and on PostgreSQL. The model is an OpenAI-compatible upstream over real HTTP
(tests/fake_upstream.py) that streams slowly, or stalls, so the kill lands mid-reply."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from sqlalchemy import select

from tests.fake_upstream import FakeUpstream, Reply
from tests.faults import Hang
from tests.helpers import Frame, content, frames_of, names
from tests.server_process import ServerProcess, upstream_model
from threadline.storage.database import Database
from threadline.storage.tables import ai_records

CHECKPOINT_SECONDS = 0.5
STOPPED = "the server stopped before the reply ended"
SESSIONS = "/api/conversation"


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture
def server(tmp_path: Path, db_url: str, upstream: FakeUpstream) -> Iterator[ServerProcess]:
    process = ServerProcess(
        tmp_path / "server",
        models={"gpt-4o-mini": upstream_model(upstream.url, timeout_seconds=120)},
        database_url=db_url,
        settings={"stream_checkpoint_seconds": CHECKPOINT_SECONDS},
    )
    process.start()
    yield process
    process.stop()


def record(server: ServerProcess, record_id: str) -> dict[str, Any]:
    r = httpx.get(f"{server.base_url}/api/chat-with-ai/{record_id}", headers=server.headers())
    assert r.status_code == 200, r.text
    return dict(r.json()["aiRecord"])


def text_of(record: dict[str, Any]) -> str:
    [text] = record["aiRecordDetail"]["resultObject"]
    return str(text)


def resume(server: ServerProcess, path: str, last_id: str | None = None, **params: Any) -> list:
    """A resumed stream: 200, SSE, its frames."""
    headers = server.headers()
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    r = httpx.get(f"{server.base_url}{path}", headers=headers, params=params, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    return list(frames_of(iter(r.text.splitlines())))


def test_a_killed_chat_with_ai_stream_keeps_its_checkpointed_text(server, upstream):
    upstream.enqueue(Reply(tokens=2000, delay=0.01))  # ~20 s of words: the kill lands mid-way
    url = f"{server.base_url}/api/chat-with-ai?isStreaming=true"
    body = {"type": "UNIFY_CHAT_WITH_AI", "model": "gpt-4o-mini", "promptObject": {"prompt": "Go"}}
    frames: list[Frame] = []
    received: list[tuple[float, int]] = []  # (when, characters the client had then)
    with httpx.stream("POST", url, headers=server.headers(), json=body, timeout=30) as r:
        assert r.status_code == 200
        record_id = r.headers["x-ai-record-id"]
        for frame in frames_of(r.iter_lines()):
            assert frame["event"] == "content", frame
            frames.append(frame)
            received.append((time.monotonic(), len(content(frames))))
            if received[-1][0] - received[0][0] >= 6 * CHECKPOINT_SECONDS:
                break
        killed_at = time.monotonic()
        server.kill()  # mid-stream: the upstream is still sending words
    text, last_id = content(frames), frames[-1]["id"]
    assert last_id == f"{record_id}:{len(text)}"

    server.start()
    stored = record(server, record_id)
    assert stored["status"] == "FAILED" and stored["error"] == STOPPED
    kept = text_of(stored)
    assert text.startswith(kept) or kept.startswith(text)  # the same words, cut elsewhere
    # at least what the client had two seconds before the kill (four checkpoint intervals)
    old = max((chars for at, chars in received if at <= killed_at - 2.0), default=1)
    assert len(kept) >= old > 0, (len(kept), old, len(text))
    stream = f"/api/chat-with-ai/{record_id}/stream"

    def error_of(frames: list[Frame]) -> dict[str, Any]:
        assert frames[-1]["event"] == "error"
        return dict(json.loads(frames[-1]["data"])["error"])

    # the last id the client saw, most likely past the last checkpoint: the rest, the error
    rest = resume(server, stream, last_id)
    assert names(rest) == (["content", "error"] if len(kept) > len(text) else ["error"])
    assert content(rest) == kept[len(text) :]
    error = error_of(rest)
    assert error["code"] == "REPLY_FAILED" and error["message"] == STOPPED
    assert error["aiRecordId"] == record_id
    assert rest[-1]["id"] == f"{record_id}:{max(len(text), len(kept))}"
    # a position inside the stored text: the stored text after it, then the error
    middle = len(kept) // 2
    again = resume(server, stream, f"{record_id}:{middle}")
    assert names(again) == ["content", "error"] and content(again) == kept[middle:]
    assert error_of(again)["code"] == "REPLY_FAILED"
    whole = resume(server, stream, after=0)
    assert names(whole) == ["content", "error"] and content(whole) == kept
    assert names(resume(server, stream, after=len(text) + 1000)) == ["error"]


def stored_text(server: ServerProcess, record_id: str, until: str, seconds: float) -> None:
    """Wait until the record's text in the database (not the live run's) is `until`."""

    async def poll() -> None:
        database = Database(server.values["database_url"])
        query = select(ai_records.c.result_text).where(ai_records.c.id == UUID(record_id))
        deadline = time.monotonic() + seconds
        try:
            while True:
                async with database.read() as conn:
                    saved = (await conn.execute(query)).scalar_one()
                if saved == until:
                    return
                assert time.monotonic() < deadline, f"stored {len(saved)} of {len(until)} chars"
                await asyncio.sleep(0.05)
        finally:
            await database.dispose()

    asyncio.run(poll())


def start_session(server: ServerProcess) -> tuple[str, str, str]:
    """(org id, conversation id, chat session id) for gpt-4o-mini."""
    base, headers = server.base_url, server.headers()
    org = httpx.get(f"{base}/api/me", headers=headers).json()["user"]["teamId"]
    models = httpx.get(f"{base}/api/models", headers=headers).json()["models"]
    model = next(m["id"] for m in models if m["name"] == "gpt-4o-mini")
    url = f"{base}{SESSIONS}"
    r = httpx.post(f"{url}/create?org_id={org}", headers=headers, json={"title": "crash"})
    conversation = r.json()["id"]
    body = {"conversation_id": conversation, "model_id": model}
    r = httpx.post(f"{url}/create_session?org_id={org}", headers=headers, json=body)
    return org, conversation, r.json()["id"]


def conversation_messages(server: ServerProcess, org: str, conversation: str) -> list[Any]:
    params = {"org_id": org, "conversation_id": conversation}
    r = httpx.get(f"{server.base_url}{SESSIONS}/messages", params=params, headers=server.headers())
    assert r.status_code == 200, r.text
    return list(r.json()["messages"])


def test_a_killed_stream_chat_keeps_its_reply_message(server, upstream):
    # 40 words, then the upstream stalls: the stalled text is checkpointed whole
    upstream.enqueue(Hang(seconds=300, after_chunks=40, reply=Reply(tokens=200, delay=0.01)))
    org, conversation, session = start_session(server)
    url = f"{server.base_url}{SESSIONS}/stream_chat?org_id={org}"
    body = {"chat_session_id": session, "message": "Go"}
    frames: list[Frame] = []
    with httpx.stream("POST", url, headers=server.headers(), json=body, timeout=30) as r:
        assert r.status_code == 200
        record_id = r.headers["x-ai-record-id"]
        for frame in frames_of(r.iter_lines()):
            frames.append(frame)
            if names(frames).count("content") == 40:
                break
        text, start = content(frames), json.loads(frames[0]["data"])
        # the upstream stalls: within an interval a checkpoint saves all of it
        stored_text(server, record_id, until=text, seconds=CHECKPOINT_SECONDS + 10)
        [user] = conversation_messages(server, org, conversation)  # no reply stored yet
        assert (user["status"], record(server, record_id)["status"]) == ("pending", "PENDING")
        server.kill()
    last_id = frames[-1]["id"]
    assert names(frames) == ["start"] + ["content"] * 40
    assert last_id == f"{record_id}:{len(text)}"

    server.start()
    stored = record(server, record_id)
    assert stored["status"] == "FAILED" and text_of(stored) == text
    assert stored["error"] == STOPPED
    user, reply = conversation_messages(server, org, conversation)
    assert (user["id"], user["status"]) == (start["user_message_id"], "failed")
    assert (reply["id"], reply["content"], reply["status"]) == (start["message_id"], text, "failed")
    stream = f"{SESSIONS}/stream_chat/resume"
    params = {"org_id": org, "ai_record_id": record_id}
    # the client has all that was stored: the error at once, naming the same messages
    rest = resume(server, stream, last_id, **params)
    assert names(rest) == ["error"] and rest[0]["id"] == last_id
    error = json.loads(rest[0]["data"])
    assert error["code"] == "REPLY_FAILED" and error["detail"] == STOPPED
    assert error["message_id"] == error["reply_message_id"] == start["message_id"]
    assert error["user_message_id"] == start["user_message_id"]
    # a position the store does not reach (the client may have seen more): still the error
    beyond = resume(server, stream, f"{record_id}:{len(text) + 50}", **params)
    assert names(beyond) == ["error"] and json.loads(beyond[0]["data"]) == error
    middle = resume(server, stream, **params, after=10)
    assert names(middle) == ["content", "error"] and content(middle) == text[10:]
    whole = resume(server, stream, **params)
    assert names(whole) == ["start", "content", "error"] and content(whole) == text
    assert json.loads(whole[0]["data"]) == start
