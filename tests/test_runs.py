"""The run's event log: readers at any position, heartbeats when idle, readers that leave."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from threadline.domain.entities import AiRecord, RecordStatus
from threadline.domain.events import Done, TextDelta
from threadline.services.runs import Run

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def new_run() -> Run:
    record = AiRecord(
        id=uuid4(),
        org_id=uuid4(),
        user_id=uuid4(),
        conversation_id=None,
        model="m",
        type="CHAT",
        status=RecordStatus.PENDING,
        prompt_object={},
        result_text="",
        created_at=NOW,
        updated_at=NOW,
    )
    return Run(record)


async def read_all(run: Run, **kw) -> list:
    return [event async for _, event in run.events(**kw)]


async def test_readers_live_late_and_from_a_position_see_the_same_log():
    run = new_run()
    live = [asyncio.create_task(read_all(run)) for _ in range(3)]
    await asyncio.sleep(0)
    for word in ("a", "b", "c"):
        run.emit(TextDelta(word))
        await asyncio.sleep(0)
    done = Done(record=run.record)
    run.finish(run.record, done)
    expected = [TextDelta("a"), TextDelta("b"), TextDelta("c"), done]
    assert [await t for t in live] == [expected] * 3
    assert await read_all(run) == expected
    assert await read_all(run, after=2) == expected[2:]


async def test_idle_readers_get_heartbeats_and_then_the_events():
    run = new_run()
    reader = asyncio.create_task(read_all(run, idle=0.02))
    await asyncio.sleep(0.07)
    run.emit(TextDelta("late"))
    run.finish(run.record, Done(record=run.record))
    events = await reader
    assert events.count(None) >= 2
    assert events[-2:] == [TextDelta("late"), Done(record=run.record)]
    assert run._waiters == []


async def test_a_reader_that_leaves_does_not_disturb_the_others():
    run = new_run()
    leaving = asyncio.create_task(read_all(run, idle=10))
    staying = asyncio.create_task(read_all(run, idle=10))
    await asyncio.sleep(0)
    leaving.cancel()
    await asyncio.sleep(0)
    assert len(run._waiters) == 1
    run.emit(TextDelta("x"))
    run.finish(run.record, Done(record=run.record))
    assert await staying == [TextDelta("x"), Done(record=run.record)]
    assert leaving.cancelled()


def test_locate_finds_where_a_reader_with_n_characters_goes_on():
    run = new_run()
    assert run.locate(0) == (0, 0)
    for word in ("ab", "", "cde"):
        run.emit(TextDelta(word))
    assert run.locate(0) == (0, 0)
    assert run.locate(1) == (0, 1)  # inside the first delta: one character of it is had
    assert run.locate(2) == (1, 0)
    assert run.locate(4) == (2, 2)
    assert run.locate(5) == (3, 0)  # all of it: what comes next
    assert run.locate(6) is None  # more than the log holds


@pytest.mark.serial  # timings
async def test_a_heartbeat_comes_only_after_idle_seconds_without_an_event():
    run = new_run()
    reader = asyncio.create_task(read_all(run, idle=0.5))
    for n in range(10):  # an event every 20 ms: never idle for 0.5 s
        await asyncio.sleep(0.02)
        run.emit(TextDelta(str(n)))
    await asyncio.sleep(0.8)  # idle: one heartbeat (at 0.5 s)
    run.finish(run.record, Done(record=run.record))
    events = await reader
    assert events == [*(TextDelta(str(n)) for n in range(10)), None, Done(record=run.record)]
