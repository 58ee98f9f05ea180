"""Checkpoints of a streaming reply's text: their rate and order (services/checkpoints.py,
with a recording save), and what the store holds while a reply streams and after it ends, on
SQLite and PostgreSQL. The kill -9 tests are in test_crash_checkpoints.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from tests.helpers import Fakes, make_settings
from threadline.container import Container, create_app
from threadline.domain.clock import utcnow
from threadline.domain.entities import Principal, RecordStatus
from threadline.services.checkpoints import CheckpointPolicy, Checkpoints
from threadline.storage.nodes import SqlNodeStore


class Saves:
    """A save that records what it stored, how many ran at once, and can be slow or fail."""

    def __init__(self, seconds: float = 0.0, fail: bool = False) -> None:
        self.seconds, self.fail = seconds, fail
        self.texts: list[str] = []
        self.running = self.most_at_once = 0

    async def __call__(self, text: str) -> None:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await asyncio.sleep(self.seconds)
            if self.fail:
                raise OSError("the store is down")
            self.texts.append(text)
        finally:
            self.running -= 1


def checkpoints(
    saves: Saves, seconds: float, chars: int = 10**6, ready: Callable[[], bool] = lambda: True
) -> tuple[Checkpoints, list[str]]:
    parts: list[str] = []
    return Checkpoints(parts, saves, CheckpointPolicy(seconds, chars), ready), parts


def grow(checks: Checkpoints, parts: list[str], text: str) -> None:
    parts.append(text)
    checks.grew(len(text))


async def test_nothing_is_scheduled_before_the_first_delta() -> None:
    saves = Saves()
    tasks = len(asyncio.all_tasks())
    checks, _ = checkpoints(saves, 0.01, chars=1)
    await asyncio.sleep(0.05)
    assert saves.texts == [] and len(asyncio.all_tasks()) == tasks
    assert await checks.close() is False


async def test_a_steady_stream_is_saved_once_per_interval_one_save_at_a_time() -> None:
    saves = Saves(seconds=0.03)  # a slow store: a save spans several deltas
    checks, parts = checkpoints(saves, 0.1)
    began = time.monotonic()
    while time.monotonic() - began < 1.0:
        grow(checks, parts, "word ")
        await asyncio.sleep(0.005)
    assert await checks.close() is True
    assert saves.most_at_once == 1
    assert 5 <= len(saves.texts) <= 11, len(saves.texts)  # ~1 s / 0.1 s, under load fewer
    text = "".join(parts)
    assert all(text.startswith(saved) for saved in saves.texts)
    assert [len(t) for t in saves.texts] == sorted({len(t) for t in saves.texts})  # growing


async def test_enough_unsaved_characters_save_sooner() -> None:
    saves = Saves()
    checks, parts = checkpoints(saves, 60.0, chars=100)
    for _ in range(10):
        grow(checks, parts, "x" * 30)
        await asyncio.sleep(0.01)  # lets a save land
    await checks.close()
    assert [len(t) for t in saves.texts] == [120, 240]  # each time 100 were unsaved


async def test_a_stalled_stream_is_saved_whole_after_the_interval() -> None:
    saves = Saves()
    checks, parts = checkpoints(saves, 0.05)
    for word in ("one", " two", " three"):
        grow(checks, parts, word)
    await asyncio.sleep(0.2)  # no more deltas: the timer saves what came
    assert saves.texts == ["one two three"]
    await asyncio.sleep(0.2)
    assert saves.texts == ["one two three"]  # nothing new: nothing written
    await checks.close()


async def test_no_save_before_the_record_is_written() -> None:
    saves, written = Saves(), asyncio.Event()
    checks, parts = checkpoints(saves, 0.02, ready=written.is_set)
    grow(checks, parts, "early")
    await asyncio.sleep(0.1)
    assert saves.texts == []
    written.set()
    await asyncio.sleep(0.1)
    assert saves.texts == ["early"]
    await checks.close()


async def test_a_failing_store_is_retried_once_per_interval() -> None:
    saves = Saves(fail=True)
    attempts = 0
    original = saves.__call__

    async def counting(text: str) -> None:
        nonlocal attempts
        attempts += 1
        await original(text)

    parts: list[str] = []
    checks = Checkpoints(parts, counting, CheckpointPolicy(0.1, chars=1), lambda: True)
    for _ in range(40):
        grow(checks, parts, "word ")  # every delta is over `chars`
        await asyncio.sleep(0.01)
    assert await checks.close() is False
    assert 1 <= attempts <= 6, attempts  # ~0.4 s / 0.1 s, not one per delta


async def test_close_waits_for_the_save_in_flight_then_saves_no_more() -> None:
    saves = Saves(seconds=0.1)
    checks, parts = checkpoints(saves, 0.01, chars=1)
    grow(checks, parts, "first")
    await asyncio.sleep(0.02)  # the save is in flight
    assert saves.running == 1
    grow(checks, parts, " second")  # waits for it: the save's end would start the next one
    assert await checks.close() is True
    assert saves.texts == ["first"] and saves.running == 0
    await asyncio.sleep(0.1)
    assert saves.texts == ["first"]


# ---- the store while a reply streams, and after it ends (SQLite and PostgreSQL)


@pytest.fixture
async def app(tmp_path: Path, db_url: str, fakes: Fakes) -> Any:
    settings = make_settings(
        tmp_path, db_url, stream_checkpoint_seconds=0.02, stream_checkpoint_chars=1
    )
    application = create_app(settings, model_factory=fakes.factory)
    async with application.router.lifespan_context(application):
        yield application


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "not within the time"
        await asyncio.sleep(0.01)


async def new_session(container: Container, caller: Principal) -> tuple[UUID, UUID]:
    conversation = await container.conversations.create(
        caller, title="checkpoints", type="CHAT_WITH_AI", model=None
    )
    model_id = container.catalog.get("gpt-4o-mini").id
    session, _ = await container.sessions.create(caller, conversation.id, model_id)
    return conversation.id, session.id


async def test_the_record_follows_a_streaming_reply_and_its_end_wins(
    container: Container, admin_key: str, fakes: Fakes
) -> None:
    caller = await container.accounts.authenticate(admin_key)
    conversation_id, session_id = await new_session(container, caller)
    first, second = asyncio.Event(), asyncio.Event()
    fakes["gpt-4o-mini"].enqueue(["one", " two", first, " three", second, " four"])
    run = (await container.sessions.send(caller, session_id, "Go")).run
    assert run is not None
    records = container.record_store

    async def stored() -> tuple[Any, list[Any]]:
        page = await container.conversations.messages(caller, conversation_id, limit=10, offset=0)
        return await records.get(caller.org_id, run.id), list(page.items)

    async def holds(text: str) -> bool:
        record = await records.get(caller.org_id, run.id)  # None until the PENDING write
        return record is not None and record.result_text == text

    await until(lambda: holds("one two"))
    record, messages = await stored()
    assert record.status is RecordStatus.PENDING
    assert [(m.role, m.status) for m in messages] == [("user", RecordStatus.PENDING)]
    first.set()
    await until(lambda: holds("one two three"))
    second.set()
    final = await run.result()
    assert final.status is RecordStatus.SUCCESS
    record, messages = await stored()
    assert (record.status, record.result_text) == (RecordStatus.SUCCESS, "one two three four")
    assert [(m.role, m.content, m.status) for m in messages] == [
        ("user", "Go", RecordStatus.SUCCESS),
        ("assistant", "one two three four", RecordStatus.SUCCESS),
    ]
    assert messages[1].id == run.reply_message_id
    # a checkpoint that lands after the end changes nothing
    await records.checkpoint(run.record, "one")
    assert await stored() == (record, messages)


async def test_recovery_keeps_the_checkpointed_text_and_a_live_run_still_wins(
    container: Container, admin_key: str, fakes: Fakes
) -> None:
    """What recovery does to a run whose process is taken for gone, here done while the run
    still lives (its process was cut off from the database longer than a lease, and its row
    in `nodes` reaped): the record and both messages FAILED with the checkpointed text, the
    reply under the id the stream named; then the run's own end replaces them. While its
    process is known alive, recovery leaves the run alone (issue 13: a sibling starting)."""
    caller = await container.accounts.authenticate(admin_key)
    conversation_id, session_id = await new_session(container, caller)
    gate = asyncio.Event()
    fakes["gpt-4o-mini"].enqueue(["one", " two", gate, " three"])
    exchange = await container.sessions.send(caller, session_id, "Go")
    run = exchange.run
    assert run is not None and exchange.reply_message_id == run.reply_message_id
    records = container.record_store

    async def saved() -> bool:
        record = await records.get(caller.org_id, run.id)  # None until the PENDING write
        return record is not None and record.result_text == "one two"

    await until(saved)
    assert await records.fail_unfinished("the server stopped", before=utcnow()) == 0
    await SqlNodeStore(container.db).leave(container.node_id)  # as a reaper would
    assert await records.fail_unfinished("the server stopped", before=utcnow()) == 1
    record = await records.get(caller.org_id, run.id)
    assert (record.status, record.result_text, record.error) == (
        RecordStatus.FAILED,
        "one two",
        "the server stopped",
    )
    page = await container.conversations.messages(caller, conversation_id, limit=9, offset=0)
    assert [(m.id, m.role, m.content, m.status) for m in page.items] == [
        (exchange.user_message_id, "user", "Go", RecordStatus.FAILED),
        (run.reply_message_id, "assistant", "one two", RecordStatus.FAILED),
    ]
    assert await records.fail_unfinished("again", before=utcnow()) == 0
    gate.set()
    assert (await run.result()).status is RecordStatus.SUCCESS
    record = await records.get(caller.org_id, run.id)
    assert (record.status, record.result_text) == (RecordStatus.SUCCESS, "one two three")
    page = await container.conversations.messages(caller, conversation_id, limit=9, offset=0)
    assert [(m.id, m.content, m.status) for m in page.items] == [
        (exchange.user_message_id, "Go", RecordStatus.SUCCESS),
        (run.reply_message_id, "one two three", RecordStatus.SUCCESS),
    ]


async def test_a_reply_without_checkpoints_stores_its_message_once(
    tmp_path: Path, db_url: str, fakes: Fakes
) -> None:
    settings = make_settings(tmp_path, db_url, stream_checkpoint_seconds=0)
    application = create_app(settings, model_factory=fakes.factory)
    async with application.router.lifespan_context(application):
        container: Container = application.state.container
        caller = await container.accounts.authenticate((await container.bootstrap()).secret)
        conversation_id, session_id = await new_session(container, caller)
        gate = asyncio.Event()
        fakes["gpt-4o-mini"].enqueue(["one", gate, " two"])
        run = (await container.sessions.send(caller, session_id, "Go")).run
        assert run is not None
        await asyncio.sleep(0.3)
        page = await container.conversations.messages(caller, conversation_id, limit=9, offset=0)
        assert [m.role for m in page.items] == ["user"]  # nothing saved while it streams
        assert (await container.record_store.get(caller.org_id, run.id)).result_text == ""
        gate.set()
        await run.result()
        page = await container.conversations.messages(caller, conversation_id, limit=9, offset=0)
        replies = [(m.role, m.content) for m in page.items]
        assert replies == [("user", "Go"), ("assistant", "one two")]
