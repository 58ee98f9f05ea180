"""HTTP routes of the Conversation Service dialect (003_*), under `/api/conversation`.

Every endpoint takes the caller's Bearer key and an `org_id` query parameter, which must be the
caller's own org (the `teamId` of `GET /api/me`): another org's id is 404 with no data, a
missing or malformed one is 400. Errors are `{"detail": "<what is wrong>", "code": "<CODE>"}`
(plus `errors: [{field, message}]` for invalid input), with the status codes 003_* lists.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from threadline.api.bounds import JSON_INT_MAX, Offset, page_limit
from threadline.api.deps import ContainerDep, LastEventId, PrincipalDep, ResumeAfter
from threadline.api.dialects.sessions import encode
from threadline.api.dialects.sessions.schemas import CreateConversation, CreateSession, StreamChat
from threadline.api.event_stream import EventStream
from threadline.api.idempotency import IDEMPOTENT
from threadline.api.native import validation_details
from threadline.api.routing import error_responses, route_class, streamed
from threadline.api.stream_ids import position_of
from threadline.domain.entities import Principal
from threadline.domain.errors import KeyReused, NotFound, ThreadlineError
from threadline.services.sessions import Exchange

MESSAGES_DEFAULT_LIMIT = 20


def render(_request: Request, exc: ThreadlineError | RequestValidationError) -> Response:
    """`{"detail", "code"[, "errors"]}`. 003_* lists no 422: "cannot be served" requests
    (e.g. a session whose model is no longer configured) are 400 here."""
    if isinstance(exc, RequestValidationError):
        errors = validation_details(exc, strip=("body", "query"))
        detail = "; ".join(e["message"] for e in errors) or "invalid request"
        body = {"detail": detail, "code": "INVALID_REQUEST", "errors": errors}
        return JSONResponse(body, status_code=400)
    unservable = exc.status == 422 and not isinstance(exc, KeyReused)
    status, code = (400, "INVALID_REQUEST") if unservable else (exc.status, exc.code)
    headers = None if exc.retry_after is None else {"Retry-After": str(exc.retry_after)}
    return JSONResponse({"detail": exc.message, "code": code}, status_code=status, headers=headers)


class FieldProblem(BaseModel):
    field: str
    message: str


class SessionsError(BaseModel):
    """`{"detail", "code"[, "errors"]}`"""

    detail: str
    code: str
    errors: list[FieldProblem] | None = None


ERRORS = error_responses(SessionsError, (400, 401, 403, 404, 413, 429, 500, 502, 503, 504))
router = APIRouter(
    prefix="/api/conversation",
    route_class=route_class(render, ERRORS),
    tags=["Conversation Service"],
)


async def org_caller(
    principal: PrincipalDep,
    org_id: Annotated[UUID, Query(description="Your org id (`teamId` in GET /api/me)")],
) -> Principal:
    """The authenticated caller, acting in the org named by `org_id` (their own only)."""
    if org_id != principal.org_id:
        raise NotFound(f"organization {org_id} not found")
    return principal


Caller = Annotated[Principal, Depends(org_caller)]
ConversationQuery = Annotated[UUID, Query(description="Conversation ID")]


@router.post("/create", dependencies=[IDEMPOTENT])
async def create_conversation(
    body: CreateConversation, caller: Caller, container: ContainerDep
) -> dict[str, Any]:
    conversation = await container.sessions.create_conversation(
        caller, title=body.title, is_archived=body.is_archived
    )
    return encode.conversation(conversation)


@router.post("/create_session", dependencies=[IDEMPOTENT])
async def create_session(
    body: CreateSession, caller: Caller, container: ContainerDep
) -> dict[str, Any]:
    """The conversation's session for the model; asking again for the same model returns
    the existing session."""
    session, _created = await container.sessions.create(caller, body.conversation_id, body.model_id)
    return encode.session(session)


@router.post(
    "/stream_chat",
    dependencies=[IDEMPOTENT],
    response_model=None,
    responses=streamed("text/event-stream", "SSE: start, content..., end (or error)"),
)
async def stream_chat(body: StreamChat, caller: Caller, container: ContainerDep) -> Response:
    sessions = container.sessions
    exchange = await sessions.send(caller, body.chat_session_id, body.message)
    assert exchange.run is not None
    events = exchange.run.events(idle=container.settings.sse_ping_seconds)
    settle = partial(sessions.settled, caller)
    return _sse_response(encode.stream_frames(exchange, events, 0, settle, start=True), exchange)


@router.get(
    "/stream_chat/resume",
    response_model=None,
    responses=streamed("text/event-stream", "SSE: the frames not received, then end (or error)"),
)
async def resume_stream_chat(
    caller: Caller,
    container: ContainerDep,
    ai_record_id: Annotated[
        UUID, Query(description="the stream's id: X-AI-Record-Id, or its frames' id prefix")
    ],
    last_event_id: LastEventId = None,
    after: ResumeAfter = None,
) -> Response:
    """A `stream_chat` stream again, from the client's position: the frames it has not
    received (live while the reply runs), then `end` (or `error`). With no position at all
    (neither Last-Event-ID nor `after`) it starts over, with `start`."""
    sessions = container.sessions
    position: Callable[[], int] | int | None = after
    if last_event_id is not None:  # parsed once the stream is known to be the caller's
        position = partial(position_of, ai_record_id, last_event_id)
    resumed = await sessions.resume(
        caller, ai_record_id, position, idle=container.settings.sse_ping_seconds
    )
    settle = partial(sessions.settled, caller)
    frames = encode.stream_frames(
        resumed.exchange,
        resumed.events,
        resumed.after,
        settle,
        start=after is None and last_event_id is None,
    )
    return _sse_response(frames, resumed.exchange)


@router.get("/list", response_model=None)
async def list_conversations(
    caller: Caller,
    container: ContainerDep,
    limit: Annotated[int | None, page_limit("at most this many (default: the cap)")] = None,
    offset: Offset = 0,
) -> Response:
    """The caller's conversations (an admin's: the org's), most recently active first.
    `X-Total-Count` tells how many there are in all."""
    page = await container.sessions.list_conversations(
        caller, limit=container.sessions.page_max if limit is None else limit, offset=offset
    )
    return JSONResponse(
        [encode.conversation(c) for c in page.items], headers={"X-Total-Count": str(page.total)}
    )


@router.get("/get_with_sessions")
async def get_with_sessions(
    conversation_id: ConversationQuery, caller: Caller, container: ContainerDep
) -> dict[str, Any]:
    conversation, sessions = await container.sessions.conversation_with_sessions(
        caller, conversation_id
    )
    return encode.with_sessions(conversation, sessions)


@router.get("/messages")
async def messages(
    conversation_id: ConversationQuery,
    caller: Caller,
    container: ContainerDep,
    limit: Annotated[int, page_limit()] = MESSAGES_DEFAULT_LIMIT,
    offset: Annotated[
        int, Query(ge=0, le=JSON_INT_MAX, description="skip this many, oldest first")
    ] = 0,
) -> dict[str, Any]:
    page = await container.sessions.messages(caller, conversation_id, limit=limit, offset=offset)
    return encode.messages_page(page)


def _sse_response(frames: AsyncIterator[bytes], exchange: Exchange) -> EventStream:
    headers = {
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
        "X-AI-Record-Id": str(exchange.record_id),
    }
    return EventStream(frames, headers)
