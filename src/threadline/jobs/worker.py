"""The job worker: claims jobs, runs their handlers, keeps their leases alive.

In the embedded mode the API process runs one (`documents.embedded_worker`); `threadline
worker` runs one on its own. Several workers may share a database: the queue's leases
make each job one worker's at a time, and a worker that dies lets its lease lapse, after
which `reap` (run by every worker now and then) hands the job out again, or declares it
dead after its last attempt and lets the `on_dead` callback fail what it was working on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from uuid import uuid4

import structlog

from threadline.domain.documents import Job, JobQueue, JobState

log = structlog.get_logger(__name__)

Handler = Callable[[Job], Awaitable[None]]

IDLE_POLL_SECONDS = 0.5
REAP_EVERY_SECONDS = 15.0
RETRY_BASE_SECONDS = 2.0


class Worker:
    def __init__(
        self,
        queue: JobQueue,
        handlers: Mapping[str, Handler],
        *,
        concurrency: int = 1,
        lease_seconds: float = 60.0,
        on_dead: Handler | None = None,
    ) -> None:
        self._queue = queue
        self._handlers = dict(handlers)
        self._concurrency = concurrency
        self._lease = lease_seconds
        self._on_dead = on_dead
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:6]}"
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()

    def handle(self, kind: str, handler: Handler) -> None:
        """Run `handler` for jobs of `kind` (for features wired after the worker was made)."""
        self._handlers[kind] = handler

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._loop(i), name=f"worker-{i}") for i in range(self._concurrency)
        ]
        self._tasks.append(asyncio.create_task(self._reaper(), name="worker-reaper"))

    def poke(self) -> None:
        """New work was queued: stop idling now."""
        self._wake.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def run_until_idle(self) -> int:
        """Run jobs until none is due (CLI ingestion, tests). Returns how many ran."""
        ran = 0
        while await self.run_one():
            ran += 1
        return ran

    async def run_one(self) -> bool:
        job = await self._queue.claim(self.name, self._lease)
        if job is None:
            return False
        await self._run(job)
        return True

    async def _loop(self, slot: int) -> None:
        while True:
            _stop_if_cancelled()
            try:
                if await self.run_one():
                    continue
            except Exception:
                log.exception("job worker error", slot=slot)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), IDLE_POLL_SECONDS)

    async def _run(self, job: Job) -> None:
        handler = self._handlers.get(job.kind)
        keeper = asyncio.create_task(self._keep_lease(job))
        try:
            if handler is None:
                raise LookupError(f"no handler for job kind {job.kind!r}")
            await handler(job)
        except asyncio.CancelledError:
            keeper.cancel()
            raise  # the lease lapses; another worker (or this one after restart) retries
        except Exception as exc:
            keeper.cancel()
            log.warning("job failed", job=job.id, kind=job.kind, attempt=job.attempts)
            delay = RETRY_BASE_SECONDS * 2 ** (job.attempts - 1)
            state = await self._queue.fail(job.id, self.name, _describe(exc), delay)
            if state is JobState.DEAD and self._on_dead is not None:
                await self._on_dead(_with_error(job, _describe(exc)))
            return
        keeper.cancel()
        await self._queue.complete(job.id, self.name)

    async def _keep_lease(self, job: Job) -> None:
        while True:
            await asyncio.sleep(self._lease / 3)
            if not await self._queue.extend(job.id, self.name, self._lease):
                log.warning("job lease lost", job=job.id)
                return

    async def _reaper(self) -> None:
        while True:
            try:
                await self.reap()
            except Exception:
                log.exception("job reaper error")
            await asyncio.sleep(REAP_EVERY_SECONDS)

    async def reap(self) -> None:
        for job in await self._queue.reap():
            log.warning("job declared dead", job=job.id, kind=job.kind)
            if self._on_dead is not None:
                await self._on_dead(job)


def _stop_if_cancelled() -> None:
    """Honour a cancellation (`stop()`) that a handler's library swallowed: httpcore closes
    a response in a shielded scope, which can turn the task's cancellation into the job's
    error, and the loop would then run on with `stop()` waiting for it forever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__


def _with_error(job: Job, error: str) -> Job:
    from dataclasses import replace

    return replace(job, last_error=error, state=JobState.DEAD)
