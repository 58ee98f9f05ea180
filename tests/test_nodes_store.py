"""Which processes are gone (storage/nodes.py), and what recovery then takes from them: on
SQLite and PostgreSQL. A process is gone once its heartbeat is older than the lease, or when
it ran on this host under a pid that no longer runs; only the credit reservations (and
replies) of gone processes are released, never a live one's."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from uuid import UUID, uuid4

from sqlalchemy import insert, select, update

from tests.helpers import Tenant
from threadline.domain.clock import utcnow
from threadline.storage.credits import SqlCreditStore
from threadline.storage.database import Database
from threadline.storage.nodes import HOST, SqlNodeStore
from threadline.storage.tables import nodes, users


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


async def _add(db: Database, host: str, pid: int, age_seconds: float) -> UUID:
    node_id = uuid4()
    beat = utcnow() - timedelta(seconds=age_seconds)
    row = {"id": node_id, "host": host, "pid": pid, "started_at": beat, "heartbeat_at": beat}
    async with db.write() as conn:
        await conn.execute(insert(nodes).values(**row))
    return node_id


async def test_gone_processes_are_reaped_and_only_their_reservations_released(
    db: Database, a: Tenant
) -> None:
    store = SqlNodeStore(db)
    me = uuid4()
    await store.join(me)
    elsewhere_alive = await _add(db, "another-host", 1, age_seconds=1)
    elsewhere_silent = await _add(db, "another-host", 1, age_seconds=120)
    here_dead = await _add(db, HOST, _dead_pid(), age_seconds=1)
    async with db.write() as conn:
        await conn.execute(update(users).values(credit_limit=1000))
    held = {}
    for node in (me, elsewhere_alive, elsewhere_silent, here_dead):
        run = uuid4()
        assert await SqlCreditStore(db, node).reserve(a.org, a.user, run, 10)
        held[node] = run

    assert await store.reap(me, lease_seconds=30) == 2
    async with db.read() as conn:
        left = {row.id for row in await conn.execute(select(nodes.c.id))}
    assert left == {me, elsewhere_alive}
    assert await SqlCreditStore(db).release_stale(before=utcnow()) == 2
    async with db.read() as conn:
        reserved = (await conn.execute(select(users.c.reserved_credit))).scalar_one()
    assert reserved == 20  # the live processes' two runs still hold theirs

    await store.beat(me)
    await store.leave(me)
    assert await store.reap(uuid4(), lease_seconds=30) == 0  # elsewhere_alive: still fresh
    assert await SqlCreditStore(db).release_stale(before=utcnow()) == 1  # mine, as I left
