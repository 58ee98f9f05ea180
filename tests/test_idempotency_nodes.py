"""Idempotency across processes (issue 13, test 7): two real `threadline serve` processes on
one PostgreSQL agree on an `Idempotency-Key`, because its state is in the database. The same
key on node A then node B answers the same aiRecord, charged once; another body is 422;
twenty concurrent duplicates spread over both nodes make one run.

One pair of processes for the module (starting one takes a few seconds)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests.conftest import MIGRATED_TEMPLATE
from tests.fake_upstream import FakeUpstream, Reply
from tests.helpers import frames_of
from tests.server_process import ServerProcess, upstream_model
from threadline.services.sessions import model_id_of
from threadline.storage.database import Database
from threadline.storage.tables import ai_records, users

CHAT = "/api/chat-with-ai"
PRICED = {"input_per_1k": 1000, "output_per_1k": 2000}


class Nodes:
    def __init__(self, a: ServerProcess, b: ServerProcess, url: str, up: FakeUpstream) -> None:
        self.a, self.b, self.url, self.upstream = a, b, url, up

    def charges(self) -> tuple[int, int, int]:
        """(aiRecords, credits they were charged, credits the users have used)."""

        async def read() -> tuple[int, int, int]:
            db = Database(self.url)
            try:
                async with db.read() as conn:
                    count, charged = (
                        await conn.execute(
                            select(func.count(), func.sum(ai_records.c.credits)).select_from(
                                ai_records
                            )
                        )
                    ).one()
                    used = (await conn.execute(select(func.sum(users.c.used_credit)))).one()[0]
            finally:
                await db.dispose()
            return int(count), int(charged or 0), int(used or 0)

        return asyncio.run(read())


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory, postgres: Any) -> Iterator[Nodes]:
    url = str(postgres.create_database(f"t_{os.urandom(6).hex()}", MIGRATED_TEMPLATE))
    base = tmp_path_factory.mktemp("idem-nodes")
    with FakeUpstream(default=Reply("one two three four")) as upstream:
        models = {"gpt-4o-mini": upstream_model(upstream.url, credits=PRICED)}
        a = ServerProcess(base / "a", models=models, database_url=url)
        b = ServerProcess(base / "b", models=models, database_url=url)
        a.start()
        try:
            b.key = a.key  # one database: A's first start made the admin key
            b.start()
            try:
                yield Nodes(a, b, url, upstream)
            finally:
                b.stop()
        finally:
            a.stop()


def post(node: ServerProcess, key: str, body: dict[str, Any], **params: Any) -> httpx.Response:
    headers = {**node.headers(), "Idempotency-Key": key}
    return httpx.post(f"{node.base_url}{CHAT}", headers=headers, json=body, params=params)


def body(prompt: str) -> dict[str, Any]:
    prompt_object = {"prompt": prompt}
    return {"type": "UNIFY_CHAT_WITH_AI", "model": "gpt-4o-mini", "promptObject": prompt_object}


def test_the_same_key_on_a_then_b(nodes: Nodes) -> None:
    before = nodes.charges()
    sent = len(nodes.upstream.requests)
    on_a = post(nodes.a, "ab-1", body("Hello"))
    assert on_a.status_code == 200, on_a.text
    on_b = post(nodes.b, "ab-1", body("Hello"))
    assert on_b.status_code == 200
    assert on_b.headers["idempotent-replayed"] == "true"
    assert on_b.json()["aiRecord"]["uuid"] == on_a.json()["aiRecord"]["uuid"]
    assert on_b.content == on_a.content
    assert len(nodes.upstream.requests) == sent + 1
    records, charged, used = nodes.charges()
    assert records == before[0] + 1
    assert charged > before[1] and used - before[2] == charged - before[1]  # charged once

    other = post(nodes.b, "ab-1", body("Goodbye"))
    assert other.status_code == 422
    assert "Idempotency-Key 'ab-1'" in other.json()["error"]["message"]


def test_twenty_concurrent_duplicates_over_both_nodes(nodes: Nodes) -> None:
    before = nodes.charges()
    sent = len(nodes.upstream.requests)
    nodes.upstream.enqueue(Reply("slow " * 10, delay=0.05))

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            calls = []
            for i in range(20):
                node = nodes.a if i % 2 else nodes.b
                headers = {**node.headers(), "Idempotency-Key": "burst"}
                calls.append(
                    client.post(f"{node.base_url}{CHAT}", headers=headers, json=body("Race"))
                )
            return await asyncio.gather(*calls)

    answers = asyncio.run(burst())
    assert [r.status_code for r in answers] == [200] * 20, answers[0].text
    assert len({r.json()["aiRecord"]["uuid"] for r in answers}) == 1
    assert {r.json()["aiRecord"]["aiRecordDetail"]["resultObject"][0] for r in answers} == {
        "slow " * 10
    }
    assert len(nodes.upstream.requests) == sent + 1
    records, charged, used = nodes.charges()
    assert records == before[0] + 1
    assert used - before[2] == charged - before[1] > 0


def test_a_stream_retried_on_the_other_node_is_the_same_record(nodes: Nodes) -> None:
    """The client hangs up on A mid-stream and retries on B, which follows the run through
    the store (it is A's): the same aiRecord and its whole text, no second run."""
    sent = len(nodes.upstream.requests)
    nodes.upstream.enqueue(Reply("a b c d e f g h i j", delay=0.05))
    headers = {**nodes.a.headers(), "Idempotency-Key": "s-ab"}
    url = f"{nodes.a.base_url}{CHAT}?isStreaming=true"
    with httpx.stream("POST", url, headers=headers, json=body("Stream"), timeout=30) as r:
        assert r.status_code == 200
        record_id = r.headers["x-ai-record-id"]
        next(frames_of(r.iter_lines()))
    headers = {**nodes.b.headers(), "Idempotency-Key": "s-ab"}
    url = f"{nodes.b.base_url}{CHAT}?isStreaming=true"
    r = httpx.post(url, headers=headers, json=body("Stream"), timeout=30)
    assert r.status_code == 200 and r.headers["x-ai-record-id"] == record_id
    frames = list(frames_of(iter(r.text.splitlines())))
    text = "".join(json.loads(f["data"])["content"] for f in frames if f["event"] == "content")
    assert text == "a b c d e f g h i j"
    result = next(json.loads(f["data"]) for f in frames if f["event"] == "result")
    assert result["aiRecord"]["uuid"] == record_id
    assert result["aiRecord"]["status"] == "SUCCESS"
    assert len(nodes.upstream.requests) == sent + 1


def test_a_session_stream_retried_on_the_other_node(nodes: Nodes) -> None:
    """The Conversation Service's stream_chat, first on A then (read whole) on B: the same
    stream, message ids included, followed from the store."""
    a, b = nodes.a, nodes.b
    org = httpx.get(f"{a.base_url}/api/me", headers=a.headers()).json()["user"]["teamId"]
    base = "/api/conversation"
    made = httpx.post(
        f"{a.base_url}{base}/create?org_id={org}", headers=a.headers(), json={"title": "T"}
    )
    session = httpx.post(
        f"{a.base_url}{base}/create_session?org_id={org}",
        headers=a.headers(),
        json={"conversation_id": made.json()["id"], "model_id": str(model_id_of("gpt-4o-mini"))},
    ).json()["id"]
    chat = {"chat_session_id": session, "message": "Hello"}
    streams = []
    for node in (a, b):
        headers = {**node.headers(), "Idempotency-Key": "sess-ab"}
        url = f"{node.base_url}{base}/stream_chat?org_id={org}"
        r = httpx.post(url, headers=headers, json=chat, timeout=30)
        assert r.status_code == 200, r.text
        streams.append((r.headers["x-ai-record-id"], list(frames_of(iter(r.text.splitlines())))))
    (on_a, frames_a), (on_b, frames_b) = streams
    assert on_a == on_b
    start_a, start_b = (json.loads(f[0]["data"]) for f in (frames_a, frames_b))
    assert start_b == start_a and start_a["user_message_id"] and start_a["message_id"]
    text = [
        "".join(json.loads(f["data"])["content"] for f in frames if f["event"] == "content")
        for frames in (frames_a, frames_b)
    ]
    assert text == ["one two three four"] * 2
    assert frames_b[-1]["event"] == "end"
