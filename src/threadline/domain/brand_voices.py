"""Brand voices: an org's named tone of voice, applied to chat replies (`brandVoiceId`).

A brand voice is tone instructions plus a few short sample texts. Every member of the org
may use one; the chat engine hands its instructions and examples to the model as system
guidance. Pure data and a Protocol; nothing here imports a library beyond the standard one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from threadline.domain.entities import Page

NAME_MAX = 100
INSTRUCTIONS_MAX = 4_000
EXAMPLES_MAX = 10
EXAMPLE_MAX = 1_000


@dataclass(frozen=True, slots=True)
class BrandVoice:
    """`created_by` and `updated_by` are user ids (of the voice's org)."""

    id: UUID
    org_id: UUID
    name: str
    instructions: str
    examples: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    created_by: UUID
    updated_by: UUID


class BrandVoiceStore(Protocol):
    """Brand voices in storage. Every method is org-scoped: another org's voice is None."""

    async def add(self, voice: BrandVoice) -> BrandVoice: ...
    async def get(self, org_id: UUID, voice_id: UUID) -> BrandVoice | None: ...
    async def list(self, org_id: UUID, *, limit: int, offset: int) -> Page:
        """Newest first."""
        ...

    async def replace(self, voice: BrandVoice) -> BrandVoice | None:
        """Store the new state of an existing voice (matched by org and id); None if gone."""
        ...

    async def delete(self, org_id: UUID, voice_id: UUID) -> bool: ...
