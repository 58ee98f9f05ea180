"""`HEAD_REVISION` (storage/database.py), which a start compares the database's revision
with instead of loading alembic, is the newest migration's; a database at it starts without
alembic, and one behind it is migrated to it."""

from __future__ import annotations

import subprocess
import sys

from alembic.config import Config
from alembic.script import ScriptDirectory

from threadline.storage.database import HEAD_REVISION, MIGRATIONS_DIR, Database


def test_head_revision_is_alembic_s_head():
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION


async def test_a_new_database_is_migrated_to_head_and_reads_as_current(tmp_path):
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'new.db'}")
    try:
        assert await db.revisions() == (None, HEAD_REVISION)
        await db.migrate()
        assert await db.revisions() == (HEAD_REVISION, HEAD_REVISION)
    finally:
        await db.dispose()


def test_a_start_on_a_current_database_loads_no_alembic(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'current.db'}"
    code = f"""
import asyncio, sys
from threadline.storage.database import Database
async def main():
    db = Database({url!r})
    await db.migrate()
    await db.dispose()
asyncio.run(main())
assert "alembic" in sys.modules  # the first start migrates
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    again = code.replace('assert "alembic" in', 'assert "alembic" not in')
    subprocess.run([sys.executable, "-c", again], check=True, timeout=60)
