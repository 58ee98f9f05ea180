"""Entities of the conversation store, as services and dialects see them.

Plain frozen dataclasses: the storage layer maps rows to these, dialects map these to wire
shapes. Times are timezone-aware UTC datetimes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

from threadline.domain.events import Citation
from threadline.domain.sources import ReplySources


class Role(enum.StrEnum):
    ADMIN = "ADMIN"
    MEMBER = "MEMBER"


class RecordStatus(enum.StrEnum):
    PENDING = "PENDING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"


@dataclass(frozen=True, slots=True)
class Org:
    id: UUID
    name: str
    is_system: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class User:
    """A member of an org (1min.ai's "team user"), with their credit account."""

    id: UUID
    org_id: UUID
    name: str
    role: Role
    status: str
    credit_limit: int
    used_credit: int
    created_at: datetime
    updated_at: datetime
    created_by: str = "SYSTEM"
    updated_by: str = "SYSTEM"
    reserved_credit: int = 0  # held by this user's runs in progress (see services/credits.py)

    @property
    def credit_left(self) -> int:
        """What a new request may still reserve (negative when a limit was lowered)."""
        return self.credit_limit - self.used_credit - self.reserved_credit


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as listed: never the secret, only its public prefix."""

    id: UUID
    org_id: UUID
    user_id: UUID
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the result of authenticating an API key."""

    org: Org
    user: User
    key_id: UUID

    @property
    def org_id(self) -> UUID:
        return self.org.id

    @property
    def is_admin(self) -> bool:
        return self.user.role is Role.ADMIN


@dataclass(frozen=True, slots=True)
class Conversation:
    id: UUID
    org_id: UUID
    user_id: UUID
    title: str
    type: str
    model: str | None
    status: str
    is_archived: bool
    created_at: datetime
    updated_at: datetime
    description: str = ""
    file_ids: tuple[UUID, ...] = ()
    head_id: UUID | None = None  # the message the current branch ends with (none yet: None)
    metadata: dict[str, str] | None = None  # key-value pairs a client set (OpenAI's)


REPLY_NAMESPACE = UUID("5b0f7d0e-3c1a-4b8e-9a59-6f7e2d4c8a11")


def reply_message_id(record_id: UUID) -> UUID:
    """The id of the assistant message that holds an aiRecord's reply in its conversation.
    Known from the record's start (a stream names the reply before it is stored), and found
    again from the record alone: a restart stores what a killed process had streamed under
    the id its client was given."""
    return uuid5(REPLY_NAMESPACE, str(record_id))


@dataclass(frozen=True, slots=True)
class Message:
    id: UUID
    org_id: UUID
    conversation_id: UUID
    role: str  # "user" | "assistant" | "system"
    content: str
    model: str
    status: RecordStatus
    record_id: UUID | None
    created_at: datetime
    session_id: UUID | None = None
    parent_id: UUID | None = None  # the message it follows (None: a first message)


@dataclass(frozen=True, slots=True)
class ChatSession:
    """A conversation bound to one model (the Conversation Service's "chat session").

    A conversation has at most one session per model; its messages carry the session id.
    """

    id: UUID
    org_id: UUID
    conversation_id: UUID
    model_name: str
    status: str  # "active"
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class RouteSegment:
    """A part of a routed reply and who wrote it: `chars` characters from `model` on
    `upstream` (None: a model with one upstream). See providers/router.py."""

    model: str
    upstream: str | None
    chars: int


@dataclass(frozen=True, slots=True)
class AiRecord:
    """One chat request and its reply (1min.ai's aiRecord)."""

    id: UUID
    org_id: UUID
    user_id: UUID
    conversation_id: UUID | None
    model: str
    type: str
    status: RecordStatus
    prompt_object: dict[str, Any]
    result_text: str
    created_at: datetime
    updated_at: datetime
    metadata: dict[str, Any] | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    credits: int = 0
    error: str | None = None
    citations: tuple[Citation, ...] = ()  # the sources the reply gave, as the model knew them
    sources: ReplySources = field(default_factory=ReplySources)  # read beside its documents
    finish_reason: str | None = None  # a finished reply's: "stop", "length", "content_filter"
    # Which models and upstreams wrote the text, in order; empty unless routing was involved
    # (several upstreams, a fallback, a reply continued after a failure).
    route: tuple[RouteSegment, ...] = ()
    # The credits the run reserved before it started (the most it may be charged). Not a
    # column of the record: the reservation is a row of its own until the run settles.
    reserved_credits: int = 0


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing."""

    items: list[Any]
    total: int
    limit: int
    offset: int
