"""Usage per day, model and user, summed over the AI records of one org (implements
`ports.UsageStore`). Every request that ran a model (any dialect) left one record, with
its token counts and the credits it was charged; the sum is done by the database."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import func, select

from threadline.domain.usage import UsageRow
from threadline.storage.database import Database
from threadline.storage.tables import ai_records


class SqlUsageStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def usage(self, org_id: UUID, since: datetime) -> list[UsageRow]:
        """The org's usage from `since` (UTC) on, by UTC day, oldest day first."""
        created = ai_records.c.created_at
        # Timestamps are stored in UTC; the day is taken in UTC on both engines.
        day: Any = (
            func.date(created) if self._db.is_sqlite else func.date(func.timezone("UTC", created))
        )
        day = day.label("day")
        query = (
            select(
                day,
                ai_records.c.model,
                ai_records.c.user_id,
                func.count().label("requests"),
                func.coalesce(func.sum(ai_records.c.input_tokens), 0).label("input_tokens"),
                func.coalesce(func.sum(ai_records.c.output_tokens), 0).label("output_tokens"),
                func.coalesce(func.sum(ai_records.c.credits), 0).label("credits"),
            )
            .where(ai_records.c.org_id == org_id, created >= since)
            .group_by(day, ai_records.c.model, ai_records.c.user_id)
            .order_by(day, ai_records.c.model)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            UsageRow(
                day=_day(row["day"]),
                model=row["model"],
                user_id=row["user_id"]
                if isinstance(row["user_id"], UUID)
                else UUID(str(row["user_id"])),
                requests=int(row["requests"]),
                input_tokens=int(row["input_tokens"]),
                output_tokens=int(row["output_tokens"]),
                credits=int(row["credits"]),
            )
            for row in rows
        ]


def _day(value: object) -> date:
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])
