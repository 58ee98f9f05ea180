"""The job worker: claims jobs, runs their handlers under a time limit, keeps their leases alive.

In the embedded mode the API process runs one (`documents.embedded_worker`); `threadline
worker` runs one on its own. Several workers may share a database: the queue's leases
make each job one worker's at a time.

What ends an attempt, and what follows (every attempt was counted when it was claimed):

    the handler returns                 DONE
    the handler raises                  QUEUED again after the back-off, or DEAD
    no progress for `timeout_seconds`   cancelled (a parser child is killed), then as above
    its process dies or freezes         the lease lapses; any worker's reaper requeues it
                                        after the back-off, or declares it DEAD
    the lease was taken from it         cancelled; the job is someone else's now

A DEAD job is handed to `on_dead`, which fails what it was working on with the last error.
The time limit counts from the attempt's last progress (`domain.progress`: ingestion reports
each step and each batch it embeds), so a big document is not cut short while a hung one is.
The lease keeper is a task on the same event loop that lives only while `_run` waits for the
attempt, so no longer than the time limit: a hung attempt cannot hold its lease beyond that,
and a handler that blocks the event loop blocks the keeper too, so the lease lapses and
another worker (or this process once restarted) takes the job over: one more attempt.

What a cancellation cannot stop: work in a thread (`asyncio.to_thread`) runs on to its end
after its attempt was cancelled, and synchronous work on the event loop holds the loop (and
with it this worker's timer) until it returns. Neither is cut short here; the time limit
catches them as soon as the loop runs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from uuid import uuid4

import structlog

from threadline.domain.documents import Job, JobQueue, JobState
from threadline.domain.progress import reporting_to

log = structlog.get_logger(__name__)

Handler = Callable[[Job], Awaitable[None]]

IDLE_POLL_SECONDS = 0.5
REAP_EVERY_SECONDS = 15.0
CANCEL_GRACE_SECONDS = 5.0  # how long a cancelled attempt may take to wind down


@dataclass(frozen=True, slots=True)
class Backoff:
    """Seconds before retrying a job whose attempt number `attempts` failed:
    `base * 2^(attempts - 1)`, at most `max_seconds`."""

    base_seconds: float = 5.0
    max_seconds: float = 300.0

    def delay(self, attempts: int) -> float:
        return min(self.max_seconds, self.base_seconds * 2.0 ** min(max(attempts - 1, 0), 60))


class Worker:
    def __init__(
        self,
        queue: JobQueue,
        handlers: Mapping[str, Handler],
        *,
        concurrency: int = 1,
        lease_seconds: float = 60.0,
        timeout_seconds: float = 900.0,
        backoff: Backoff | None = None,
        on_dead: Handler | None = None,
    ) -> None:
        self._queue = queue
        self._handlers = dict(handlers)
        self._concurrency = concurrency
        self._lease = lease_seconds
        self._timeout = timeout_seconds
        self._backoff = backoff or Backoff()
        self._on_dead = on_dead
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:6]}"
        self._tasks: list[asyncio.Task[None]] = []
        self._abandoned: set[asyncio.Future[None]] = set()  # kept referenced until they end
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
        if handler is None:
            await self._failed(job, f"no handler for job kind {job.kind!r}")
            return
        moved = time.monotonic()

        def touch() -> None:
            nonlocal moved
            moved = time.monotonic()

        with reporting_to(touch):  # the attempt's task carries it in its context
            attempt = asyncio.ensure_future(handler(job))
        attempt.add_done_callback(_retrieve)
        keeper = asyncio.create_task(self._keep_lease(job, attempt))
        try:
            done: set[asyncio.Future[None]] = set()
            while not done and (left := moved + self._timeout - time.monotonic()) > 0:
                done, _ = await asyncio.wait({attempt}, timeout=left)
        except asyncio.CancelledError:  # stop(): the lease lapses, the job is retried later
            await self._abandon(job, attempt)
            raise
        finally:
            keeper.cancel()
        if not done:
            log.warning("job timed out", job=job.id, kind=job.kind, attempt=job.attempts)
            await self._abandon(job, attempt)
            await self._failed(job, timed_out(self._timeout))
        elif attempt.cancelled():
            log.warning("job attempt cancelled: its lease was lost", job=job.id)
        elif (error := attempt.exception()) is not None:
            log.warning("job failed", job=job.id, kind=job.kind, attempt=job.attempts)
            await self._failed(job, _describe(error))
        else:
            await self._queue.complete(job.id, self.name)

    async def _failed(self, job: Job, error: str) -> None:
        retry_in = self._backoff.delay(job.attempts)
        state = await self._queue.fail(job.id, self.name, error, retry_in)
        if state is JobState.DEAD and self._on_dead is not None:
            await self._on_dead(replace(job, last_error=error, state=JobState.DEAD))

    async def _abandon(self, job: Job, attempt: asyncio.Future[None]) -> None:
        """Cancel the attempt and give it a moment to wind down (kill its parser child)."""
        attempt.cancel()
        done, _ = await asyncio.wait({attempt}, timeout=CANCEL_GRACE_SECONDS)
        if not done:
            log.error("job attempt ignores its cancellation; left running", job=job.id)
            self._abandoned.add(attempt)
            attempt.add_done_callback(self._abandoned.discard)

    async def _keep_lease(self, job: Job, attempt: asyncio.Future[None]) -> None:
        """Renew the lease every third of it while `_run` waits for the attempt, that is at
        most until the attempt's time limit. A lost lease (the job was reaped while this
        process was frozen) cancels the attempt: the job is someone else's now."""
        while True:
            await asyncio.sleep(self._lease / 3)
            try:
                held = await self._queue.extend(job.id, self.name, self._lease)
            except Exception:
                log.exception("job lease renewal failed", job=job.id)
                continue
            if not held:
                log.warning("job lease lost", job=job.id)
                attempt.cancel()
                return

    async def _reaper(self) -> None:
        while True:
            try:
                await self.reap()
            except Exception:
                log.exception("job reaper error")
            await asyncio.sleep(min(REAP_EVERY_SECONDS, self._lease / 2))

    async def reap(self) -> None:
        """Requeue (after the back-off) or declare DEAD the jobs whose lease lapsed."""
        for job in await self._queue.reap(self._backoff.delay):
            log.warning("job declared dead", job=job.id, kind=job.kind, attempts=job.attempts)
            if self._on_dead is not None:
                await self._on_dead(job)


def timed_out(seconds: float) -> str:
    return (
        f"the attempt timed out: it made no progress for {seconds:g} s "
        "(documents.job_timeout_seconds) and was stopped"
    )


def _stop_if_cancelled() -> None:
    """Honour a cancellation (`stop()`) that a handler's library swallowed: httpcore closes
    a response in a shielded scope, which can turn the task's cancellation into the job's
    error, and the loop would then run on with `stop()` waiting for it forever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _retrieve(attempt: asyncio.Future[None]) -> None:
    """An attempt's outcome is read by `_run`, unless it was abandoned: read it anyway, so
    asyncio does not report an exception that was never retrieved."""
    if not attempt.cancelled():
        attempt.exception()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__
