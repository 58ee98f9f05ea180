"""A reply followed live from another process than the one producing it (scale-out).

Why it exists: a client that resumes a stream (`Last-Event-ID`), or a second reader, may land
on any process. When the run is not held here but published on the shared feed
(`ports.RunFeed`, Redis), the follower reads the feed from its start and hands out the text
after the reader's position as it is generated: each character once and in order. Every text
entry carries its character offset, so the feed joins the record's checkpointed text without
gaps or duplicates (a gap left by a Redis outage is filled from the checkpoint).

When the feed ends, the stored record closes the reply (the owner stores it before it
publishes the end). When the owner's lease lapses with no end (its process died), the
follower ends the reply itself: the record becomes FAILED with the text streamed so far,
charged for that text at the run's prices (never past its reservation), once whichever
process gets there first (`RecordStore.abandon`); the reader gets that text and the failure.
Whenever the feed cannot be read (Redis away), the reply goes on from the stored record.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace

from threadline.domain.entities import AiRecord, RecordStatus
from threadline.domain.events import Failed, ReplyEvent, TextDelta
from threadline.domain.ports import FeedEntry, RecordStore, RunFeed, RunTerms
from threadline.services.chat_prompt import estimate_tokens

ReplayEvents = AsyncIterator[tuple[int, ReplyEvent | None]]
Fallback = Callable[[AiRecord, int], ReplayEvents]
"""The reply from the stored record on, for a reader that has its first n characters."""

STORED_FAILURE = "REPLY_FAILED"  # a stored record keeps its error's message, not its code
OWNER_DIED = "the server process producing the reply stopped before the reply ended"
WAIT_SECONDS = 0.5  # one blocking read of the feed; the owner is checked in between


@dataclass
class Followed:
    """A run another process owns, as far as its feed has been read."""

    record: AiRecord
    terms: RunTerms
    cursor: str
    backlog: list[FeedEntry]  # read but not yet handed out
    parts: list[str] = field(default_factory=list)  # the text from the start, contiguous
    length: int = 0


class RunFollower:
    def __init__(self, feed: RunFeed, records: RecordStore, *, wait: float = WAIT_SECONDS):
        self._feed = feed
        self._records = records
        self.wait = wait

    async def open(self, record: AiRecord) -> Followed | None:
        """The run of a PENDING record as its feed stands; None when it is not followed
        (no shared feed, Redis away, or the owner never published it)."""
        if not self._feed.shared or record.status is not RecordStatus.PENDING:
            return None
        entries, cursor = [], "0"
        while True:  # all of it so far: the reader's position is checked against it
            read = await self._feed.read(record.id, cursor, 0)
            if read is None:
                return None
            if not read.entries:
                break
            entries += read.entries
            cursor = read.cursor
        if not entries or entries[0].terms is None:
            return None
        return Followed(record, entries[0].terms, cursor, entries[1:])

    async def events(
        self, run: Followed, after: int, idle: float | None, fallback: Fallback
    ) -> ReplayEvents:
        seen, beat = after, time.monotonic()
        while True:
            backlog, run.backlog = run.backlog, []
            for entry in backlog:
                if entry.ended:  # the record is stored: its outcome closes the reply
                    async for item in fallback(await self._fresh(run), seen):
                        yield item
                    return
                if entry.citation is not None:
                    if entry.offset >= after:
                        yield 0, entry.citation
                    continue
                gap = await self._join(run, entry)
                if gap is None:  # a gap the store cannot fill
                    async for item in fallback(run.record, seen):
                        yield item
                    return
                if gap and seen < entry.offset:  # the gap's text, from the checkpoint
                    yield 0, TextDelta(gap[max(0, seen - (entry.offset - len(gap))) :])
                    seen = entry.offset
                end = entry.offset + len(entry.text)
                if end > seen:
                    yield 0, TextDelta(entry.text[max(0, seen - entry.offset) :])
                    seen, beat = end, time.monotonic()
            read = await self._feed.read(run.record.id, run.cursor, self.wait)
            if read is None:
                async for item in fallback(await self._fresh(run), seen):
                    yield item
                return
            if read.entries:
                run.cursor, run.backlog = read.cursor, read.entries
                continue
            if idle is not None and time.monotonic() - beat >= idle:
                beat = time.monotonic()
                yield 0, None
            if await self._feed.owned(run.record.id) is False:
                last = await self._feed.read(run.record.id, run.cursor, 0)
                if last is not None and last.entries:  # it ended just now
                    run.cursor, run.backlog = last.cursor, last.entries
                    continue
                async for item in self._abandon(run, seen, fallback):
                    yield item
                return

    async def _fresh(self, run: Followed) -> AiRecord:
        return await self._records.get(run.record.org_id, run.record.id) or run.record

    async def _join(self, run: Followed, entry: FeedEntry) -> str | None:
        """Add a text entry to the run's text. A gap before it is filled from the record's
        checkpoint: returns the gap's text ("" without a gap), None when the checkpoint does
        not cover it."""
        gap = ""
        if entry.offset > run.length:
            record = run.record = await self._fresh(run)
            if len(record.result_text) < entry.offset:
                return None
            gap = record.result_text[run.length : entry.offset]
            run.parts.append(gap)
            run.length = entry.offset
        end = entry.offset + len(entry.text)
        if end > run.length:
            run.parts.append(entry.text[run.length - entry.offset :])
            run.length = end
        return gap

    async def _abandon(self, run: Followed, seen: int, fallback: Fallback) -> ReplayEvents:
        """The owner died: fail the record with the text streamed so far, charged for it."""
        record = await self._fresh(run)
        fed = "".join(run.parts)
        text = fed if len(fed) >= len(record.result_text) else record.result_text
        stored = None
        # FAILED too: a heartbeat's recovery may have failed it meanwhile with its last
        # checkpoint, which the feed's text outgrows (the store says whether it is settled)
        if record.status is not RecordStatus.SUCCESS:
            output = estimate_tokens(text) if text else 0
            failed = replace(
                record,
                status=RecordStatus.FAILED,
                result_text=text,
                input_tokens=run.terms.input_tokens,
                output_tokens=output,
                error=OWNER_DIED,
            )
            stored = await self._records.abandon(failed, price(run.terms, output))
        if stored is None:  # finished meanwhile, or another process got there first
            async for item in fallback(record, seen):
                yield item
            return
        if seen < len(text):
            yield 0, TextDelta(text[seen:])
        yield 0, Failed(code=STORED_FAILURE, message=OWNER_DIED, record=stored)


def price(terms: RunTerms, output_tokens: int) -> int:
    """Credits for the text a run made (the catalog's rounding), never past its reservation."""
    raw = terms.input_tokens * terms.input_per_1k + output_tokens * terms.output_per_1k
    credits = math.ceil(raw / 1000 - 1e-9) if raw > 0 else 0
    return min(credits, terms.reserved_credits)
