"""HTTP routes of AI Hub Converse (004_*): conversations over uploaded documents.

Every endpoint is served under `/api/v2/conversations` (AI Hub's `API_ROOT` ends in `/api`,
so the official SDK with `api_root=<server>/api` lands here) and under `/v2/conversations`
(for an `API_ROOT` without the `/api`). A caller authenticates with
`Authorization: Bearer <key>`; the optional `IB-Context` header (and, on create, the `org`
and `workspace` fields) must name the caller's own context (services/contexts.py).

Errors are AI Hub's `{"message": "<what is wrong>"}`: malformed input is 400, an unknown
conversation or document (or one of another org) is 404, a setting this server cannot
honour is 422, a model failure 502/504.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Body, Depends, Form, Header, Path, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from threadline.api.bounds import Offset, page_limit, store_int
from threadline.api.deps import ContainerDep, PrincipalDep
from threadline.api.dialects.converse import encode
from threadline.api.dialects.converse.paths import is_upload_path
from threadline.api.dialects.converse.schemas import (
    AddDocumentsForm,
    CreateConversationForm,
    DeleteDocumentsRequest,
    PromptRequest,
    SortKey,
)
from threadline.api.idempotency import IDEMPOTENT
from threadline.api.native import validation_details
from threadline.api.routing import error_responses, merged, route_class
from threadline.domain.entities import Principal
from threadline.domain.errors import (
    InvalidRequest,
    NotFound,
    ThreadlineError,
    Unprocessable,
)
from threadline.domain.events import Failed
from threadline.services.contexts import caller_context
from threadline.services.conversation_files import DocumentQuestion
from threadline.services.documents import Upload

CONVERSATION_TYPE = "CHAT_WITH_PDF"  # a conversation over documents, in 1min.ai's terms too
RECORD_TYPE = "CONVERSE"
PREFIXES = ("/api/v2/conversations", "/v2/conversations")
MULTIPART = "multipart/form-data"
FORM_TYPES = (MULTIPART, "application/x-www-form-urlencoded")
FORM_HINT = (
    "send the request as multipart/form-data, each file as a part named 'files' "
    "(curl -F files=@report.pdf)"
)


class ConverseError(BaseModel):
    """`{"message": "<what is wrong>"}`"""

    message: str


ERRORS = error_responses(ConverseError, (400, 401, 403, 404, 413, 422, 429, 500, 502, 503, 504))


def render(request: Request, exc: ThreadlineError | RequestValidationError) -> Response:
    """`{"message": ...}` with the error's status; every validation problem is one 400."""
    if isinstance(exc, RequestValidationError):
        message = "; ".join(e["message"] for e in validation_details(exc, strip=("body",)))
        if _not_a_form_upload(request):
            message = f"{message}; {FORM_HINT}"
        return JSONResponse(encode.error(message or "invalid request"), status_code=400)
    headers = None if exc.retry_after is None else {"Retry-After": str(exc.retry_after)}
    return JSONResponse(encode.error(exc.message), status_code=exc.status, headers=headers)


def _not_a_form_upload(request: Request) -> bool:
    content_type = request.headers.get("content-type", "")
    return (
        request.method == "POST"
        and is_upload_path(request.url.path)
        and not content_type.startswith(FORM_TYPES)
    )


# ---- who is asking, in which context -------------------------------------------------

IbContext = Annotated[
    str | None,
    Header(
        alias="IB-Context",
        description="Your organization (its id or name) or your own account (user id or name)",
    ),
]


async def context_caller(principal: PrincipalDep, ib_context: IbContext = None) -> Principal:
    return caller_context(principal, ib_context)


Caller = Annotated[Principal, Depends(context_caller)]
ConversationId = Annotated[str, Path(description="The conversation ID")]


def _conversation_id(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise NotFound(f"conversation {value[:100]} not found") from None


def _uploads(files: list[UploadFile]) -> list[Upload]:
    return [Upload(f.filename or "file", f.content_type, f.file) for f in files]


# ---- conversations --------------------------------------------------------------------


async def create_conversation(
    body: Annotated[CreateConversationForm, Form(media_type=MULTIPART)],
    principal: PrincipalDep,
    container: ContainerDep,
    ib_context: IbContext = None,
) -> JSONResponse:
    """Create a conversation and upload its first files (optional). Files that fail are
    listed under `upload_status.failure` with the reason; the conversation is created."""
    caller = caller_context(principal, ib_context, body.org, body.workspace)
    if not body.name.strip():
        raise InvalidRequest("name must not be empty")
    if body.enable_object_detection:
        raise Unprocessable(
            "enable_object_detection is not supported by this server: documents are read "
            "as text (with OCR for scanned pages), tables and checkboxes are not detected "
            "as objects; leave it out or send false"
        )
    conversation, outcomes = await container.conversation_files.create_with_uploads(
        caller,
        title=body.name,
        type=CONVERSATION_TYPE,
        description=body.description,
        uploads=_uploads(body.files),
    )
    return JSONResponse(encode.created(conversation, outcomes), status_code=201)


async def list_conversations(
    caller: Caller,
    container: ContainerDep,
    sort_key: Annotated[SortKey, Query(description="created_at or updated_at")] = "created_at",
    sort_is_ascending: Annotated[bool, Query(description="oldest first")] = False,
    search_string: Annotated[
        str | None, Query(description="only conversations whose name or description has it")
    ] = None,
    limit: Annotated[
        int | None, page_limit("at most this many (default and cap: page_size_max)")
    ] = None,
    offset: Offset = 0,
) -> JSONResponse:
    """Your conversations (an admin's: the org's), newest first unless asked otherwise.
    `X-Total-Count` tells how many match in all; page with `limit` and `offset`."""
    conversations = container.conversations
    page = await conversations.list(
        caller,
        limit=conversations.page_max if limit is None else limit,
        offset=offset,
        search=search_string or None,
        sort_key=sort_key,
        ascending=sort_is_ascending,
    )
    return JSONResponse(
        {"conversations": [encode.summary(c) for c in page.items]},
        headers={"X-Total-Count": str(page.total)},
    )


async def get_conversation(
    conversation_id: ConversationId, caller: Caller, container: ContainerDep
) -> dict[str, Any]:
    filed = await container.conversation_files.get(caller, _conversation_id(conversation_id))
    return encode.info(filed.conversation, filed.documents)


async def update_conversation(
    conversation_id: ConversationId,
    caller: Caller,
    container: ContainerDep,
    name: Annotated[str | None, Query(description="the new name")] = None,
    description: Annotated[str | None, Query(description="the new description")] = None,
) -> Response:
    cid = _conversation_id(conversation_id)
    await container.conversation_files.edit(caller, cid, title=name, description=description)
    return Response(status_code=204)


async def delete_conversation(
    conversation_id: ConversationId, caller: Caller, container: ContainerDep
) -> Response:
    """Delete the conversation, its messages and its documents (files, text, index)."""
    await container.conversation_files.delete(caller, _conversation_id(conversation_id))
    return Response(status_code=204)


# ---- prompts ----------------------------------------------------------------------------


async def converse(
    conversation_id: ConversationId,
    body: PromptRequest,
    caller: Caller,
    container: ContainerDep,
) -> Response:
    """Answer a question from one document's excerpts (retrieved for the question). Waits
    for the document's processing to end (up to `documents.ready_wait_seconds`)."""
    run = await container.conversation_files.ask(
        caller,
        _conversation_id(conversation_id),
        DocumentQuestion(
            document_id=body.document_ids[0],
            question=body.question,
            advanced=body.mode == "advanced",
            record_type=RECORD_TYPE,
            prompt_object=body.model_dump(),
        ),
    )
    record = await run.result()
    if isinstance(run.outcome, Failed):
        failed = run.outcome
        return JSONResponse(
            encode.error(failed.message), status_code=failed.status, headers=failed.headers
        )
    return JSONResponse(encode.prompt(record))


# ---- documents ------------------------------------------------------------------------


async def add_documents(
    conversation_id: ConversationId,
    body: Annotated[AddDocumentsForm, Form(media_type=MULTIPART)],
    caller: Caller,
    container: ContainerDep,
) -> JSONResponse:
    """201 with each file's outcome; 400 (same body) when every file failed."""
    outcomes = await container.conversation_files.add_uploads(
        caller,
        _conversation_id(conversation_id),
        _uploads(body.files),
        process=body.process_files,
    )
    failed = all(o.reason is not None for o in outcomes)
    return JSONResponse(
        {"upload_status": encode.upload_status(outcomes)}, status_code=400 if failed else 201
    )


async def delete_documents(
    conversation_id: ConversationId,
    caller: Caller,
    container: ContainerDep,
    ids: Annotated[
        list[str] | None, Query(description="document ids, comma-separated (as the SDK sends)")
    ] = None,
    body: Annotated[DeleteDocumentsRequest | None, Body()] = None,
) -> Response:
    """Delete documents (their files, text and index) from the conversation. The ids come
    in a JSON body `{"ids": [...]}` or in the query (`?ids=1,2`), not both. An id not in the
    conversation is 404 and nothing is deleted."""
    cid = _conversation_id(conversation_id)
    # read once the conversation is known to be the caller's (an unknown one is 404 first)
    document_ids = partial(_document_ids, ids, body)
    await container.conversation_files.delete_documents(caller, cid, document_ids)
    return Response(status_code=204)


def _document_ids(ids: list[str] | None, body: DeleteDocumentsRequest | None) -> list[int]:
    if ids is not None and body is not None:
        raise InvalidRequest("send ids in the JSON body or in the query string, not both")
    if ids is None and body is None:
        raise InvalidRequest('ids is required: send {"ids": [<DOCUMENT-ID>, ...]}')
    return body.ids if body is not None else _query_ids(ids or [])


def _query_ids(values: list[str]) -> list[int]:
    parts = [part.strip() for value in values for part in value.split(",") if part.strip()]
    ids = [store_int(part) for part in parts]
    bad = [part[:40] for part, value in zip(parts, ids, strict=True) if value is None]
    if bad:
        raise InvalidRequest(f"ids must be integers (got {', '.join(bad)})")
    if not parts:
        raise InvalidRequest("ids must list at least one document id")
    return [value for value in ids if value is not None]


async def document_metadata(
    conversation_id: ConversationId,
    document_id: Annotated[str, Path(description="The document ID (an integer)")],
    caller: Caller,
    container: ContainerDep,
) -> dict[str, Any]:
    """The document's pages (size, rotation, image-only or not); empty while processing."""
    cid = _conversation_id(conversation_id)
    number = store_int(document_id)
    if number is None:
        raise NotFound(f"document {document_id[:100]} not found in conversation {cid}")
    return encode.metadata(await container.conversation_files.document(caller, cid, number))


# ---- the router ---------------------------------------------------------------------------


def _routes(prefix: str, *, in_schema: bool) -> APIRouter:
    r = APIRouter(
        prefix=prefix,
        route_class=route_class(render, ERRORS),
        tags=["AI Hub Converse"],
        include_in_schema=in_schema,
    )
    add = r.add_api_route
    once = [IDEMPOTENT]  # creates or charges: Idempotency-Key honoured
    add(
        "",
        create_conversation,
        methods=["POST"],
        status_code=201,
        response_model=None,
        dependencies=once,
    )
    add("", list_conversations, methods=["GET"], response_model=None)
    add("/{conversation_id}", get_conversation, methods=["GET"])
    add("/{conversation_id}", update_conversation, methods=["PUT"], status_code=204)
    add("/{conversation_id}", delete_conversation, methods=["DELETE"], status_code=204)
    add(
        "/{conversation_id}/prompts",
        converse,
        methods=["POST"],
        response_model=None,
        dependencies=once,
    )
    add(
        "/{conversation_id}/documents",
        add_documents,
        methods=["POST"],
        status_code=201,
        response_model=None,
        dependencies=once,
    )
    add("/{conversation_id}/documents", delete_documents, methods=["DELETE"], status_code=204)
    add("/{conversation_id}/documents/{document_id}", document_metadata, methods=["GET"])
    return r


router = merged(_routes(PREFIXES[0], in_schema=True), _routes(PREFIXES[1], in_schema=False))
