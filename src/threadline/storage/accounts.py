"""Orgs, users, API keys and credit balances in SQL (implements `ports.AccountStore`)."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import RowMapping

from threadline.domain.entities import ApiKey, Org, Principal, Role, User
from threadline.storage.database import Database, as_utc, utcnow
from threadline.storage.tables import api_keys, orgs, users

_USER_CHANGES = {"name", "role", "status", "credit_limit"}


def _org(row: RowMapping) -> Org:
    return Org(
        id=row["id"],
        name=row["name"],
        is_system=row["is_system"],
        created_at=as_utc(row["created_at"]),
    )


def user_from_row(row: RowMapping) -> User:
    return User(
        id=row["id"],
        org_id=row["org_id"],
        name=row["name"],
        role=Role(row["role"]),
        status=row["status"],
        credit_limit=row["credit_limit"],
        used_credit=row["used_credit"],
        reserved_credit=row["reserved_credit"],
        created_at=as_utc(row["created_at"]),
        updated_at=as_utc(row["updated_at"]),
        created_by=row["created_by"],
        updated_by=row["updated_by"],
    )


def _key(row: RowMapping) -> ApiKey:
    revoked = row["revoked_at"]
    return ApiKey(
        id=row["id"],
        org_id=row["org_id"],
        user_id=row["user_id"],
        name=row["name"],
        prefix=row["prefix"],
        created_at=as_utc(row["created_at"]),
        revoked_at=as_utc(revoked) if revoked else None,
    )


class SqlAccountStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_org(self, name: str, *, is_system: bool = False) -> Org:
        org = Org(id=uuid4(), name=name, is_system=is_system, created_at=utcnow())
        async with self._db.write() as conn:
            await conn.execute(
                insert(orgs).values(
                    id=org.id, name=name, is_system=is_system, created_at=org.created_at
                )
            )
        return org

    async def get_org(self, org_id: UUID) -> Org | None:
        return await self._one_org(orgs.c.id == org_id)

    async def find_org_by_name(self, name: str) -> Org | None:
        return await self._one_org(orgs.c.name == name)

    async def _one_org(self, where: Any) -> Org | None:
        async with self._db.read() as conn:
            row = (await conn.execute(select(orgs).where(where))).mappings().first()
        return _org(row) if row else None

    async def list_orgs(self) -> list[Org]:
        async with self._db.read() as conn:
            rows = (await conn.execute(select(orgs).order_by(orgs.c.created_at))).mappings()
            return [_org(r) for r in rows]

    async def create_user(
        self, org_id: UUID, name: str, role: Role, credit_limit: int, created_by: str
    ) -> User:
        now = utcnow()
        values = {
            "id": uuid4(),
            "org_id": org_id,
            "name": name,
            "role": role.value,
            "status": "ACTIVE",
            "credit_limit": credit_limit,
            "used_credit": 0,
            "reserved_credit": 0,
            "created_by": created_by,
            "updated_by": created_by,
            "created_at": now,
            "updated_at": now,
        }
        async with self._db.write() as conn:
            await conn.execute(insert(users).values(**values))
        return user_from_row(values)  # type: ignore[arg-type]

    async def get_user(self, org_id: UUID, user_id: UUID) -> User | None:
        async with self._db.read() as conn:
            query = select(users).where(users.c.org_id == org_id, users.c.id == user_id)
            row = (await conn.execute(query)).mappings().first()
        return user_from_row(row) if row else None

    async def list_users(self, org_id: UUID) -> list[User]:
        async with self._db.read() as conn:
            query = select(users).where(users.c.org_id == org_id).order_by(users.c.created_at)
            return [user_from_row(r) for r in (await conn.execute(query)).mappings()]

    async def update_user(
        self, org_id: UUID, user_id: UUID, updated_by: str, **changes: Any
    ) -> User | None:
        unknown = set(changes) - _USER_CHANGES
        if unknown:
            raise ValueError(f"cannot change {sorted(unknown)}")
        values = {k: (v.value if isinstance(v, Role) else v) for k, v in changes.items()}
        async with self._db.write() as conn:
            result = await conn.execute(
                update(users)
                .where(users.c.org_id == org_id, users.c.id == user_id)
                .values(**values, updated_by=updated_by, updated_at=utcnow())
            )
        if result.rowcount == 0:
            return None
        return await self.get_user(org_id, user_id)

    async def create_key(
        self, org_id: UUID, user_id: UUID, name: str, prefix: str, secret_hash: str
    ) -> ApiKey:
        values = {
            "id": uuid4(),
            "org_id": org_id,
            "user_id": user_id,
            "name": name,
            "prefix": prefix,
            "secret_hash": secret_hash,
            "created_at": utcnow(),
            "revoked_at": None,
        }
        async with self._db.write() as conn:
            await conn.execute(insert(api_keys).values(**values))
        return _key(values)  # type: ignore[arg-type]

    async def list_keys(self, org_id: UUID) -> list[ApiKey]:
        query = select(api_keys).where(api_keys.c.org_id == org_id).order_by(api_keys.c.created_at)
        async with self._db.read() as conn:
            return [_key(r) for r in (await conn.execute(query)).mappings()]

    async def revoke_key(self, org_id: UUID, key_id: UUID) -> ApiKey | None:
        where = (api_keys.c.org_id == org_id, api_keys.c.id == key_id)
        async with self._db.write() as conn:
            await conn.execute(
                update(api_keys)
                .where(*where, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            row = (await conn.execute(select(api_keys).where(*where))).mappings().first()
        return _key(row) if row else None

    async def count_keys(self) -> int:
        async with self._db.read() as conn:
            return int(
                (await conn.execute(select(func.count()).select_from(api_keys))).scalar_one()
            )

    async def principal_for_key(self, prefix: str) -> tuple[Principal, str] | None:
        query = (
            select(
                api_keys.c.id.label("key_id"),
                api_keys.c.secret_hash,
                users,
                orgs.c.name.label("org_name"),
                orgs.c.is_system,
                orgs.c.created_at.label("org_created_at"),
            )
            .join(users, users.c.id == api_keys.c.user_id)
            .join(orgs, orgs.c.id == api_keys.c.org_id)
            .where(api_keys.c.prefix == prefix, api_keys.c.revoked_at.is_(None))
        )
        async with self._db.read() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            return None
        org = Org(
            id=row["org_id"],
            name=row["org_name"],
            is_system=row["is_system"],
            created_at=as_utc(row["org_created_at"]),
        )
        return Principal(org=org, user=user_from_row(row), key_id=row["key_id"]), row["secret_hash"]

    async def charge(self, org_id: UUID, user_id: UUID, credits: int) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                update(users)
                .where(users.c.org_id == org_id, users.c.id == user_id)
                .values(used_credit=users.c.used_credit + credits)
            )
