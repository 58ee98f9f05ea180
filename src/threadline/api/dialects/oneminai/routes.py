"""HTTP routes of the 1min.ai dialect. Each handler parses the wire request, calls one
service and encodes the answer; errors render as `{success: false, error: {...}}`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from uuid import UUID

from fastapi import APIRouter, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from threadline.api.bounds import Offset, page_limit
from threadline.api.deps import ContainerDep, LastEventId, PrincipalDep, ResumeAfter
from threadline.api.dialects.oneminai import encode
from threadline.api.dialects.oneminai.schemas import (
    IMAGE_FEATURE_TYPES,
    LEGACY_CHAT_TYPES,
    ChatWithAiRequest,
    CreateConversation,
    FeatureRequest,
    ImageGeneratorPrompt,
    ImageVariatorPrompt,
    LegacyChatPrompt,
    Strict,
)
from threadline.api.event_stream import EventStream
from threadline.api.idempotency import IDEMPOTENT
from threadline.api.native import (
    NATIVE_ERRORS,
    error_response,
    render_native,
    validation_details,
)
from threadline.api.routing import route_class, streamed
from threadline.api.stream_ids import position_of
from threadline.domain.entities import Principal
from threadline.domain.errors import InvalidRequest, NotFound, ThreadlineError, Unprocessable
from threadline.domain.events import Done, Failed
from threadline.domain.image_generation import IMAGE_GENERATOR
from threadline.services.chat import ChatCommand, Grounding, HistorySettings, WebSearch
from threadline.services.image_generation import ImageGenerationCommand, ImageGenerationService
from threadline.services.record_views import RecordViews
from threadline.services.runs import Run

if TYPE_CHECKING:
    from threadline.container import Container


def render(request: Request, exc: ThreadlineError | RequestValidationError) -> Response:
    """Errors inside promptObject are 422 PROMPT_OBJECT_VALIDATION_FAILED (001_*); other
    malformed requests are 400 INVALID_REQUEST."""
    if isinstance(exc, RequestValidationError):
        in_prompt = [e for e in exc.errors() if _inside_prompt_object(e.get("loc", ()))]
        if in_prompt:
            details = validation_details(
                RequestValidationError(in_prompt), strip=("body", "promptObject")
            )
            return error_response(
                422, "PROMPT_OBJECT_VALIDATION_FAILED", "Invalid prompt object", details
            )
    return render_native(request, exc)


def _inside_prompt_object(loc: tuple[object, ...]) -> bool:
    """A field *within* promptObject (a missing or non-object promptObject is a 400)."""
    return len(loc) > 2 and loc[0] == "body" and loc[1] == "promptObject"


router = APIRouter(route_class=route_class(render, NATIVE_ERRORS), tags=["1min.ai"])
P = TypeVar("P", bound=Strict)
Streaming = Annotated[bool, Query(description="Stream the reply (SSE for chat-with-ai)")]
# A str (not UUID) so a malformed one gets `_record_id`'s message; the schema says uuid.
RecordIdPath = Annotated[
    str, Path(description="the aiRecord's uuid", json_schema_extra={"format": "uuid"})
]


@router.post("/api/conversations", dependencies=[IDEMPOTENT])
async def create_conversation(
    body: CreateConversation, principal: PrincipalDep, container: ContainerDep
) -> dict[str, Any]:
    if body.type == "CHAT_WITH_PDF" and not body.fileList:
        raise InvalidRequest("fileList is required for CHAT_WITH_PDF conversations")
    filed = await container.conversation_files.create(
        principal, title=body.title, type=body.type, model=body.model, file_ids=body.fileList or []
    )
    return {"conversation": encode.conversation(filed.conversation, filed.files)}


@router.get("/api/conversations")
async def list_conversations(
    principal: PrincipalDep,
    container: ContainerDep,
    limit: Annotated[int, page_limit()] = 20,
    offset: Offset = 0,
    search: Annotated[
        str | None, Query(max_length=200, description="only titles containing this (any case)")
    ] = None,
) -> dict[str, Any]:
    """Conversations of every dialect, newest first (a member's own, an admin's org's)."""
    page = await container.conversation_files.page(
        principal, limit=limit, offset=offset, search=search or None
    )
    return {
        "conversations": [encode.conversation(c.conversation, c.files) for c in page.items],
        "total": page.total,
        "limit": page.limit,
        "offset": page.offset,
    }


@router.get("/api/conversations/{conversation_id}")
async def get_conversation(
    conversation_id: str,
    principal: PrincipalDep,
    container: ContainerDep,
    limit: Annotated[int, page_limit("messages per page")] = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    cid = conversation_id_of(conversation_id)
    detail = await container.conversation_files.detail(principal, cid, limit=limit, offset=offset)
    return {"conversation": encode.conversation_detail(detail)}


@router.delete("/api/conversations/{conversation_id}")
async def delete_conversation(
    conversation_id: str, principal: PrincipalDep, container: ContainerDep
) -> dict[str, Any]:
    cid = conversation_id_of(conversation_id)
    await container.conversations.delete(principal, cid)
    return {"success": True, "uuid": str(cid)}


@router.post(
    "/api/chat-with-ai",
    dependencies=[IDEMPOTENT],
    response_model=None,
    responses=streamed("text/event-stream", "{aiRecord}; with isStreaming: SSE", or_json=True),
)
async def chat_with_ai(
    body: ChatWithAiRequest,
    principal: PrincipalDep,
    container: ContainerDep,
    isStreaming: Streaming = False,
) -> Response:
    prompt = body.promptObject
    settings = prompt.settings
    history = settings.historySettings if settings and settings.historySettings else None
    web = settings.webSearchSettings if settings else None
    attachments = prompt.attachments
    command = ChatCommand(
        principal=principal,
        model=body.model,
        record_type=body.type,
        prompt=prompt.prompt,
        conversation_id=prompt.conversationId,
        history=HistorySettings(history.isMixed, history.historyMessageLimit)
        if history
        else HistorySettings(),
        grounding=Grounding(
            web_search=WebSearch(web.numOfSite, web.maxWord) if web and web.webSearch else None,
            with_memories=bool(settings and settings.withMemories),
            images=tuple(attachments.images) if attachments else (),
            files=tuple(attachments.files) if attachments else (),
            brand_voice_id=body.brandVoiceId,
            read_links=True,
        ),
        prompt_object=_recorded_prompt(
            prompt.model_dump(mode="json", exclude_none=True), body.brandVoiceId
        ),
        metadata=body.metadata,
    )
    run = await container.chat.reply(command)
    return await chat_response(run, principal, container, isStreaming)


async def chat_response(
    run: Run, principal: Principal, container: Container, streaming: bool
) -> Response:
    """A reply as chat-with-ai answers it: `{aiRecord}` once done, or its SSE frames."""
    views = container.record_views
    if streaming:
        idle = container.settings.sse_ping_seconds

        async def record_json(_: Done) -> dict[str, Any]:
            return encode.record_view(await views.finished(run, principal))

        frames = encode.chat_frames(run.events(idle=idle), run.id, 0, record_json)
        return _sse_response(frames, run.id)
    return await _finished(run, principal, views)


@router.get(
    "/api/chat-with-ai/{aiRecordId}/stream",
    response_model=None,
    responses=streamed("text/event-stream", "SSE: the frames not received, then result and done"),
)
async def resume_chat_stream(
    aiRecordId: RecordIdPath,
    principal: PrincipalDep,
    container: ContainerDep,
    last_event_id: LastEventId = None,
    after: ResumeAfter = None,
) -> Response:
    """A streamed reply again, from the client's position: the frames it has not received
    (live while the reply is still being produced), then `result` + `done` (or `error`)."""
    record_id = _record_id(aiRecordId)
    replays, views = container.replays, container.record_views
    position: Callable[[], int] | int | None = after
    if last_event_id is not None:  # parsed once the aiRecord is known to be the caller's
        position = partial(position_of, record_id, last_event_id)
    replay = await replays.resume(principal, record_id, position)

    async def record_json(event: Done) -> dict[str, Any]:
        return encode.record_view(await views.replayed(replay, event, principal))

    events = replays.events(replay, idle=container.settings.sse_ping_seconds)
    frames = encode.chat_frames(events, record_id, replay.after, record_json)
    return _sse_response(frames, record_id)


@router.post("/api/chat-with-ai/{aiRecordId}/stop")
async def stop_reply(
    aiRecordId: RecordIdPath, principal: PrincipalDep, container: ContainerDep
) -> dict[str, Any]:
    """End a reply that is still being produced where it is: its streams go on to `result` +
    `done` with the text so far, stored as the reply and charged as produced. `stopped`:
    whether it was still running, here or (with Redis) in a live process that owns it, to
    which the stop is sent (false: it had already ended, or no live owner is known)."""
    record_id = _record_id(aiRecordId)
    stopped = await container.replays.stop(principal, record_id)
    return {"success": True, "uuid": str(record_id), "stopped": stopped}


@router.get("/api/chat-with-ai/{aiRecordId}")
async def get_ai_record(
    aiRecordId: RecordIdPath, principal: PrincipalDep, container: ContainerDep
) -> dict[str, Any]:
    """The aiRecord as it is now (PENDING while its reply runs; it does not wait)."""
    view = await container.record_views.current(principal, _record_id(aiRecordId))
    return {"aiRecord": encode.record_view(view)}


@router.post(
    "/api/features",
    dependencies=[IDEMPOTENT],
    response_model=None,
    responses=streamed("text/plain", "{aiRecord}; with isStreaming: the raw text", or_json=True),
)
async def features(
    body: FeatureRequest,
    principal: PrincipalDep,
    container: ContainerDep,
    isStreaming: Streaming = False,
) -> Response:
    if body.type in IMAGE_FEATURE_TYPES:
        if isStreaming:  # well-formed, but an image cannot be served as a stream
            raise Unprocessable(
                f"{body.type} does not stream: call POST /api/features without isStreaming"
            )
        return await _image_feature(body, principal, container.image_generation)
    if body.type not in LEGACY_CHAT_TYPES:
        known = ", ".join((*LEGACY_CHAT_TYPES, *IMAGE_FEATURE_TYPES))
        raise InvalidRequest(f"unknown feature type {body.type!r}; supported: {known}")
    prompt = _prompt_object(LegacyChatPrompt, body.promptObject)
    conversation_id = body.conversationId or prompt.conversationId
    if body.type == "CHAT_WITH_IMAGE" and not prompt.imageList:
        raise InvalidRequest(
            "CHAT_WITH_IMAGE needs imageList: asset keys or ids (POST /api/assets) or "
            "http(s) URLs of the images to chat about"
        )
    if body.type == "CHAT_WITH_PDF" and conversation_id is None:
        raise InvalidRequest(
            "CHAT_WITH_PDF needs conversationId: a conversation created with its fileList "
            "(POST /api/conversations)"
        )
    command = ChatCommand(
        principal=principal,
        model=body.model,
        record_type=body.type,
        prompt=prompt.prompt,
        conversation_id=conversation_id,
        history=HistorySettings(is_mixed=prompt.isMixed),
        grounding=Grounding(
            web_search=WebSearch(prompt.numOfSite, prompt.maxWord) if prompt.webSearch else None,
            images=tuple(prompt.imageList),
            read_links=True,
        ),
        prompt_object=_recorded_prompt(prompt.model_dump(mode="json", exclude_none=True)),
        metadata=body.metadata,
    )
    run = await container.chat.reply(command)
    if isStreaming:
        text = encode.raw_text(run.events())
        return StreamingResponse(text, media_type="text/plain; charset=utf-8")
    return await _finished(run, principal, container.record_views)


def conversation_id_of(raw: str) -> UUID:
    try:
        return UUID(raw)
    except ValueError:
        raise NotFound(f"conversation {raw} not found") from None


async def _image_feature(
    body: FeatureRequest, principal: Principal, images: ImageGenerationService
) -> Response:
    """IMAGE_GENERATOR / IMAGE_VARIATOR: the images are made, stored as assets, and their keys
    are the aiRecord's resultObject (002_*)."""
    if body.conversationId is not None:
        raise InvalidRequest(f"conversationId does not apply to {body.type}")
    common: dict[str, Any] = {
        "principal": principal,
        "feature": body.type,
        "model": body.model,
        "metadata": body.metadata,
    }
    if body.type == IMAGE_GENERATOR:
        made = _prompt_object(ImageGeneratorPrompt, body.promptObject)
        command = ImageGenerationCommand(
            **common,
            n=made.num_outputs,
            aspect_ratio=made.aspect_ratio,
            output_format=made.output_format,
            prompt=made.prompt,
            prompt_object=made.model_dump(mode="json", exclude_unset=True),
            count_field="num_outputs",
        )
    else:
        varied = _prompt_object(ImageVariatorPrompt, body.promptObject)
        command = ImageGenerationCommand(
            **common,
            n=varied.n,
            aspect_ratio=f"{varied.aspect_width}:{varied.aspect_height}",
            output_format=varied.output_format,
            source=varied.imageUrl,
            prompt_object=varied.model_dump(mode="json", exclude_unset=True),
            ratio_field="aspect_width:aspect_height",
        )
    outcome = await images.make(command)
    return JSONResponse(
        {"aiRecord": encode.ai_record(outcome.record, outcome.user, outcome.provider)}
    )


def _record_id(raw: str) -> UUID:
    try:
        return UUID(raw)
    except ValueError:
        raise InvalidRequest(f"aiRecordId must be an aiRecord's uuid, not {raw[:64]!r}") from None


def _prompt_object(schema: type[P], raw: dict[str, Any]) -> P:
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", "promptObject", *e["loc"])} for e in exc.errors()]
        raise RequestValidationError(errors) from None


def _recorded_prompt(prompt: dict[str, Any], brand_voice_id: str | None = None) -> dict[str, Any]:
    """The aiRecord's promptObject: the request's, plus the brand voice it used (the request
    carries `brandVoiceId` beside promptObject; the record keeps it with the prompt)."""
    recorded = {**prompt, "linkContentList": [], "searchContentList": []}
    if brand_voice_id is not None:
        recorded["brandVoiceId"] = brand_voice_id
    return recorded


async def _finished(run: Run, principal: Principal, views: RecordViews) -> Response:
    view = await views.finished(run, principal)
    outcome = run.outcome
    if isinstance(outcome, Failed):
        return error_response(
            outcome.status, outcome.code, outcome.message, headers=outcome.headers
        )
    return JSONResponse({"aiRecord": encode.record_view(view)})


def _sse_response(frames: AsyncIterator[bytes], record_id: UUID) -> EventStream:
    headers = {
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
        "X-AI-Record-Id": str(record_id),
    }
    return EventStream(frames, headers)
