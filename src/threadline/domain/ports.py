"""Ports: the Protocols services call, implemented by providers/ and storage/.

A chat model is one method (`stream`), whatever serves it: llama.cpp in-process, an
OpenAI-compatible server, or a scripted fake.
"""

from __future__ import annotations

import builtins
import enum
from collections.abc import AsyncIterator, Callable, Sequence
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
from threadline.domain.events import Citation, ReplyEvent
from threadline.domain.images import ImagePart
from threadline.domain.usage import UsageRow


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str  # "system" | "user" | "assistant"
    content: str
    # Images sent with a user message to a vision model (the provider serialises them);
    # only the current message has any: history is replayed as text.
    images: tuple[ImagePart, ...] = ()


class _Head(enum.Enum):
    HEAD = "head"


HEAD = _Head.HEAD
Parent = UUID | None | _Head
"""Where a new message goes in its conversation's tree: after a message (its id), as a new
first message (None), or after the conversation's head (HEAD, what a plain send does)."""


@dataclass(frozen=True, slots=True)
class HistoryWindow:
    """What a reply replays of its conversation: the last messages, oldest first, and
    whether the conversation has documents (read in the same trip, so a plain chat makes one
    database round trip before its model is asked)."""

    messages: Sequence[ChatMessage]
    has_documents: bool = False
    parent_id: UUID | None = None  # the message the window ends at: a new message's parent


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
    whether the reply ended by itself or was cut at `max_tokens`), then nothing more; a
    routed model (providers/router.py) also yields a `Served` before each upstream's first
    text, naming who writes from there (the run keeps it, dialects never see it). Errors
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


class Invalidations(Protocol):
    """Cache invalidation between the processes that share a database: "this key was revoked",
    "this user changed". Without a shared bus (one process) it reaches this process only."""

    def publish(self, kind: str, ident: UUID) -> None:
        """Tell every process (this one included) that `kind` ("key" or "user") `ident`
        changed. Never waits and never fails: a message lost is covered by the cache's TTL."""
        ...

    def subscribe(self, handler: Callable[[str, UUID], None]) -> None:
        """Call `handler(kind, ident)` for each message; `handler("all", ...)` when messages
        may have been missed (the bus came back after an outage)."""
        ...


@dataclass(frozen=True, slots=True)
class RunTerms:
    """What another process needs to end a run whose process died: what its prompt counts
    and what the model charges (per 1k tokens), and the most the run may be charged."""

    input_tokens: int
    input_per_1k: float
    output_per_1k: float
    reserved_credits: int


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One item of a run's shared feed: its terms (the first), a piece of text (`offset`:
    the characters of the reply before it), a citation, or the end (the record is stored)."""

    offset: int = 0
    text: str = ""
    citation: Citation | None = None
    terms: RunTerms | None = None
    ended: bool = False


@dataclass(frozen=True, slots=True)
class FeedRead:
    """What a read of a run's feed found, and where the next read goes on from."""

    cursor: str
    entries: builtins.list[FeedEntry]


class RunFeed(Protocol):
    """Live runs seen from every process: the process that drives a run publishes its events
    and holds its ownership (a lease it refreshes); a reader in another process follows the
    events as they come, and learns when the owner died. In one process (`shared` False)
    nothing is published: readers use the run itself."""

    shared: bool

    def tap(self, run_id: UUID, terms: RunTerms) -> Callable[[ReplyEvent], None] | None:
        """Own the run and return what publishes each of its events (in order, never
        waiting); the closing Done/Failed, emitted once the record is stored, releases it."""
        ...

    async def read(self, run_id: UUID, cursor: str, wait: float) -> FeedRead | None:
        """The entries after `cursor` ("0": from the start), waiting up to `wait` seconds for
        one; None when the feed cannot be read (the shared store is unreachable)."""
        ...

    async def owned(self, run_id: UUID) -> bool | None:
        """Whether a live process owns the run; None when that cannot be known."""
        ...

    def cancel(self, run_id: UUID) -> None:
        """Ask the process that owns the run to stop it (never waits)."""
        ...

    def on_cancel(self, handler: Callable[[UUID], object]) -> None:
        """Call `handler(run_id)` when a cancel of a run this process owns arrives."""
        ...

    def request_stop(self, run_id: UUID) -> None:
        """Ask the process that owns the run to end it where it is, as a user's stop (the
        text so far is the reply, stored and charged as produced; a cancel fails it).
        Never waits."""
        ...

    def on_stop(self, handler: Callable[[UUID], object]) -> None:
        """Call `handler(run_id)` when a stop of a run this process owns arrives."""
        ...


class CreditStore(Protocol):
    """Credit reservations (see services/credits.py): atomic, released exactly once."""

    async def reserve(self, org_id: UUID, user_id: UUID, run_id: UUID, credits: int) -> bool:
        """Hold `credits` for the run if they fit what the user has left; False otherwise."""
        ...

    async def release(self, org_id: UUID, user_id: UUID, run_id: UUID) -> None: ...
    async def release_stale(self, before: datetime) -> int:
        """Release the reservations taken before `before` whose process is gone."""
        ...


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
        parent: Parent = HEAD,
    ) -> HistoryWindow | None:
        """The role and text of the last `limit` messages of finished exchanges on the path
        from the root to `parent` (the conversation's head by default), oldest first; only
        `model`'s exchanges when `model` is given; and whether the conversation has
        documents. None when the org has no such conversation, or (with `user_id`) when it
        is not that user's."""
        ...

    async def tree(self, org_id: UUID, conversation_id: UUID) -> builtins.list[Message]:
        """Every message of the conversation, in the order they were written."""
        ...

    async def message(
        self, org_id: UUID, conversation_id: UUID, message_id: UUID
    ) -> Message | None: ...

    async def set_head(self, org_id: UUID, conversation_id: UUID, message_id: UUID) -> bool:
        """Make the message the conversation's head; False if it is not one of its."""
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


class UsageStore(Protocol):
    async def usage(self, org_id: UUID, since: datetime) -> list[UsageRow]:
        """The org's requests, tokens and credits per UTC day, model and user since `since`."""
        ...


class RecordStore(Protocol):
    async def start(
        self,
        record: AiRecord,
        user_message: Message | None,
        *,
        earlier: Sequence[Message] = (),
        conversation: Conversation | None = None,
        new_message: bool = True,
    ) -> None:
        """Persist a new PENDING record and its user message in one transaction: first
        `conversation`, when the reply is the first of a conversation made for it; then the
        request's `earlier` messages (stored finished); then the user message, unless it is
        stored already (`new_message` False: a reply regenerated). The user message becomes
        its conversation's head."""
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
        """Fail the records a gone process left PENDING (never a live sibling's), keeping
        their text, and store it as the reply's message (`entities.reply_message_id`) in
        a conversation."""
        ...

    async def abandon(self, record: AiRecord, charge: int) -> AiRecord | None:
        """Fail a PENDING record whose process died while another knew its text: store
        `record`'s text, tokens and error, its reply message, and charge `charge` (settling
        its reservation), all once. None when the record is no longer PENDING."""
        ...


class NodeStore(Protocol):
    """The processes serving one database, with heartbeats (storage/nodes.py)."""

    async def join(self, node_id: UUID) -> None: ...
    async def beat(self, node_id: UUID) -> None: ...
    async def leave(self, node_id: UUID) -> None: ...
    async def reap(self, node_id: UUID, lease_seconds: float) -> int:
        """Forget the processes that are gone (but `node_id`); returns how many."""
        ...


@dataclass(frozen=True, slots=True)
class KeyedRequest:
    """A request sent with an `Idempotency-Key` (services/idempotency.py), as stored: who
    holds it while it runs (`token` until `locked_until`), the aiRecord it started, and once
    it has answered, the answer (`status_code` set; a `stream` is replayed from the record)."""

    scope: UUID  # the caller's API key
    key: str
    fingerprint: str
    request: str  # "POST /path", to name it in a conflict's message
    token: UUID
    created_at: datetime
    locked_until: datetime
    record_id: UUID | None = None
    status_code: int | None = None
    content_type: str | None = None
    body: bytes | None = None
    stream: bool = False


class IdempotencyStore(Protocol):
    async def claim(self, entry: KeyedRequest, expired_before: datetime) -> KeyedRequest | None:
        """Store `entry` unless its key is taken: None when stored (the caller holds the
        key), else the row that is there. The database decides between concurrent claims.
        A row of the same key created before `expired_before` is deleted first."""
        ...

    async def get(self, scope: UUID, key: str) -> KeyedRequest | None: ...
    async def take_over(
        self, scope: UUID, key: str, old: UUID, new: UUID, locked_until: datetime
    ) -> bool:
        """Hand an unanswered key from the holder `old` to `new` (True if still `old`'s)."""
        ...

    async def started(self, scope: UUID, key: str, token: UUID, record_id: UUID) -> None:
        """The holder's request started the run of aiRecord `record_id`."""
        ...

    async def answered(
        self,
        scope: UUID,
        key: str,
        token: UUID,
        *,
        status_code: int,
        content_type: str | None,
        body: bytes | None,
        stream: bool,
    ) -> None: ...
    async def release(self, scope: UUID, key: str, token: UUID) -> None:
        """Forget the key if `token` still holds it (the request had no effect)."""
        ...

    async def purge(self, before: datetime) -> int:
        """Delete the keys created before `before`; how many were deleted."""
        ...


__all__ = [
    "HEAD",
    "AccountStore",
    "ChatMessage",
    "ChatModel",
    "ConversationItemStore",
    "ConversationStore",
    "CreditStore",
    "FeedEntry",
    "FeedRead",
    "HistoryWindow",
    "IdempotencyStore",
    "ImagePart",
    "Invalidations",
    "KeyedRequest",
    "ModelRequest",
    "Parent",
    "RecordStatus",
    "RecordStore",
    "RunFeed",
    "RunTerms",
    "SessionStore",
]
