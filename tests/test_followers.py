"""The follower of a run another process drives (services/followers.py), on a scripted feed:
how feed entries, the record's checkpoint and the reader's position join. The real feed and
processes are in tests/test_cluster_streams.py; these pin the joins that are hard to provoke
there (a gap left by a Redis outage, an end racing the owner check)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from uuid import UUID, uuid4

from threadline.domain.clock import utcnow
from threadline.domain.entities import AiRecord, RecordStatus
from threadline.domain.events import Citation, Done, Failed, ReplyEvent, TextDelta
from threadline.domain.ports import FeedEntry, FeedRead, RunTerms
from threadline.services.followers import OWNER_DIED, ReplayEvents, RunFollower, price

TERMS = RunTerms(input_tokens=10, input_per_1k=1000, output_per_1k=1000, reserved_credits=12)


class ScriptedFeed:
    """A feed that has `entries` now and `later` on the next blocking read."""

    shared = True

    def __init__(
        self, entries: list[FeedEntry], later: Sequence[FeedEntry] = (), owned: bool = True
    ) -> None:
        self.entries = [FeedEntry(terms=TERMS), *entries]
        self.later = list(later)
        self.alive = owned

    def tap(self, run_id: UUID, terms: RunTerms) -> Callable[[ReplyEvent], None] | None:
        return None

    async def read(self, run_id: UUID, cursor: str, wait: float) -> FeedRead | None:
        start = int(cursor)
        if start >= len(self.entries) and wait > 0 and self.later:
            self.entries += self.later
            self.later = []
        return FeedRead(str(len(self.entries)), self.entries[start:])

    async def owned(self, run_id: UUID) -> bool | None:
        return self.alive

    def cancel(self, run_id: UUID) -> None:
        pass

    def on_cancel(self, handler: Callable[[UUID], object]) -> None:
        pass

    def request_stop(self, run_id: UUID) -> None:
        pass

    def on_stop(self, handler: Callable[[UUID], object]) -> None:
        pass


class Records:
    """The two calls the follower makes of a record store, on one record."""

    def __init__(self, record: AiRecord) -> None:
        self.record = record
        self.abandoned: list[tuple[AiRecord, int]] = []

    async def get(self, org_id: UUID, record_id: UUID) -> AiRecord | None:
        return self.record

    async def abandon(self, record: AiRecord, charge: int) -> AiRecord | None:
        if self.record.status is not RecordStatus.PENDING:
            return None
        self.abandoned.append((record, charge))
        self.record = replace(record, credits=charge)
        return self.record


def pending(text: str = "") -> AiRecord:
    now = utcnow()
    return AiRecord(
        id=uuid4(),
        org_id=uuid4(),
        user_id=uuid4(),
        conversation_id=None,
        model="m",
        type="UNIFY_CHAT_WITH_AI",
        status=RecordStatus.PENDING,
        prompt_object={},
        result_text=text,
        created_at=now,
        updated_at=now,
    )


def text(offset: int, piece: str) -> FeedEntry:
    return FeedEntry(offset=offset, text=piece)


async def follow(feed: ScriptedFeed, records: Records, after: int) -> tuple[list, list[int]]:
    """The events a reader at `after` gets, and the positions the store took over from."""
    follower = RunFollower(feed, records, wait=0.01)  # type: ignore[arg-type]
    run = await follower.open(records.record)
    assert run is not None
    fallbacks: list[int] = []

    async def stored(record: AiRecord, seen: int) -> ReplayEvents:
        fallbacks.append(seen)
        yield 0, Done(record=record)

    events = [e async for _, e in follower.events(run, after, None, stored)]
    return events, fallbacks


def texts(events: list) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


async def test_a_gap_in_the_feed_is_filled_from_the_checkpoint() -> None:
    feed = ScriptedFeed([text(0, "Hello ")], later=[text(12, "world!"), FeedEntry(ended=True)])
    records = Records(pending("Hello there "))  # the checkpoint has the gap's text
    events, fallbacks = await follow(feed, records, after=3)
    assert texts(events) == "lo there world!"  # each character once, in order
    assert fallbacks == [18]  # the stored record closes the reply after all of it


async def test_a_gap_the_checkpoint_does_not_cover_goes_on_from_the_store() -> None:
    feed = ScriptedFeed([text(0, "Hello "), text(12, "world!")])
    events, fallbacks = await follow(feed, Records(pending("Hello ")), after=0)
    assert texts(events) == "Hello " and fallbacks == [6]


async def test_citations_before_the_readers_position_are_not_sent_again() -> None:
    early, late = Citation("a", "A"), Citation("b", "B")
    feed = ScriptedFeed(
        [
            FeedEntry(citation=early),
            text(0, "one two"),
            FeedEntry(offset=7, citation=late),
            FeedEntry(offset=7, ended=True),
        ]
    )
    events, _ = await follow(feed, Records(pending()), after=4)
    assert [e for e in events if isinstance(e, Citation)] == [late]
    assert texts(events) == "two"


async def test_an_end_racing_the_owner_check_is_read_not_taken_for_a_death() -> None:
    feed = ScriptedFeed([text(0, "done")], owned=False)
    records = Records(pending())

    async def gone_having_ended(run_id: UUID) -> bool | None:
        # the owner published the end and released the run between the read and the check
        feed.entries.append(FeedEntry(offset=4, ended=True))
        return False

    feed.owned = gone_having_ended  # type: ignore[method-assign]
    events, fallbacks = await follow(feed, records, after=0)
    assert texts(events) == "done" and records.abandoned == [] and fallbacks == [4]


async def test_a_dead_owner_leaves_the_text_so_far_failed_and_charged() -> None:
    feed = ScriptedFeed([text(0, "one two"), text(7, " three")], owned=False)
    records = Records(pending("one"))
    events, fallbacks = await follow(feed, records, after=4)
    assert texts(events) == "two three" and fallbacks == []
    [(record, charge)] = records.abandoned
    assert (record.status, record.result_text, record.error) == (
        RecordStatus.FAILED,
        "one two three",
        OWNER_DIED,
    )
    assert charge == price(TERMS, record.output_tokens) == 12  # capped by the reservation
    assert isinstance(events[-1], Failed) and events[-1].record is records.record
