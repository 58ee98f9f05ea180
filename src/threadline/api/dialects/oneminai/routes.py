"""HTTP routes of the 1min.ai dialect. Each handler parses the wire request, calls one
service and encodes the answer; errors render as `{success: false, error: {...}}`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, TypeVar
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
from threadline.api.native import (
    NATIVE_ERRORS,
    error_response,
    render_native,
    validation_details,
)
from threadline.api.routing import route_class, stream_failed, streamed
from threadline.domain.entities import AiRecord, Principal
from threadline.domain.errors import InvalidRequest, NotFound, ThreadlineError, Unprocessable
from threadline.domain.events import Done, Failed, TextDelta
from threadline.domain.image_generation import IMAGE_GENERATOR
from threadline.services.chat import ChatCommand, Grounding, HistorySettings, WebSearch
from threadline.services.image_generation import ImageGenerationCommand
from threadline.services.replays import Replay, ReplayEvents, position_of
from threadline.services.runs import Run


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


@router.post("/api/conversations")
async def create_conversation(
    body: CreateConversation, principal: PrincipalDep, container: ContainerDep
) -> dict[str, Any]:
    if body.type == "CHAT_WITH_PDF" and not body.fileList:
        raise InvalidRequest("fileList is required for CHAT_WITH_PDF conversations")
    container.catalog.get(body.model)
    documents = container.documents
    limit = documents.limits.max_documents_per_conversation
    if body.fileList and len(set(body.fileList)) > limit:
        raise Unprocessable(f"fileList has {len(set(body.fileList))} files; the limit is {limit}")
    files = await documents.documents_for_files(principal, body.fileList or [])
    conversation = await container.conversations.create(
        principal, title=body.title, type=body.type, model=body.model
    )
    if files:
        await documents.attach(principal, conversation.id, files)
    links = await documents.conversation_documents(principal, conversation.id)
    return {"conversation": encode.conversation(conversation, links)}


@router.get("/api/conversations")
async def list_conversations(
    principal: PrincipalDep,
    container: ContainerDep,
    limit: Annotated[int, page_limit()] = 20,
    offset: Offset = 0,
) -> dict[str, Any]:
    page = await container.conversations.list(principal, limit=limit, offset=offset)
    files = await container.documents.documents_of_conversations(
        principal, [c.id for c in page.items]
    )
    conversations = [encode.conversation(c, files.get(c.id, ())) for c in page.items]
    return {
        "conversations": conversations,
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
    cid = _conversation_id(conversation_id)
    conversation = await container.conversations.get(principal, cid)
    page = await container.conversations.messages(principal, cid, limit=limit, offset=offset)
    links = await container.documents.conversation_documents(principal, cid)
    body = encode.conversation(conversation, links)
    body["messages"] = [encode.message(m) for m in page.items]
    body["messageCount"] = page.total
    return {"conversation": body}


@router.delete("/api/conversations/{conversation_id}")
async def delete_conversation(
    conversation_id: str, principal: PrincipalDep, container: ContainerDep
) -> dict[str, Any]:
    cid = _conversation_id(conversation_id)
    await container.conversations.delete(principal, cid)
    return {"success": True, "uuid": str(cid)}


@router.post(
    "/api/chat-with-ai",
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
    if isStreaming:
        idle = container.settings.sse_ping_seconds

        async def record_json(_: Done) -> dict[str, Any]:
            return await _record_json(run, principal, container)

        frames = _chat_frames(run.events(idle=idle), run.id, 0, record_json)
        return _sse_response(frames, run.id)
    return await _finished(run, principal, container)


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
    replays = container.replays
    if last_event_id is not None:  # an unknown aiRecord is 404 whatever the header says
        await replays.open(principal, record_id)
    position = position_of(record_id, last_event_id) if last_event_id is not None else after
    replay = await replays.open(principal, record_id, position or 0)

    async def record_json(event: Done) -> dict[str, Any]:
        return await _replayed_json(replay, event, principal, container)

    events = replays.events(replay, idle=container.settings.sse_ping_seconds)
    return _sse_response(_chat_frames(events, record_id, replay.after, record_json), record_id)


@router.get("/api/chat-with-ai/{aiRecordId}")
async def get_ai_record(
    aiRecordId: RecordIdPath, principal: PrincipalDep, container: ContainerDep
) -> dict[str, Any]:
    """The aiRecord as it is now (PENDING while its reply runs; it does not wait)."""
    record_id = _record_id(aiRecordId)
    replay = await container.replays.open(principal, record_id)
    record = await container.replays.current(replay)
    user = await container.replays.owner(replay) or await container.accounts.user(principal)
    provider = _provider(container, record.model)
    return {"aiRecord": encode.ai_record(record, user, provider)}


@router.post(
    "/api/features",
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
        return await _image_feature(body, principal, container)
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
        return StreamingResponse(_raw_text(run), media_type="text/plain; charset=utf-8")
    return await _finished(run, principal, container)


def _conversation_id(raw: str) -> UUID:
    try:
        return UUID(raw)
    except ValueError:
        raise NotFound(f"conversation {raw} not found") from None


async def _image_feature(body: FeatureRequest, principal: Principal, container: Any) -> Response:
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
    outcome = await container.image_generation.make(command)
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


async def _record_json(run: Run, principal: Principal, container: Any) -> dict[str, Any]:
    record = await run.result()
    user = run.user or await container.accounts.user(principal)  # fresh after the charge
    return encode.ai_record(record, user, _provider(container, record.model))


async def _replayed_json(
    replay: Replay, done: Done, principal: Principal, container: Any
) -> dict[str, Any]:
    record = done.record if isinstance(done.record, AiRecord) else replay.record
    user = await container.replays.owner(replay) or await container.accounts.user(principal)
    return encode.ai_record(record, user, _provider(container, record.model))


def _provider(container: Any, model: str) -> str:
    """The model's provider label; a model no longer configured is named as stored."""
    try:
        return str(container.catalog.entry(model).provider_label)
    except ThreadlineError:
        return "unknown"


async def _finished(run: Run, principal: Principal, container: Any) -> Response:
    record = await _record_json(run, principal, container)
    outcome = run.outcome
    if isinstance(outcome, Failed):
        return error_response(outcome.status, outcome.code, outcome.message)
    return JSONResponse({"aiRecord": record})


def _sse_response(frames: AsyncIterator[bytes], record_id: UUID) -> StreamingResponse:
    headers = {
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
        "X-AI-Record-Id": str(record_id),
    }
    return StreamingResponse(frames, media_type="text/event-stream", headers=headers)


async def _chat_frames(
    events: ReplayEvents,
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
                yield encode.SSE_PING
            elif isinstance(event, TextDelta):
                frame = encode.content_frame(event.text, rid, chars + len(event.text))
                chars += len(event.text)
                yield frame
            elif isinstance(event, Done):
                frame_id = encode.event_id(rid, chars)
                result = encode.result_frame(await record_json(event), frame_id)
                yield result + encode.done_frame(frame_id)
            elif isinstance(event, Failed):
                yield encode.error_frame(event, rid, encode.event_id(rid, chars))
    except Exception:
        failed = stream_failed("chat-with-ai")
        yield encode.error_frame(failed, rid, encode.event_id(rid, chars))


class StreamAborted(Exception):
    """Ends a raw-text stream abnormally: the legacy API has no in-band error signal, so the
    client sees a truncated response rather than a complete-looking wrong answer."""


async def _raw_text(run: Run) -> AsyncIterator[bytes]:
    async for _, event in run.events():
        if isinstance(event, TextDelta):
            yield event.text.encode()
        elif isinstance(event, Failed):
            raise StreamAborted(f"{event.code}: {event.message}")
