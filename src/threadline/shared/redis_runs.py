"""Live runs on Redis (implements `ports.RunFeed`): a stream per run, and an owner key.

The process that drives a run appends each of its events to the Redis stream
`threadline:run:<record id>` (text with its character offset, citations, then "end" once the
record is stored) and holds `threadline:owner:<record id>` (its node id, a TTL of
`owner_ttl` seconds that a heartbeat refreshes every `owner_ttl / 3`). A reader in another
process reads the stream from the start (XREAD, blocking briefly for what comes next), so it
gets every frame once, in order, as it is generated; when the owner key has expired and no
"end" came, the owner died. A cancel is a message on `threadline:cancel` that the owner acts on
(the run fails, CANCELLED); a stop, on `threadline:stop`, ends it where it is (a user's stop:
the text so far is the reply, SUCCESS).

Events are queued in memory and written by one task in pipelined batches: the run never
waits on Redis, and the order of its events is the order of the batches. While Redis is
unreachable the batches are dropped (a reader then meets a gap, which it fills from the
record's checkpointed text or resumes from the store) and ownership is kept in memory, to be
written again by the heartbeat when Redis returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict
from typing import Any
from uuid import UUID, uuid4

from threadline.domain.events import Citation, Done, Failed, ReplyEvent, TextDelta
from threadline.domain.ports import FeedEntry, FeedRead, RunTerms
from threadline.shared.redis_link import RedisLink

OWNER_TTL = 3.0
FEED_SECONDS = 3600  # a live run's stream expires this long after the run started
ENDED_SECONDS = 300  # an ended run's stream is kept this long (readers behind its end)
READ_COUNT = 1000
CANCEL_CHANNEL = "threadline:cancel"
STOP_CHANNEL = "threadline:stop"

_Fields = dict[str, str]


def feed_key(run_id: UUID) -> str:
    return f"threadline:run:{run_id}"


def owner_key(run_id: UUID) -> str:
    return f"threadline:owner:{run_id}"


class RedisRunFeed:
    shared = True

    def __init__(
        self, link: RedisLink, *, owner_ttl: float = OWNER_TTL, ended_seconds: float = ENDED_SECONDS
    ) -> None:
        self.node = uuid4().hex
        # After its end a run is read from the stored record (services/replays.py); the
        # stream only serves readers still behind the end, and one that outlives them would
        # fill Redis for an hour under load (a reader finding it gone goes on from the store).
        self._ended_seconds = max(1, math.ceil(ended_seconds))
        self._link = link
        self._ttl_ms = int(owner_ttl * 1000)
        self._refresh = owner_ttl / 3
        self._owned: set[UUID] = set()
        self._pending: list[tuple[UUID, _Fields | None]] = []  # None: release the run
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._cancel_handlers: list[Callable[[UUID], object]] = []
        self._stop_handlers: list[Callable[[UUID], object]] = []
        link.listen(CANCEL_CHANNEL, self._cancel_received)
        link.listen(STOP_CHANNEL, self._stop_received)

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._flushing(), name="run-feed-flush"),
            asyncio.create_task(self._heartbeat(), name="run-feed-owner"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        batch, self._pending = self._pending, []
        if batch and self._link.up:  # the last ends of the runs drained before
            await self._write(batch)

    def tap(self, run_id: UUID, terms: RunTerms) -> Callable[[ReplyEvent], None]:
        self._owned.add(run_id)
        self._queue(run_id, {"k": "terms", "v": json.dumps(asdict(terms))})
        offset = 0

        def publish(event: ReplyEvent) -> None:
            nonlocal offset
            if isinstance(event, TextDelta):
                self._queue(run_id, {"k": "t", "o": str(offset), "t": event.text})
                offset += len(event.text)
            elif isinstance(event, Citation):
                self._queue(run_id, {"k": "c", "o": str(offset), "v": json.dumps(asdict(event))})
            elif isinstance(event, Done | Failed):
                self._owned.discard(run_id)
                self._queue(run_id, {"k": "end", "o": str(offset)})
                self._queue(run_id, None)

        return publish

    async def read(self, run_id: UUID, cursor: str, wait: float) -> FeedRead | None:
        if not self._link.up:
            return None
        block = int(wait * 1000) if wait > 0 else None
        try:
            found: Any = await self._link.client.xread(
                {feed_key(run_id): cursor}, count=READ_COUNT, block=block
            )
        except Exception as exc:
            self._link.lost(exc)
            return None
        entries: list[FeedEntry] = []
        for _stream, items in found or ():
            for entry_id, fields in items:
                cursor = entry_id
                entries.append(_entry(fields))
        return FeedRead(cursor, entries)

    async def owned(self, run_id: UUID) -> bool | None:
        if not self._link.up:
            return None
        try:
            return bool(await self._link.client.exists(owner_key(run_id)))
        except Exception as exc:
            self._link.lost(exc)
            return None

    def cancel(self, run_id: UUID) -> None:
        self._send(CANCEL_CHANNEL, run_id, self._cancel_handlers)

    def on_cancel(self, handler: Callable[[UUID], object]) -> None:
        self._cancel_handlers.append(handler)

    def request_stop(self, run_id: UUID) -> None:
        self._send(STOP_CHANNEL, run_id, self._stop_handlers)

    def on_stop(self, handler: Callable[[UUID], object]) -> None:
        self._stop_handlers.append(handler)

    def _send(self, channel: str, run_id: UUID, handlers: list[Callable[[UUID], object]]) -> None:
        if run_id in self._owned:  # here: no round trip
            self._received(str(run_id), handlers)
        else:
            self._link.publish(channel, str(run_id))

    def _cancel_received(self, data: str) -> None:
        self._received(data, self._cancel_handlers)

    def _stop_received(self, data: str) -> None:
        self._received(data, self._stop_handlers)

    def _received(self, data: str, handlers: list[Callable[[UUID], object]]) -> None:
        try:
            run_id = UUID(data)
        except ValueError:
            return
        if run_id in self._owned:
            for handler in handlers:
                handler(run_id)

    def _queue(self, run_id: UUID, fields: _Fields | None) -> None:
        self._pending.append((run_id, fields))
        self._wake.set()

    async def _flushing(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if self._link.up:
                await self._write(batch)

    async def _write(self, batch: list[tuple[UUID, _Fields | None]]) -> None:
        pipe = self._link.client.pipeline(transaction=False)
        for run_id, fields in batch:
            if fields is None:  # the run ended: released, its stream kept a little while
                pipe.delete(owner_key(run_id))
                pipe.expire(feed_key(run_id), self._ended_seconds)
                continue
            pipe.xadd(feed_key(run_id), fields)  # type: ignore[arg-type]
            if fields["k"] == "terms":
                pipe.set(owner_key(run_id), self.node, px=self._ttl_ms)
                pipe.expire(feed_key(run_id), FEED_SECONDS)
        try:
            await pipe.execute()
        except Exception as exc:
            self._link.lost(exc)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._refresh)
            if not self._owned or not self._link.up:
                continue
            pipe = self._link.client.pipeline(transaction=False)
            for run_id in self._owned:
                pipe.set(owner_key(run_id), self.node, px=self._ttl_ms)
            try:
                await pipe.execute()
            except Exception as exc:
                self._link.lost(exc)


def _entry(fields: dict[str, Any]) -> FeedEntry:
    kind, offset = fields.get("k"), int(fields.get("o", 0))
    if kind == "t":
        return FeedEntry(offset=offset, text=fields.get("t", ""))
    if kind == "c":
        return FeedEntry(offset=offset, citation=Citation(**json.loads(fields["v"])))
    if kind == "terms":
        return FeedEntry(terms=RunTerms(**json.loads(fields["v"])))
    return FeedEntry(offset=offset, ended=True)
