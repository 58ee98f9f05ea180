"""Brand voice use cases: create, read, list, change, delete, and resolve one for a chat.

Who may do what: every member of an org may list, read and use (`brandVoiceId`) the org's
brand voices, and create new ones; only a voice's creator or an admin of the org may
change or delete it (else 403). Another org's voice is "not found" everywhere: 404 on the
brand voice endpoints, 422 "Unknown brandVoiceId" in a chat request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from uuid import UUID, uuid4

from threadline.domain.brand_voices import (
    EXAMPLE_MAX,
    EXAMPLES_MAX,
    INSTRUCTIONS_MAX,
    NAME_MAX,
    BrandVoice,
    BrandVoiceStore,
)
from threadline.domain.clock import utcnow
from threadline.domain.entities import Page, Principal
from threadline.domain.errors import Forbidden, InvalidRequest, NotFound, Unprocessable

GUIDANCE_EXAMPLES_INTRO = (
    "Examples of writing in this voice (match their tone and style, not their content):"
)


class BrandVoiceService:
    def __init__(self, store: BrandVoiceStore, page_max: int) -> None:
        self._store = store
        self.page_max = page_max

    async def create(
        self, caller: Principal, *, name: str, instructions: str, examples: Sequence[str]
    ) -> BrandVoice:
        now = utcnow()
        voice = BrandVoice(
            id=uuid4(),
            org_id=caller.org_id,
            name=name.strip(),
            instructions=instructions.strip(),
            examples=tuple(e.strip() for e in examples),
            created_at=now,
            updated_at=now,
            created_by=caller.user.id,
            updated_by=caller.user.id,
        )
        _validate(voice)
        return await self._store.add(voice)

    async def get(self, caller: Principal, voice_id: UUID) -> BrandVoice:
        voice = await self._store.get(caller.org_id, voice_id)
        if voice is None:
            raise NotFound(f"brand voice {voice_id} not found")
        return voice

    async def list(self, caller: Principal, *, limit: int, offset: int) -> Page:
        if limit < 1:
            raise InvalidRequest(f"limit must be at least 1 (got {limit})")
        if offset < 0:
            raise InvalidRequest(f"offset must not be negative (got {offset})")
        return await self._store.list(caller.org_id, limit=min(limit, self.page_max), offset=offset)

    async def update(
        self,
        caller: Principal,
        voice_id: UUID,
        *,
        name: str | None = None,
        instructions: str | None = None,
        examples: Sequence[str] | None = None,
    ) -> BrandVoice:
        """Change the given fields (None: unchanged); `examples` replaces the whole list."""
        if name is None and instructions is None and examples is None:
            raise InvalidRequest("nothing to change: give name, instructions or examples")
        voice = await self._editable(caller, voice_id)
        changed = replace(
            voice,
            name=voice.name if name is None else name.strip(),
            instructions=voice.instructions if instructions is None else instructions.strip(),
            examples=voice.examples if examples is None else tuple(e.strip() for e in examples),
            updated_at=utcnow(),
            updated_by=caller.user.id,
        )
        _validate(changed)
        stored = await self._store.replace(changed)
        if stored is None:  # deleted meanwhile
            raise NotFound(f"brand voice {voice_id} not found")
        return stored

    async def delete(self, caller: Principal, voice_id: UUID) -> None:
        await self._editable(caller, voice_id)
        if not await self._store.delete(caller.org_id, voice_id):
            raise NotFound(f"brand voice {voice_id} not found")

    async def for_chat(self, caller: Principal, raw_id: str) -> BrandVoice:
        """The voice a chat request names, or 422: a bad `brandVoiceId` is a setting of the
        request that cannot be honoured, not a missing URL."""
        unknown = Unprocessable(
            f"Unknown brandVoiceId {raw_id!r}: no brand voice with this id in your team "
            "(GET /api/brand-voices lists them)"
        )
        try:
            voice_id = UUID(raw_id)
        except ValueError:
            raise unknown from None
        voice = await self._store.get(caller.org_id, voice_id)
        if voice is None:
            raise unknown
        return voice

    async def _editable(self, caller: Principal, voice_id: UUID) -> BrandVoice:
        voice = await self.get(caller, voice_id)
        if not caller.is_admin and voice.created_by != caller.user.id:
            raise Forbidden(
                f"brand voice {voice_id} can only be changed or deleted by its creator "
                "or an admin of your team"
            )
        return voice


def guidance(voice: BrandVoice) -> str:
    """The system text that applies a voice: its instructions, then its examples."""
    parts = [f'Write your reply in the brand voice "{voice.name}".']
    if voice.instructions:
        parts.append(f"Tone and style instructions:\n{voice.instructions}")
    if voice.examples:
        samples = "\n".join(f"[Example {i}]\n{text}" for i, text in enumerate(voice.examples, 1))
        parts.append(f"{GUIDANCE_EXAMPLES_INTRO}\n{samples}")
    return "\n\n".join(parts)


def _validate(voice: BrandVoice) -> None:
    """The limits, checked here as well as by the dialect's schema, so that every caller
    of the service meets them. Values are already stripped of surrounding whitespace."""
    problems: list[dict[str, str]] = []
    if not voice.name or len(voice.name) > NAME_MAX:
        problems.append({"field": "name", "message": f"name must be 1 to {NAME_MAX} characters"})
    if len(voice.instructions) > INSTRUCTIONS_MAX:
        problems.append(
            {
                "field": "instructions",
                "message": f"instructions must be at most {INSTRUCTIONS_MAX} characters",
            }
        )
    if len(voice.examples) > EXAMPLES_MAX:
        problems.append(
            {"field": "examples", "message": f"examples: at most {EXAMPLES_MAX} examples"}
        )
    for i, text in enumerate(voice.examples):
        if not text or len(text) > EXAMPLE_MAX:
            problems.append(
                {
                    "field": f"examples.{i}",
                    "message": f"examples[{i}] must be 1 to {EXAMPLE_MAX} characters",
                }
            )
    if not voice.instructions and not voice.examples:
        problems.append(
            {
                "field": "instructions",
                "message": "a brand voice needs instructions or at least one example",
            }
        )
    if problems:
        raise InvalidRequest(problems[0]["message"], details=problems)
