"""This process among the others on one database: its heartbeat, and the recovery of the
runs and credit reservations of processes that are gone.

At start a process joins (`nodes` row), forgets the processes that are gone, fails their
unfinished runs and releases what they held; then, every `lease / 3` seconds, it renews its
heartbeat and does the same again, so a sibling killed mid-reply has its runs failed (with
the text they had checkpointed) within about a lease, without any restart. A live sibling's
runs are never touched: each run names its process (storage/nodes.py says when one is gone).

Database errors in the loop (an outage) are logged and retried at the next beat; a process
cut off for longer than a lease finds its row reaped and makes it again.
"""

from __future__ import annotations

import asyncio
import contextlib
from uuid import UUID, uuid4

import structlog

from threadline.domain.clock import utcnow
from threadline.domain.ports import CreditStore, NodeStore, RecordStore

log = structlog.get_logger(__name__)

ORPHAN_REASON = "the server stopped before the reply ended"


class NodeKeeper:
    def __init__(
        self,
        store: NodeStore,
        records: RecordStore,
        credits: CreditStore,
        *,
        lease_seconds: float,
        node_id: UUID | None = None,
    ) -> None:
        self.id = node_id or uuid4()
        self._store = store
        self._records = records
        self._credits = credits
        self.lease_seconds = lease_seconds
        self._task: asyncio.Task[None] | None = None
        self._joined = False
        self._release_credits = True

    async def join(self, *, release_credits: bool = True) -> None:
        """Join, then recover what the processes that are gone left behind."""
        await self._store.join(self.id)
        self._joined = True
        self._release_credits = release_credits
        await self.recover(release_credits=release_credits)

    async def recover(self, *, release_credits: bool = True) -> int:
        """Forget gone processes; fail their runs and release their credits. Returns how
        many runs were failed."""
        await self._store.reap(self.id, self.lease_seconds)
        now = utcnow()
        failed = await self._records.fail_unfinished(ORPHAN_REASON, before=now)
        if failed:
            log.warning("failed the unfinished replies of stopped processes", replies=failed)
        if release_credits:
            await self._credits.release_stale(before=now)
        return failed

    def start(self) -> None:
        """The heartbeat, in the background until `stop()`."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        interval = self.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self._store.beat(self.id)
                await self.recover(release_credits=self._release_credits)
            except Exception as error:  # an outage: try again at the next beat
                log.warning("heartbeat failed", error=type(error).__name__)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._joined:
            self._joined = False
            with contextlib.suppress(Exception):  # the database may be gone: the lease lapses
                await self._store.leave(self.id)
