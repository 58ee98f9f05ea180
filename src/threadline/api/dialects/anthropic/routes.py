"""HTTP routes of Anthropic's Messages API: `POST /v1/messages` and
`POST /v1/messages/count_tokens`.

The caller's Threadline key is the `x-api-key` (or any header Threadline takes), so
`Anthropic(base_url=<server>, api_key=key)` works as is; `anthropic-version` is accepted
whatever its value. Any configured chat model answers (the upstream stays
OpenAI-compatible). A message is an ordinary chat request to the core, stored as an AI
record (type ANTHROPIC_MESSAGE) with no conversation, as `/v1/chat/completions` stores its
completions, under the same credits and rate limits. With Threadline's `conversation`
extension (a body field, as OpenAI's Responses API names it) the request continues that
stored conversation instead (services/conversation_turns.py). Every error, including
401/403/404/429 and the router's own 404/405 under `/v1/messages`, is in Anthropic's shape.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from threadline.api.deps import ContainerDep, PrincipalDep
from threadline.api.dialects.anthropic import encode
from threadline.api.dialects.anthropic.schemas import (
    CountTokensRequest,
    MessagesRequest,
    chat_messages,
    check_supported,
    conversation_turn,
    image_sources,
    system_text,
)
from threadline.api.event_stream import EventStream
from threadline.api.routing import error_responses, route_class, streamed
from threadline.domain.entities import Principal
from threadline.domain.errors import NotFound, ThreadlineError, Unprocessable
from threadline.domain.events import Done, Failed
from threadline.services.catalog import ModelCatalog
from threadline.services.chat import ChatCommand, Grounding

PREFIX = "/v1/messages"
RECORD_TYPE = "ANTHROPIC_MESSAGE"


def render(_request: Request, exc: ThreadlineError | RequestValidationError) -> Response:
    if isinstance(exc, RequestValidationError):
        return JSONResponse(encode.error_body(_validation_message(exc), 400), status_code=400)
    status = 400 if exc.status == 422 else exc.status
    headers = None if exc.retry_after is None else {"retry-after": str(exc.retry_after)}
    return JSONResponse(encode.error_body(exc.message, status), status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    """The first problem, as Anthropic words it: `<field.path>: <what is wrong>`."""
    error = exc.errors()[0]
    if error.get("type") == "json_invalid":
        position = (error.get("ctx") or {}).get("position")
        return "There was an issue with your request body: invalid JSON" + (
            f" at {position}" if position else ""
        )
    where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
    message = str(error.get("msg", "invalid"))
    return f"{where}: {message}" if where else message


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicError(BaseModel):
    """`{"type": "error", "error": {"type", "message"}}`"""

    type: str = "error"
    error: AnthropicErrorDetail


ERRORS = error_responses(AnthropicError, (400, 401, 403, 404, 413, 429, 500, 502, 503, 504))
router = APIRouter(
    prefix=PREFIX, route_class=route_class(render, ERRORS), tags=["Anthropic Messages"]
)


def _known_model(catalog: ModelCatalog, name: str) -> None:
    try:
        catalog.get(name)
    except Unprocessable as exc:
        raise NotFound(f"model: {exc.message}") from None


def _command(body: CountTokensRequest, principal: Principal) -> ChatCommand:
    check_supported(body)
    messages = chat_messages(body)
    if not isinstance(body, MessagesRequest):
        system = system_text(body)
        return ChatCommand(principal, body.model, RECORD_TYPE, messages=messages, system=system)
    metadata = body.metadata.model_dump(exclude_none=True) if body.metadata else None
    return ChatCommand(
        principal=principal,
        model=body.model,
        record_type=RECORD_TYPE,
        messages=messages,
        system=system_text(body),
        grounding=Grounding(images=image_sources(body)),
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        stop=tuple(body.stop_sequences or ()),
        prompt_object=body.model_dump(mode="json", exclude_none=True),
        metadata=metadata or None,
    )


@router.post(
    "",
    response_model=None,
    responses=streamed(
        "text/event-stream", "A message; with stream: its events (SSE)", or_json=True
    ),
)
async def create_message(
    body: MessagesRequest, principal: PrincipalDep, container: ContainerDep
) -> Response:
    _known_model(container.catalog, body.model)
    conversation = conversation_turn(body)
    command = _command(body, principal)
    if conversation is None:
        run = await container.chat.reply(command)
    else:
        run = await container.conversation_turns.reply(command, conversation)
    if body.stream:
        replies = run.events(idle=container.settings.sse_ping_seconds)
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        frames = encode.events(run.record, replies)
        return EventStream(frames, headers)
    record = await run.result()
    outcome = run.outcome
    if isinstance(outcome, Failed):
        return JSONResponse(encode.failure(outcome), status_code=outcome.status)
    return JSONResponse(encode.message(record, outcome if isinstance(outcome, Done) else Done()))


@router.post("/count_tokens")
async def count_tokens(
    body: CountTokensRequest, principal: PrincipalDep, container: ContainerDep
) -> dict[str, Any]:
    """The input tokens the messages and system text come to (estimated as credit
    reservations estimate them: about four characters a token); with `conversation`, the
    conversation's history that the reply would read counts too."""
    _known_model(container.catalog, body.model)
    conversation = conversation_turn(body)
    command = _command(body, principal)
    if conversation is None:
        return encode.token_count(container.chat.count_tokens(command))
    turns = container.conversation_turns
    return encode.token_count(await turns.count_tokens(command, conversation))
