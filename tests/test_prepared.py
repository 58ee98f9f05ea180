"""A prepared write stores what `conn.execute` of its statement stores, on both databases;
on SQLite it joins the transaction's batch without a trip of its own. A prepared query reads
what `conn.execute` reads, the batch's held writes included."""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from uuid import uuid4

import aiosqlite
import pytest
from sqlalchemy import bindparam, insert, select, update

from tests.helpers import make_tenant
from threadline.storage.database import as_utc, utcnow
from threadline.storage.prepared import Prepared, PreparedQuery
from threadline.storage.tables import ai_records

_INSERT = insert(ai_records)
_PREPARED_INSERT = Prepared(_INSERT)
# a bound value of its own (the status condition) beside the named ones
_FINISH = Prepared(
    update(ai_records)
    .where(ai_records.c.id == bindparam("w_id"), ai_records.c.status == "PENDING")
    .values(status=bindparam("w_status"), result_text=bindparam("w_text"))
)


_BY_MODEL = PreparedQuery(
    select(ai_records.c.id, ai_records.c.status, ai_records.c.created_at, ai_records.c.route)
    .where(ai_records.c.model == bindparam("w_model"), ai_records.c.status != "FAILED")
    .order_by(ai_records.c.credits)
)
_CLAIM = PreparedQuery(
    update(ai_records)
    .where(ai_records.c.id == bindparam("w_id"), ai_records.c.status == "PENDING")
    .values(status="SUCCESS")
    .returning(ai_records.c.id, ai_records.c.updated_at)
)


def _record(org, user, **changes):
    now = utcnow()
    return {
        "id": uuid4(),
        "org_id": org,
        "user_id": user,
        "conversation_id": uuid4(),
        "model": "m",
        "type": "CHAT",
        "status": "PENDING",
        "prompt_object": {"prompt": 'é " \\ 漢字', "n": [1, 2.5, None, True]},
        "result_text": "",
        "metadata": None,
        "citations": [],
        "input_tokens": 3,
        "output_tokens": 0,
        "credits": 2**40,
        "error": None,
        "finish_reason": None,
        "sources": None,
        "route": [{"model": "m", "upstream": None, "chars": 1}],
        "created_at": now,
        "updated_at": now + timedelta(microseconds=1),
        "node_id": None,
        **changes,
    }


async def _rows(db):
    async with db.read() as conn:
        rows = (await conn.execute(select(ai_records).order_by(ai_records.c.model))).mappings()
        return [{k: v for k, v in row.items() if k != "id"} for row in rows]


async def test_a_prepared_write_stores_what_execute_stores(db):
    tenant = await make_tenant(db, "org")
    one, other = _record(tenant.org, tenant.user), _record(tenant.org, tenant.user)
    done = _record(tenant.org, tenant.user, status="SUCCESS", model="n")
    async with db.write(batched=True) as conn:
        await conn.execute(_INSERT, one)
        await _PREPARED_INSERT.run(conn, {**one, "id": other["id"]})
        await _PREPARED_INSERT.run(conn, done)
    async with db.write(batched=True) as conn:
        for record in (other, done):  # the second is not PENDING: left alone
            await _FINISH.run(conn, {"w_id": record["id"], "w_status": "FAILED", "w_text": "t"})
    first, second, third = await _rows(db)
    assert first == {**second, "status": "PENDING", "result_text": ""}
    assert (second["status"], second["result_text"]) == ("FAILED", "t")
    assert third["status"] == "SUCCESS" and third["prompt_object"] == one["prompt_object"]
    assert as_utc(first["created_at"]) == one["created_at"] and first["credits"] == 2**40


async def test_on_sqlite_prepared_writes_go_with_the_commit(tmp_path, monkeypatch):
    from threadline.storage.database import Database

    db = Database(f"sqlite+aiosqlite:///{tmp_path / 't.db'}")
    await db.migrate()
    try:
        tenant = await make_tenant(db, "org")
        trips: list[str] = []
        execute = aiosqlite.Connection._execute

        async def counting(self, fn, *args, **kwargs):
            trips.append(getattr(getattr(fn, "func", fn), "__name__", repr(fn)))
            return await execute(self, fn, *args, **kwargs)

        monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
        async with db.write(batched=True) as conn:
            for _ in range(3):
                await _PREPARED_INSERT.run(conn, _record(tenant.org, tenant.user))
        assert trips == ["_commit_all"]
        with pytest.raises(Exception, match=r"(?i)unique"):  # its error comes with the commit
            record = _record(tenant.org, tenant.user)
            async with db.write(batched=True) as conn:
                await _PREPARED_INSERT.run(conn, record)
                await _PREPARED_INSERT.run(conn, record)
        assert len(await _rows(db)) == 3  # the failed transaction left nothing
    finally:
        await db.dispose()


async def test_a_prepared_query_reads_what_execute_reads(db):
    tenant = await make_tenant(db, "org")
    records = [_record(tenant.org, tenant.user, credits=n, model="q") for n in (2, 1, 3)]

    def work(conn):
        for record in records:  # held back in SQLite's batch: sent with the query
            _PREPARED_INSERT.run_sync(conn, record)
        prepared = _BY_MODEL.all(conn, {"w_model": "q"})
        executed = list(conn.execute(_BY_MODEL.statement, {"w_model": "q"}))
        claimed = _CLAIM.first(conn, {"w_id": records[1]["id"]})
        again = _CLAIM.first(conn, {"w_id": records[1]["id"]})
        return prepared, executed, claimed, again

    prepared, executed, claimed, again = await db.run_write(work, batched=True)
    assert [tuple(row) for row in prepared] == [tuple(row) for row in executed]
    assert [row.id for row in prepared] == [records[n]["id"] for n in (1, 0, 2)]
    assert prepared[0].route == records[1]["route"] and prepared[0].status == "PENDING"
    assert as_utc(prepared[0].created_at) == records[1]["created_at"]
    assert claimed.id == records[1]["id"] and again is None
    assert as_utc(claimed.updated_at) == records[1]["updated_at"]


_BY_ID = PreparedQuery(
    select(ai_records.c.id, ai_records.c.status, ai_records.c.result_text).where(
        ai_records.c.id == bindparam("w_id")
    )
)


async def test_a_claim_writes_and_reads_only_when_its_guard_finds_its_row(db):
    tenant = await make_tenant(db, "org")
    pending, other = _record(tenant.org, tenant.user), _record(tenant.org, tenant.user)
    await db.run_write(partial(_PREPARED_INSERT.run_sync, values=pending), batched=True)

    def claim(record, conn):
        if not _CLAIM.guard(conn, {"w_id": record["id"]}):
            return False
        _FINISH.run_sync(conn, {"w_id": other["id"], "w_status": "FAILED", "w_text": "x"})
        _PREPARED_INSERT.run_sync(conn, other)  # after the guard: only if it found its row
        return True

    then = (_BY_ID, {"w_id": pending["id"]})
    claimed = await db.run_claim(partial(claim, pending), then)
    assert [tuple(row) for row in claimed] == [(pending["id"], "SUCCESS", "")]
    assert claimed[0].status == "SUCCESS"
    # claimed already: nothing is written and nothing is read
    assert await db.run_claim(partial(claim, {**pending, "id": uuid4()}), then) is None
    again = {**other, "id": uuid4()}
    assert await db.run_claim(partial(claim, pending), (_BY_ID, {"w_id": again["id"]})) is None
    stored = {row["id"]: row for row in await _rows_with_ids(db)}
    assert set(stored) == {pending["id"], other["id"]}  # `other` once, PENDING
    assert stored[other["id"]]["status"] == "PENDING"


async def _rows_with_ids(db):
    async with db.read() as conn:
        return list((await conn.execute(select(ai_records))).mappings())


async def test_on_sqlite_a_claim_is_one_trip_with_its_commit_and_read(tmp_path, monkeypatch):
    from threadline.storage.database import Database

    db = Database(f"sqlite+aiosqlite:///{tmp_path / 't.db'}")
    await db.migrate()
    try:
        tenant = await make_tenant(db, "org")
        records = [_record(tenant.org, tenant.user) for _ in range(2)]
        await db.run_write(partial(_PREPARED_INSERT.run_sync, values=records[0]), batched=True)
        trips: list[str] = []
        execute = aiosqlite.Connection._execute

        async def counting(self, fn, *args, **kwargs):
            trips.append(getattr(getattr(fn, "func", fn), "__name__", repr(fn)))
            return await execute(self, fn, *args, **kwargs)

        monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)

        def claim(conn):
            if not _CLAIM.guard(conn, {"w_id": records[0]["id"]}):
                return False
            _PREPARED_INSERT.run_sync(conn, records[1])
            return True

        rows = await db.run_claim(claim, (_BY_ID, {"w_id": records[1]["id"]}))
        assert trips == ["_commit_all"] and [row.id for row in rows] == [records[1]["id"]]
        trips.clear()
        assert await db.run_claim(claim, (_BY_ID, {"w_id": records[1]["id"]})) is None
        assert trips == ["_commit_all"]  # the guard found nothing: rolled back, nothing read

        def flushed(conn):  # a query sent before the commit finds the guard failed
            _CLAIM.guard(conn, {"w_id": records[0]["id"]})
            return _BY_ID.first(conn, {"w_id": records[0]["id"]}) is not None

        with pytest.raises(Exception, match="guard found no row"):
            await db.run_claim(flushed)
        assert len(await _rows(db)) == 2
    finally:
        await db.dispose()
