"""A run: one reply being produced, decoupled from the HTTP connection that asked for it.

The run owns an append-only event log. Any number of readers iterate it from any position
(`events(after=n)`), live or after the end, so a client that disconnects loses nothing and a
client that comes back can replay. The producer never waits for readers. Readers in other
processes follow the run through its `tap` (the shared feed, services/followers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from uuid import UUID

from threadline.domain.deadlines import Deadline
from threadline.domain.entities import AiRecord, User
from threadline.domain.events import Done, Failed, ReplyEvent, TextDelta

YIELD_EVERY = 256  # events handed out between two turns of the event loop
CANCELLED_MESSAGE = "the reply was cancelled by its client"  # a cancelled run's error


class Run:
    def __init__(
        self,
        record: AiRecord,
        user_message_id: UUID | None = None,
        reply_message_id: UUID | None = None,
    ) -> None:
        self.id: UUID = record.id
        self.org_id: UUID = record.org_id
        self.record = record
        # In a conversation: the prompt's stored message, and the id the reply is stored
        # under at the end (allocated now, so a stream can name the reply from its start).
        self.user_message_id = user_message_id
        self.reply_message_id = reply_message_id
        self._log: list[ReplyEvent] = []
        self._waiters: list[asyncio.Future[None]] = []  # readers waiting for the next event
        self._final: AiRecord | None = None
        self.user: User | None = None  # the caller's user as stored after the reply
        self.cancelled = False  # stopped by its client (RunRegistry.cancel)
        self._finished = asyncio.Event()
        # Sees every event as it is logged: the shared feed that readers in other processes
        # follow (ports.RunFeed), when there is one.
        self.tap: Callable[[ReplyEvent], None] | None = None
        self.stop_requested = False  # a user asked for the reply to end where it is

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def emit(self, event: ReplyEvent) -> None:
        self._log.append(event)
        if self.tap is not None:
            self.tap(event)
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def request_stop(self) -> bool:
        """Ask the producer to end the reply at its next event: it keeps the text so far
        and ends as any reply does (stored, charged what it produced). False when the
        reply had already ended."""
        if self.finished:
            return False
        self.stop_requested = True
        return True

    def finish(self, record: AiRecord, last: Done | Failed, user: User | None = None) -> None:
        self._final = record
        self.user = user
        self._finished.set()
        self.emit(last)

    @property
    def outcome(self) -> Done | Failed | None:
        """The closing event once the run has finished."""
        last = self._log[-1] if self._finished.is_set() else None
        return last if isinstance(last, Done | Failed) else None

    def log(self) -> tuple[ReplyEvent, ...]:
        """The events so far."""
        return tuple(self._log)

    def locate(self, chars: int) -> tuple[int, int] | None:
        """Where a reader that has the text's first `chars` characters goes on: the log
        position to read from and how many characters of the delta there it already has.
        None when the log holds less text than that (so far)."""
        seen = 0
        for position, event in enumerate(self._log):
            if seen >= chars:
                return position, 0
            if isinstance(event, TextDelta):
                if seen + len(event.text) > chars:
                    return position, chars - seen
                seen += len(event.text)
        return (len(self._log), 0) if seen == chars else None

    async def events(
        self, after: int = 0, idle: float | None = None
    ) -> AsyncIterator[tuple[int, ReplyEvent | None]]:
        """(sequence number, event) pairs from `after` on, until the closing Done/Failed.

        With `idle`, a `(position, None)` heartbeat comes whenever nothing happened for that
        many seconds (dialects turn it into a keep-alive ping)."""
        position = after
        heartbeat = None if idle is None else Deadline()
        try:
            while True:
                while position < len(self._log):
                    event = self._log[position]
                    position += 1
                    yield position, event
                    if isinstance(event, Done | Failed):
                        return
                    if position % YIELD_EVERY == 0:  # a long backlog: let other tasks run
                        await asyncio.sleep(0)
                if not await self._next(heartbeat, idle):
                    yield position, None
        finally:
            if heartbeat is not None:
                heartbeat.stop()

    async def _next(self, heartbeat: Deadline | None, idle: float | None) -> bool:
        """Wait for the next event (True), or for the heartbeat's idle time without one
        (False)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        if heartbeat is not None:
            heartbeat.watch(waiter, idle)
        try:
            await waiter
            return True
        except TimeoutError:
            return False
        finally:
            if waiter.cancelled() or waiter.exception() is not None:  # not woken by emit()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)

    async def result(self) -> AiRecord:
        await self._finished.wait()
        assert self._final is not None
        return self._final


class RunRegistry:
    """Live runs and recently finished ones (kept `retention` seconds for replay)."""

    def __init__(self, retention: float = 300.0) -> None:
        self.retention = retention
        self._runs: dict[UUID, Run] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._driving: dict[UUID, asyncio.Task[None]] = {}

    def add(self, run: Run, task: asyncio.Task[None]) -> None:
        self._runs[run.id] = run
        self._tasks.add(task)
        self._driving[run.id] = task
        task.add_done_callback(self._on_done(run))

    def cancel(self, run_id: UUID) -> bool:
        """Stop a run this process drives at its client's request: it ends FAILED (code
        CANCELLED, CANCELLED_MESSAGE) with its text so far, charged for it. False when no
        such run is going on here."""
        task, run = self._driving.get(run_id), self._runs.get(run_id)
        if task is None or run is None or task.done():
            return False
        run.cancelled = True
        task.cancel()
        return True

    def stop(self, run_id: UUID) -> bool:
        """End a run this process drives where it is, at its user's request (`Run.request_stop`:
        SUCCESS with the text so far, charged as produced). False when no such run is going
        on here."""
        task, run = self._driving.get(run_id), self._runs.get(run_id)
        if task is None or run is None or task.done():
            return False
        return run.request_stop()

    def _on_done(self, run: Run) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            self._driving.pop(run.id, None)
            loop = asyncio.get_running_loop()
            loop.call_later(self.retention, self._runs.pop, run.id, None)

        return done

    def get(self, org_id: UUID, run_id: UUID) -> Run | None:
        run = self._runs.get(run_id)
        return run if run is not None and run.org_id == org_id else None

    def forget(self, run: Run) -> None:
        """Stop holding a finished run for replay (its record was deleted)."""
        if run.finished and self._runs.get(run.id) is run:
            del self._runs[run.id]

    @property
    def active(self) -> int:
        return len(self._tasks)

    async def drain(self, grace: float) -> None:
        """Let running replies finish (on shutdown); cancel what is left after `grace` seconds."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
