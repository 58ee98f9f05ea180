"""Idempotency keys in SQL (implements `ports.IdempotencyStore`; the rules are in
services/idempotency.py).

A claim is one `INSERT ... ON CONFLICT DO NOTHING` on the primary key (API key, header
value): of two requests with one key, on one process or on two, the database lets exactly
one insert through; the other reads the row the winner wrote (on PostgreSQL the loser's
insert waits for the winner's transaction, so the row it then reads is committed). Every
later write names the holder's `token`, so a request that lost the key (taken over after its
lock ran out) cannot overwrite the answer of the one that took it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import RowMapping

from threadline.domain.ports import KeyedRequest
from threadline.storage.database import Database, as_utc
from threadline.storage.tables import idempotency_keys as keys

CLAIM_ATTEMPTS = 3  # a row deleted between the insert that lost and the read: try again


def _entry(row: RowMapping) -> KeyedRequest:
    return KeyedRequest(
        scope=row["scope"],
        key=row["key"],
        fingerprint=row["fingerprint"],
        request=row["request"],
        token=row["token"],
        created_at=as_utc(row["created_at"]),
        locked_until=as_utc(row["locked_until"]),
        record_id=row["record_id"],
        status_code=row["status_code"],
        content_type=row["content_type"],
        body=row["body"],
        stream=bool(row["stream"]),
    )


def _values(entry: KeyedRequest) -> dict[str, Any]:
    return {
        "scope": entry.scope,
        "key": entry.key,
        "fingerprint": entry.fingerprint,
        "request": entry.request,
        "token": entry.token,
        "created_at": entry.created_at,
        "locked_until": entry.locked_until,
        "record_id": entry.record_id,
        "status_code": entry.status_code,
        "content_type": entry.content_type,
        "body": entry.body,
        "stream": entry.stream,
    }


def _this(scope: UUID, key: str) -> tuple[Any, ...]:
    return (keys.c.scope == scope, keys.c.key == key)


def _held(scope: UUID, key: str, token: UUID) -> tuple[Any, ...]:
    return (*_this(scope, key), keys.c.token == token)


class SqlIdempotencyStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._insert = sqlite_insert if db.is_sqlite else postgresql_insert

    async def claim(self, entry: KeyedRequest, expired_before: datetime) -> KeyedRequest | None:
        where = _this(entry.scope, entry.key)
        statement = (
            self._insert(keys)
            .values(**_values(entry))
            .on_conflict_do_nothing(index_elements=[keys.c.scope, keys.c.key])
            .returning(keys.c.token)
        )
        for _ in range(CLAIM_ATTEMPTS):
            async with self._db.write(urgent=True) as conn:
                await conn.execute(delete(keys).where(*where, keys.c.created_at < expired_before))
                if (await conn.execute(statement)).first() is not None:
                    return None
                row = (await conn.execute(select(keys).where(*where))).mappings().first()
            if row is not None:
                return _entry(row)
        raise RuntimeError("idempotency key claim did not settle")  # pragma: no cover

    async def get(self, scope: UUID, key: str) -> KeyedRequest | None:
        async with self._db.read() as conn:
            row = (await conn.execute(select(keys).where(*_this(scope, key)))).mappings().first()
        return _entry(row) if row is not None else None

    async def take_over(
        self, scope: UUID, key: str, old: UUID, new: UUID, locked_until: datetime
    ) -> bool:
        statement = (
            update(keys)
            .where(*_held(scope, key, old), keys.c.status_code.is_(None))
            .values(token=new, locked_until=locked_until)
        )
        async with self._db.write() as conn:
            return (await conn.execute(statement)).rowcount == 1

    async def started(self, scope: UUID, key: str, token: UUID, record_id: UUID) -> None:
        statement = update(keys).where(*_held(scope, key, token)).values(record_id=record_id)
        async with self._db.write() as conn:
            await conn.execute(statement)

    async def answered(
        self,
        scope: UUID,
        key: str,
        token: UUID,
        *,
        status_code: int,
        content_type: str | None,
        body: bytes | None,
        stream: bool,
    ) -> None:
        statement = (
            update(keys)
            .where(*_held(scope, key, token))
            .values(status_code=status_code, content_type=content_type, body=body, stream=stream)
        )
        async with self._db.write() as conn:
            await conn.execute(statement)

    async def release(self, scope: UUID, key: str, token: UUID) -> None:
        statement = delete(keys).where(*_held(scope, key, token), keys.c.status_code.is_(None))
        async with self._db.write() as conn:
            await conn.execute(statement)

    async def purge(self, before: datetime) -> int:
        async with self._db.write() as conn:
            return (await conn.execute(delete(keys).where(keys.c.created_at < before))).rowcount
