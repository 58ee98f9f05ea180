"""Core objects → Anthropic's JSON: the `message` object, the Messages stream's SSE events
(`message_start`, `content_block_start`, `ping`, `content_block_delta`, `content_block_stop`,
`message_delta`, `message_stop`; `error` when the reply fails mid-stream; `events` is the loop
from a reply's events to them) and the error shape `{"type": "error", "error": {"type",
"message"}}`. Anthropic's stream has no event ids: a message is not resumed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from threadline.api.routing import stream_failed
from threadline.domain.entities import AiRecord
from threadline.domain.events import Done, Failed, FinishReason, ReplyEvent, TextDelta

# Anthropic's error type for each status (anything else: invalid_request_error below 500,
# api_error from 500).
_TYPES = {
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "content_filter": "refusal"}


def error_type(status: int) -> str:
    return _TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def error_body(message: str, status: int) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type(status), "message": message}}


def message_id(record: AiRecord) -> str:
    return f"msg_{record.id.hex}"


def stop_reason(finish: FinishReason, stop_sequence: str | None = None) -> str:
    """Anthropic's reason; "stop_sequence" only when the provider said which sequence
    matched (an OpenAI upstream reports a stop sequence as a natural end)."""
    if stop_sequence is not None:
        return "stop_sequence"
    return _STOP_REASONS.get(finish, "end_turn")


def usage(record: AiRecord) -> dict[str, int]:
    return {"input_tokens": record.input_tokens, "output_tokens": record.output_tokens}


def message(record: AiRecord, done: Done) -> dict[str, Any]:
    """The finished reply as a `message` object."""
    content = [{"type": "text", "text": record.result_text}] if record.result_text else []
    return {
        "id": message_id(record),
        "type": "message",
        "role": "assistant",
        "model": record.model,
        "content": content,
        "stop_reason": stop_reason(done.finish_reason, done.stop_sequence),
        "stop_sequence": done.stop_sequence,
        "usage": usage(record),
    }


def failure(failed: Failed) -> dict[str, Any]:
    return error_body(failed.message, failed.status)


def token_count(tokens: int) -> dict[str, int]:
    return {"input_tokens": tokens}


def event(name: str, payload: dict[str, Any]) -> bytes:
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"event: {name}\ndata: {data}\n\n".encode()


PING = event("ping", {"type": "ping"})
_BLOCK_STOP = event("content_block_stop", {"type": "content_block_stop", "index": 0})
_MESSAGE_STOP = event("message_stop", {"type": "message_stop"})
_DELTA_HEAD = 'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'


def _text_delta(text: str) -> bytes:
    return f'{_DELTA_HEAD}"delta":{{"type":"text_delta","text":{json.dumps(text)}}}}}\n\n'.encode()


def _start(record: AiRecord) -> bytes:
    started: dict[str, Any] = {
        "id": message_id(record),
        "type": "message",
        "role": "assistant",
        "model": record.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": record.input_tokens, "output_tokens": 0},
    }
    block = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    return (
        event("message_start", {"type": "message_start", "message": started})
        + event("content_block_start", block)
        + PING
    )


def _end(done: Done) -> bytes:
    record = done.record
    delta: dict[str, Any] = {
        "stop_reason": stop_reason(done.finish_reason, done.stop_sequence),
        "stop_sequence": done.stop_sequence,
    }
    counts = usage(record) if isinstance(record, AiRecord) else {"output_tokens": 0}
    payload = {"type": "message_delta", "delta": delta, "usage": counts}
    return _BLOCK_STOP + event("message_delta", payload) + _MESSAGE_STOP


async def events(
    record: AiRecord,
    replies: AsyncIterator[tuple[int, ReplyEvent | None]],
) -> AsyncIterator[bytes]:
    """The Messages stream of one reply. The counts are known at its end: `message_start`
    carries those of the record as it starts (none yet), `message_delta` the stored reply's
    input and output tokens (totals, as the SDK reads them)."""
    try:
        yield _start(record)
        async for _, reply_event in replies:
            if reply_event is None:
                yield PING
            elif isinstance(reply_event, TextDelta):
                yield _text_delta(reply_event.text)
            elif isinstance(reply_event, Failed):
                yield event("error", failure(reply_event))
            elif isinstance(reply_event, Done):
                yield _end(reply_event)
    except Exception:
        yield event("error", failure(stream_failed("messages")))
