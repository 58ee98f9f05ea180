"""Memories: durable facts about a user, remembered across conversations (`withMemories`).

A memory is one short third-person fact ("User's name is Ana", "User is allergic to
peanuts"). It belongs to one user of one org and is never seen by anyone else. A memory may
have a *kind* ("name", "home", "opinion:cilantro"): a user has at most one memory of a kind,
so a newer fact of that kind replaces the older one (a new name, a new city).

Facts come from an extractor (rules or a model) reading what the user said, or from the
user by hand. Pure data and Protocols; nothing here imports a library beyond the standard one.
"""

from __future__ import annotations

import builtins
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from threadline.domain.entities import Page

CONTENT_MAX = 300  # characters of one memory
KIND_MAX = 100


class MemorySource(enum.StrEnum):
    CHAT = "CHAT"  # extracted from a chat message
    MANUAL = "MANUAL"  # added by the user (POST /api/memories)


@dataclass(frozen=True, slots=True)
class Fact:
    """What an extractor found: a third-person fact and its kind (None: no kind)."""

    text: str
    kind: str | None = None


@dataclass(frozen=True, slots=True)
class Memory:
    """`record_id`: the aiRecord whose message it came from (None when added by hand).
    `embedder` and `vector`: the fact's embedding and the embedder that made it, when loaded
    (listings leave them out)."""

    id: UUID
    org_id: UUID
    user_id: UUID
    content: str
    kind: str | None
    source: MemorySource
    record_id: UUID | None
    created_at: datetime
    updated_at: datetime
    embedder: str | None = None
    vector: tuple[float, ...] | None = None


class FactExtractor(Protocol):
    async def extract(self, message: str, reply: str) -> list[Fact]:
        """The durable facts about the user in their `message` (`reply`: the answer it got,
        for context only). Raises a domain error when it could not look (worth a retry);
        returns [] when there is nothing worth keeping."""
        ...


class MemoryStore(Protocol):
    """Memories in storage. Every method is scoped to one org *and* one user: another
    user's memory is None / not deleted, whoever asks."""

    async def list(self, org_id: UUID, user_id: UUID, *, limit: int, offset: int) -> Page:
        """Most recently updated first, without vectors."""
        ...

    async def all(self, org_id: UUID, user_id: UUID) -> builtins.list[Memory]:
        """All of the user's memories with their vectors, most recently updated first."""
        ...

    async def get(self, org_id: UUID, user_id: UUID, memory_id: UUID) -> Memory | None: ...

    async def save(
        self,
        org_id: UUID,
        user_id: UUID,
        *,
        added: Sequence[Memory],
        changed: Sequence[Memory],
        keep: int,
    ) -> None:
        """Insert `added` and update `changed` (content, kind, vector, record, updated_at)
        in one transaction, then delete all but the user's `keep` most recently updated."""
        ...

    async def delete(self, org_id: UUID, user_id: UUID, memory_id: UUID) -> bool: ...

    async def delete_all(self, org_id: UUID, user_id: UUID) -> int:
        """How many were deleted."""
        ...
