"""Memories in SQL (implements `domain.memories.MemoryStore`).

Every statement names the org and the user. Vectors are float32 little-endian bytes on both
backends; a listing does not read them.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import numpy as np
from sqlalchemy import ColumnElement, delete, func, insert, select, update
from sqlalchemy.engine import RowMapping

from threadline.domain.entities import Page
from threadline.domain.memories import Memory, MemorySource
from threadline.storage.database import Database, as_utc
from threadline.storage.tables import memories

_LISTED = [c for c in memories.c if c.name != "embedding"]


def _memory(row: RowMapping) -> Memory:
    blob = row.get("embedding")
    return Memory(
        id=row["id"],
        org_id=row["org_id"],
        user_id=row["user_id"],
        content=row["content"],
        kind=row["kind"],
        source=MemorySource(row["source"]),
        record_id=row["record_id"],
        created_at=as_utc(row["created_at"]),
        updated_at=as_utc(row["updated_at"]),
        embedder=row["embedder"],
        vector=tuple(np.frombuffer(blob, dtype="<f4").tolist()) if blob else None,
    )


def _state(memory: Memory) -> dict[str, Any]:
    """The columns a save writes (all but the owner and the creation time)."""
    vector = memory.vector
    return {
        "content": memory.content,
        "kind": memory.kind,
        "source": memory.source.value,
        "record_id": memory.record_id,
        "updated_at": memory.updated_at,
        "embedder": memory.embedder if vector is not None else None,
        "embedding": np.asarray(vector, dtype="<f4").tobytes() if vector is not None else None,
    }


def _owned(org_id: UUID, user_id: UUID) -> tuple[ColumnElement[bool], ...]:
    return (memories.c.org_id == org_id, memories.c.user_id == user_id)


class SqlMemoryStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def list(self, org_id: UUID, user_id: UUID, *, limit: int, offset: int) -> Page:
        query = (
            select(*_LISTED)
            .where(*_owned(org_id, user_id))
            .order_by(memories.c.updated_at.desc(), memories.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        count = select(func.count()).select_from(memories).where(*_owned(org_id, user_id))
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
            total = int((await conn.execute(count)).scalar_one())
        return Page([_memory(r) for r in rows], total, limit, offset)

    async def all(self, org_id: UUID, user_id: UUID) -> builtins.list[Memory]:
        query = (
            select(memories)
            .where(*_owned(org_id, user_id))
            .order_by(memories.c.updated_at.desc(), memories.c.id.desc())
        )
        async with self._db.read() as conn:
            return [_memory(r) for r in (await conn.execute(query)).mappings()]

    async def get(self, org_id: UUID, user_id: UUID, memory_id: UUID) -> Memory | None:
        query = select(*_LISTED).where(*_owned(org_id, user_id), memories.c.id == memory_id)
        async with self._db.read() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _memory(row) if row else None

    async def save(
        self,
        org_id: UUID,
        user_id: UUID,
        *,
        added: Sequence[Memory],
        changed: Sequence[Memory],
        keep: int,
    ) -> None:
        rows = [
            {
                "id": m.id,
                "org_id": org_id,
                "user_id": user_id,
                "created_at": m.created_at,
                **_state(m),
            }
            for m in added
        ]
        async with self._db.write() as conn:
            if rows:
                await conn.execute(insert(memories), rows)
            for memory in changed:
                await conn.execute(
                    update(memories)
                    .where(*_owned(org_id, user_id), memories.c.id == memory.id)
                    .values(**_state(memory))
                )
            if rows:
                newest = (
                    select(memories.c.id)
                    .where(*_owned(org_id, user_id))
                    .order_by(memories.c.updated_at.desc(), memories.c.id.desc())
                    .limit(keep)
                )
                await conn.execute(
                    delete(memories).where(*_owned(org_id, user_id), memories.c.id.not_in(newest))
                )

    async def delete(self, org_id: UUID, user_id: UUID, memory_id: UUID) -> bool:
        statement = delete(memories).where(*_owned(org_id, user_id), memories.c.id == memory_id)
        async with self._db.write() as conn:
            result = await conn.execute(statement)
        return bool(result.rowcount)

    async def delete_all(self, org_id: UUID, user_id: UUID) -> int:
        async with self._db.write() as conn:
            result = await conn.execute(delete(memories).where(*_owned(org_id, user_id)))
        return int(result.rowcount)
