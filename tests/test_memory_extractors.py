"""Fact extractors for memories: the rules (the default) case by case, and the model
extractor against the real fake OpenAI-compatible upstream (tests/fake_upstream.py) answering
JSON, garbage, or failing, through the HTTP API. SQLite only: the storage of memories is
tested on both databases in test_memories.py."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.fake_upstream import FakeUpstream, Reply
from tests.faults import Disconnect, Status
from tests.helpers import (
    CHAT,
    MEMORIES,
    Fakes,
    contents,
    listed,
    make_settings,
    memory_chat,
    settle,
)
from tests.live_server import LiveServer
from threadline.container import create_app
from threadline.domain.documents import Job
from threadline.domain.errors import ModelError
from threadline.domain.memories import KIND_MAX, Fact
from threadline.jobs.worker import Worker
from threadline.providers import build_model
from threadline.services.memories import REMEMBER_JOB
from threadline.services.memory_model import INSTRUCTIONS, parse_facts
from threadline.services.memory_rules import MAX_FACTS, extract_facts
from threadline.settings import EmbeddingConfig, MemorySettings, ModelConfig, Settings
from threadline.storage.database import Database
from threadline.storage.jobs import SqlJobQueue
from threadline.storage.tables import jobs

CONVERSATION = {"type": "UNIFY_CHAT_WITH_AI", "model": "gpt-4o-mini"}

# ---- the rules ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "facts"),
    [
        (
            "Hi, my name is ana and I live in Lisbon.",
            [("User's name is Ana", "name"), ("User lives in Lisbon", "home")],
        ),
        (
            "Call me Annie. I'm allergic to peanuts!",
            [("User wants to be called Annie", "nickname"), ("User is allergic to peanuts", None)],
        ),
        (
            "I’m called Bob; I'm based in Oslo",
            [("User's name is Bob", "name"), ("User lives in Oslo", "home")],
        ),
        (
            "I work as a nurse, and I work at St Mary's Hospital.",
            [("User works as a nurse", "job"), ("User works at St Mary's Hospital", "employer")],
        ),
        (
            "I'm 34 years old. I'm vegetarian. I prefer window seats on long flights.",
            [
                ("User is 34 years old", "age"),
                ("User is vegetarian", "diet"),
                ("User prefers window seats on long flights", None),
            ],
        ),
        (
            "I'm from Brazil, but I live in Berlin now",
            [("User is from Brazil", "origin"), ("User lives in Berlin", "home")],
        ),
        ("I live in Porto with my wife.", [("User lives in Porto with their wife", "home")]),
        ("Remember that I hate mushrooms!", [("User hates mushrooms", "opinion:mushrooms")]),
        ("I don't like cilantro", [("User dislikes cilantro", "opinion:cilantro")]),
        ("I really love to cook", [("User loves to cook", "opinion:to cook")]),
        ("My favorite color is green.", [("User's favorite color is green", "favourite color")]),
        ("My wife's name is eva", [("User's wife's name is Eva", "wife's name")]),
        ("I have a dog named rex", [("User has a dog named Rex", None)]),
        ("I speak French and Portuguese", [("User speaks French and Portuguese", None)]),
        ("My name is Ana. Sorry, typo: my name is Anna.", [("User's name is Anna", "name")]),
        # not statements about the user, or not durable facts
        ("What is my name? Do I like jazz? Where do I live?", []),
        ("My friend says I live in Paris.", []),
        ("I love it when you answer briefly. I like that.", []),
        ("I'd like a coffee please. I would like to know more.", []),
        ("My question is how to bake bread. My code is broken.", []),
        ("I'm tired. I'm a bit confused today.", []),
        ("my name is not important", []),
        ("I live in " + "a very long place name " * 4, []),
        ("", []),
    ],
)
def test_rule_extractor(message: str, facts: list[tuple[str, str | None]]) -> None:
    assert extract_facts(message) == [Fact(text, kind) for text, kind in facts]


def test_rule_extractor_kinds_fit_their_column() -> None:
    [fact] = extract_facts("I love " + " ".join(["extraordinarily"] * 8))
    assert fact.kind is not None and fact.kind.startswith("opinion:extraordinarily")
    assert len(fact.kind) == KIND_MAX


def test_rule_extractor_keeps_at_most_max_facts() -> None:
    message = " ".join(f"I have a cat named Cat{chr(97 + i)}." for i in range(MAX_FACTS + 5))
    assert len(extract_facts(message)) == MAX_FACTS


# ---- parsing a model's answer -------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "facts"),
    [
        ('[{"fact": "User\'s name is Ana", "kind": "name"}]', [Fact("User's name is Ana", "name")]),
        ('```json\n["User plays the cello"]\n```', [Fact("User plays the cello")]),
        (
            'Here you go: [{"fact": "user  lives\\nin Oslo", "kind": null}] Hope it helps!',
            [Fact("User lives in Oslo")],
        ),
        ('{"facts": ["User lives in Oslo"]}', [Fact("User lives in Oslo")]),  # a wrapped list
        (
            json.dumps(
                [
                    42,
                    None,
                    {"fact": ""},
                    {"kind": "name"},
                    "Ana is nice",  # not about the user, in the third person
                    "User x",  # too short to be a fact
                    "User " + "x " * 200,  # too long
                    {"fact": "User lives in Lisbon", "kind": "Home!!"},  # a bad kind is dropped
                    {"fact": "User lives in Lisbon", "kind": None},  # a repeat
                ]
            ),
            [Fact("User lives in Lisbon")],
        ),
        ("[]", []),
    ],
)
def test_parse_facts_keeps_only_valid_items(answer: str, facts: list[Fact]) -> None:
    assert parse_facts(answer) == facts


@pytest.mark.parametrize(
    "answer", ["", "Sure! Ana lives in Lisbon.", '{"fact": "User is Ana"}', "[1, 2", "] nothing ["]
)
def test_parse_facts_without_a_json_list_is_none(answer: str) -> None:
    assert parse_facts(answer) is None


def test_parse_facts_is_capped() -> None:
    answer = json.dumps([f"User owns bike number {i}" for i in range(30)])
    facts = parse_facts(answer)
    assert facts is not None and len(facts) == MAX_FACTS


# ---- the model extractor through the API, against the fake upstream ------------------


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(api_key="sk-extract") as server:
        yield server


@pytest.fixture
def settings(tmp_path: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("EXTRACTOR_KEY", "sk-extract")
    extractor = ModelConfig(
        provider="openai-compatible",
        base_url=upstream.url,
        api_key_env="EXTRACTOR_KEY",
        upstream_model="fake-upstream-model",
        timeout_seconds=5,
    )
    chat_models = {name: ModelConfig(provider="fake") for name in ("fake", "gpt-4o-mini")}
    return make_settings(
        tmp_path,
        f"sqlite+aiosqlite:///{tmp_path / 'threadline.db'}",
        models={**chat_models, "extractor": extractor},
        memories=MemorySettings(extractor="model", model="extractor"),
        embeddings=EmbeddingConfig(provider="none"),
    )


@pytest.fixture
async def app(settings: Settings, fakes: Fakes) -> AsyncIterator[Any]:
    """The chat model is scripted in process; the extractor is a real HTTP client."""

    def factory(name: str, config: ModelConfig) -> Any:
        return build_model(name, config) if name == "extractor" else fakes.factory(name, config)

    application = create_app(settings, model_factory=factory)
    async with application.router.lifespan_context(application):
        yield application


async def told(client, admin, fakes, message: str) -> dict:
    fakes["gpt-4o-mini"].enqueue(["Nice to meet you."])
    r = await client.post(CHAT, headers=admin, json=memory_chat(message))
    assert r.status_code == 200, r.text
    record = r.json()["aiRecord"]
    assert record["status"] == "SUCCESS"
    assert record["aiRecordDetail"]["resultObject"] == ["Nice to meet you."]
    return record


async def test_the_model_extractor_stores_the_facts_it_answers(
    client, admin, fakes, container, upstream
):
    upstream.enqueue(
        Reply(
            '```json\n[{"fact": "User\'s name is Ana", "kind": "name"}, '
            '{"fact": "User plays the cello", "kind": null}]\n```'
        )
    )
    record = await told(client, admin, fakes, "I'm Ana and the cello is my thing.")
    await settle(container)
    page = await listed(client, admin)
    assert {(m["content"], m["kind"]) for m in page["memories"]} == {
        ("User's name is Ana", "name"),
        ("User plays the cello", None),
    }
    assert all(m["aiRecordId"] == record["uuid"] for m in page["memories"])
    sent = upstream.requests[-1]
    assert sent["model"] == "fake-upstream-model" and sent["temperature"] == 0.0
    assert sent["messages"][0] == {"role": "system", "content": INSTRUCTIONS}
    assert "I'm Ana and the cello is my thing." in sent["messages"][1]["content"]
    assert "Nice to meet you." in sent["messages"][1]["content"]  # the reply, for context

    # a later answer of the same kind replaces the name
    upstream.enqueue(Reply('[{"fact": "User\'s name is Bea", "kind": "name"}]'))
    await told(client, admin, fakes, "Call me Bea from now on.")
    await settle(container)
    assert sorted(await contents(client, admin)) == ["User plays the cello", "User's name is Bea"]


@pytest.mark.parametrize(
    "answer",
    [
        "Sure! The user is called Ana and lives in Lisbon.",
        '{"name": "Ana", "city": "Lisbon"}',
        '[42, "Ana lives in Lisbon", {"fact": ""}]',
        "[not json at all]",
    ],
)
async def test_garbage_from_the_model_stores_nothing_and_is_not_retried(
    client, admin, fakes, container, upstream, answer
):
    upstream.enqueue(Reply(answer))
    await told(client, admin, fakes, "My name is Ana and I live in Lisbon.")
    await settle(container)
    assert (await listed(client, admin))["total"] == 0
    assert await job_states(container) == ["DONE"]


@pytest.mark.parametrize("fault", [Status(500), Disconnect()], ids=["http-500", "dropped"])
async def test_a_failing_extraction_does_not_touch_the_reply_and_is_retried(
    client, admin, fakes, container, upstream, fault
):
    upstream.enqueue(fault, Reply('["User lives in Lisbon"]'))
    record = await told(client, admin, fakes, "I live in Lisbon.")
    await container.runs.drain(10)  # the job is queued once the reply is stored
    for _ in range(100):  # the first attempt fails; the retry comes 2 s later
        [job] = await job_rows(container)
        if job["attempts"] == 1 and job["state"] == "QUEUED":
            break
        await asyncio.sleep(0.05)
    assert job["state"] == "QUEUED" and job["attempts"] == 1
    assert "ModelError" in job["last_error"] and "sk-extract" not in job["last_error"]
    assert (await listed(client, admin))["total"] == 0
    got = await client.get("/api/conversations?limit=1", headers=admin)
    assert got.status_code == 200  # the server is fine
    fakes["gpt-4o-mini"].enqueue(["Still here."])
    r = await client.post(CHAT, headers=admin, json=memory_chat("Hello again", memories=False))
    assert r.status_code == 200 and r.json()["aiRecord"]["status"] == "SUCCESS"

    await asyncio.sleep(2.0)
    await settle(container)
    assert await job_states(container) == ["DONE"]
    [memory] = (await listed(client, admin))["memories"]
    assert memory["content"] == "User lives in Lisbon" and memory["aiRecordId"] == record["uuid"]
    assert (await client.get(f"{MEMORIES}/{memory['uuid']}", headers=admin)).status_code == 200


async def job_rows(container) -> list[dict]:
    query = select(jobs).where(jobs.c.kind == REMEMBER_JOB).order_by(jobs.c.id)
    async with container.db.read() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings()]


async def job_states(container) -> list[str]:
    return [row["state"] for row in await job_rows(container)]


async def test_the_worker_stops_even_when_a_handler_swallows_its_cancellation(tmp_path):
    """A stop during an extraction: httpcore can turn the worker's cancellation into the
    model's error; stopping must not then wait forever."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}")
    await db.migrate()
    started = asyncio.Event()

    async def stubborn(job: Job) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            raise ModelError("the upstream connection was closed") from None

    worker = Worker(SqlJobQueue(db), {REMEMBER_JOB: stubborn})
    await SqlJobQueue(db).enqueue(REMEMBER_JOB, {}, org_id=None)
    worker.start()
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.wait_for(worker.stop(), 5)
    await db.dispose()


def test_live_server_remembers_in_one_conversation_and_recalls_in_another(
    tmp_path: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
):
    """Real uvicorn, a real HTTP client, and both the chat model and the extractor behind
    the fake upstream: what the upstream receives shows the memory in the system prompt."""
    monkeypatch.setenv("EXTRACTOR_KEY", "sk-extract")
    upstream_model = ModelConfig(
        provider="openai-compatible",
        base_url=upstream.url,
        api_key_env="EXTRACTOR_KEY",
        upstream_model="fake-upstream-model",
        timeout_seconds=5,
    )
    settings = make_settings(
        tmp_path,
        f"sqlite+aiosqlite:///{tmp_path / 'threadline.db'}",
        models={"gpt-4o-mini": upstream_model},
        memories=MemorySettings(extractor="model", model="gpt-4o-mini"),
        embeddings=EmbeddingConfig(provider="none"),
    )
    server = LiveServer(create_app(settings))
    base = server.start()
    try:
        headers = {"API-KEY": server.call(server.app.state.container.bootstrap()).secret}
        with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
            first, second = (
                http.post("/api/conversations", json={**CONVERSATION, "title": title}).json()[
                    "conversation"
                ]["uuid"]
                for title in ("Intro", "Travel")
            )
            upstream.enqueue(
                Reply("Nice to meet you, Ana!"),
                Reply('[{"fact": "User lives in Lisbon", "kind": "home"}]'),
            )
            told = http.post(CHAT, json=memory_chat("I live in Lisbon.", first))
            assert told.status_code == 200, told.text
            for _ in range(100):
                if http.get(MEMORIES).json()["total"]:
                    break
                time.sleep(0.05)
            [memory] = http.get(MEMORIES).json()["memories"]
            assert memory["content"] == "User lives in Lisbon"

            upstream.enqueue(Reply("In Lisbon."))
            body = memory_chat("Where do I live?", second)
            asked = http.post(CHAT + "?isStreaming=true", json=body)
            assert asked.status_code == 200 and "event: done" in asked.text
            system = upstream.requests[-1]["messages"][0]
            assert system["role"] == "system" and "- User lives in Lisbon" in system["content"]
            assert memory["uuid"] in asked.text  # the result event's memoryList
    finally:
        server.stop()
