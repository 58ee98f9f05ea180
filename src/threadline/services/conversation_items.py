"""A conversation's messages one by one: created with the conversation, listed by cursor,
added, read and deleted individually (OpenAI's Conversations API and its items).

Why it exists beside `services/conversations.py`: the other dialects add messages only as a
chat exchange (a prompt and its reply); here a client writes messages of its own (a system
message, an earlier exchange it had elsewhere) that later replies read as history. The
conversation is the same Threadline conversation every dialect lists and continues;
visibility is `ConversationService.get`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID, uuid4

from threadline.domain.clock import utcnow
from threadline.domain.entities import Conversation, Message, Principal, RecordStatus
from threadline.domain.errors import InvalidRequest, NotFound
from threadline.domain.ports import ChatMessage, ConversationItemStore
from threadline.services.conversations import ConversationService

ITEMS_MAX = 20  # items added in one request
TITLE_CHARS = 80


class ConversationItems:
    def __init__(self, conversations: ConversationService, items: ConversationItemStore) -> None:
        self._conversations = conversations
        self._items = items

    async def create(
        self,
        caller: Principal,
        *,
        kind: str,
        metadata: dict[str, str] | None,
        items: Sequence[ChatMessage],
    ) -> Conversation:
        """A new conversation with its first messages; titled by its first text."""
        _check_count(items)
        first = next((m.content.strip() for m in items if m.content.strip()), "")
        title = first or "New conversation"
        if len(title) > TITLE_CHARS:
            title = title[: TITLE_CHARS - 1] + "…"
        conversation = await self._conversations.create(
            caller, title=title, type=kind, model=None, metadata=metadata
        )
        await self._items.add(caller.org_id, conversation.id, _messages(conversation, items))
        return conversation

    async def get(self, caller: Principal, conversation_id: UUID) -> Conversation:
        return await self._conversations.get(caller, conversation_id)

    async def set_metadata(
        self, caller: Principal, conversation_id: UUID, metadata: dict[str, str]
    ) -> Conversation:
        return await self._conversations.update(caller, conversation_id, metadata=metadata)

    async def delete(self, caller: Principal, conversation_id: UUID) -> None:
        await self._conversations.delete(caller, conversation_id)

    async def page(
        self,
        caller: Principal,
        conversation_id: UUID,
        *,
        after: UUID | None,
        limit: int,
        descending: bool,
    ) -> tuple[list[Message], bool]:
        """Up to `limit` messages after the message `after`, and whether there are more."""
        await self._conversations.get(caller, conversation_id)
        limit, _ = self._conversations.clamp_page(limit, 0)
        found = await self._items.page(
            caller.org_id, conversation_id, after=after, limit=limit, descending=descending
        )
        if found is None:
            raise NotFound(f"after: no item {after} in conversation {conversation_id}")
        return found

    async def add(
        self, caller: Principal, conversation_id: UUID, items: Sequence[ChatMessage]
    ) -> list[Message]:
        _check_count(items)
        conversation = await self._conversations.get(caller, conversation_id)
        messages = _messages(conversation, items)
        await self._items.add(caller.org_id, conversation_id, messages)
        return messages

    async def item(self, caller: Principal, conversation_id: UUID, item_id: UUID) -> Message:
        await self._conversations.get(caller, conversation_id)
        message = await self._items.get(caller.org_id, conversation_id, item_id)
        if message is None:
            raise NotFound(f"item {item_id} not found in conversation {conversation_id}")
        return message

    async def delete_item(
        self, caller: Principal, conversation_id: UUID, item_id: UUID
    ) -> Conversation:
        conversation = await self._conversations.get(caller, conversation_id)
        if not await self._items.delete(caller.org_id, conversation_id, item_id):
            raise NotFound(f"item {item_id} not found in conversation {conversation_id}")
        return conversation


def _check_count(items: Sequence[ChatMessage]) -> None:
    if len(items) > ITEMS_MAX:
        raise InvalidRequest(f"at most {ITEMS_MAX} items can be added at once (got {len(items)})")


def _messages(conversation: Conversation, items: Sequence[ChatMessage]) -> list[Message]:
    now = utcnow()
    return [
        Message(
            id=uuid4(),
            org_id=conversation.org_id,
            conversation_id=conversation.id,
            role=item.role,
            content=item.content,
            model=conversation.model or "",
            status=RecordStatus.SUCCESS,
            record_id=None,
            created_at=now,
        )
        for item in items
    ]
