"""Core objects → 1min.ai JSON, and reply events → the Chat with AI SSE frames
(`content`, `result`, `done`, `error`), each with an SSE `id: <aiRecordId>:<characters so
far>` line (durable streams, see services/replays.py; the id format is
`api/stream_ids.py`'s), read back when a client resumes; keep-alive pings are comments.
`chat_frames` is the loop from a reply's events to those frames; `raw_text` the legacy
features' plain-text stream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from json.encoder import encode_basestring as _json_string
from typing import Any
from uuid import UUID

from threadline.api.native import iso, team_user
from threadline.api.routing import stream_failed
from threadline.api.stream_ids import frame_id
from threadline.domain.brand_voices import BrandVoice
from threadline.domain.documents import Asset, ConversationDocument, Document
from threadline.domain.entities import AiRecord, Conversation, Message, User
from threadline.domain.events import Citation, Done, Failed, ReplyEvent, TextDelta
from threadline.domain.image_generation import IMAGE_RECORD_TYPES
from threadline.domain.memories import Memory
from threadline.domain.sources import ImageSource, PageSource
from threadline.services.conversation_files import ConversationDetail
from threadline.services.record_views import RecordView

SSE_PING = b": ping\n\n"


def record_view(view: RecordView) -> dict[str, Any]:
    return ai_record(view.record, view.user, view.provider)


def ai_record(record: AiRecord, user: User, provider: str) -> dict[str, Any]:
    detail: dict[str, Any] = {
        "promptObject": prompt_object(record),
        "resultObject": result_object(record),
    }
    if record.citations:
        detail["citations"] = [citation(c) for c in record.citations]
    if record.finish_reason:
        detail["finishReason"] = record.finish_reason
    body: dict[str, Any] = {
        "uuid": str(record.id),
        "userId": str(record.user_id),
        "teamId": str(record.org_id),
        "teamUser": team_user(user),
        "model": record.model,
        "type": record.type,
        "metadata": record.metadata,
        "rating": None,
        "feedback": None,
        "conversationId": str(record.conversation_id) if record.conversation_id else None,
        "status": record.status.value,
        "createdAt": iso(record.created_at),
        "aiRecordDetail": detail,
        "modelDetail": {"name": record.model, "provider": provider},
        "usage": {
            "inputTokens": record.input_tokens,
            "outputTokens": record.output_tokens,
            "credits": record.credits,
        },
        "additionalData": None,
    }
    if record.error:
        body["error"] = record.error
    return body


def prompt_object(record: AiRecord) -> dict[str, Any]:
    """The request's promptObject as recorded, with what the reply read beside its documents
    under 1min.ai's names: `linkContentList`, `searchContentList`, `imageContentList`,
    `memoryList` (each only when the reply read that kind; a record stored before the core
    kept them apart has them in its promptObject already)."""
    sources = record.sources
    if sources.empty:
        return record.prompt_object
    shown = dict(record.prompt_object)
    if sources.links is not None:
        shown["linkContentList"] = [link_content(s) for s in sources.links]
    if sources.search is not None:
        shown["searchContentList"] = [search_content(s) for s in sources.search]
    if sources.images is not None:
        shown["imageContentList"] = [image_content(s) for s in sources.images]
    if sources.memories is not None:
        shown["memoryList"] = [{"uuid": str(m.id), "content": m.content} for m in sources.memories]
    return shown


def citation(c: Citation) -> dict[str, Any]:
    return {
        "sourceId": c.source_id,
        "title": c.title,
        "excerpt": c.excerpt,
        "page": c.page,
        "url": c.url,
    }


def link_content(s: PageSource) -> dict[str, Any]:
    """A `linkContentList` entry: a link of the prompt, read (page / youtube) or not."""
    entry: dict[str, Any] = {"type": s.kind, "url": s.url, "status": s.status}
    if s.video_id is not None:
        entry["videoId"] = s.video_id
    if s.status == "ok":
        entry.update(
            title=s.title, wordCount=s.word_count, truncated=s.truncated, content=s.excerpt
        )
    else:
        entry["reason"] = s.reason
    return entry


def search_content(s: PageSource) -> dict[str, Any]:
    """A `searchContentList` entry: a web search result and what was read of its page."""
    entry: dict[str, Any] = {
        "title": s.title,
        "url": s.url,
        "snippet": s.snippet,
        "status": s.status,
    }
    if s.status == "ok":
        entry.update(wordCount=s.word_count, truncated=s.truncated, content=s.excerpt)
    else:
        entry["reason"] = s.reason
    return entry


def image_content(s: ImageSource) -> dict[str, Any]:
    """An `imageContentList` entry: an image of the request and how the model got it."""
    entry: dict[str, Any] = {
        "image": s.reference,
        "name": s.name,
        "format": s.format,
        "mimeType": s.mime_type,
        "width": s.width,
        "height": s.height,
        "size": s.size,
        "mode": s.mode,
    }
    if s.text is not None:
        entry["text"] = s.text
    if s.note:
        entry["note"] = s.note
    return entry


def result_object(record: AiRecord) -> list[str]:
    """A reply's text; an image feature's asset keys (stored one per line)."""
    if record.type in IMAGE_RECORD_TYPES:
        return record.result_text.split("\n") if record.result_text else []
    return [record.result_text]


def brand_voice(voice: BrandVoice) -> dict[str, Any]:
    return {
        "uuid": str(voice.id),
        "teamId": str(voice.org_id),
        "name": voice.name,
        "instructions": voice.instructions,
        "examples": list(voice.examples),
        "createdAt": iso(voice.created_at),
        "createdBy": str(voice.created_by),
        "updatedAt": iso(voice.updated_at),
        "updatedBy": str(voice.updated_by),
    }


def memory(m: Memory) -> dict[str, Any]:
    return {
        "uuid": str(m.id),
        "userId": str(m.user_id),
        "teamId": str(m.org_id),
        "content": m.content,
        "kind": m.kind,
        "source": m.source.value,
        "aiRecordId": str(m.record_id) if m.record_id else None,
        "createdAt": iso(m.created_at),
        "updatedAt": iso(m.updated_at),
    }


def conversation(c: Conversation, files: Sequence[ConversationDocument] = ()) -> dict[str, Any]:
    created = iso(c.created_at)
    return {
        "uuid": str(c.id),
        "title": c.title,
        "type": c.type,
        "model": c.model,
        "status": c.status,
        "createdAt": created,
        "updatedAt": iso(c.updated_at),
        "metadata": {
            "fileToken": sum(f.document.token_count for f in files),
            "fileCharacter": sum(f.document.char_count for f in files),
        },
        "conversationFile": [conversation_file(f) for f in files],
    }


def conversation_detail(detail: ConversationDetail) -> dict[str, Any]:
    """A conversation with its files and a page of its messages."""
    body = conversation(detail.filed.conversation, detail.filed.files)
    body["messages"] = [message(m) for m in detail.messages.items]
    body["messageCount"] = detail.messages.total
    return body


def conversation_file(link: ConversationDocument) -> dict[str, Any]:
    document = link.document
    return {
        "conversationId": str(link.conversation_id),
        "fileId": str(document.asset_id),
        "fileName": document.name,
        "status": document.state.value,
        "reason": document.reason,
        "createdAt": iso(link.created_at),
        "createdBy": link.created_by,
        "updatedAt": iso(document.updated_at),
        "updatedBy": "SYSTEM",
    }


def asset(a: Asset, document: Document) -> dict[str, Any]:
    """An uploaded file (Threadline's design of 1min.ai's Asset API; see the README)."""
    return {
        "uuid": str(a.id),
        "key": a.key,
        "name": a.name,
        "mimeType": a.mime_type,
        "size": a.size,
        "sha256": a.sha256,
        "status": document.state.value,
        "reason": document.reason,
        "documentId": document.id,
        "pageCount": document.page_count,
        "fileToken": document.token_count,
        "fileCharacter": document.char_count,
        "createdAt": iso(a.created_at),
        "updatedAt": iso(document.updated_at),
    }


def file_content(a: Asset) -> dict[str, Any]:
    return {"uuid": str(a.id), "key": a.key, "path": a.key, "name": a.name, "type": a.mime_type}


def message(m: Message) -> dict[str, Any]:
    return {
        "uuid": str(m.id),
        "role": m.role,
        "content": m.content,
        "model": m.model,
        "status": m.status.value,
        "aiRecordId": str(m.record_id) if m.record_id else None,
        "createdAt": iso(m.created_at),
    }


def sse(event: str, data: dict[str, Any], event_id: str | None = None) -> bytes:
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    frame = f"event: {event}\ndata: {payload}\n\n"
    return (frame if event_id is None else f"id: {event_id}\n{frame}").encode()


def event_id(record_id: str, chars: int) -> str:
    """A frame's SSE id: the aiRecord and how many characters of its text came so far (what
    `GET /api/chat-with-ai/{aiRecordId}/stream` resumes from, as `Last-Event-ID`)."""
    return frame_id(record_id, chars)


def content_frame(text: str, record_id: str, chars: int) -> bytes:
    """`sse("content", {"content": text}, event_id(record_id, chars))`, built without a
    json.dumps per token."""
    return (
        f'id: {record_id}:{chars}\nevent: content\ndata: {{"content":{_json_string(text)}}}\n\n'
    ).encode()


def result_frame(record: dict[str, Any], frame_id: str) -> bytes:
    return sse("result", {"aiRecord": record}, frame_id)


DONE_FRAME = sse("done", {"message": "Stream completed"})


def done_frame(frame_id: str) -> bytes:
    return f"id: {frame_id}\n".encode() + DONE_FRAME


def error_frame(failed: Failed, record_id: str | None, frame_id: str | None = None) -> bytes:
    error: dict[str, Any] = {"code": failed.code, "message": failed.message}
    if record_id:
        error["aiRecordId"] = record_id
    return sse("error", {"success": False, "error": error}, frame_id)


ReplyEvents = AsyncIterator[tuple[int, ReplyEvent | None]]


async def chat_frames(
    events: ReplyEvents,
    record_id: UUID,
    chars: int,
    record_json: Callable[[Done], Awaitable[dict[str, Any]]],
) -> AsyncIterator[bytes]:
    """The SSE frames of a reply's events; `chars`: the characters of text the client had
    before them (each frame's id tells the count after it)."""
    rid = str(record_id)
    try:
        async for _, event in events:
            if event is None:
                yield SSE_PING
            elif isinstance(event, TextDelta):
                frame = content_frame(event.text, rid, chars + len(event.text))
                chars += len(event.text)
                yield frame
            elif isinstance(event, Done):
                frame_id = event_id(rid, chars)
                result = result_frame(await record_json(event), frame_id)
                yield result + done_frame(frame_id)
            elif isinstance(event, Failed):
                yield error_frame(event, rid, event_id(rid, chars))
    except Exception:
        failed = stream_failed("chat-with-ai")
        yield error_frame(failed, rid, event_id(rid, chars))


class StreamAborted(Exception):
    """Ends a raw-text stream abnormally: the legacy API has no in-band error signal, so the
    client sees a truncated response rather than a complete-looking wrong answer."""


async def raw_text(events: ReplyEvents) -> AsyncIterator[bytes]:
    """A legacy feature's streamed reply: its text as it comes, nothing else."""
    async for _, event in events:
        if isinstance(event, TextDelta):
            yield event.text.encode()
        elif isinstance(event, Failed):
            raise StreamAborted(f"{event.code}: {event.message}")
