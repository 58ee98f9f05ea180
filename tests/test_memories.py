"""Memories: `settings.withMemories` of the Chat with AI API (001_*) and `/api/memories`
(Threadline's design, README "Memories"), through the HTTP API on SQLite and PostgreSQL.

Facts are extracted by the `remember` job after the reply is stored (rules by default; a
model through the real fake OpenAI-compatible upstream in `test_memory_extractors.py`), and
recalled into the system prompt of later replies in any of the user's conversations.
"""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import httpx
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import delete, inspect

from tests.helpers import (
    CHAT,
    MEMORIES,
    contents,
    count,
    listed,
    make_settings,
    memory_chat,
    settle,
)
from threadline.container import create_app
from threadline.domain.errors import ModelError
from threadline.services.memories import INSTRUCTIONS, REMEMBER_JOB
from threadline.settings import DocumentSettings, EmbeddingConfig, MemorySettings, Settings
from threadline.storage.database import MIGRATIONS_DIR
from threadline.storage.tables import jobs, memories, metadata, users

UNKNOWN_ID = "c5c5e1d4-76a9-46a6-bf6b-1ba843b838db"


@pytest.fixture
def embedding_provider(request: pytest.FixtureRequest) -> str:
    """`none` unless a test asks for the real local embedder (indirect parametrisation)."""
    return getattr(request, "param", "none")


@pytest.fixture
def memory_settings(request: pytest.FixtureRequest) -> MemorySettings:
    return getattr(request, "param", MemorySettings())


@pytest.fixture
def settings(tmp_path, db_url, embedding_provider, memory_settings) -> Settings:
    return make_settings(
        tmp_path,
        db_url,
        embeddings=EmbeddingConfig(provider=embedding_provider),
        memories=memory_settings,
    )


async def conversation(client, headers, title: str) -> str:
    body = {"title": title, "type": "UNIFY_CHAT_WITH_AI", "model": "gpt-4o-mini"}
    r = await client.post("/api/conversations", headers=headers, json=body)
    assert r.status_code == 200, r.text
    return r.json()["conversation"]["uuid"]


async def ask(client, headers, fakes, body: dict) -> tuple[str | None, dict]:
    """Send a chat; the system prompt the model received (None: none) and the aiRecord."""
    fakes["gpt-4o-mini"].enqueue(["Noted."])
    r = await client.post(CHAT, headers=headers, json=body)
    assert r.status_code == 200, r.text
    sent = fakes["gpt-4o-mini"].requests[-1].messages
    assert sent[-1].content == body["promptObject"]["prompt"]
    return (sent[0].content if sent[0].role == "system" else None), r.json()["aiRecord"]


def in_process(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://threadline")


async def add(client, headers, content: str) -> dict:
    r = await client.post(MEMORIES, headers=headers, json={"content": content})
    assert r.status_code == 200, r.text
    return r.json()["memory"]


async def new_member(client, admin, name="mia") -> dict[str, str]:
    user = (await client.post("/api/admin/users", headers=admin, json={"name": name})).json()
    key = await client.post(
        "/api/admin/keys", headers=admin, json={"userId": user["user"]["userId"]}
    )
    return {"API-KEY": key.json()["apiKey"]["key"], "Content-Type": "application/json"}


async def other_org(client, admin) -> dict[str, str]:
    created = await client.post("/api/admin/orgs", headers=admin, json={"name": "globex"})
    return {"API-KEY": created.json()["apiKey"]["key"], "Content-Type": "application/json"}


# ---- remembering in one conversation, recalling in another --------------------------


@pytest.mark.parametrize("embedding_provider", ["local", "none"], indirect=True)
async def test_a_fact_told_in_one_conversation_is_used_in_another(client, admin, fakes, container):
    first = await conversation(client, admin, "Intro")
    _, told = await ask(
        client, admin, fakes, memory_chat("Hi, my name is ana and I live in Lisbon.", first)
    )
    assert told["aiRecordDetail"]["promptObject"]["memoryList"] == []  # nothing known yet
    await settle(container)
    page = await listed(client, admin)
    assert page["total"] == 2
    assert {m["content"] for m in page["memories"]} == {
        "User's name is Ana",
        "User lives in Lisbon",
    }
    me = (await client.get("/api/me", headers=admin)).json()["user"]
    for memory in page["memories"]:
        assert memory["source"] == "CHAT" and memory["aiRecordId"] == told["uuid"]
        assert memory["userId"] == me["userId"] and memory["teamId"] == me["teamId"]
    home = next(m for m in page["memories"] if m["kind"] == "home")

    second = await conversation(client, admin, "Travel")
    system, record = await ask(client, admin, fakes, memory_chat("Where do I live?", second))
    assert system is not None and system.startswith(INSTRUCTIONS)
    assert "- User lives in Lisbon" in system and "- User's name is Ana" in system
    used = record["aiRecordDetail"]["promptObject"]["memoryList"]
    assert {"uuid": home["uuid"], "content": "User lives in Lisbon"} in used
    assert len(used) == 2
    # streamed: the result event's aiRecord lists them too
    fakes["gpt-4o-mini"].enqueue(["Lisbon."])
    r = await client.post(
        CHAT + "?isStreaming=true", headers=admin, json=memory_chat("And my name?")
    )
    assert r.status_code == 200 and "event: done" in r.text
    result = next(line for line in r.text.splitlines() if '"aiRecord"' in line)
    assert home["uuid"] in result and "memoryList" in result


async def test_without_with_memories_nothing_is_remembered_or_recalled(
    client, admin, fakes, container
):
    system, record = await ask(client, admin, fakes, memory_chat("My name is Ana.", memories=False))
    assert system is None and "memoryList" not in record["aiRecordDetail"]["promptObject"]
    await settle(container)
    assert (await listed(client, admin))["total"] == 0
    assert await count(container, jobs, jobs.c.kind == REMEMBER_JOB) == 0

    await add(client, admin, "User's name is Bea")
    system, record = await ask(
        client, admin, fakes, memory_chat("What is my name?", memories=False)
    )
    assert system is None and "memoryList" not in record["aiRecordDetail"]["promptObject"]
    system, record = await ask(client, admin, fakes, memory_chat("What is my name?"))
    assert system is not None and "User's name is Bea" in system


async def test_questions_and_a_failed_reply_remember_nothing(client, admin, fakes, container):
    await ask(client, admin, fakes, memory_chat("What is my name? Do I like jazz?"))
    fakes["gpt-4o-mini"].enqueue([ModelError("upstream down")])
    r = await client.post(CHAT, headers=admin, json=memory_chat("My name is Ana."))
    assert r.status_code == 502
    await settle(container)
    assert (await listed(client, admin))["total"] == 0
    # one job, for the reply that succeeded (it found no fact); none for the failed reply
    assert await count(container, jobs, jobs.c.kind == REMEMBER_JOB) == 1


# ---- the /api/memories endpoints ----------------------------------------------------


async def test_add_get_list_and_delete(client, admin, container):
    memory = await add(client, admin, "  Prefers   answers in  Portuguese ")
    assert memory["content"] == "Prefers answers in Portuguese"
    assert memory["source"] == "MANUAL" and memory["aiRecordId"] is None
    assert memory["kind"] is None and memory["createdAt"] == memory["updatedAt"]
    mid = memory["uuid"]
    r = await client.get(f"{MEMORIES}/{mid}", headers=admin)
    assert r.status_code == 200 and r.json() == {"memory": memory}
    assert await listed(client, admin) == {
        "memories": [memory],
        "total": 1,
        "limit": 20,
        "offset": 0,
    }
    r = await client.delete(f"{MEMORIES}/{mid}", headers=admin)
    assert r.status_code == 200 and r.json() == {"success": True, "uuid": mid}
    assert (await client.get(f"{MEMORIES}/{mid}", headers=admin)).status_code == 404
    assert (await client.delete(f"{MEMORIES}/{mid}", headers=admin)).status_code == 404
    assert (await listed(client, admin))["total"] == 0

    for i in range(3):
        await add(client, admin, f"User owns {i + 1} bicycles")
    r = await client.delete(MEMORIES, headers=admin)
    assert r.status_code == 200 and r.json() == {"success": True, "deleted": 3}
    assert (await listed(client, admin))["total"] == 0
    assert (await client.delete(MEMORIES, headers=admin)).json()["deleted"] == 0
    assert await count(container, memories) == 0


async def test_list_is_paginated_newest_first(client, admin):
    for i in range(5):
        await add(client, admin, f"User owns {i} cats")
    page = await listed(client, admin, "?limit=2&offset=1")
    assert page["total"] == 5 and page["limit"] == 2 and page["offset"] == 1
    assert [m["content"] for m in page["memories"]] == ["User owns 3 cats", "User owns 2 cats"]
    last = await listed(client, admin, "?limit=2&offset=4")
    assert [m["content"] for m in last["memories"]] == ["User owns 0 cats"]
    past = await listed(client, admin, "?offset=50")
    assert past["memories"] == [] and past["total"] == 5
    for bad in ("limit=0", "offset=-1", "limit=many"):
        r = await client.get(f"{MEMORIES}?{bad}", headers=admin)
        assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_REQUEST", bad
    assert (await listed(client, admin, "?limit=100000"))["limit"] == 100
    # a memory that is updated becomes the newest
    await add(client, admin, "user owns 0 cats!")
    newest = (await listed(client, admin, "?limit=1"))["memories"][0]
    assert newest["content"] == "user owns 0 cats!"


async def test_bad_bodies_and_ids_are_errors_that_store_nothing(client, admin, container):
    for body, field in [
        ({}, "content"),
        ({"content": ""}, "content"),
        ({"content": "   "}, "content"),
        ({"content": "x" * 301}, "content"),
        ({"content": 7}, "content"),
        ({"content": "fine", "kind": "name"}, "kind"),
    ]:
        r = await client.post(MEMORIES, headers=admin, json=body)
        assert r.status_code == 400, (body, r.text)
        error = r.json()["error"]
        assert error["code"] == "INVALID_REQUEST"
        assert [d["field"] for d in error["details"]] == [field], (body, error)
    assert (await add(client, admin, "x" * 300))["content"] == "x" * 300  # the limit is inclusive
    assert await count(container, memories) == 1
    for mid in (UNKNOWN_ID, "not-a-uuid"):
        for method in ("GET", "DELETE"):
            r = await client.request(method, f"{MEMORIES}/{mid}", headers=admin)
            assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
    assert (await client.get(MEMORIES)).status_code == 401


# ---- isolation ----------------------------------------------------------------------


async def test_memories_never_cross_users_or_orgs(client, admin, fakes, container):
    await ask(client, admin, fakes, memory_chat("My name is Ana and I live in Lisbon."))
    await settle(container)
    mine = (await listed(client, admin))["memories"]
    assert len(mine) == 2
    member = await new_member(client, admin)
    stranger = await other_org(client, admin)
    for other in (member, stranger):
        assert await listed(client, other) == {
            "memories": [],
            "total": 0,
            "limit": 20,
            "offset": 0,
        }
        for memory in mine:
            path = f"{MEMORIES}/{memory['uuid']}"
            assert (await client.get(path, headers=other)).status_code == 404
            assert (await client.delete(path, headers=other)).status_code == 404
        assert (await client.delete(MEMORIES, headers=other)).json()["deleted"] == 0
        system, record = await ask(client, other, fakes, memory_chat("Where do I live? Lisbon?"))
        assert system is None  # nothing of Ana's reaches another user's model
        assert record["aiRecordDetail"]["promptObject"]["memoryList"] == []
    # the member's own memories are theirs alone, the admin's untouched
    await ask(client, member, fakes, memory_chat("I live in Porto."))
    await settle(container)
    assert await contents(client, member) == ["User lives in Porto"]
    assert sorted(await contents(client, admin)) == ["User lives in Lisbon", "User's name is Ana"]
    system, _ = await ask(client, admin, fakes, memory_chat("Where do I live?"))
    assert system is not None and "Porto" not in system and "Lisbon" in system


async def test_deleting_a_user_deletes_their_memories(client, admin, container):
    member = await new_member(client, admin)
    await add(client, member, "User plays the cello")
    await add(client, admin, "User plays the oboe")
    me = (await client.get("/api/me", headers=member)).json()["user"]
    async with container.db.write() as conn:
        await conn.execute(delete(users).where(users.c.id == UUID(me["userId"])))
    assert await count(container, memories) == 1
    assert await contents(client, admin) == ["User plays the oboe"]


async def test_a_remember_job_survives_a_crash(tmp_path, db_url, fakes):
    """The reply is stored and its job queued; the worker that claims it dies. After a
    restart the job runs and the fact is remembered."""
    overrides: dict[str, Any] = {"embeddings": EmbeddingConfig(provider="none")}
    no_worker = make_settings(
        tmp_path, db_url, documents=DocumentSettings(embedded_worker=False), **overrides
    )
    first = create_app(no_worker, model_factory=fakes.factory)
    async with first.router.lifespan_context(first):
        container = first.state.container
        issued = await container.bootstrap()
        headers = {"API-KEY": issued.secret, "Content-Type": "application/json"}
        async with in_process(first) as client:
            await ask(client, headers, fakes, memory_chat("My name is Ana."))
        await container.runs.drain(10)
        job = await container.job_queue.claim("doomed-worker", lease_seconds=0.2)
        assert job is not None and job.kind == REMEMBER_JOB
    await asyncio.sleep(0.3)

    second = create_app(make_settings(tmp_path, db_url, **overrides), model_factory=fakes.factory)
    async with second.router.lifespan_context(second):
        await settle(second.state.container)
        async with in_process(second) as client:
            assert await contents(client, headers) == ["User's name is Ana"]


# ---- one memory per fact ------------------------------------------------------------


async def test_a_newer_fact_of_a_kind_replaces_the_older_and_repeats_update(
    client, admin, fakes, container
):
    await ask(client, admin, fakes, memory_chat("My name is Ana. I'm allergic to peanuts."))
    await settle(container)
    before = {m["kind"]: m for m in (await listed(client, admin))["memories"]}
    await ask(
        client, admin, fakes, memory_chat("Actually, my name is Bea! I'm allergic to peanuts.")
    )
    await settle(container)
    after = {m["kind"]: m for m in (await listed(client, admin))["memories"]}
    assert len(after) == 2
    assert after["name"]["content"] == "User's name is Bea"
    assert after["name"]["uuid"] == before["name"]["uuid"]  # replaced, not added
    assert after["name"]["updatedAt"] > after["name"]["createdAt"]
    assert after[None]["uuid"] == before[None]["uuid"]
    # the same fact in other words (case, punctuation), by hand: still one memory
    manual = await add(client, admin, "user is ALLERGIC to peanuts.")
    assert manual["uuid"] == before[None]["uuid"] and manual["source"] == "MANUAL"
    assert (await listed(client, admin))["total"] == 2
    # opposite opinions of one thing: the newer wins
    await ask(client, admin, fakes, memory_chat("I love cilantro."))
    await ask(client, admin, fakes, memory_chat("Hmm, I don't like cilantro"))
    await settle(container)
    assert "User dislikes cilantro" in await contents(client, admin)
    assert "User loves cilantro" not in await contents(client, admin)


@pytest.mark.parametrize(
    ("embedding_provider", "kept"), [("local", 2), ("none", 3)], indirect=["embedding_provider"]
)
async def test_near_duplicates_update_with_embeddings(client, admin, kept):
    first = await add(client, admin, "User likes hiking in the mountains")
    second = await add(client, admin, "User likes hiking in mountains")
    other = await add(client, admin, "User is allergic to shellfish")
    assert other["uuid"] != first["uuid"]
    assert (await listed(client, admin))["total"] == kept
    assert (second["uuid"] == first["uuid"]) is (kept == 2)


@pytest.mark.parametrize("memory_settings", [MemorySettings(max_per_user=3)], indirect=True)
async def test_past_max_per_user_the_least_recently_updated_go(client, admin):
    for fact in ("User owns a boat", "User owns a van", "User owns a kayak"):
        await add(client, admin, fact)
    await add(client, admin, "user owns a boat")  # updated: now the newest
    await add(client, admin, "User owns a tent")
    assert await contents(client, admin) == [
        "User owns a tent",
        "user owns a boat",
        "User owns a kayak",
    ]


# ---- which memories are recalled ----------------------------------------------------


RECALL_FACTS = [
    "User's name is Ana",
    "User likes jazz music",
    "User lives in Lisbon",
    "User is allergic to peanuts",
]


@pytest.mark.parametrize("memory_settings", [MemorySettings(top_k=2)], indirect=True)
@pytest.mark.parametrize(
    ("embedding_provider", "prompt", "expected"),
    [
        ("none", "Any jazz concerts in Lisbon this week?", {"jazz", "Lisbon"}),
        ("local", "Suggest some music I would enjoy", {"jazz"}),
        ("local", "Which snacks are safe for me to eat?", {"peanuts"}),
    ],
    indirect=["embedding_provider"],
)
async def test_the_top_k_most_related_memories_are_given(client, admin, fakes, prompt, expected):
    for fact in RECALL_FACTS:
        await add(client, admin, fact)
    system, record = await ask(client, admin, fakes, memory_chat(prompt))
    used = [m["content"] for m in record["aiRecordDetail"]["promptObject"]["memoryList"]]
    assert len(used) == 2
    assert all(any(word in content for content in used) for word in expected), used
    assert system is not None
    assert [line[2:] for line in system.splitlines()[1:]] == used  # best first, as recorded


@pytest.mark.parametrize("memory_settings", [MemorySettings(top_k=50)], indirect=True)
async def test_memories_are_cut_to_fit_the_context_window(client, admin, fakes):
    # the fake models have a 2,048-token window and keep 512 for the reply: a quarter of
    # what is left is about 1,500 characters, room for a few of fifty 280-character facts
    for i in range(50):
        await add(client, admin, f"User note {i:02d} " + "lorem ipsum " * 22)
    system, record = await ask(client, admin, fakes, memory_chat("Tell me about my notes"))
    used = record["aiRecordDetail"]["promptObject"]["memoryList"]
    assert 1 <= len(used) < 10
    assert system is not None and len(system) <= 1600
    assert system.count("\n- User note") == len(used)


async def test_memories_come_after_the_brand_voice(client, admin, fakes):
    voice = await client.post(
        "/api/brand-voices", headers=admin, json={"name": "Terse", "instructions": "Be terse."}
    )
    await add(client, admin, "User's name is Ana")
    body = {**memory_chat("Hello"), "brandVoiceId": voice.json()["brandVoice"]["uuid"]}
    system, _ = await ask(client, admin, fakes, body)
    assert system is not None
    assert system.index("Be terse.") < system.index(INSTRUCTIONS) < system.index("User's name")


# ---- storage ------------------------------------------------------------------------


async def test_the_migration_matches_the_table_and_downgrades(container):
    def check(connection) -> tuple[set[str], set[str]]:
        only_ours = {"include_name": lambda name, kind, _: kind != "table" or name == "memories"}
        context = MigrationContext.configure(connection, opts=only_ours)
        assert [d for d in compare_metadata(context, metadata) if "memories" in repr(d)] == []
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = connection
        command.downgrade(config, "0004")
        down = set(inspect(connection).get_table_names())
        command.upgrade(config, "head")
        return down, set(inspect(connection).get_table_names())

    async with container.db.engine.begin() as conn:
        down, up = await conn.run_sync(check)
    assert "memories" not in down and "brand_voices" in down
    assert "memories" in up


# ---- settings -----------------------------------------------------------------------


def test_the_model_extractor_needs_a_configured_model(tmp_path):
    with pytest.raises(ValueError, match='extractor = "model" needs model'):
        MemorySettings(extractor="model")
    url = f"sqlite+aiosqlite:///{tmp_path / 't.db'}"
    with pytest.raises(ValueError, match="'gpt-5' is not among the configured models"):
        make_settings(tmp_path, url, memories=MemorySettings(extractor="model", model="gpt-5"))
    for bad in ({"top_k": 0}, {"max_per_user": 0}, {"extractor": "magic"}, {"ttl": 5}):
        with pytest.raises(ValueError):
            MemorySettings.model_validate(bad)
