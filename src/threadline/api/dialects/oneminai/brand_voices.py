"""Brand voices (1min.ai): the objects `brandVoiceId` in the Chat with AI API names.

1min.ai documents `brandVoiceId` but not the API that manages brand voices; Threadline's
design is in the README ("Brand voices"): `/api/brand-voices` with create, list (paginated),
get, PATCH (partial update) and delete, in the dialect's JSON and error shapes. Who may
change what is decided in `services/brand_voices.py`.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic_core import PydanticCustomError

from threadline.api.bounds import Offset, page_limit
from threadline.api.deps import ContainerDep, PrincipalDep
from threadline.api.dialects.oneminai import encode
from threadline.api.dialects.oneminai.routes import render
from threadline.api.native import NATIVE_ERRORS
from threadline.api.routing import route_class
from threadline.domain.brand_voices import EXAMPLE_MAX, EXAMPLES_MAX, INSTRUCTIONS_MAX, NAME_MAX
from threadline.domain.errors import NotFound

router = APIRouter(route_class=route_class(render, NATIVE_ERRORS), tags=["1min.ai brand voices"])
PATH = "/api/brand-voices"

# Surrounding whitespace is trimmed before the lengths are checked.
Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=NAME_MAX, pattern=r"\S")
]
Instructions = Annotated[str, StringConstraints(strip_whitespace=True, max_length=INSTRUCTIONS_MAX)]
Example = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=EXAMPLE_MAX, pattern=r"\S"),
]
Examples = Annotated[list[Example], Field(max_length=EXAMPLES_MAX)]


class CreateBrandVoice(BaseModel):
    # The service refuses a voice with neither instructions nor examples; said here too.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": ["instructions"], "properties": {"instructions": {"pattern": r"\S"}}},
                {"required": ["examples"], "properties": {"examples": {"minItems": 1}}},
            ]
        },
    )

    name: Name
    instructions: Instructions = ""
    examples: Examples = Field(default_factory=list)


def _not_nullable(schema: dict[str, Any]) -> None:
    """The schema says what `_not_null` enforces: a field is left out, never null."""
    for field in schema["properties"].values():
        field.pop("default", None)
        kinds = [k for k in field.pop("anyOf", []) if k != {"type": "null"}]
        if kinds:
            field.update(kinds[0])


class UpdateBrandVoice(BaseModel):
    """PATCH: the fields given are changed, the others kept; `examples` replaces the list."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_not_nullable)

    name: Name | None = None
    instructions: Instructions | None = None
    examples: Examples | None = None

    @field_validator("name", "instructions", "examples", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise PydanticCustomError("null", "must not be null (leave the field out to keep it)")
        return value


def _voice_id(raw: str) -> UUID:
    try:
        return UUID(raw)
    except ValueError:
        raise NotFound(f"brand voice {raw} not found") from None


@router.post(PATH)
async def create_brand_voice(
    body: CreateBrandVoice, principal: PrincipalDep, container: ContainerDep
) -> dict[str, Any]:
    voice = await container.brand_voices.create(
        principal, name=body.name, instructions=body.instructions, examples=body.examples
    )
    return {"brandVoice": encode.brand_voice(voice)}


@router.get(PATH)
async def list_brand_voices(
    principal: PrincipalDep,
    container: ContainerDep,
    limit: Annotated[int, page_limit()] = 20,
    offset: Offset = 0,
) -> dict[str, Any]:
    page = await container.brand_voices.list(principal, limit=limit, offset=offset)
    return {
        "brandVoices": [encode.brand_voice(v) for v in page.items],
        "total": page.total,
        "limit": page.limit,
        "offset": page.offset,
    }


@router.get(PATH + "/{voice_id}")
async def get_brand_voice(
    voice_id: str, principal: PrincipalDep, container: ContainerDep
) -> dict[str, Any]:
    voice = await container.brand_voices.get(principal, _voice_id(voice_id))
    return {"brandVoice": encode.brand_voice(voice)}


@router.patch(PATH + "/{voice_id}")
async def update_brand_voice(
    voice_id: str, body: UpdateBrandVoice, principal: PrincipalDep, container: ContainerDep
) -> dict[str, Any]:
    voice = await container.brand_voices.update(
        principal,
        _voice_id(voice_id),
        name=body.name,
        instructions=body.instructions,
        examples=body.examples,
    )
    return {"brandVoice": encode.brand_voice(voice)}


@router.delete(PATH + "/{voice_id}")
async def delete_brand_voice(
    voice_id: str, principal: PrincipalDep, container: ContainerDep
) -> dict[str, Any]:
    vid = _voice_id(voice_id)
    await container.brand_voices.delete(principal, vid)
    return {"success": True, "uuid": str(vid)}
