"""The idempotency store (storage/idempotency.py) and its rules (services/idempotency.py) on
SQLite and PostgreSQL: the database decides a race for a key, a key expires, only its holder
writes to it, and a request waits for the holder's answer."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any
from uuid import uuid4

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from threadline.domain.clock import utcnow
from threadline.domain.errors import Conflict, KeyReused
from threadline.domain.ports import KeyedRequest
from threadline.services.idempotency import IdempotencyService
from threadline.storage.database import MIGRATIONS_DIR, Database
from threadline.storage.idempotency import SqlIdempotencyStore
from threadline.storage.tables import metadata

TABLE = "idempotency_keys"


def entry(scope: object, key: str = "k", fingerprint: str = "f", **changes: object) -> KeyedRequest:
    now = utcnow()
    values: dict[str, object] = {
        "scope": scope,
        "key": key,
        "fingerprint": fingerprint,
        "request": "POST /x",
        "token": uuid4(),
        "created_at": now,
        "locked_until": now + timedelta(minutes=10),
        **changes,
    }
    return KeyedRequest(**values)  # type: ignore[arg-type]


async def test_one_of_many_concurrent_claims_wins(db: Database) -> None:
    store, scope = SqlIdempotencyStore(db), uuid4()
    past = utcnow() - timedelta(days=1)
    claims = [entry(scope) for _ in range(20)]
    found = await asyncio.gather(*(store.claim(c, past) for c in claims))
    winners = [c for c, f in zip(claims, found, strict=True) if f is None]
    assert len(winners) == 1
    assert {f.token for f in found if f is not None} == {winners[0].token}
    # another scope's same key is another key
    assert await store.claim(entry(uuid4()), past) is None


async def test_expired_keys_are_replaced_and_purged(db: Database) -> None:
    store, scope = SqlIdempotencyStore(db), uuid4()
    old = entry(scope, created_at=utcnow() - timedelta(hours=25))
    assert await store.claim(old, utcnow() - timedelta(days=2)) is None
    assert await store.claim(entry(scope, key="other"), utcnow()) is None
    fresh = entry(scope, fingerprint="new")
    assert await store.claim(fresh, utcnow() - timedelta(hours=24)) is None  # old one gone
    stored = await store.get(scope, "k")
    assert stored is not None and stored.fingerprint == "new"
    assert await store.purge(utcnow() + timedelta(seconds=1)) == 2
    assert await store.get(scope, "k") is None


async def test_only_the_holder_writes(db: Database) -> None:
    store, scope = SqlIdempotencyStore(db), uuid4()
    held = entry(scope)
    await store.claim(held, utcnow())
    await store.release(scope, "k", uuid4())  # not the holder: nothing happens
    assert await store.get(scope, "k") is not None
    assert not await store.take_over(scope, "k", uuid4(), uuid4(), utcnow())
    taker = uuid4()
    assert await store.take_over(scope, "k", held.token, taker, utcnow())
    record = uuid4()
    await store.started(scope, "k", held.token, record)  # the old holder lost the key
    await store.started(scope, "k", taker, record)
    await store.answered(
        scope, "k", taker, status_code=201, content_type="a/b", body=b"\x00x", stream=False
    )
    stored = await store.get(scope, "k")
    assert stored is not None
    assert (stored.record_id, stored.status_code, stored.content_type, stored.body) == (
        record,
        201,
        "a/b",
        b"\x00x",
    )
    await store.release(scope, "k", taker)  # answered: kept
    assert await store.get(scope, "k") is not None


async def test_a_retry_waits_for_the_answer_or_the_release(db: Database) -> None:
    service = IdempotencyService(SqlIdempotencyStore(db), poll_seconds=0.01)
    scope = uuid4()
    first = await service.begin(scope, "k", "f", "POST /x")
    assert first.held
    with pytest.raises(KeyReused, match="POST /x"):
        await service.begin(scope, "k", "other", "POST /x")

    waiting = asyncio.create_task(service.begin(scope, "k", "f", "POST /x"))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await service.answered(first, 200, "application/json", b"{}")
    answer = (await waiting).answer
    assert answer is not None and (answer.status_code, answer.body) == (200, b"{}")

    second = await service.begin(scope, "k2", "f", "POST /x")
    waiting = asyncio.create_task(service.begin(scope, "k2", "f", "POST /x"))
    await asyncio.sleep(0.05)
    await service.abandoned(second)  # raised before doing anything: the waiter runs it
    assert (await waiting).held


async def test_a_stale_holder_is_taken_over_and_a_live_one_waited_for(db: Database) -> None:
    store = SqlIdempotencyStore(db)
    scope = uuid4()
    dead = IdempotencyService(store, lock_seconds=0)
    assert (await dead.begin(scope, "k", "f", "POST /x")).held
    assert (await dead.begin(scope, "k", "f", "POST /x")).held  # its lock ran out
    busy = IdempotencyService(store, wait_seconds=0.05, poll_seconds=0.01)
    assert (await busy.begin(scope, "k2", "f", "POST /x")).held
    with pytest.raises(Conflict, match="still in progress"):
        await busy.begin(scope, "k2", "f", "POST /x")


async def test_the_migration_matches_the_table_and_downgrades(db: Database) -> None:
    def check(connection: Any) -> tuple[set[str], set[str]]:
        ours = {"include_name": lambda name, kind, _: kind != "table" or name == TABLE}
        context = MigrationContext.configure(connection, opts=ours)
        assert [d for d in compare_metadata(context, metadata) if TABLE in repr(d)] == []
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = connection
        command.downgrade(config, "0012_anthropic")
        down = set(inspect(connection).get_table_names())
        command.upgrade(config, "head")
        return down, set(inspect(connection).get_table_names())

    async with db.engine.begin() as conn:
        down, up = await conn.run_sync(check)
    assert TABLE not in down and "chunks" in down
    assert TABLE in up
