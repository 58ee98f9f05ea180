"""Memories (1min.ai): what `settings.withMemories` remembers about the caller.

1min.ai documents `withMemories` ("AI memory across conversations") but no API to see or
forget what was remembered; Threadline's design is in the README ("Memories"):
`/api/memories` to list (paginated, newest first), add one by hand, edit one's text, and
delete one or all.
Every endpoint is about the caller's own memories: another user's memory is 404, even to an
admin of the team.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter
from pydantic import StringConstraints

from threadline.api.bounds import Offset, page_limit
from threadline.api.deps import ContainerDep, PrincipalDep
from threadline.api.dialects.oneminai import encode
from threadline.api.dialects.oneminai.routes import render
from threadline.api.dialects.oneminai.schemas import Strict
from threadline.api.native import NATIVE_ERRORS
from threadline.api.routing import route_class
from threadline.domain.errors import NotFound
from threadline.domain.memories import CONTENT_MAX

router = APIRouter(route_class=route_class(render, NATIVE_ERRORS), tags=["1min.ai memories"])
PATH = "/api/memories"

Content = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=CONTENT_MAX, pattern=r"\S"),
]


class AddMemory(Strict):  # also the body of an edit (PATCH)
    content: Content


def _memory_id(raw: str) -> UUID:
    try:
        return UUID(raw)
    except ValueError:
        raise NotFound(f"memory {raw} not found") from None


@router.get(PATH)
async def list_memories(
    principal: PrincipalDep,
    container: ContainerDep,
    limit: Annotated[int, page_limit()] = 20,
    offset: Offset = 0,
) -> dict[str, Any]:
    page = await container.memories.list(principal, limit=limit, offset=offset)
    return {
        "memories": [encode.memory(m) for m in page.items],
        "total": page.total,
        "limit": page.limit,
        "offset": page.offset,
    }


@router.post(PATH)
async def add_memory(
    body: AddMemory, principal: PrincipalDep, container: ContainerDep
) -> dict[str, Any]:
    memory = await container.memories.add(principal, body.content)
    return {"memory": encode.memory(memory)}


@router.get(PATH + "/{memory_id}")
async def get_memory(
    memory_id: str, principal: PrincipalDep, container: ContainerDep
) -> dict[str, Any]:
    memory = await container.memories.get(principal, _memory_id(memory_id))
    return {"memory": encode.memory(memory)}


@router.patch(PATH + "/{memory_id}")
async def update_memory(
    memory_id: str, body: AddMemory, principal: PrincipalDep, container: ContainerDep
) -> dict[str, Any]:
    memory = await container.memories.update(principal, _memory_id(memory_id), body.content)
    return {"memory": encode.memory(memory)}


@router.delete(PATH + "/{memory_id}")
async def delete_memory(
    memory_id: str, principal: PrincipalDep, container: ContainerDep
) -> dict[str, Any]:
    mid = _memory_id(memory_id)
    await container.memories.delete(principal, mid)
    return {"success": True, "uuid": str(mid)}


@router.delete(PATH)
async def delete_all_memories(principal: PrincipalDep, container: ContainerDep) -> dict[str, Any]:
    deleted = await container.memories.delete_all(principal)
    return {"success": True, "deleted": deleted}
