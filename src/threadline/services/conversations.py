"""Conversation use cases shared by every dialect: create, read, list, update, delete.

Visibility: a conversation belongs to an org and a user. Admins see every conversation of
their org; members see their own. Anything else is "not found", never "forbidden".
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

from threadline.domain.clock import utcnow
from threadline.domain.entities import Conversation, Page, Principal
from threadline.domain.errors import InvalidRequest, NotFound
from threadline.domain.ports import HEAD, ConversationStore, HistoryWindow, Parent
from threadline.services.catalog import ModelCatalog


class ConversationService:
    def __init__(self, store: ConversationStore, catalog: ModelCatalog, page_max: int) -> None:
        self._store = store
        self._catalog = catalog
        self.page_max = page_max

    async def create(
        self,
        caller: Principal,
        *,
        title: str,
        type: str,
        model: str | None,
        description: str = "",
        is_archived: bool = False,
        metadata: dict[str, str] | None = None,
    ) -> Conversation:
        conversation = self.new(
            caller,
            title=title,
            type=type,
            model=model,
            description=description,
            is_archived=is_archived,
            metadata=metadata,
        )
        return await self._store.create(conversation)

    async def store(self, conversation: Conversation) -> Conversation:
        """Store a conversation made by `new`."""
        return await self._store.create(conversation)

    def new(
        self,
        caller: Principal,
        *,
        title: str,
        type: str,
        model: str | None,
        description: str = "",
        is_archived: bool = False,
        metadata: dict[str, str] | None = None,
    ) -> Conversation:
        """A conversation checked and made, not yet stored (a reply's first write may store
        it: `ChatCommand.new_conversation`)."""
        if not title.strip():
            raise InvalidRequest("title must not be empty")
        if model is not None:
            model = self._catalog.get(model).name  # an alias: the model it names
        now = utcnow()
        conversation = Conversation(
            id=uuid4(),
            org_id=caller.org_id,
            user_id=caller.user.id,
            title=title,
            description=description,
            type=type,
            model=model,
            status="ACTIVE",
            is_archived=is_archived,
            metadata=metadata,
            created_at=now,
            updated_at=now,
        )
        return conversation

    async def get(self, caller: Principal, conversation_id: UUID) -> Conversation:
        conversation = await self._store.get(caller.org_id, conversation_id)
        if conversation is None or not _visible(caller, conversation):
            raise NotFound(f"conversation {conversation_id} not found")
        return conversation

    async def list(
        self,
        caller: Principal,
        *,
        limit: int,
        offset: int,
        search: str | None = None,
        sort_key: str = "created_at",
        ascending: bool = False,
    ) -> Page:
        limit, offset = self.clamp_page(limit, offset)
        owner = None if caller.is_admin else caller.user.id
        return await self._store.list(
            caller.org_id,
            user_id=owner,
            limit=limit,
            offset=offset,
            search=search,
            sort_key=sort_key,
            ascending=ascending,
        )

    async def update(
        self, caller: Principal, conversation_id: UUID, **changes: Any
    ) -> Conversation:
        await self.get(caller, conversation_id)
        if "title" in changes and not str(changes["title"]).strip():
            raise InvalidRequest("title must not be empty")
        await self._store.update(caller.org_id, conversation_id, **changes)
        return await self.get(caller, conversation_id)

    async def delete(self, caller: Principal, conversation_id: UUID) -> None:
        await self.get(caller, conversation_id)
        await self._store.delete(caller.org_id, conversation_id)

    async def messages(
        self, caller: Principal, conversation_id: UUID, *, limit: int, offset: int
    ) -> Page:
        await self.get(caller, conversation_id)
        limit, offset = self.clamp_page(limit, offset)
        return await self._store.messages(
            caller.org_id, conversation_id, limit=limit, offset=offset
        )

    async def history(
        self,
        caller: Principal,
        conversation_id: UUID,
        *,
        model: str | None,
        limit: int,
        parent: Parent = HEAD,
    ) -> HistoryWindow:
        owner = None if caller.is_admin else caller.user.id  # the visibility rule of get()
        rows = await self._store.history(
            caller.org_id, conversation_id, model=model, limit=limit, user_id=owner, parent=parent
        )
        if rows is None:
            raise NotFound(f"conversation {conversation_id} not found")
        return rows

    def clamp_page(self, limit: int, offset: int) -> tuple[int, int]:
        if limit < 1:
            raise InvalidRequest(f"limit must be at least 1 (got {limit})")
        if offset < 0:
            raise InvalidRequest(f"offset must not be negative (got {offset})")
        return min(limit, self.page_max), offset


def _visible(caller: Principal, conversation: Conversation) -> bool:
    return caller.is_admin or conversation.user_id == caller.user.id
