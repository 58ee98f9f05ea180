"""The shared-state pieces in one test process, on a real Redis and both databases: a dead
owner's record is ended once, and a cancel on another process stops the run. (That start-up
recovery leaves a live sibling's runs alone is shown with real processes in
tests/test_nodes_processes.py.)

The cluster tests (tests/test_cluster_*.py) show the same through real processes; these pin
the storage half on SQLite too, at a fraction of the cost."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from uuid import uuid4

import pytest

from tests.cluster import RedisServer
from tests.helpers import Fakes, make_settings
from threadline.container import Container
from threadline.domain.entities import AiRecord, Principal, RecordStatus
from threadline.domain.ports import RunTerms
from threadline.services.chat_command import ChatCommand
from threadline.services.runs import CANCELLED_MESSAGE
from threadline.storage import nodes as storage_nodes
from threadline.storage.database import utcnow

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
    now = utcnow()
    record = AiRecord(
        id=uuid4(),
        org_id=caller.org_id,
        user_id=caller.user.id,
        conversation_id=None,
        model="gpt-4o-mini",
        type="UNIFY_CHAT_WITH_AI",
        status=RecordStatus.PENDING,
        prompt_object={"prompt": "Go"},
        result_text="",
        created_at=now,
        updated_at=now,
    )
    await container.record_store.start(record, None)
    return record


async def status_of(container: Container, record: AiRecord) -> RecordStatus:
    stored = await container.record_store.get(record.org_id, record.id)
    assert stored is not None
    return stored.status


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


async def test_a_cancel_on_another_process_stops_the_run_where_it_is(
    node: Container,
    tmp_path: Path,
    db_url: str,
    redis_url: str,
    fakes: Fakes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two containers in one process share its pid, which start-up recovery takes for an
    # earlier life of the same process (storage/nodes.py): here they are two live processes.
    monkeypatch.setattr(storage_nodes, "_running", lambda pid: True)
    admin = await node.bootstrap()
    assert admin is not None
    caller = await node.accounts.authenticate(admin.secret)
    gate = asyncio.Event()  # the model says "one two" and then waits
    fakes["gpt-4o-mini"].enqueue(["one", " two", gate, " three"])
    command = ChatCommand(caller, "gpt-4o-mini", "UNIFY_CHAT_WITH_AI", prompt="Go")
    run = await node.chat.reply(command)
    other = Container(make_settings(tmp_path / "b", db_url, redis_url=redis_url))
    await other.start(worker=False)
    try:
        for _ in range(200):  # until the run's record and its feed are there
            stored = await other.record_store.get(caller.org_id, run.id)
            if stored is not None and await other.run_feed.owned(run.id):
                break
            await asyncio.sleep(0.02)
        await other.replays.cancel(caller, run.id)
        record = await asyncio.wait_for(run.result(), 10)
    finally:
        gate.set()
        await other.stop()
    assert (record.status, record.result_text, record.error) == (
        RecordStatus.FAILED,
        "one two",
        CANCELLED_MESSAGE,
    )
    assert record.credits > 0  # the text made so far is charged
    user = await node.accounts.user(caller)
    assert user.used_credit == record.credits
