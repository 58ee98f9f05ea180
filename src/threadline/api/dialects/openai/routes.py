"""HTTP routes of the OpenAI-compatible dialect, under `/v1`.

The caller's Threadline key is the Bearer token, so `OpenAI(base_url=".../v1", api_key=key)`
works as is. A completion is an ordinary chat request to the core (the client sends the
whole exchange in `messages`; nothing is stored as a conversation), so credits and rate limits
apply as on every other dialect. Every error, including 401/403/404/429, is in OpenAI's shape.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from threadline.api.deps import ContainerDep, PrincipalDep
from threadline.api.dialects.openai import conversations, encode, image_generation, responses
from threadline.api.dialects.openai.schemas import (
    ChatCompletionRequest,
    chat_messages,
    check_supported,
    image_urls,
    stop_sequences,
)
from threadline.api.event_stream import EventStream
from threadline.api.idempotency import IDEMPOTENT
from threadline.api.routing import error_responses, route_class, streamed
from threadline.domain.errors import (
    KeyReused,
    NotFound,
    ThreadlineError,
    Unprocessable,
)
from threadline.domain.events import Done, Failed
from threadline.domain.ports import ChatMessage
from threadline.services.catalog import CatalogModel, ModelCatalog
from threadline.services.chat import ChatCommand, Grounding

RECORD_TYPE = "OPENAI_CHAT_COMPLETION"
_CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded"}
error_type = encode.error_type


def render(_request: Request, exc: ThreadlineError | RequestValidationError) -> Response:
    if isinstance(exc, RequestValidationError):
        return JSONResponse(_validation_error(exc), status_code=400)
    status = 400 if exc.status == 422 and not isinstance(exc, KeyReused) else exc.status
    code = getattr(exc, "error_code", None) or _CODES.get(status)
    if (code is None and status in (403, 422)) or status >= 500:
        code = exc.code.lower()
    body = encode.error_body(exc.message, error_type(status), getattr(exc, "param", None), code)
    headers = None if exc.retry_after is None else {"Retry-After": str(exc.retry_after)}
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_error(exc: RequestValidationError) -> dict[str, Any]:
    """The first problem, worded as OpenAI words it."""
    error = exc.errors()[0]
    param = _param([p for p in error.get("loc", ()) if p != "body"])
    kind = error.get("type", "")
    if kind == "json_invalid" or param is None:
        message = (
            "We could not parse the JSON body of your request: send a JSON object with "
            "Content-Type: application/json"
        )
        position = (error.get("ctx") or {}).get("position") if kind == "json_invalid" else None
        if position:
            message += f" ({error['ctx'].get('error', 'invalid JSON')} at {position})"
        return encode.error_body(message, "invalid_request_error")
    if kind == "missing":
        message, code = f"Missing required parameter: '{param}'.", "missing_required_parameter"
    elif kind == "extra_forbidden":
        message, code = f"Unrecognized request argument supplied: {param}", "unknown_parameter"
    else:
        message, code = (
            f"Invalid value for '{param}': {error.get('msg', 'invalid')}.",
            "invalid_value",
        )
    return encode.error_body(message, "invalid_request_error", param, code)


def _param(loc: list[Any]) -> str | None:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or None


class ModelNotFound(NotFound):
    param = "model"
    error_code = "model_not_found"


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    """`{"error": {"message", "type", "param", "code"}}`"""

    error: OpenAIErrorDetail


ERRORS = error_responses(OpenAIError, (400, 401, 403, 404, 413, 429, 500, 502, 503, 504))
router = APIRouter(prefix="/v1", route_class=route_class(render, ERRORS), tags=["OpenAI"])
image_generation.add_routes(router)
responses.add_routes(router)
conversations.add_routes(router)


def _entry(catalog: ModelCatalog, name: str) -> CatalogModel:
    try:
        return catalog.entry(name)
    except Unprocessable:
        available = ", ".join(m.name for m in catalog.list())
        raise ModelNotFound(
            f"The model '{name}' does not exist; available models: {available}"
        ) from None


@router.get("/models")
async def list_models(_: PrincipalDep, container: ContainerDep) -> dict[str, Any]:
    catalog = container.catalog
    models = [encode.model(m) for m in catalog.list()]
    aliases = [encode.model(catalog.entry(a), alias=a) for a in sorted(catalog.aliases)]
    return {"object": "list", "data": models + aliases}


@router.get("/models/{model:path}")
async def get_model(model: str, _: PrincipalDep, container: ContainerDep) -> dict[str, Any]:
    entry = _entry(container.catalog, model)
    return encode.model(entry, alias=model if model != entry.name else None)


IN_THREAD_MESSAGES = 500


def _translated(
    body: ChatCompletionRequest,
) -> tuple[tuple[ChatMessage, ...], tuple[str, ...], dict[str, Any]]:
    """The core messages, the image URLs and the request as recorded."""
    recorded = body.model_dump(mode="json", exclude_none=True)
    return chat_messages(body), image_urls(body), recorded


@router.post(
    "/chat/completions",
    dependencies=[IDEMPOTENT],
    response_model=None,
    responses=streamed(
        "text/event-stream", "A completion; with stream: chunks (SSE)", or_json=True
    ),
)
async def chat_completions(
    body: ChatCompletionRequest, principal: PrincipalDep, container: ContainerDep
) -> Response:
    check_supported(body)
    _entry(container.catalog, body.model)
    if len(body.messages) > IN_THREAD_MESSAGES:  # a long list: translated off the event loop
        messages, images, recorded = await asyncio.to_thread(_translated, body)
    else:
        messages, images, recorded = _translated(body)
    command = ChatCommand(
        principal=principal,
        model=body.model,
        record_type=RECORD_TYPE,
        messages=messages,
        grounding=Grounding(images=images),
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=stop_sequences(body),
        prompt_object=recorded,
        metadata={"user": body.user} if body.user else None,
    )
    run = await container.chat.reply(command)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = run.events(idle=container.settings.sse_ping_seconds)
        frames = encode.chunks(lambda: run.record, events, include_usage)
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return EventStream(frames, headers)
    record = await run.result()
    outcome = run.outcome
    if isinstance(outcome, Failed):
        return JSONResponse(
            encode.failure(outcome), status_code=outcome.status, headers=outcome.headers
        )
    finish = outcome.finish_reason if isinstance(outcome, Done) else "stop"
    return JSONResponse(encode.completion(record, finish))
