"""SQLite statements make one trip to aiosqlite's thread each, and mean what they meant."""

from __future__ import annotations

from uuid import uuid4

import aiosqlite
import pytest
from sqlalchemy import exc, func, insert, select

from threadline.storage.database import Database, utcnow
from threadline.storage.sqlite_driver import OneTripConnection
from threadline.storage.tables import orgs


@pytest.fixture
async def db(tmp_path):
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 't.db'}")
    await database.migrate()
    yield database
    await database.dispose()


@pytest.fixture
def trips(monkeypatch):
    calls: list[str] = []
    execute = aiosqlite.Connection._execute

    async def counting(self, fn, *args, **kwargs):
        calls.append(getattr(getattr(fn, "func", fn), "__name__", repr(fn)))
        return await execute(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
    return calls


def org(name: str) -> dict:
    return {"id": uuid4(), "name": name, "is_system": False, "created_at": utcnow()}


async def test_a_read_is_one_trip_and_a_write_one_per_statement_plus_commit(db, trips):
    async with db.read() as conn:  # a first connection: its set-up trips are not counted
        await conn.execute(select(1))
    trips.clear()
    async with db.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(orgs))).scalar_one() == 0
    assert trips == ["_execute"]  # no cursor, fetch or close trips; no rollback
    trips.clear()
    async with db.write() as conn:
        await conn.execute(insert(orgs), org("a"))
        await conn.execute(insert(orgs), org("b"))
    assert trips == ["_execute", "_execute", "commit"]


async def test_connections_are_switched(db):
    async with db.read() as conn:
        raw = await conn.get_raw_connection()
        assert isinstance(raw.dbapi_connection, OneTripConnection)


async def test_errors_and_rollbacks_behave_as_before(db):
    async with db.write() as conn:
        await conn.execute(insert(orgs), org("a"))
    with pytest.raises(exc.IntegrityError):
        async with db.write() as conn:
            await conn.execute(insert(orgs), org("b"))  # rolled back with the failure below
            await conn.execute(insert(orgs), org("a"))  # duplicate name
    async with db.read() as conn:
        names = (await conn.execute(select(orgs.c.name).order_by(orgs.c.name))).scalars().all()
    assert names == ["a"]
    async with db.read() as conn:  # rows come back typed, many at once
        await conn.execute(select(orgs))
        rows = (await conn.execute(select(orgs.c.id, orgs.c.created_at))).all()
    assert len(rows) == 1 and rows[0].created_at.year >= 2026


async def test_a_batched_write_sends_its_statements_together(db, trips):
    async with db.write() as conn:  # warm the pool's connection
        await conn.execute(insert(orgs), org("warm"))
    trips.clear()
    async with db.write(batched=True) as conn:
        await conn.execute(insert(orgs), org("a"))
        await conn.execute(insert(orgs), org("b"))
    assert trips == ["_commit_all"]  # both inserts and the commit: one trip
    trips.clear()
    async with db.write(batched=True) as conn:
        await conn.execute(insert(orgs), org("c"))
        found = (await conn.execute(select(orgs.c.name).order_by(orgs.c.name))).scalars().all()
    assert found == ["a", "b", "c", "warm"]  # a read sees the held statements' effect
    assert trips == ["_execute_all", "commit"]
    trips.clear()
    async with db.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(orgs))).scalar_one() == 4


async def test_a_failing_batched_statement_fails_and_undoes_the_transaction(db):
    async with db.write() as conn:
        await conn.execute(insert(orgs), org("a"))
    with pytest.raises(exc.IntegrityError):
        async with db.write(batched=True) as conn:
            await conn.execute(insert(orgs), org("b"))
            await conn.execute(insert(orgs), org("a"))  # duplicate: raised at the commit
    async with db.read() as conn:
        names = (await conn.execute(select(orgs.c.name))).scalars().all()
    assert names == ["a"]
    async with db.write(batched=True) as conn:  # the connection is fine afterwards
        await conn.execute(insert(orgs), org("c"))
    async with db.write() as conn:  # and an unbatched write raises at the statement again
        with pytest.raises(exc.IntegrityError):
            await conn.execute(insert(orgs), org("c"))
