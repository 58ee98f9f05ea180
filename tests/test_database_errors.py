"""A database error is logged (`log.exception` where a reply or images cannot be stored) and may
reach a traceback: it must never carry the values that were written (prompts, document
text, key hashes), only the statement. On SQLite and PostgreSQL."""

from __future__ import annotations

from uuid import uuid4

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import DBAPIError

from threadline.storage.database import Database
from threadline.storage.tables import ai_records

SECRET = "a prompt no log may show"


async def test_a_failed_write_does_not_show_its_values(db_url: str) -> None:
    db = Database(db_url)
    try:
        await db.migrate()
        with pytest.raises(DBAPIError) as caught:
            async with db.write() as conn:  # no org_id, user_id...: a NOT NULL violation
                await conn.execute(
                    insert(ai_records).values(id=uuid4(), prompt_object={"prompt": SECRET})
                )
        assert "ai_records" in str(caught.value)  # the statement is still named
        assert SECRET not in str(caught.value)
    finally:
        await db.dispose()
