"""The shared-state pieces in one test process, on a real Redis and both databases: a dead
owner's record is ended once (and a frozen owner's late end neither stores nor charges), and
a cancel or a stop on another process ends the run (a cancel as FAILED, a stop as SUCCESS
with the text so far). (That start-up recovery leaves a live sibling's runs alone is shown
with real processes in tests/test_nodes_processes.py.)

The cluster tests (tests/test_cluster_*.py) show the same through real processes; these pin
the storage half on SQLite too, at a fraction of the cost."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from uuid import UUID

import pytest

from tests.cluster import RedisServer
from tests.helpers import Fakes, make_settings, pending_record
from threadline.container import Container
from threadline.domain.entities import AiRecord, Principal, RecordStatus
from threadline.domain.errors import Conflict
from threadline.domain.events import Done, TextDelta
from threadline.domain.ports import RunTerms
from threadline.services.chat_command import ChatCommand
from threadline.services.responses import ResponseRequest
from threadline.services.runs import CANCELLED_MESSAGE
from threadline.shared.redis_runs import feed_key
from threadline.storage import nodes as storage_nodes

RESPONSE = "OPENAI_RESPONSE"  # the Responses dialect's record type
TERMS = RunTerms(input_tokens=5, input_per_1k=1000, output_per_1k=1000, reserved_credits=50)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (make test installs it)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
async def node(
    tmp_path: Path, db_url: str, redis_url: str, fakes: Fakes
) -> AsyncIterator[Container]:
    settings = make_settings(tmp_path / "a", db_url, redis_url=redis_url)
    container = Container(settings, model_factory=fakes.factory)
    await container.start(worker=False)
    yield container
    await container.stop()


async def pending(container: Container, caller: Principal) -> AiRecord:
    record = pending_record(caller.org_id, caller.user.id)
    await container.record_store.start(record, None)
    return record


async def status_of(container: Container, record: AiRecord) -> RecordStatus:
    stored = await container.record_store.get(record.org_id, record.id)
    assert stored is not None
    return stored.status


async def until_owned(other: Container, caller: Principal, run_id: UUID) -> None:
    """Wait until `other` sees the run's record and its live owner on the feed."""
    for _ in range(200):
        stored = await other.record_store.get(caller.org_id, run_id)
        if stored is not None and await other.run_feed.owned(run_id):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"run {run_id} never showed up as owned")


async def test_a_dead_owners_record_is_ended_and_charged_once(node: Container) -> None:
    admin = await node.bootstrap()
    assert admin is not None
    caller = await node.accounts.authenticate(admin.secret)
    record = await pending(node, caller)
    await node.credits.reserve(caller, record.id, 50, "this reply")
    failed = replace(
        record,
        status=RecordStatus.FAILED,
        result_text="so far",
        output_tokens=2,
        input_tokens=5,
        error="the owner died",
    )
    first, second = await asyncio.gather(
        node.record_store.abandon(failed, 7), node.record_store.abandon(failed, 7)
    )
    assert [first is None, second is None].count(True) == 1  # one of them did it
    stored = await node.record_store.get(record.org_id, record.id)
    assert stored is not None
    assert (stored.status, stored.result_text, stored.credits, stored.error) == (
        RecordStatus.FAILED,
        "so far",
        7,
        "the owner died",
    )
    user = await node.accounts.user(caller)
    assert (user.used_credit, user.reserved_credit) == (7, 0)
    assert await node.record_store.abandon(failed, 7) is None  # never again
    # the owner was only frozen: it wakes and ends its run; the record was settled already
    late = replace(record, status=RecordStatus.SUCCESS, result_text="so far, and more", credits=30)
    assert await node.record_store.finish(late, None, None, 30) is None
    assert await node.record_store.get(record.org_id, record.id) == stored
    user = await node.accounts.user(caller)
    assert (user.used_credit, user.reserved_credit) == (7, 0)

    # the owner's end and a reader's abandon at the same moment: one of them settles
    record = await pending(node, caller)
    await node.credits.reserve(caller, record.id, 50, "this reply")
    late = replace(late, id=record.id)
    owner, reader = await asyncio.gather(
        node.record_store.finish(late, None, None, 30),
        node.record_store.abandon(replace(failed, id=record.id), 7),
    )
    assert [owner is None, reader is None].count(True) == 1
    stored = await node.record_store.get(record.org_id, record.id)
    assert stored is not None
    user = await node.accounts.user(caller)
    if owner is not None:
        assert (stored.status, stored.credits, user.used_credit) == (RecordStatus.SUCCESS, 30, 37)
    else:
        assert (stored.status, stored.credits, user.used_credit) == (RecordStatus.FAILED, 7, 14)
    assert user.reserved_credit == 0


async def test_a_finish_returns_its_user_as_settled(node: Container) -> None:
    """The user `finish` gives back (the reply's figures of credit) is read after its
    commit: the charge taken, the reservation given back; a late finish gives none."""
    admin = await node.bootstrap()
    assert admin is not None
    caller = await node.accounts.authenticate(admin.secret)
    record = await pending(node, caller)
    await node.credits.reserve(caller, record.id, 50, "this reply")
    done = replace(record, status=RecordStatus.SUCCESS, result_text="all", credits=30)
    user = await node.record_store.finish(done, None, None, 30)
    assert user is not None
    assert (user.id, user.used_credit, user.reserved_credit) == (caller.user.id, 30, 0)
    assert await node.record_store.finish(done, None, None, 30) is None
    user = await node.accounts.user(caller)
    assert (user.used_credit, user.reserved_credit) == (30, 0)


@dataclass
class Pair:
    """Two live processes on one database and one Redis: `node` runs the reply (its model
    says "one two", then waits for `gate`), `other` reaches it through the shared feed."""

    node: Container
    other: Container
    caller: Principal
    gate: asyncio.Event


@pytest.fixture
async def pair(
    node: Container,
    tmp_path: Path,
    db_url: str,
    redis_url: str,
    fakes: Fakes,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Pair]:
    # Two containers in one process share its pid, which start-up recovery takes for an
    # earlier life of the same process (storage/nodes.py): here they are two live processes.
    monkeypatch.setattr(storage_nodes, "_running", lambda pid: True)
    admin = await node.bootstrap()
    assert admin is not None
    caller = await node.accounts.authenticate(admin.secret)
    gate = asyncio.Event()
    fakes["gpt-4o-mini"].enqueue(["one", " two", gate, " three"])
    other = Container(make_settings(tmp_path / "b", db_url, redis_url=redis_url))
    await other.start(worker=False)
    try:
        yield Pair(node, other, caller, gate)
    finally:
        gate.set()
        await other.stop()


async def test_a_cancel_on_another_process_stops_the_run_where_it_is(pair: Pair) -> None:
    command = ChatCommand(pair.caller, "gpt-4o-mini", "UNIFY_CHAT_WITH_AI", prompt="Go")
    run = await pair.node.chat.reply(command)
    await until_owned(pair.other, pair.caller, run.id)
    await pair.other.replays.cancel(pair.caller, run.id)
    record = await asyncio.wait_for(run.result(), 10)
    assert (record.status, record.result_text, record.error) == (
        RecordStatus.FAILED,
        "one two",
        CANCELLED_MESSAGE,
    )
    assert record.credits > 0  # the text made so far is charged
    user = await pair.node.accounts.user(pair.caller)
    assert user.used_credit == record.credits


async def test_a_stop_on_another_process_ends_the_run_as_a_stop(pair: Pair) -> None:
    caller, other = pair.caller, pair.other
    command = ChatCommand(caller, "gpt-4o-mini", "UNIFY_CHAT_WITH_AI", prompt="Go")
    run = await pair.node.chat.reply(command)
    orphan = await pending(pair.node, caller)  # PENDING, but no process owns it
    await until_owned(other, caller, run.id)
    assert await other.replays.stop(caller, orphan.id) is False
    assert await other.replays.stop(caller, run.id) is True
    for _ in range(500):  # the stop is a Redis message: wait until the owner has it
        if run.stop_requested:
            break
        await asyncio.sleep(0.01)
    assert run.stop_requested
    pair.gate.set()  # the model's next event: the run ends there
    record = await asyncio.wait_for(run.result(), 10)
    assert await other.replays.stop(caller, run.id) is False  # ended: nothing to stop
    assert (record.status, record.result_text, record.error) == (
        RecordStatus.SUCCESS,
        "one two",
        None,
    )
    assert record.credits > 0  # charged as produced
    stored = await other.record_store.get(caller.org_id, run.id)
    assert stored is not None and stored.status is RecordStatus.SUCCESS
    user = await pair.node.accounts.user(caller)
    assert user.used_credit == record.credits


async def test_a_response_cancelled_on_another_process_ends_cancelled_there(pair: Pair) -> None:
    command = ChatCommand(pair.caller, "gpt-4o-mini", RESPONSE, prompt="Go")
    run = await pair.node.responses.create(ResponseRequest(command))
    await until_owned(pair.other, pair.caller, run.id)
    view = await pair.other.responses.cancel(pair.caller, run.id, RESPONSE)  # once ended
    assert (view.record.status, view.record.result_text, view.record.error) == (
        RecordStatus.FAILED,
        "one two",
        CANCELLED_MESSAGE,
    )
    assert view.run is None  # it ran on the other process


async def test_without_redis_a_response_on_another_process_cannot_be_cancelled(
    tmp_path: Path, db_url: str, fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage_nodes, "_running", lambda pid: True)  # as above
    node = Container(make_settings(tmp_path / "a", db_url), model_factory=fakes.factory)
    await node.start(worker=False)
    other = Container(make_settings(tmp_path / "b", db_url))
    await other.start(worker=False)
    gate = asyncio.Event()
    try:
        admin = await node.bootstrap()
        assert admin is not None
        caller = await node.accounts.authenticate(admin.secret)
        fakes["gpt-4o-mini"].enqueue(["one", gate, " two"])
        command = ChatCommand(caller, "gpt-4o-mini", RESPONSE, prompt="Go")
        run = await node.responses.create(ResponseRequest(command))
        for _ in range(200):  # until its record is stored
            if await other.record_store.get(caller.org_id, run.id) is not None:
                break
            await asyncio.sleep(0.02)
        with pytest.raises(Conflict, match="that takes `redis_url`"):
            await other.responses.cancel(caller, run.id, RESPONSE)
    finally:
        gate.set()
        await other.stop()
        await node.stop()


async def test_a_reader_ahead_of_the_feed_is_followed_and_an_ended_feed_expires_soon(
    pair: Pair,
) -> None:
    """The owner publishes to the feed in batches, so its client may hold frames the feed has
    not got yet: a resume from such a frame on another process follows the run (not a 400).
    Once the run has ended its Redis stream is kept only `stream_retention_seconds`."""
    caller, other = pair.caller, pair.other
    command = ChatCommand(caller, "gpt-4o-mini", "UNIFY_CHAT_WITH_AI", prompt="Go")
    run = await pair.node.chat.reply(command)
    await until_owned(other, caller, run.id)
    replay = await other.replays.open(caller, run.id, after=9)  # "one two t": ahead of the feed
    pair.gate.set()
    events = [event async for _, event in other.replays.events(replay)]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "hree"
    assert isinstance(events[-1], Done) and events[-1].record.result_text == "one two three"

    assert other.redis is not None
    retention = other.settings.stream_retention_seconds
    ttl = await other.redis.client.ttl(feed_key(run.id))
    for _ in range(500):  # the end reaches Redis in the owner's next batch
        if 0 < ttl <= retention:
            break
        await asyncio.sleep(0.01)
        ttl = await other.redis.client.ttl(feed_key(run.id))
    assert 0 < ttl <= retention  # not the hour a live run's stream is given
