"""Typed FastAPI dependencies: the container, and the authenticated, rate-limited caller.

A key is accepted as `API-KEY: <key>` (1min.ai), `Authorization: Bearer <key>` (OpenAI) or
`x-api-key: <key>` (Anthropic).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Header, Query, Request
from pydantic.json_schema import SkipJsonSchema

from threadline.api.bounds import JSON_INT_MAX
from threadline.domain.entities import Principal

if TYPE_CHECKING:
    from threadline.container import Container


async def get_container(request: Request) -> Container:
    # async on purpose: FastAPI runs a plain `def` dependency in its thread pool, a thread
    # hop (~0.3 ms) on every request for what is an attribute read.
    container: Container = request.app.state.container
    return container


def api_key_from(request: Request) -> str | None:
    key = request.headers.get("api-key") or request.headers.get("x-api-key")
    if key:
        return key
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


async def get_principal(request: Request) -> Principal:
    """The authenticated caller (once per request: api/idempotency.py may have asked)."""
    admitted: Principal | None = getattr(request.state, "principal", None)
    if admitted is not None:
        return admitted
    container: Container = request.app.state.container
    principal = await container.accounts.admit(api_key_from(request))
    request.state.principal = principal
    return principal


ContainerDep = Annotated["Container", Depends(get_container)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]

LAST_EVENT_ID = (
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}:[0-9]{1,12}$"
)
# A resumed stream's position (durable streams), as both dialects that resume take it.
LastEventId = Annotated[
    str | SkipJsonSchema[None],
    Header(
        alias="Last-Event-ID",
        description="the id of the last frame received (`<aiRecordId>:<characters>`)",
        # documented, not enforced here: a malformed id gets `position_of`'s message
        json_schema_extra={"pattern": LAST_EVENT_ID},
    ),
]
ResumeAfter = Annotated[
    int | None,
    Query(ge=0, le=JSON_INT_MAX, description="characters of the text received (no header)"),
]
