"""The chat request's hot path: the model starts while the PENDING record is written, and
the outcome is stored (and charged) only after that write."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from tests.test_accounts import CHAT, HELLO
from threadline.domain.events import Usage
from threadline.storage.tables import ai_records, users


async def test_a_failed_pending_write_fails_the_request_and_nothing_is_charged(
    client, admin, container, fakes, monkeypatch
):
    finished = []

    async def broken_start(record, user_message):
        await asyncio.sleep(0.05)  # the model has started meanwhile
        raise RuntimeError("disk full")

    async def finish(*args):
        finished.append(args)

    monkeypatch.setattr(container.record_store, "start", broken_start)
    monkeypatch.setattr(container.record_store, "finish", finish)
    fakes["gpt-4o-mini"].enqueue(["x", Usage(10, 15)])
    r = await client.post(CHAT, headers=admin, json=HELLO)
    assert r.status_code == 500 and r.json()["error"]["code"] == "INTERNAL_ERROR"
    await asyncio.sleep(0.1)
    assert container.runs.active == 0
    assert finished == []
    async with container.db.read() as conn:
        assert (await conn.execute(select(ai_records))).first() is None
        assert (await conn.execute(select(users.c.used_credit))).scalars().all() == [0]


async def test_the_outcome_is_stored_after_a_slow_pending_write(
    client, admin, container, fakes, monkeypatch
):
    start = container.record_store.start

    async def slow_start(record, user_message):
        await asyncio.sleep(0.1)  # slower than the whole reply
        await start(record, user_message)

    monkeypatch.setattr(container.record_store, "start", slow_start)
    fakes["gpt-4o-mini"].enqueue(["fast", Usage(10, 15)])
    r = await client.post(CHAT, headers=admin, json=HELLO)
    assert r.status_code == 200
    record = r.json()["aiRecord"]
    assert record["status"] == "SUCCESS" and record["teamUser"]["usedCredit"] == 40
    async with container.db.read() as conn:
        status = (await conn.execute(select(ai_records.c.status))).scalars().all()
    assert status == ["SUCCESS"]
