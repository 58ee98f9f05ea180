"""Brand voices in SQL (implements `domain.brand_voices.BrandVoiceStore`)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import RowMapping

from threadline.domain.brand_voices import BrandVoice
from threadline.domain.entities import Page
from threadline.storage.database import Database, as_utc
from threadline.storage.tables import brand_voices


def _voice(row: RowMapping) -> BrandVoice:
    return BrandVoice(
        id=row["id"],
        org_id=row["org_id"],
        name=row["name"],
        instructions=row["instructions"],
        examples=tuple(row["examples"]),
        created_at=as_utc(row["created_at"]),
        updated_at=as_utc(row["updated_at"]),
        created_by=row["created_by"],
        updated_by=row["updated_by"],
    )


def _changes(voice: BrandVoice) -> dict[str, Any]:
    return {
        "name": voice.name,
        "instructions": voice.instructions,
        "examples": list(voice.examples),
        "updated_at": voice.updated_at,
        "updated_by": voice.updated_by,
    }


class SqlBrandVoiceStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, voice: BrandVoice) -> BrandVoice:
        async with self._db.write() as conn:
            await conn.execute(
                insert(brand_voices).values(
                    id=voice.id,
                    org_id=voice.org_id,
                    created_at=voice.created_at,
                    created_by=voice.created_by,
                    **_changes(voice),
                )
            )
        return voice

    async def get(self, org_id: UUID, voice_id: UUID) -> BrandVoice | None:
        query = select(brand_voices).where(
            brand_voices.c.org_id == org_id, brand_voices.c.id == voice_id
        )
        async with self._db.read() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _voice(row) if row else None

    async def list(self, org_id: UUID, *, limit: int, offset: int) -> Page:
        where = brand_voices.c.org_id == org_id
        query = (
            select(brand_voices)
            .where(where)
            .order_by(brand_voices.c.created_at.desc(), brand_voices.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        count = select(func.count()).select_from(brand_voices).where(where)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
            total = int((await conn.execute(count)).scalar_one())
        return Page([_voice(r) for r in rows], total, limit, offset)

    async def replace(self, voice: BrandVoice) -> BrandVoice | None:
        statement = (
            update(brand_voices)
            .where(brand_voices.c.org_id == voice.org_id, brand_voices.c.id == voice.id)
            .values(**_changes(voice))
        )
        async with self._db.write() as conn:
            result = await conn.execute(statement)
        return voice if result.rowcount else None

    async def delete(self, org_id: UUID, voice_id: UUID) -> bool:
        statement = delete(brand_voices).where(
            brand_voices.c.org_id == org_id, brand_voices.c.id == voice_id
        )
        async with self._db.write() as conn:
            result = await conn.execute(statement)
        return bool(result.rowcount)
