"""`/v1/conversations` (OpenAI's Conversations API) and their items, onto the one
conversation store: `conv_<id>` is any Threadline conversation of the caller (listed in
`/api/conversations`, continued from every dialect), and its items are its messages.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from threadline.api.deps import ContainerDep, PrincipalDep
from threadline.api.dialects.openai import responses_encode as wire
from threadline.api.dialects.openai.responses_schemas import (
    ConversationCreateRequest,
    ConversationUpdateRequest,
    Include,
    ItemsCreateRequest,
    Order,
    check_metadata,
    conversation_items,
    no_include,
    object_id,
)

KIND = "OPENAI_CONVERSATION"  # a conversation made through this API


def add_routes(router: APIRouter) -> None:
    add = router.add_api_route
    add("/conversations", create_conversation, methods=["POST"])
    add("/conversations/{conversation_id}", get_conversation, methods=["GET"])
    add("/conversations/{conversation_id}", update_conversation, methods=["POST"])
    add("/conversations/{conversation_id}", delete_conversation, methods=["DELETE"])
    add("/conversations/{conversation_id}/items", list_items, methods=["GET"])
    add("/conversations/{conversation_id}/items", create_items, methods=["POST"])
    add("/conversations/{conversation_id}/items/{item_id}", get_item, methods=["GET"])
    add("/conversations/{conversation_id}/items/{item_id}", delete_item, methods=["DELETE"])


def _conversation(value: str) -> Any:
    return object_id("conv", value, "conversation")


async def create_conversation(
    body: ConversationCreateRequest, principal: PrincipalDep, container: ContainerDep
) -> dict[str, Any]:
    check_metadata(body.metadata)
    items = conversation_items(body.items or [])
    conversation = await container.conversation_items.create(
        principal, kind=KIND, metadata=body.metadata, items=items
    )
    return wire.conversation(conversation)


async def get_conversation(
    conversation_id: str, principal: PrincipalDep, container: ContainerDep
) -> dict[str, Any]:
    found = await container.conversation_items.get(principal, _conversation(conversation_id))
    return wire.conversation(found)


async def update_conversation(
    conversation_id: str,
    body: ConversationUpdateRequest,
    principal: PrincipalDep,
    container: ContainerDep,
) -> dict[str, Any]:
    check_metadata(body.metadata)
    changed = await container.conversation_items.set_metadata(
        principal, _conversation(conversation_id), body.metadata
    )
    return wire.conversation(changed)


async def delete_conversation(
    conversation_id: str, principal: PrincipalDep, container: ContainerDep
) -> dict[str, Any]:
    uid = _conversation(conversation_id)
    await container.conversation_items.delete(principal, uid)
    return wire.deleted("conversation.deleted", wire.conversation_id(uid))


async def list_items(
    conversation_id: str,
    principal: PrincipalDep,
    container: ContainerDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Order = "desc",
    include: Include = None,
) -> dict[str, Any]:
    no_include(include)
    after_id = object_id("msg", after, "item") if after else None
    items, more = await container.conversation_items.page(
        principal,
        _conversation(conversation_id),
        after=after_id,
        limit=limit,
        descending=order == "desc",
    )
    return wire.item_list(items, more)


async def create_items(
    conversation_id: str,
    body: ItemsCreateRequest,
    principal: PrincipalDep,
    container: ContainerDep,
    include: Include = None,
) -> dict[str, Any]:
    no_include(include)
    added = await container.conversation_items.add(
        principal, _conversation(conversation_id), conversation_items(body.items)
    )
    return wire.item_list(added, False)


async def get_item(
    conversation_id: str,
    item_id: str,
    principal: PrincipalDep,
    container: ContainerDep,
    include: Include = None,
) -> dict[str, Any]:
    no_include(include)
    message = await container.conversation_items.item(
        principal, _conversation(conversation_id), object_id("msg", item_id, "item")
    )
    return wire.item(message)


async def delete_item(
    conversation_id: str, item_id: str, principal: PrincipalDep, container: ContainerDep
) -> dict[str, Any]:
    conversation = await container.conversation_items.delete_item(
        principal, _conversation(conversation_id), object_id("msg", item_id, "item")
    )
    return wire.conversation(conversation)
