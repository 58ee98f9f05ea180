"""Ports: the Protocols services call, implemented by providers/ and storage/.

A chat model is one method (`stream`), whatever serves it: llama.cpp in-process, an
OpenAI-compatible server, or a scripted fake.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from threadline.domain.entities import (
    AiRecord,
    ApiKey,
    ChatSession,
    Conversation,
    Message,
    Org,
    Page,
    Principal,
    RecordStatus,
    Role,
    User,
)
from threadline.domain.events import ReplyEvent
from threadline.domain.images import ImagePart


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str  # "system" | "user" | "assistant"
    content: str
    # Images sent with a user message to a vision model (the provider serialises them);
    # only the current message has any: history is replayed as text.
    images: tuple[ImagePart, ...] = ()


@dataclass(frozen=True, slots=True)
class HistoryWindow:
    """What a reply replays of its conversation: the last messages, oldest first, and
    whether the conversation has documents (read in the same trip, so a plain chat makes one
    database round trip before its model is asked)."""

    messages: Sequence[ChatMessage]
    has_documents: bool = False


@dataclass(frozen=True, slots=True)
class ModelRequest:
    messages: Sequence[ChatMessage]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: Sequence[str] = ()
    extra: dict[str, Any] = field(default_factory=dict)


class ChatModel(Protocol):
    """A model that streams a reply.

    Yields `TextDelta`s, then exactly one `Usage` (the token counts, and in `finish_reason`
    whether the reply ended by itself or was cut at `max_tokens`), then nothing more. Errors
    are raised as
    `ModelError`/`ModelTimeout` (domain errors); nothing above a provider sees httpx or SDK
    exceptions.
    """

    def stream(self, request: ModelRequest) -> AsyncIterator[ReplyEvent]: ...

    async def aclose(self) -> None: ...


class AccountStore(Protocol):
    async def create_org(self, name: str, *, is_system: bool = False) -> Org: ...
    async def get_org(self, org_id: UUID) -> Org | None: ...
    async def find_org_by_name(self, name: str) -> Org | None: ...
    async def list_orgs(self) -> list[Org]: ...
    async def create_user(
        self, org_id: UUID, name: str, role: Role, credit_limit: int, created_by: str
    ) -> User: ...
    async def get_user(self, org_id: UUID, user_id: UUID) -> User | None: ...
    async def list_users(self, org_id: UUID) -> list[User]: ...
    async def update_user(
        self, org_id: UUID, user_id: UUID, updated_by: str, **changes: Any
    ) -> User | None: ...
    async def create_key(
        self, org_id: UUID, user_id: UUID, name: str, prefix: str, secret_hash: str
    ) -> ApiKey: ...
    async def list_keys(self, org_id: UUID) -> list[ApiKey]: ...
    async def revoke_key(self, org_id: UUID, key_id: UUID) -> ApiKey | None: ...
    async def count_keys(self) -> int: ...
    async def principal_for_key(self, prefix: str) -> tuple[Principal, str] | None:
        """The principal owning the live key with this prefix, and the key's stored hash."""
        ...

    async def charge(self, org_id: UUID, user_id: UUID, credits: int) -> None: ...


class RateLimiter(Protocol):
    """Requests per minute per key, counted in one moving window per key.

    Where the windows live is the implementation's business: the process's memory by
    default, or a store several processes share (Redis) so that a limit holds across them."""

    async def hit(self, key: str) -> None:
        """Count one request for `key`; raise `RateLimited` (with `retry_after`) past the
        limit. A request refused is not counted."""
        ...


class CreditStore(Protocol):
    """Credit reservations (see services/credits.py): atomic, released exactly once."""

    async def reserve(self, org_id: UUID, user_id: UUID, run_id: UUID, credits: int) -> bool:
        """Hold `credits` for the run if they fit what the user has left; False otherwise."""
        ...

    async def release(self, org_id: UUID, user_id: UUID, run_id: UUID) -> None: ...
    async def release_stale(self, before: datetime) -> int: ...


class ConversationStore(Protocol):
    async def create(self, conversation: Conversation) -> Conversation: ...
    async def get(self, org_id: UUID, conversation_id: UUID) -> Conversation | None: ...
    async def list(
        self,
        org_id: UUID,
        *,
        user_id: UUID | None,
        limit: int,
        offset: int,
        search: str | None = None,
        sort_key: str = "created_at",
        ascending: bool = False,
    ) -> Page: ...
    async def update(self, org_id: UUID, conversation_id: UUID, **changes: Any) -> bool: ...
    async def delete(self, org_id: UUID, conversation_id: UUID) -> bool: ...
    async def messages(
        self, org_id: UUID, conversation_id: UUID, *, limit: int, offset: int
    ) -> Page: ...
    async def history(
        self,
        org_id: UUID,
        conversation_id: UUID,
        *,
        model: str | None,
        limit: int,
        user_id: UUID | None = None,
        until: UUID | None = None,
    ) -> HistoryWindow | None:
        """The role and text of the last `limit` messages of finished exchanges, oldest
        first; only `model`'s exchanges when `model` is given; only those up to the message
        `until` when given; and whether the conversation has documents. None when the org
        has no such conversation, or (with `user_id`) when it is not that user's."""
        ...


class ConversationItemStore(Protocol):
    """A conversation's messages one by one (OpenAI's conversation items)."""

    async def add(self, org_id: UUID, conversation_id: UUID, items: Sequence[Message]) -> None: ...
    async def page(
        self,
        org_id: UUID,
        conversation_id: UUID,
        *,
        after: UUID | None,
        limit: int,
        descending: bool,
    ) -> tuple[builtins.list[Message], bool] | None:
        """Up to `limit` messages after `after` and whether there are more; None when
        `after` is not a message of the conversation."""
        ...

    async def get(self, org_id: UUID, conversation_id: UUID, item_id: UUID) -> Message | None: ...
    async def delete(self, org_id: UUID, conversation_id: UUID, item_id: UUID) -> bool: ...
    async def of_record(self, org_id: UUID, record_id: UUID) -> builtins.list[Message]:
        """The messages one aiRecord stored (its input, then its reply), in order."""
        ...


class SessionStore(Protocol):
    async def create(self, session: ChatSession) -> tuple[ChatSession, bool]:
        """Store a new session, unless the conversation already has one for this model: then
        that one. Returns (the session, whether it was created now)."""
        ...

    async def get(self, org_id: UUID, session_id: UUID) -> ChatSession | None: ...
    async def for_conversation(self, org_id: UUID, conversation_id: UUID) -> list[ChatSession]:
        """The conversation's sessions, oldest first."""
        ...

    async def touch(self, org_id: UUID, session_id: UUID) -> None:
        """Set the session's `updated_at` to now (a message was sent through it)."""
        ...

    async def messages_of_record(
        self, org_id: UUID, conversation_id: UUID, record_id: UUID
    ) -> builtins.list[Message]:
        """The messages one chat request stored (its user message, then its reply)."""
        ...


class RecordStore(Protocol):
    async def start(
        self,
        record: AiRecord,
        user_message: Message | None,
        earlier: Sequence[Message] = (),
        conversation: Conversation | None = None,
    ) -> None:
        """Persist a new PENDING record and its user message (after the request's `earlier`
        messages, stored finished) in one transaction; first `conversation`, when the reply
        is the first of a conversation made for it."""
        ...

    async def finish(
        self,
        record: AiRecord,
        assistant_message: Message | None,
        user_message_id: UUID | None,
        charge: int,
    ) -> User | None:
        """Persist the outcome, the assistant message and the charge in one transaction,
        settling the run's reservation (`record.reserved_credits`) there too.
        Returns the user's row as stored just after (fresh credit figures)."""
        ...

    async def checkpoint(self, record: AiRecord, text: str) -> None:
        """Save a streaming reply's text so far into its record, if it is still PENDING."""
        ...

    async def get(self, org_id: UUID, record_id: UUID) -> AiRecord | None: ...
    async def delete(self, org_id: UUID, record_id: UUID) -> bool:
        """Delete a finished record (its conversation's messages stay)."""
        ...

    async def fail_unfinished(self, reason: str, before: datetime) -> int:
        """Fail the records a stopped process left PENDING, keeping their text, and store
        it as the reply's message (`entities.reply_message_id`) in a conversation."""
        ...


__all__ = [
    "AccountStore",
    "ChatMessage",
    "ChatModel",
    "ConversationItemStore",
    "ConversationStore",
    "CreditStore",
    "HistoryWindow",
    "ImagePart",
    "ModelRequest",
    "RecordStatus",
    "RecordStore",
    "SessionStore",
]
