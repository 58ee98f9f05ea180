"""Core objects → OpenAI's JSON: models, chat completions, streamed chunks (`data: {...}`
frames ending with `data: [DONE]`; `chunks` is the loop from a reply's events to them) and the
error shape `{"error": {"message", "type", "param", "code"}}`. OpenAI's stream has no event
ids: a completion is not resumed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from threadline.api.routing import stream_failed
from threadline.domain.entities import AiRecord
from threadline.domain.events import Done, Failed, ReplyEvent, TextDelta
from threadline.services.catalog import CatalogModel

PING = b": ping\n\n"
_TYPES = {401: "invalid_request_error", 403: "permission_error", 429: "requests"}
DONE = b"data: [DONE]\n\n"


def model(entry: CatalogModel, alias: str | None = None) -> dict[str, Any]:
    """A model object; an alias is listed under its own id, `alias_for` naming the model
    that answers it (an extension field: the SDK keeps unknown fields)."""
    # The catalog has no creation times; 0 says "unknown" without inventing one.
    if alias is not None:
        return {
            "id": alias,
            "object": "model",
            "created": 0,
            "owned_by": entry.provider,
            "alias_for": entry.name,
        }
    return {"id": entry.name, "object": "model", "created": 0, "owned_by": entry.provider}


def completion_id(record: AiRecord) -> str:
    return f"chatcmpl-{record.id.hex}"


def usage(record: AiRecord) -> dict[str, int]:
    return {
        "prompt_tokens": record.input_tokens,
        "completion_tokens": record.output_tokens,
        "total_tokens": record.input_tokens + record.output_tokens,
    }


def completion(record: AiRecord, finish_reason: str) -> dict[str, Any]:
    return {
        "id": completion_id(record),
        "object": "chat.completion",
        "created": int(record.created_at.timestamp()),
        "model": record.model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": record.result_text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage(record),
    }


class ChunkWriter:
    """The chunks of one streamed completion; with `include_usage`, every chunk carries
    `usage: null` and a last chunk with no choices carries the usage."""

    def __init__(self, record: AiRecord, include_usage: bool) -> None:
        self._base = {
            "id": completion_id(record),
            "object": "chat.completion.chunk",
            "created": int(record.created_at.timestamp()),
            "model": record.model,
            "system_fingerprint": None,
        }
        self._include_usage = include_usage

    def delta(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._frame({**self._base, "choices": [choice]})

    def usage(self, record: AiRecord) -> bytes:
        return data({**self._base, "choices": [], "usage": usage(record)})

    def _frame(self, chunk: dict[str, Any]) -> bytes:
        if self._include_usage:
            chunk["usage"] = None
        return data(chunk)


def data(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_type(status: int) -> str:
    return "server_error" if status >= 500 else _TYPES.get(status, "invalid_request_error")


def failure(failed: Failed) -> dict[str, Any]:
    """A failed reply's error body."""
    return error_body(failed.message, error_type(failed.status), None, failed.code.lower())


async def chunks(
    record: Callable[[], AiRecord],
    events: AsyncIterator[tuple[int, ReplyEvent | None]],
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """A role chunk, content chunks, a finish chunk, [usage,] [DONE]; or an error frame.

    The role chunk waits for the reply's first text (or its end): only then is the model
    that answers known (a fallback may, services/fallbacks.py), and every chunk names it."""
    try:
        writer: ChunkWriter | None = None
        async for _, event in events:
            if event is None:
                yield PING
                continue
            if not isinstance(event, TextDelta | Failed | Done):
                continue
            head = b""
            if writer is None:
                writer = ChunkWriter(record(), include_usage)
                head = writer.delta({"role": "assistant", "content": ""})
            if isinstance(event, TextDelta):
                yield head + writer.delta({"content": event.text})
            elif isinstance(event, Failed):
                yield head + data(failure(event))
            else:
                end = writer.delta({}, event.finish_reason)
                if include_usage and isinstance(event.record, AiRecord):
                    end += writer.usage(event.record)
                yield head + end + DONE
    except Exception:
        yield data(failure(stream_failed("chat.completions")))
