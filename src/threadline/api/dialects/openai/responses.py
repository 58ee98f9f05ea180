"""`/v1/responses` (OpenAI's Responses API) onto the chat engine and the one conversation
store (`services/responses.py` decides which conversation a response goes into).

A response is a chat reply: credits, limits and errors as on `/v1/chat/completions`. With
`stream`, the Responses event stream (`responses_encode.py`); with `background`, the response
is answered at once, in progress, and its run goes on (runs outlive their requests);
`GET /v1/responses/{id}?stream=true&starting_after=N` reads any stored response's stream
again from the event after N, live while it runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response

from threadline.api.deps import ContainerDep, PrincipalDep
from threadline.api.dialects.openai import encode
from threadline.api.dialects.openai import responses_encode as wire
from threadline.api.dialects.openai.responses_schemas import (
    Include,
    Order,
    ResponseCreateRequest,
    check_supported,
    conversation_ref,
    no_include,
    object_id,
    response_inputs,
)
from threadline.api.dialects.openai.schemas import OpenAIRequestError
from threadline.api.event_stream import EventStream
from threadline.api.routing import streamed
from threadline.domain.entities import AiRecord, Principal, RecordStatus
from threadline.domain.errors import NotFound, Unprocessable
from threadline.domain.events import Failed
from threadline.services.chat import ChatCommand, Grounding
from threadline.services.responses import ResponseRequest

if TYPE_CHECKING:
    from threadline.container import Container

RECORD_TYPE = "OPENAI_RESPONSE"
CONVERSATION_TYPE = "OPENAI_RESPONSES"  # a conversation made for a response of its own
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class ModelNotFound(NotFound):
    param = "model"
    error_code = "model_not_found"


def add_routes(router: APIRouter) -> None:
    stream_or_json = streamed(
        "text/event-stream", "A response; with stream: events (SSE)", or_json=True
    )
    router.add_api_route(
        "/responses",
        create_response,
        methods=["POST"],
        response_model=None,
        responses=stream_or_json,
    )
    router.add_api_route(
        "/responses/{response_id}",
        get_response,
        methods=["GET"],
        response_model=None,
        responses=stream_or_json,
    )
    router.add_api_route("/responses/{response_id}", delete_response, methods=["DELETE"])
    router.add_api_route("/responses/{response_id}/cancel", cancel_response, methods=["POST"])
    router.add_api_route("/responses/{response_id}/input_items", input_items, methods=["GET"])


def _command(body: ResponseCreateRequest, principal: Principal) -> ChatCommand:
    inputs = response_inputs(body)
    return ChatCommand(
        principal=principal,
        model=body.model,
        record_type=RECORD_TYPE,
        prompt=inputs.prompt,
        inputs=tuple(inputs.earlier),
        grounding=Grounding(images=tuple(inputs.images), files=tuple(inputs.files)),
        system=body.instructions,
        max_tokens=body.max_output_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        prompt_object=body.model_dump(mode="json", exclude_none=True),
        metadata={"user": body.user} if body.user else None,
    )


async def create_response(
    body: ResponseCreateRequest, principal: PrincipalDep, container: ContainerDep
) -> Response:
    check_supported(body)
    try:
        container.catalog.entry(body.model)
    except Unprocessable:
        raise ModelNotFound(f"The model '{body.model[:100]}' does not exist") from None
    conversation = conversation_ref(body.conversation)
    previous = body.previous_response_id
    request = ResponseRequest(
        command=_command(body, principal),
        conversation_id=object_id("conv", conversation, "conversation") if conversation else None,
        previous_id=object_id("resp", previous, "response") if previous else None,
        store=body.store is not False,
        conversation_type=CONVERSATION_TYPE,
    )
    run = await container.responses.create(request)
    resolve = partial(container.responses.file_ids, principal)
    if body.stream:
        writer = wire.EventWriter(run.record, {})
        replies = run.events(idle=container.settings.sse_ping_seconds)
        return _stream(wire.events(writer, replies, resolve=resolve))
    if body.background:
        return JSONResponse(wire.response(run.record, {}))
    record = await run.result()
    outcome = run.outcome
    if isinstance(outcome, Failed) and wire.status(record) == "failed":
        return JSONResponse(encode.failure(outcome), status_code=outcome.status)
    return JSONResponse(wire.response(record, await resolve(record)))


def _stream(frames: AsyncIterator[bytes]) -> EventStream:
    return EventStream(frames, SSE_HEADERS)


async def get_response(
    response_id: str,
    principal: PrincipalDep,
    container: ContainerDep,
    stream: bool = False,
    starting_after: Annotated[int | None, Query(ge=0)] = None,
    include: Include = None,
) -> Response:
    no_include(include)
    record_id = object_id("resp", response_id, "response")
    view = await container.responses.get(principal, record_id, RECORD_TYPE)
    if not stream:
        if starting_after is not None:
            raise OpenAIRequestError(
                "starting_after is only allowed with stream=true", param="starting_after"
            )
        return JSONResponse(wire.response(view.record, view.file_ids))
    return _stream(await _resumed(container, principal, view.record, starting_after))


async def _resumed(
    container: Container, principal: Principal, record: AiRecord, after: int | None
) -> AsyncIterator[bytes]:
    """The response's events after `after`: the characters of text the client has are the
    position of its last delta (see responses_encode), up to the text when it is finished."""
    after = -1 if after is None else after
    chars = max(0, after - (wire.PRELUDE - 1))
    if record.status is not RecordStatus.PENDING:
        chars = min(chars, len(record.result_text))
    replay = await container.replays.open(principal, record.id, chars)
    writer = wire.EventWriter(replay.record, {}, after)
    writer.chars = chars
    replies = container.replays.events(replay, idle=container.settings.sse_ping_seconds)
    resolve = partial(container.responses.file_ids, principal)
    return wire.events(writer, replies, resolve=resolve)


async def delete_response(
    response_id: str, principal: PrincipalDep, container: ContainerDep
) -> dict[str, Any]:
    record_id = object_id("resp", response_id, "response")
    await container.responses.delete(principal, record_id, RECORD_TYPE)
    return wire.deleted("response", wire.response_id(record_id))


async def cancel_response(
    response_id: str, principal: PrincipalDep, container: ContainerDep
) -> dict[str, Any]:
    record_id = object_id("resp", response_id, "response")
    view = await container.responses.cancel(principal, record_id, RECORD_TYPE)
    return wire.response(view.record, view.file_ids)


async def input_items(
    response_id: str,
    principal: PrincipalDep,
    container: ContainerDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Order = "desc",
    include: Include = None,
) -> dict[str, Any]:
    no_include(include)
    record_id = object_id("resp", response_id, "response")
    _, messages = await container.responses.input_items(principal, record_id, RECORD_TYPE)
    ordered = list(reversed(messages)) if order == "desc" else list(messages)
    if after is not None:
        ids = [wire.item_id(m.id) for m in ordered]
        if after not in ids:
            raise NotFound(f"after: no input item {after[:100]!r} in this response")
        ordered = ordered[ids.index(after) + 1 :]
    return wire.item_list(ordered[:limit], len(ordered) > limit)
