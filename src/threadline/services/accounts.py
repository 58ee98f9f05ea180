"""API keys, authentication and the admin use cases (orgs, users, keys, credit limits).

A key reads `tl_<prefix>_<secret>`. Only the prefix (for lookup) and a SHA-256 of the whole
key are stored; the key itself is shown once, when it is made. Keys carry 190+ bits of
randomness, so a fast hash is the right tool (no password stretching needed).

Authenticated principals are cached for a few seconds (see `principal_cache`): revoking a key
or changing a user through this service takes effect at once in this process; in other
processes sharing the database, within a Redis round trip when `redis_url` is set (the
`Invalidations` port), else within `auth_cache_seconds`.

Every API request is admitted here (`admit`): its key authenticated, then counted against the
key's rate limit (the `RateLimiter` port). The command line acts as the system org's first
admin (`operator`) and makes keys by org name (`issue_key_in`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from uuid import UUID

from threadline.domain.entities import ApiKey, Org, Principal, Role, User
from threadline.domain.errors import (
    Conflict,
    Forbidden,
    NotFound,
    Unauthorized,
)
from threadline.domain.ports import AccountStore, Invalidations, RateLimiter
from threadline.services.principal_cache import PrincipalCache

KEY_SCHEME = "tl"
SYSTEM_ORG_NAME = "default"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh key and its lookup prefix."""
    prefix = secrets.token_hex(6)
    return f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(24)}", prefix


def _prefix_of(key: str) -> str | None:
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_SCHEME or len(parts[1]) != 12:
        return None
    return parts[1]


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key as made: `secret` is the full key, shown to the caller this one time."""

    key: ApiKey
    secret: str
    user: User


class AccountService:
    def __init__(
        self,
        store: AccountStore,
        default_credit_limit: int,
        cache_seconds: float = 0.0,
        *,
        rate_limiter: RateLimiter | None = None,
        invalidations: Invalidations | None = None,
    ) -> None:
        self._store = store
        self.default_credit_limit = default_credit_limit
        self._cache = PrincipalCache(cache_seconds)
        self._rate_limiter = rate_limiter
        self._invalidations = invalidations
        if invalidations is not None:
            invalidations.subscribe(self._invalidated)

    async def admit(self, raw_key: str | None) -> Principal:
        """The caller of an API request: its key authenticated, then the request counted
        against the key's rate limit (`RateLimited` past it)."""
        principal = await self.authenticate(raw_key)
        if self._rate_limiter is not None:
            await self._rate_limiter.hit(str(principal.key_id))
        return principal

    async def authenticate(self, raw_key: str | None) -> Principal:
        if not raw_key:
            raise Unauthorized("Invalid or missing API key")
        key = raw_key.strip()
        key_hash = hash_key(key)
        principal = self._cache.get(key_hash)
        if principal is None:
            generation = self._cache.generation
            prefix = _prefix_of(key)
            found = await self._store.principal_for_key(prefix) if prefix else None
            if found is None or not hmac.compare_digest(found[1], key_hash):
                raise Unauthorized("Invalid or missing API key")
            principal = found[0]
            self._cache.put(key_hash, principal, generation)
        if principal.user.status != "ACTIVE":
            raise Unauthorized("This API key's user is not active")
        return principal

    def charged(self, user: User) -> None:
        """A charge was stored: `user` is the user's row as read just after it."""
        self._cache.update_user(user)

    async def bootstrap(self) -> IssuedKey | None:
        """On an empty database: the system org, its first admin and a key for them."""
        if await self._store.count_keys() > 0:
            return None
        org = await self._store.find_org_by_name(SYSTEM_ORG_NAME)
        if org is None:
            org = await self._store.create_org(SYSTEM_ORG_NAME, is_system=True)
        return await self.issue_key(org, role=Role.ADMIN, user_name="admin", created_by="SYSTEM")

    async def issue_key(
        self,
        org: Org,
        *,
        role: Role = Role.MEMBER,
        user_name: str = "user",
        created_by: str = "SYSTEM",
        user: User | None = None,
        key_name: str = "default",
        credit_limit: int | None = None,
    ) -> IssuedKey:
        if user is None:
            limit = self.default_credit_limit if credit_limit is None else credit_limit
            user = await self._store.create_user(org.id, user_name, role, limit, created_by)
        secret, prefix = new_key()
        key = await self._store.create_key(org.id, user.id, key_name, prefix, hash_key(secret))
        return IssuedKey(key=key, secret=secret, user=user)

    # ---- the command line (no API key: it acts on the data dir it was given) ----

    async def issue_key_in(
        self, org_name: str, *, role: Role, user_name: str, create: bool = False
    ) -> IssuedKey:
        """A new user with a key in the org of that name. A missing org is made only when
        asked (`create`), or when it is the system org (made as the system org); otherwise
        NotFound names the orgs there are (a typo must not make a new org)."""
        org = await self._store.find_org_by_name(org_name)
        if org is None and not (create or org_name == SYSTEM_ORG_NAME):
            known = sorted(o.name for o in await self._store.list_orgs())
            raise NotFound(f"no org named {org_name!r}; known orgs: {', '.join(known) or 'none'}")
        if org is None:
            org = await self._store.create_org(org_name, is_system=org_name == SYSTEM_ORG_NAME)
        return await self.issue_key(org, role=role, user_name=user_name, created_by="CLI")

    async def operator(self) -> Principal:
        """Whom a command acts as: the first admin of the system org, both made on the spot
        when the database is new."""
        store = self._store
        org = await store.find_org_by_name(SYSTEM_ORG_NAME) or await store.create_org(
            SYSTEM_ORG_NAME, is_system=True
        )
        admins = [u for u in await store.list_users(org.id) if u.role is Role.ADMIN]
        user = (
            admins[0]
            if admins
            else await store.create_user(
                org.id, "admin", Role.ADMIN, self.default_credit_limit, "CLI"
            )
        )
        return Principal(org=org, user=user, key_id=user.id)

    # ---- admin use cases (ADMIN role; system-org admins also manage other orgs) ----

    async def create_org(
        self, caller: Principal, name: str, admin_name: str, credit_limit: int | None
    ) -> tuple[Org, IssuedKey]:
        self._require_system_admin(caller)
        if await self._store.find_org_by_name(name) is not None:
            raise Conflict(f"an org named {name!r} already exists")
        org = await self._store.create_org(name)
        issued = await self.issue_key(
            org,
            role=Role.ADMIN,
            user_name=admin_name,
            created_by=caller.user.name,
            credit_limit=credit_limit,
        )
        return org, issued

    async def list_orgs(self, caller: Principal) -> list[Org]:
        require_admin(caller)
        return await self._store.list_orgs() if caller.org.is_system else [caller.org]

    async def target_org(self, caller: Principal, org_id: UUID | None) -> Org:
        """The org an admin acts on: their own, or (system admins only) another one."""
        require_admin(caller)
        if org_id is None or org_id == caller.org_id:
            return caller.org
        org = await self._store.get_org(org_id) if caller.org.is_system else None
        if org is None:
            raise NotFound(f"org {org_id} not found")
        return org

    async def create_user(
        self, caller: Principal, org: Org, name: str, role: Role, credit_limit: int | None
    ) -> User:
        limit = self.default_credit_limit if credit_limit is None else credit_limit
        return await self._store.create_user(org.id, name, role, limit, caller.user.name)

    async def list_users(self, org: Org) -> list[User]:
        return await self._store.list_users(org.id)

    async def update_user(
        self, caller: Principal, org: Org, user_id: UUID, **changes: object
    ) -> User:
        if user_id == caller.user.id and "credit_limit" in changes:
            await self._check_own_limit(caller, changes["credit_limit"])
        user = await self._store.update_user(org.id, user_id, caller.user.name, **changes)
        self._invalidate("user", user_id)
        if user is None:
            raise NotFound(f"user {user_id} not found")
        return user

    async def create_key_for(
        self, caller: Principal, org: Org, user_id: UUID, name: str
    ) -> IssuedKey:
        user = await self._store.get_user(org.id, user_id)
        if user is None:
            raise NotFound(f"user {user_id} not found")
        return await self.issue_key(org, user=user, key_name=name, created_by=caller.user.name)

    async def list_keys(self, org: Org) -> list[ApiKey]:
        return await self._store.list_keys(org.id)

    async def revoke_key(self, org: Org, key_id: UUID) -> ApiKey:
        key = await self._store.revoke_key(org.id, key_id)
        self._invalidate("key", key_id)
        if key is None:
            raise NotFound(f"API key {key_id} not found")
        return key

    def _invalidate(self, kind: str, ident: UUID) -> None:
        """Drop a revoked key or a changed user from this process's cache and, through the
        shared invalidations (Redis), from every other process's."""
        if self._invalidations is not None:
            self._invalidations.publish(kind, ident)  # this process's handler included
        else:
            self._invalidated(kind, ident)

    def _invalidated(self, kind: str, ident: UUID) -> None:
        if kind == "key":
            self._cache.drop_key(ident)
        elif kind == "user":
            self._cache.drop_user(ident)
        else:  # messages may have been missed
            self._cache.clear()

    async def user(self, principal: Principal) -> User:
        """The caller's user as stored now (fresh credit figures)."""
        user = await self._store.get_user(principal.org_id, principal.user.id)
        if user is None:
            raise Unauthorized("This API key's user no longer exists")
        return user

    async def _check_own_limit(self, caller: Principal, limit: object) -> None:
        """Nobody raises their own credit limit: another admin of their org, or an admin of
        the system org, does. Lowering one's own is allowed."""
        own = await self.user(caller)
        if isinstance(limit, int) and limit > own.credit_limit:
            raise Forbidden(
                f"You cannot raise your own credit limit ({own.credit_limit}); another admin "
                "of your org, or an admin of the system org, can"
            )

    @staticmethod
    def _require_system_admin(caller: Principal) -> None:
        require_admin(caller)
        if not caller.org.is_system:
            raise Forbidden("Only admins of the system org can create orgs")


def require_admin(caller: Principal) -> None:
    if not caller.is_admin:
        raise Forbidden("This needs an API key of a user with the ADMIN role")
