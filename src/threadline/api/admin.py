"""The admin API (ADMIN role only): orgs, users and their credit limits, API keys.

An admin manages their own org; admins of the system org may also act on another org by
passing `orgId`, and create orgs. A new key's secret is in the response once, never again.
Who sets whose credit limit: an admin, for the users of their org (system admins: of any
org); nobody raises their own (403), see `AccountService.update_user`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from threadline.api.bounds import NonNegative
from threadline.api.deps import ContainerDep, PrincipalDep
from threadline.api.native import NATIVE_ERRORS, iso, render_native, team_user
from threadline.api.routing import route_class
from threadline.domain.entities import ApiKey, Org, Role
from threadline.services.accounts import IssuedKey, require_admin

router = APIRouter(
    prefix="/api/admin", route_class=route_class(render_native, NATIVE_ERRORS), tags=["admin"]
)
OrgQuery = Annotated[UUID | None, Query(alias="orgId")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateOrg(_Body):
    name: str = Field(min_length=1, max_length=200)
    adminName: str = Field("admin", min_length=1, max_length=200)
    creditLimit: NonNegative | None = None


class CreateUser(_Body):
    name: str = Field(min_length=1, max_length=200)
    role: Literal["ADMIN", "MEMBER"] = "MEMBER"
    creditLimit: NonNegative | None = None


class UpdateUser(_Body):
    name: str | None = Field(None, min_length=1, max_length=200)
    role: Literal["ADMIN", "MEMBER"] | None = None
    status: Literal["ACTIVE", "INACTIVE"] | None = None
    creditLimit: NonNegative | None = None


class CreateKey(_Body):
    userId: UUID
    name: str = Field("default", min_length=1, max_length=200)


def _org(org: Org) -> dict[str, Any]:
    return {
        "id": str(org.id),
        "name": org.name,
        "isSystem": org.is_system,
        "createdAt": iso(org.created_at),
    }


def _key(key: ApiKey, secret: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": str(key.id),
        "name": key.name,
        "prefix": key.prefix,
        "userId": str(key.user_id),
        "teamId": str(key.org_id),
        "createdAt": iso(key.created_at),
        "revokedAt": iso(key.revoked_at) if key.revoked_at else None,
    }
    if secret is not None:
        body["key"] = secret
    return body


def _issued(issued: IssuedKey) -> dict[str, Any]:
    return {"user": team_user(issued.user), "apiKey": _key(issued.key, issued.secret)}


@router.get("/orgs")
async def list_orgs(principal: PrincipalDep, container: ContainerDep) -> dict[str, Any]:
    return {"orgs": [_org(o) for o in await container.accounts.list_orgs(principal)]}


@router.post("/orgs", status_code=201)
async def create_org(
    body: CreateOrg, principal: PrincipalDep, container: ContainerDep
) -> dict[str, Any]:
    org, issued = await container.accounts.create_org(
        principal, body.name, body.adminName, body.creditLimit
    )
    return {"org": _org(org), **_issued(issued)}


@router.get("/users")
async def list_users(
    principal: PrincipalDep, container: ContainerDep, org_id: OrgQuery = None
) -> dict[str, Any]:
    org = await container.accounts.target_org(principal, org_id)
    return {"users": [team_user(u) for u in await container.accounts.list_users(org)]}


@router.post("/users", status_code=201)
async def create_user(
    body: CreateUser, principal: PrincipalDep, container: ContainerDep, org_id: OrgQuery = None
) -> dict[str, Any]:
    org = await container.accounts.target_org(principal, org_id)
    user = await container.accounts.create_user(
        principal, org, body.name, Role(body.role), body.creditLimit
    )
    return {"user": team_user(user)}


@router.patch("/users/{user_id}")
async def update_user(
    user_id: UUID,
    body: UpdateUser,
    principal: PrincipalDep,
    container: ContainerDep,
    org_id: OrgQuery = None,
) -> dict[str, Any]:
    org = await container.accounts.target_org(principal, org_id)
    changes = body.model_dump(exclude_none=True)
    if "creditLimit" in changes:
        changes["credit_limit"] = changes.pop("creditLimit")
    if "role" in changes:
        changes["role"] = Role(changes["role"])
    user = await container.accounts.update_user(principal, org, user_id, **changes)
    return {"user": team_user(user)}


@router.get("/keys")
async def list_keys(
    principal: PrincipalDep, container: ContainerDep, org_id: OrgQuery = None
) -> dict[str, Any]:
    org = await container.accounts.target_org(principal, org_id)
    return {"apiKeys": [_key(k) for k in await container.accounts.list_keys(org)]}


@router.post("/keys", status_code=201)
async def create_key(
    body: CreateKey, principal: PrincipalDep, container: ContainerDep, org_id: OrgQuery = None
) -> dict[str, Any]:
    org = await container.accounts.target_org(principal, org_id)
    issued = await container.accounts.create_key_for(principal, org, body.userId, body.name)
    return _issued(issued)


@router.delete("/keys/{key_id}")
async def revoke_key(
    key_id: UUID, principal: PrincipalDep, container: ContainerDep, org_id: OrgQuery = None
) -> dict[str, Any]:
    org = await container.accounts.target_org(principal, org_id)
    return {"apiKey": _key(await container.accounts.revoke_key(org, key_id))}


@router.get("/upstreams")
async def list_upstreams(principal: PrincipalDep, container: ContainerDep) -> dict[str, Any]:
    """Each routed model's upstreams: circuit state, requests, failures, in flight,
    first-token latency (providers/router.py)."""
    require_admin(principal)
    return {"models": container.upstreams(build=True)}
