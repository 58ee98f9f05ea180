"""Core objects → OpenAI's Responses and Conversations JSON, and the Responses event stream.

Ids: a response is `resp_<aiRecord id>`, its output message `msg_<reply message id>` (the
assistant message it is stored as in its conversation), a conversation `conv_<id>`, an item
`msg_<message id>`, all as 32 hex digits.

The stream's `sequence_number`s count characters, as the other resumable streams' positions
do (docs/architecture.md, "Durable streams"): `response.created` is 0, `in_progress` 1,
`output_item.added` 2, `content_part.added` 3; a text delta is 3 + the characters of text up
to its end; after a text of T characters, the closing events are T+4, T+5, ... So a number
means the same to the run in memory and to the stored record, and
`GET /v1/responses/{id}?stream=true&starting_after=N` resumes exactly from either.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any
from uuid import UUID

from threadline.api.routing import stream_failed
from threadline.domain.entities import (
    AiRecord,
    Conversation,
    Message,
    RecordStatus,
    reply_message_id,
)
from threadline.domain.events import Done, Failed, ReplyEvent, TextDelta
from threadline.services.runs import CANCELLED_MESSAGE

PING = b": ping\n\n"
PRELUDE = 4  # created, in_progress, output_item.added, content_part.added
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def response_id(record_id: UUID) -> str:
    return f"resp_{record_id.hex}"


def item_id(message_id: UUID) -> str:
    return f"msg_{message_id.hex}"


def conversation_id(value: UUID) -> str:
    return f"conv_{value.hex}"


def status(record: AiRecord) -> str:
    if record.status is RecordStatus.PENDING:
        return "in_progress"
    if record.status is RecordStatus.FAILED:
        return "cancelled" if record.error == CANCELLED_MESSAGE else "failed"
    return "incomplete" if record.finish_reason in _INCOMPLETE else "completed"


def annotations_of(record: AiRecord, file_ids: dict[str, str]) -> list[dict[str, Any]]:
    """The record's citations: a cited document as a `file_citation` (by its asset id), a
    cited web page as a `url_citation`; both at the end of the text."""
    end = len(record.result_text)
    found: list[dict[str, Any]] = []
    for citation in record.citations:
        if citation.source_id in file_ids:
            annotation = {
                "type": "file_citation",
                "file_id": file_ids[citation.source_id],
                "filename": citation.title,
                "index": end,
            }
        elif citation.url:
            annotation = {
                "type": "url_citation",
                "url": citation.url,
                "title": citation.title,
                "start_index": end,
                "end_index": end,
            }
        else:
            continue
        if annotation not in found:
            found.append(annotation)
    return found


def _text_part(text: str, notes: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": notes, "logprobs": []}


def output_item(record: AiRecord, file_ids: dict[str, str]) -> dict[str, Any]:
    state = status(record)
    item_status = {"in_progress": "in_progress", "completed": "completed"}.get(state, "incomplete")
    return {
        "id": item_id(reply_message_id(record.id)),
        "type": "message",
        "status": item_status,
        "role": "assistant",
        "content": [_text_part(record.result_text, annotations_of(record, file_ids))],
    }


def usage(record: AiRecord) -> dict[str, Any]:
    return {
        "input_tokens": record.input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": record.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": record.input_tokens + record.output_tokens,
    }


def response(
    record: AiRecord, file_ids: dict[str, str], *, with_output: bool = True
) -> dict[str, Any]:
    """The response object; `with_output` false for the stream's opening events."""
    asked = record.prompt_object
    state = status(record)
    running = state == "in_progress"
    conversation = asked.get("conversation")
    if isinstance(conversation, dict):
        conversation = conversation.get("id")
    reason = _INCOMPLETE.get(record.finish_reason or "") if state == "incomplete" else None
    output = (
        [output_item(record, file_ids)]
        if with_output and (record.result_text or not running)
        else []
    )
    return {
        "id": response_id(record.id),
        "object": "response",
        "created_at": int(record.created_at.timestamp()),
        "status": state,
        "background": bool(asked.get("background", False)),
        "completed_at": None if running else int(record.updated_at.timestamp()),
        "error": {"code": "server_error", "message": record.error or "the reply failed"}
        if state == "failed"
        else None,
        "incomplete_details": {"reason": reason} if reason else None,
        "instructions": asked.get("instructions"),
        "max_output_tokens": asked.get("max_output_tokens"),
        "metadata": asked.get("metadata") or {},
        "model": record.model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": asked.get("previous_response_id"),
        "store": asked.get("store", True),
        "temperature": asked.get("temperature"),
        "top_p": asked.get("top_p"),
        "text": {"format": {"type": "text"}},
        "tool_choice": "none",
        "tools": [],
        "truncation": "auto",
        "conversation": {"id": conversation} if conversation else None,
        "usage": None if running else usage(record),
        "user": asked.get("user"),
    }


def deleted(kind: str, object_id: str) -> dict[str, Any]:
    return {"id": object_id, "object": kind, "deleted": True}


# ---- conversations and items ----


def conversation(value: Conversation) -> dict[str, Any]:
    return {
        "id": conversation_id(value.id),
        "object": "conversation",
        "created_at": int(value.created_at.timestamp()),
        "metadata": value.metadata or {},
    }


def item(message: Message) -> dict[str, Any]:
    role = message.role
    if role == "assistant":
        content = [_text_part(message.content, [])]
    else:
        content = [{"type": "input_text", "text": message.content}]
    done = message.status is not RecordStatus.PENDING
    return {
        "id": item_id(message.id),
        "type": "message",
        "status": "completed" if done else "in_progress",
        "role": role,
        "content": content,
    }


def item_list(items: Sequence[Message], has_more: bool) -> dict[str, Any]:
    data = [item(m) for m in items]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


# ---- the event stream ----


def frame(payload: dict[str, Any]) -> bytes:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"event: {payload['type']}\ndata: {body}\n\n".encode()


class EventWriter:
    """The events of one response's stream, numbered as the module docstring says; events
    at or before `after` (a resuming client's `starting_after`) are left out."""

    def __init__(self, record: AiRecord, file_ids: dict[str, str], after: int = -1) -> None:
        self._record = record
        self.file_ids = file_ids
        self._after = after
        self._item = item_id(reply_message_id(record.id))
        self.chars = 0

    def event(self, sequence: int, kind: str, **fields: Any) -> bytes:
        if sequence <= self._after:
            return b""
        return frame({"type": kind, "sequence_number": sequence, **fields})

    def _where(self) -> dict[str, Any]:
        return {"item_id": self._item, "output_index": 0, "content_index": 0}

    def prelude(self) -> bytes:
        opening = response(self._record, self.file_ids, with_output=False)
        opening["status"], opening["usage"], opening["completed_at"] = "in_progress", None, None
        empty = {**output_item(self._record, self.file_ids), "status": "in_progress"}
        empty["content"] = []
        return (
            self.event(0, "response.created", response=opening)
            + self.event(1, "response.in_progress", response=opening)
            + self.event(2, "response.output_item.added", output_index=0, item=empty)
            + self.event(3, "response.content_part.added", **self._where(), part=_text_part("", []))
        )

    def delta(self, text: str) -> bytes:
        self.chars += len(text)
        return self.event(
            PRELUDE - 1 + self.chars,
            "response.output_text.delta",
            **self._where(),
            delta=text,
            logprobs=[],
        )

    def closing(self, record: AiRecord) -> bytes:
        """The events after the text: done events, then completed / incomplete / failed."""
        number = PRELUDE + len(record.result_text)
        state = status(record)
        final = response(record, self.file_ids)
        if state in ("failed", "cancelled"):
            return self.event(number, "response.failed", response=final)
        finished = output_item(record, self.file_ids)
        part = finished["content"][0]
        frames = self.event(
            number,
            "response.output_text.done",
            **self._where(),
            text=record.result_text,
            logprobs=[],
        )
        for index, note in enumerate(part["annotations"]):
            number += 1
            frames += self.event(
                number,
                "response.output_text.annotation.added",
                **self._where(),
                annotation_index=index,
                annotation=note,
            )
        frames += self.event(number + 1, "response.content_part.done", **self._where(), part=part)
        frames += self.event(number + 2, "response.output_item.done", output_index=0, item=finished)
        kind = "response.incomplete" if state == "incomplete" else "response.completed"
        return frames + self.event(number + 3, kind, response=final)


async def events(
    writer: EventWriter,
    replies: AsyncIterator[tuple[int, ReplyEvent | None]],
    *,
    resolve: Callable[[AiRecord], Awaitable[dict[str, str]]],
) -> AsyncIterator[bytes]:
    """The stream of a response from a reply's events (a run's, or a replay's from the
    writer's `chars` on); `resolve` names the files the finished reply cites."""
    try:
        opening = writer.prelude()
        if opening:
            yield opening
        async for _, event in replies:
            if event is None:
                yield PING
            elif isinstance(event, TextDelta) and event.text:
                piece = writer.delta(event.text)
                if piece:
                    yield piece
            elif isinstance(event, Done | Failed) and isinstance(event.record, AiRecord):
                writer.file_ids = await resolve(event.record)
                yield writer.closing(event.record)
            elif isinstance(event, Failed):  # no record: a replay that could not go on
                yield writer.event(
                    PRELUDE + writer.chars,
                    "error",
                    code=event.code.lower(),
                    message=event.message,
                    param=None,
                )
    except Exception:
        failed = stream_failed("responses")
        yield frame(
            {
                "type": "error",
                "sequence_number": PRELUDE + writer.chars,
                "code": failed.code.lower(),
                "message": failed.message,
                "param": None,
            }
        )
