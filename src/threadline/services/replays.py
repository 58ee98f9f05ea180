"""Durable streams: a streamed reply read again from where a client's copy ends.

A client's position in a reply is the number of characters of the reply's text it has
received (the dialects put it in every frame's SSE id, beside the aiRecord's id, and parse it
back in their encode.py). Counting
characters rather than events makes the position mean the same thing to the run that is
streaming the reply and to the record stored after it, so a reply can be resumed

- from the run itself while this process holds it (live, or finished less than the
  registry's retention ago): the events after the position, then live ones until the end;
- from another process that drives it, live, through the shared feed when there is one
  (`redis_url`: services/followers.py);
- from the stored record otherwise (another process without a shared feed, a restart,
  retention passed): the stored text after the position as one delta, then the closing
  event. A record still PENDING (its run lives in another process) is polled until it ends,
  up to `pending_wait`.

A FAILED record may hold less text than its client received: a process killed mid-reply
leaves what its last checkpoint saved (services/checkpoints.py). A position past that text is
then no error of the client's: the resume ends with the failure at once.

Visibility is a conversation's: the record's org only, and its own user unless the caller is
an admin. Anything else is "not found".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from uuid import UUID

from threadline.domain.entities import AiRecord, Principal, RecordStatus, User, reply_message_id
from threadline.domain.errors import InvalidRequest, NotFound
from threadline.domain.events import Done, Failed, ReplyEvent, TextDelta
from threadline.domain.ports import AccountStore, RecordStore, RunFeed
from threadline.services.followers import STORED_FAILURE, Followed, RunFollower
from threadline.services.runs import Run, RunRegistry

ReplayEvents = AsyncIterator[tuple[int, ReplyEvent | None]]
"""As `Run.events()`: (a sequence number dialects ignore, the event or an idle heartbeat)."""

__all__ = ["STORED_FAILURE", "Replay", "ReplayEvents", "ReplayService"]


@dataclass
class Replay:
    """A reply opened for reading again: its record as known now, its run when held here."""

    record: AiRecord
    run: Run | None
    after: int  # characters of the text the reader has
    place: tuple[int, int] = (0, 0)  # where in the run's log to go on (see Run.locate)
    followed: Followed | None = None  # the run another process drives, on the shared feed


class ReplayService:
    def __init__(
        self,
        runs: RunRegistry,
        records: RecordStore,
        accounts: AccountStore,
        *,
        poll_seconds: float = 1.0,
        pending_wait: float = 300.0,
        feed: RunFeed | None = None,
    ) -> None:
        self._runs = runs
        self._records = records
        self._accounts = accounts
        self._follower = RunFollower(feed, records) if feed is not None else None
        self._feed = feed
        if feed is not None:
            feed.on_cancel(runs.cancel)
            feed.on_stop(runs.stop)
        self.poll_seconds = poll_seconds
        self.pending_wait = pending_wait
        self._mirrors: set[asyncio.Task[None]] = set()

    async def _find(self, caller: Principal, record_id: UUID) -> tuple[Run | None, AiRecord]:
        """The run of `record_id` if this process has it, and its record (404 unless the
        caller's, or an admin's org's)."""
        run = self._runs.get(caller.org_id, record_id)
        record = (
            run.record if run is not None else await self._records.get(caller.org_id, record_id)
        )
        if record is None or not (caller.is_admin or record.user_id == caller.user.id):
            raise NotFound(f"aiRecord {record_id} not found")
        return run, record

    async def open(self, caller: Principal, record_id: UUID, after: int = 0) -> Replay:
        """The reply `record_id` for a reader that has its first `after` characters; a
        position past the text produced so far is refused (400) before anything is sent,
        except on a run followed from another process (see below)."""
        run, record = await self._find(caller, record_id)
        if run is not None:
            place = run.locate(after)
            if place is None:
                raise _past_the_end(after)
            return Replay(record, run, after, place)
        if self._follower is not None and record.status is RecordStatus.PENDING:
            followed = await self._follower.open(record)
            if followed is not None:
                # Not checked against the text on the feed yet: the owner publishes in
                # batches, so the last frame its client got may not have reached the feed.
                # The follower hands out only what comes after the position, and the reply's
                # end says whether the position was real (a past-the-end failure if not).
                return Replay(record, None, after, followed=followed)
        if record.status is RecordStatus.SUCCESS and after > len(record.result_text):
            raise _past_the_end(after, len(record.result_text))
        return Replay(record, None, after)

    async def stop(self, caller: Principal, record_id: UUID) -> bool:
        """Ask the reply `record_id` (the caller's, or an admin's org's) to end now; True when
        it was still being produced, by this process or (through the shared feed) by a live
        process that owns it. Its streams then end as usual, with the text so far as the
        reply (stored and charged as produced)."""
        run, record = await self._find(caller, record_id)
        if run is not None:
            return run.request_stop()
        if record.status is not RecordStatus.PENDING or self._feed is None:
            return False
        if not await self._feed.owned(record_id):
            return False  # no live owner (or none known): nothing to stop
        self._feed.request_stop(record_id)
        return True

    async def resume(
        self, caller: Principal, record_id: UUID, position: Callable[[], int] | int | None
    ) -> Replay:
        """The reply opened at a client's position. `position` as a callable (the dialect's
        parser of its SSE event id) is read only once the reply is known to be the caller's:
        an unknown reply is 404 whatever the position says."""
        if callable(position):
            await self.open(caller, record_id)
            position = position()
        return await self.open(caller, record_id, position or 0)

    async def cancel(self, caller: Principal, record_id: UUID) -> AiRecord:
        """Stop a reply being produced, by this process or (through the shared feed) by
        the one that owns it; it ends FAILED with its text so far, charged for it. The
        record as it is now (PENDING until the owner has stored it)."""
        replay = await self.open(caller, record_id)
        if replay.run is not None:
            self._runs.cancel(record_id)
        elif replay.record.status is RecordStatus.PENDING and self._feed is not None:
            self._feed.cancel(record_id)
        return replay.record

    async def follow(self, caller: Principal, record_id: UUID) -> Run:
        """The run of `record_id` from its start, for a retried request (an idempotent
        retry, services/idempotency.py): the run itself while this process holds it, else
        a run that mirrors the stored record (its text once it has ended elsewhere)."""
        replay = await self.open(caller, record_id)
        if replay.run is not None:
            return replay.run
        record = replay.record
        reply_id = reply_message_id(record.id) if record.conversation_id is not None else None
        run = Run(record, reply_message_id=reply_id)
        task = asyncio.create_task(self._mirror(run, replay))
        self._mirrors.add(task)
        task.add_done_callback(self._mirrors.discard)
        return run

    async def _mirror(self, run: Run, replay: Replay) -> None:
        last: Done | Failed = STREAM_LOST
        try:
            async for _, event in self.events(replay):
                if isinstance(event, Done | Failed):
                    last = event
                    break
                if event is not None:
                    run.emit(event)
        finally:
            record = last.record if isinstance(last.record, AiRecord) else replay.record
            run.finish(record, last)

    @staticmethod
    async def current(replay: Replay) -> AiRecord:
        """The record as it is now: a live run's is PENDING (it does not wait for the end)."""
        run = replay.run
        return await run.result() if run is not None and run.finished else replay.record

    async def owner(self, replay: Replay) -> User | None:
        """The record's user as stored now (its fresh credit figures)."""
        if replay.run is not None and replay.run.user is not None:
            return replay.run.user
        return await self._accounts.get_user(replay.record.org_id, replay.record.user_id)

    def events(self, replay: Replay, idle: float | None = None) -> ReplayEvents:
        """The reply's events after the reader's position, ending with Done or Failed (whose
        `record` is the stored record). With `idle`, heartbeats as `Run.events()` gives."""
        if replay.run is not None:
            return _live(replay.run, *replay.place, idle)
        if replay.followed is not None and self._follower is not None:
            return self._follower.events(
                replay.followed,
                replay.after,
                idle,
                lambda record, after: self._stored(record, after, idle),
            )
        return self._stored(replay.record, replay.after, idle)

    async def _stored(self, record: AiRecord, after: int, idle: float | None) -> ReplayEvents:
        started = last = time.monotonic()
        while record.status is RecordStatus.PENDING:
            if time.monotonic() - started >= self.pending_wait:
                yield 0, _STILL_PENDING
                return
            await asyncio.sleep(self.poll_seconds)
            if idle is not None and time.monotonic() - last >= idle:
                last = time.monotonic()
                yield 0, None
            record = await self._records.get(record.org_id, record.id) or record
        text = record.result_text
        if after > len(text) and record.status is RecordStatus.SUCCESS:
            # it was PENDING when the reader's position was checked
            yield 0, replace(_past_end_failure(after, len(text)), record=record)
            return
        if after < len(text):
            yield 0, TextDelta(text[after:])
        if record.status is RecordStatus.SUCCESS:
            yield 0, Done(record=record)
        else:
            message = record.error or "the reply failed"
            yield 0, Failed(code=STORED_FAILURE, message=message, record=record)


async def _live(run: Run, position: int, skip: int, idle: float | None) -> ReplayEvents:
    async for sequence, event in run.events(after=position, idle=idle):
        if skip and isinstance(event, TextDelta):
            event, skip = TextDelta(event.text[skip:]), 0
        yield sequence, event


def _past_the_end(after: int, length: int | None = None) -> InvalidRequest:
    has = "so far" if length is None else f"of {length}"
    return InvalidRequest(
        f"the stream position {after} is past the reply's text {has}: resume with the "
        "Last-Event-ID of a frame this stream sent"
    )


def _past_end_failure(after: int, length: int) -> Failed:
    error = _past_the_end(after, length)
    return Failed(code=error.code, message=error.message, status=error.status)


STREAM_LOST = Failed(
    code="INTERNAL_ERROR", message="the stored reply could not be read", status=500
)
_STILL_PENDING = Failed(
    code="REPLY_PENDING",
    message="the reply is still being produced by another server process; resume the stream "
    "again later",
    status=503,
)
