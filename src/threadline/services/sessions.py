"""Chat sessions: a conversation bound to one model, and the use cases built on them.

Why it exists: the Conversation Service API talks about conversations that hold several chat
sessions, one per model, and sends messages to a session rather than to a model. This service
keeps that idea out of the core: a session is only a (conversation, model) pair, and sending a
message through it is an ordinary `ChatService` request on that conversation, with that model
and that model's own history (`is_mixed=False`). So the messages land in the one conversation
store, where every other dialect sees them.

Creating a second session for a model that already has one in the conversation returns the
existing session (creation is idempotent), since a session carries nothing but the binding.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from threadline.domain.clock import utcnow
from threadline.domain.entities import ChatSession, Conversation, Page, Principal
from threadline.domain.errors import InvalidRequest, NotFound
from threadline.domain.ports import SessionStore
from threadline.services.catalog import MODEL_ID_NAMESPACE, ModelCatalog
from threadline.services.chat import ChatCommand, ChatService, HistorySettings
from threadline.services.conversations import ConversationService
from threadline.services.replays import Replay, ReplayEvents, ReplayService
from threadline.services.runs import Run

RECORD_TYPE = "CONVERSATION_SESSION_CHAT"
CONVERSATION_TYPE = "UNIFY_CHAT_WITH_AI"
ACTIVE = "active"


def model_id_of(model_name: str) -> UUID:
    """A model's stable id (the catalog's), also for a model no longer configured."""
    return uuid.uuid5(MODEL_ID_NAMESPACE, model_name)


@dataclass(frozen=True, slots=True)
class Exchange:
    """One message sent through a session: the run producing the reply (None when a stream
    is resumed from the stored record), its aiRecord, the id of the user's stored message and
    the id the reply is stored under (allocated when the run starts; from a stored record,
    None while the record is pending in another process, and when no reply was stored)."""

    session: ChatSession
    run: Run | None
    user_message_id: UUID | None
    reply_message_id: UUID | None
    record_id: UUID


@dataclass(frozen=True, slots=True)
class ResumedExchange:
    """An exchange read again: its events after the client's position (`after` characters
    of the reply's text)."""

    exchange: Exchange
    events: ReplayEvents
    after: int


class SessionService:
    def __init__(
        self,
        store: SessionStore,
        conversations: ConversationService,
        chat: ChatService,
        catalog: ModelCatalog,
        replays: ReplayService,
    ) -> None:
        self._store = store
        self._conversations = conversations
        self._chat = chat
        self._catalog = catalog
        self._replays = replays

    @property
    def page_max(self) -> int:
        return self._conversations.page_max

    async def create_conversation(
        self, caller: Principal, *, title: str, is_archived: bool = False
    ) -> Conversation:
        """A conversation with no model of its own: its sessions bring the models."""
        return await self._conversations.create(
            caller, title=title, type=CONVERSATION_TYPE, model=None, is_archived=is_archived
        )

    async def list_conversations(self, caller: Principal, *, limit: int, offset: int) -> Page:
        """Most recently active first."""
        return await self._conversations.list(
            caller, limit=limit, offset=offset, sort_key="updated_at"
        )

    async def conversation_with_sessions(
        self, caller: Principal, conversation_id: UUID
    ) -> tuple[Conversation, list[ChatSession]]:
        conversation = await self._conversations.get(caller, conversation_id)
        return conversation, await self._store.for_conversation(caller.org_id, conversation_id)

    async def messages(
        self, caller: Principal, conversation_id: UUID, *, limit: int, offset: int
    ) -> Page:
        """Oldest first, from every dialect and model."""
        return await self._conversations.messages(
            caller, conversation_id, limit=limit, offset=offset
        )

    async def create(
        self, caller: Principal, conversation_id: UUID, model_id: UUID
    ) -> tuple[ChatSession, bool]:
        """The conversation's session for this model, made now if it has none yet."""
        await self._conversations.get(caller, conversation_id)
        entry = self._catalog.by_id(model_id)
        if entry is None:
            available = ", ".join(f"{m.name} ({m.id})" for m in self._catalog.list())
            raise NotFound(f"model {model_id} not found; available models: {available}")
        now = utcnow()
        session = ChatSession(
            id=uuid.uuid4(),
            org_id=caller.org_id,
            conversation_id=conversation_id,
            model_name=entry.name,
            status=ACTIVE,
            created_at=now,
            updated_at=now,
        )
        return await self._store.create(session)

    async def get(self, caller: Principal, session_id: UUID) -> ChatSession:
        """A session of a conversation the caller can see; anything else is not found."""
        session = await self._store.get(caller.org_id, session_id)
        if session is not None:
            try:
                await self._conversations.get(caller, session.conversation_id)
            except NotFound:
                session = None
        if session is None:
            raise NotFound(f"chat session {session_id} not found")
        return session

    async def send(self, caller: Principal, session_id: UUID, message: str) -> Exchange:
        """Start the reply to `message` in the session; returns at once with its run."""
        if not message.strip():
            raise InvalidRequest("message must not be empty")
        session = await self.get(caller, session_id)
        command = ChatCommand(
            principal=caller,
            model=session.model_name,
            record_type=RECORD_TYPE,
            prompt=message,
            conversation_id=session.conversation_id,
            session_id=session.id,
            history=HistorySettings(is_mixed=False),
            prompt_object=_prompt_object(session, message),
        )
        run = await self._chat.reply(command)
        await self._store.touch(caller.org_id, session.id)
        if run.user_message_id is None:  # an idempotent retry's run, mirrored from the store
            stored = await self._stored_exchange(caller, session, run.id)
            return Exchange(session, run, stored.user_message_id, run.reply_message_id, run.id)
        return Exchange(session, run, run.user_message_id, run.reply_message_id, run.id)

    async def resume(
        self,
        caller: Principal,
        record_id: UUID,
        position: Callable[[], int] | int | None,
        *,
        idle: float | None = None,
    ) -> ResumedExchange:
        """A reply sent through a session, read again from the client's position (see
        `ReplayService.resume`); with `idle`, heartbeats among its events."""
        replay = await self._replays.resume(caller, record_id, position)
        exchange = await self.resumed(caller, replay)
        return ResumedExchange(exchange, self._replays.events(replay, idle), replay.after)

    async def resumed(self, caller: Principal, replay: Replay) -> Exchange:
        """The exchange of a reply sent through a session, for a resumed stream; a record
        of another dialect's request is not found here."""
        record, run = replay.record, replay.run
        raw = record.prompt_object.get("chatSessionId")
        if record.type != RECORD_TYPE or record.conversation_id is None or not raw:
            raise NotFound(f"stream {record.id} not found")
        session = await self.get(caller, UUID(str(raw)))
        if run is not None:
            return Exchange(session, run, run.user_message_id, run.reply_message_id, record.id)
        return await self._stored_exchange(caller, session, record.id)

    async def settled(self, caller: Principal, exchange: Exchange) -> Exchange:
        """The exchange read again from the store, once its record has ended: a record
        pending in another process when the stream was opened stores its reply later."""
        return await self._stored_exchange(caller, exchange.session, exchange.record_id)

    async def _stored_exchange(
        self, caller: Principal, session: ChatSession, record_id: UUID
    ) -> Exchange:
        stored = await self._store.messages_of_record(
            caller.org_id, session.conversation_id, record_id
        )
        ids = {m.role: m.id for m in stored}
        return Exchange(session, None, ids.get("user"), ids.get("assistant"), record_id)


def _prompt_object(session: ChatSession, message: str) -> dict[str, Any]:
    return {"prompt": message, "chatSessionId": str(session.id)}
