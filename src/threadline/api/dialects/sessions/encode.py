"""Core objects → Conversation Service JSON (snake_case), and a reply's events → the
`stream_chat` SSE frames `start`, `content`, `end` and `error`, each with an SSE id
`<aiRecordId>:<characters of text so far>` (durable streams, see services/replays.py), parsed
back (`api/stream_ids.py`) when a client resumes. `stream_frames` is the loop from a
reply's events to those frames.
Their `message_id` is the reply's (the assistant message stored at the end, whose id is known
from the start); `user_message_id` is the prompt's stored message; `end` and `error` also
name the reply as `reply_message_id`, the name earlier clients read it under.

Statuses are lower case as in 003_*: a session is "active"; a message is "pending" while its
reply runs, then "completed" or "failed".
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from uuid import UUID

from threadline.api.native import iso
from threadline.api.routing import stream_failed
from threadline.api.stream_ids import frame_id
from threadline.domain.entities import (
    AiRecord,
    ChatSession,
    Conversation,
    Message,
    Page,
    RecordStatus,
)
from threadline.domain.events import Done, Failed, TextDelta
from threadline.services.replays import ReplayEvents
from threadline.services.sessions import Exchange, model_id_of

PING = b": ping\n\n"

MESSAGE_STATUS = {
    RecordStatus.PENDING: "pending",
    RecordStatus.SUCCESS: "completed",
    RecordStatus.FAILED: "failed",
}


def conversation(c: Conversation) -> dict[str, Any]:
    return {
        "id": str(c.id),
        "org_id": str(c.org_id),
        "user_id": str(c.user_id),
        "title": c.title,
        "is_archived": c.is_archived,
        "created_at": iso(c.created_at),
        "updated_at": iso(c.updated_at),
    }


def session(s: ChatSession) -> dict[str, Any]:
    return {
        "id": str(s.id),
        "conversation_id": str(s.conversation_id),
        "model_id": str(model_id_of(s.model_name)),
        "model_name": s.model_name,
        "status": s.status,
        "created_at": iso(s.created_at),
        "updated_at": iso(s.updated_at),
    }


def with_sessions(c: Conversation, sessions: list[ChatSession]) -> dict[str, Any]:
    return {**conversation(c), "chat_sessions": [session(s) for s in sessions]}


def message(m: Message) -> dict[str, Any]:
    return {
        "id": str(m.id),
        "conversation_id": str(m.conversation_id),
        "chat_session_id": str(m.session_id) if m.session_id else None,
        "role": m.role,
        "content": m.content,
        "model_id": str(model_id_of(m.model)),
        "model_name": m.model,
        "status": MESSAGE_STATUS[m.status],
        "created_at": iso(m.created_at),
    }


def messages_page(page: Page) -> dict[str, Any]:
    return {
        "messages": [message(m) for m in page.items],
        "total": page.total,
        "limit": page.limit,
        "offset": page.offset,
        "has_more": page.offset + len(page.items) < page.total,
    }


def sse(event: str, data: dict[str, Any], event_id: str | None = None) -> bytes:
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    frame = f"event: {event}\ndata: {payload}\n\n"
    return (frame if event_id is None else f"id: {event_id}\n{frame}").encode()


def event_id(exchange: Exchange, chars: int) -> str:
    """A frame's SSE id: the reply's aiRecord and how many characters of its text came so
    far (what `GET stream_chat/resume` goes on from, as `Last-Event-ID`)."""
    return frame_id(exchange.record_id, chars)


def start_frame(exchange: Exchange) -> bytes:
    s = exchange.session
    return sse(
        "start",
        {
            "message_id": _id(exchange.reply_message_id),
            "user_message_id": _id(exchange.user_message_id),
            "chat_session_id": str(s.id),
            "conversation_id": str(s.conversation_id),
            "model_id": str(model_id_of(s.model_name)),
        },
        event_id(exchange, 0),
    )


def content_frame(text: str, frame_id: str) -> bytes:
    return sse("content", {"content": text}, frame_id)


def end_frame(exchange: Exchange, record: AiRecord | None, frame_id: str) -> bytes:
    data: dict[str, Any] = {**_message_ids(exchange), "status": "completed"}
    if record is not None:
        data["finish_reason"] = record.finish_reason or "stop"
        data["usage"] = {
            "input_tokens": record.input_tokens,
            "output_tokens": record.output_tokens,
            "credits": record.credits,
        }
    return sse("end", data, frame_id)


def error_frame(exchange: Exchange, failed: Failed, frame_id: str) -> bytes:
    data = {"detail": failed.message, "code": failed.code, **_message_ids(exchange)}
    return sse("error", data, frame_id)


def _message_ids(exchange: Exchange) -> dict[str, str | None]:
    reply = _id(exchange.reply_message_id)
    return {
        "message_id": reply,
        "user_message_id": _id(exchange.user_message_id),
        "reply_message_id": reply,  # the same id: what `end`/`error` named it before
    }


def _id(value: UUID | None) -> str | None:
    return str(value) if value else None


async def stream_frames(
    exchange: Exchange,
    events: ReplayEvents,
    chars: int,
    settle: Callable[[Exchange], Awaitable[Exchange]],
    *,
    start: bool,
) -> AsyncIterator[bytes]:
    """`start`, `content`…, then `end` (or `error`). The run goes on without the client.
    `chars`: the characters of text the client had before these events.

    A stored record that names no reply yet was pending in another process: its events come
    only once it has ended, so `start` waits for the first of them and the reply's id is
    read again then (`settle`; pings keep the connection open meanwhile)."""
    settled = exchange.run is not None or exchange.reply_message_id is not None
    try:
        if start and settled:
            yield start_frame(exchange)
            start = False
        async for _, event in events:
            if event is None:
                yield PING
                continue
            if not settled:
                exchange, settled = await settle(exchange), True
            if start:
                yield start_frame(exchange)
                start = False
            if isinstance(event, TextDelta):
                frame_id = event_id(exchange, chars + len(event.text))
                frame = content_frame(event.text, frame_id)
                chars += len(event.text)
                yield frame
            elif isinstance(event, Done | Failed):
                yield _closing_frame(exchange, event, event_id(exchange, chars))
    except Exception:
        failed = stream_failed("stream_chat")
        yield error_frame(exchange, failed, event_id(exchange, chars))


def _closing_frame(exchange: Exchange, event: Done | Failed, frame_id: str) -> bytes:
    if isinstance(event, Failed):
        return error_frame(exchange, event, frame_id)
    record = event.record if isinstance(event.record, AiRecord) else None
    return end_frame(exchange, record, frame_id)
