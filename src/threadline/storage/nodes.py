"""The processes serving one database, each with a heartbeat (implements `ports.NodeStore`).

Several API processes and workers share a database; each stamps the runs it drives and the
credits they hold with its id (`ai_records.node_id`, `credit_reservations.node_id`). A run
is an orphan once its process is gone, and only then may another process fail it. A process
is gone when:

- it left (a clean stop deletes its row), or
- its heartbeat is older than the lease (killed, frozen, or cut off from the database), or
- it ran on this host and its pid is not running any more (or is ours: a container restarted
  with the same pid), which a restart after kill -9 sees at once, without waiting a lease.

Reaping deletes the rows of gone processes; the runs and reservations they leave are then
failed and released by whoever reaps (`RecordStore.fail_unfinished`, `release_stale`), each
claimed by one conditional statement so that two reapers never both act on one run.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from uuid import UUID

from sqlalchemy import delete, insert, select, update

from threadline.storage.database import Database, as_utc, utcnow
from threadline.storage.tables import nodes

HOST = socket.gethostname()[:255]


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a row with our pid but not our id: an earlier life of this process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


class SqlNodeStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def join(self, node_id: UUID) -> None:
        now = utcnow()
        row = {"id": node_id, "host": HOST, "pid": os.getpid(), "started_at": now}
        async with self._db.write() as conn:
            await conn.execute(insert(nodes).values(**row, heartbeat_at=now))

    async def beat(self, node_id: UUID) -> None:
        """Renew the heartbeat; a row reaped meanwhile (a long outage) is made again."""
        now = utcnow()
        async with self._db.write() as conn:
            done = await conn.execute(
                update(nodes).where(nodes.c.id == node_id).values(heartbeat_at=now)
            )
            if done.rowcount == 0:
                row = {"id": node_id, "host": HOST, "pid": os.getpid(), "started_at": now}
                await conn.execute(insert(nodes).values(**row, heartbeat_at=now))

    async def leave(self, node_id: UUID) -> None:
        async with self._db.write() as conn:
            await conn.execute(delete(nodes).where(nodes.c.id == node_id))

    async def reap(self, node_id: UUID, lease_seconds: float) -> int:
        """Delete the rows of processes that are gone (see the module docstring) but ours;
        returns how many."""
        stale = utcnow() - timedelta(seconds=lease_seconds)
        query = select(nodes.c.id, nodes.c.host, nodes.c.pid, nodes.c.heartbeat_at)
        async with self._db.read() as conn:
            rows = (await conn.execute(query.where(nodes.c.id != node_id))).all()
        gone = [
            row.id
            for row in rows
            if as_utc(row.heartbeat_at) < stale or (row.host == HOST and not _running(row.pid))
        ]
        if not gone:
            return 0
        async with self._db.write() as conn:
            await conn.execute(delete(nodes).where(nodes.c.id.in_(gone)))
        return len(gone)
