"""1min.ai-style routes for conversations that branch (Threadline's extension of the
Conversation API): the message tree, a reply regenerated, a prompt edited, the head moved.
Regenerate and edit answer as `/api/chat-with-ai` does (JSON `{aiRecord}`, or its SSE frames
with `?isStreaming=true`); errors in the dialect's `{success: false, error}` shape."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter
from pydantic import Field

from threadline.api.deps import ContainerDep, PrincipalDep
from threadline.api.dialects.oneminai import encode
from threadline.api.dialects.oneminai.routes import (
    Streaming,
    chat_response,
    conversation_id_of,
    render,
)
from threadline.api.dialects.oneminai.schemas import Strict
from threadline.api.native import NATIVE_ERRORS
from threadline.api.routing import route_class, streamed
from threadline.domain.errors import NotFound
from threadline.services.branches import ConversationTree

RECORD_TYPE = "UNIFY_CHAT_WITH_AI"
router = APIRouter(route_class=route_class(render, NATIVE_ERRORS), tags=["1min.ai"])
BASE = "/api/conversations/{conversation_id}"
REPLY = streamed("text/event-stream", "{aiRecord}; with isStreaming: SSE", or_json=True)


class Regenerate(Strict):
    model: str | None = Field(None, description="another model (the reply's own by default)")


class Edit(Strict):
    prompt: str = Field(min_length=1)
    model: str | None = Field(None, description="another model (the prompt's own by default)")


class Head(Strict):
    messageId: str


def _message_id(raw: str) -> UUID:
    try:
        return UUID(raw)
    except ValueError:
        raise NotFound(f"message {raw[:64]} not found") from None


def _tree(tree: ConversationTree) -> dict[str, Any]:
    listed = [
        {
            **encode.message(m),
            "parentId": str(m.parent_id) if m.parent_id else None,
            "onCurrentBranch": m.id in tree.branch,
        }
        for m in tree.messages
    ]
    head = str(tree.head_id) if tree.head_id else None
    return {"conversationId": str(tree.conversation_id), "headId": head, "messages": listed}


@router.get(f"{BASE}/tree")
async def conversation_tree(
    conversation_id: str, principal: PrincipalDep, container: ContainerDep
) -> dict[str, Any]:
    """Every message with its `parentId`, and whether it is on the current branch."""
    tree = await container.branches.tree(principal, conversation_id_of(conversation_id))
    return _tree(tree)


@router.post(f"{BASE}/messages/{{message_id}}/regenerate", response_model=None, responses=REPLY)
async def regenerate(
    conversation_id: str,
    message_id: str,
    principal: PrincipalDep,
    container: ContainerDep,
    body: Regenerate | None = None,
    isStreaming: Streaming = False,
) -> Any:
    """A new reply beside the assistant reply `message_id` (a sibling), which becomes the head."""
    run = await container.branches.regenerate(
        principal,
        conversation_id_of(conversation_id),
        _message_id(message_id),
        model=body.model if body else None,
        record_type=RECORD_TYPE,
    )
    return await chat_response(run, principal, container, isStreaming)


@router.post(f"{BASE}/messages/{{message_id}}/edit", response_model=None, responses=REPLY)
async def edit(
    conversation_id: str,
    message_id: str,
    body: Edit,
    principal: PrincipalDep,
    container: ContainerDep,
    isStreaming: Streaming = False,
) -> Any:
    """`prompt` beside the user message `message_id` (a sibling), answered; the new reply
    becomes the head."""
    run = await container.branches.edit(
        principal,
        conversation_id_of(conversation_id),
        _message_id(message_id),
        body.prompt,
        model=body.model,
        record_type=RECORD_TYPE,
    )
    return await chat_response(run, principal, container, isStreaming)


@router.put(f"{BASE}/head")
async def set_head(
    conversation_id: str, body: Head, principal: PrincipalDep, container: ContainerDep
) -> dict[str, Any]:
    """Later messages, in every dialect, continue from this message."""
    cid, head = conversation_id_of(conversation_id), _message_id(body.messageId)
    await container.branches.set_head(principal, cid, head)
    return {"success": True, "conversationId": str(cid), "headId": str(head)}
