"""Editing a memory: `PATCH /api/memories/{id}` (README "1min.ai: Memories"), on SQLite and
PostgreSQL. The edit keeps the memory's id, kind, source and creation time, validates like an
add, re-embeds the text when memories are embedded, and reaches only the caller's own."""

from __future__ import annotations

from uuid import UUID

import numpy as np
import pytest
from sqlalchemy import select

from tests.helpers import CHAT, MEMORIES, count, listed, make_settings, memory_chat, settle
from threadline.settings import EmbeddingConfig, Settings
from threadline.storage.tables import memories

UNKNOWN_ID = "c5c5e1d4-76a9-46a6-bf6b-1ba843b838db"


@pytest.fixture
def embedding_provider(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "none")


@pytest.fixture
def settings(tmp_path, db_url, embedding_provider) -> Settings:
    return make_settings(tmp_path, db_url, embeddings=EmbeddingConfig(provider=embedding_provider))


async def add(client, headers, content: str) -> dict:
    r = await client.post(MEMORIES, headers=headers, json={"content": content})
    assert r.status_code == 200, r.text
    return r.json()["memory"]


async def edit(client, headers, memory_id: str, body: object):
    return await client.patch(f"{MEMORIES}/{memory_id}", headers=headers, json=body)


async def stored_vector(container, memory_id: str) -> tuple[str | None, bytes | None]:
    query = select(memories.c.embedder, memories.c.embedding).where(
        memories.c.id == UUID(memory_id)
    )
    async with container.db.read() as conn:
        row = (await conn.execute(query)).one()
    return row.embedder, row.embedding


async def test_an_edit_keeps_the_memory_and_changes_its_text(client, admin, fakes, container):
    fakes["gpt-4o-mini"].enqueue(["Noted."])
    r = await client.post(CHAT, headers=admin, json=memory_chat("My name is Ana."))
    assert r.status_code == 200, r.text
    await settle(container)
    [told] = (await listed(client, admin))["memories"]
    assert told["kind"] == "name" and told["source"] == "CHAT"
    other = await add(client, admin, "User plays the oboe")

    r = await edit(client, admin, told["uuid"], {"content": "  User's   name is Ana Lima "})
    assert r.status_code == 200, r.text
    edited = r.json()["memory"]
    assert edited["content"] == "User's name is Ana Lima"
    for same in ("uuid", "kind", "source", "aiRecordId", "createdAt", "userId", "teamId"):
        assert edited[same] == told[same], same
    assert edited["updatedAt"] > told["updatedAt"]
    got = await client.get(f"{MEMORIES}/{told['uuid']}", headers=admin)
    assert got.json() == {"memory": edited}  # answered as GET answers it
    page = await listed(client, admin)
    assert page["total"] == 2 and page["memories"] == [edited, other]  # now the newest
    # an edit to the text of another memory is not merged into it: both stay
    r = await edit(client, admin, other["uuid"], {"content": "User's name is Ana Lima"})
    assert r.status_code == 200 and r.json()["memory"]["uuid"] == other["uuid"]
    assert (await listed(client, admin))["total"] == 2


async def test_bad_edits_are_errors_that_change_nothing(client, admin, container):
    memory = await add(client, admin, "User grows pears")
    for body, field in [
        ({}, "content"),
        ({"content": ""}, "content"),
        ({"content": "   "}, "content"),
        ({"content": "x" * 301}, "content"),
        ({"content": 7}, "content"),
        ({"content": "fine", "kind": "name"}, "kind"),
    ]:
        r = await edit(client, admin, memory["uuid"], body)
        assert r.status_code == 400, (body, r.text)
        error = r.json()["error"]
        assert error["code"] == "INVALID_REQUEST"
        assert [d["field"] for d in error["details"]] == [field], (body, error)
    assert (await listed(client, admin))["memories"] == [memory]
    r = await edit(client, admin, memory["uuid"], {"content": "y" * 300})  # inclusive limit
    assert r.status_code == 200 and r.json()["memory"]["content"] == "y" * 300
    for mid in (UNKNOWN_ID, "not-a-uuid"):
        r = await edit(client, admin, mid, {"content": "User grows figs"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
    assert (
        await client.patch(f"{MEMORIES}/{memory['uuid']}", json={"content": "x"})
    ).status_code == 401
    assert await count(container, memories) == 1


async def test_another_users_or_orgs_memory_is_404_and_unchanged(client, admin):
    memory = await add(client, admin, "User lives in Lisbon")
    user = (await client.post("/api/admin/users", headers=admin, json={"name": "mia"})).json()
    key = await client.post(
        "/api/admin/keys", headers=admin, json={"userId": user["user"]["userId"]}
    )
    member = {"API-KEY": key.json()["apiKey"]["key"]}
    org = await client.post("/api/admin/orgs", headers=admin, json={"name": "globex"})
    stranger = {"API-KEY": org.json()["apiKey"]["key"]}
    for other in (member, stranger):  # even the admin's own team member
        r = await edit(client, other, memory["uuid"], {"content": "User lives in Porto"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
        assert (await listed(client, other))["total"] == 0
    assert (await listed(client, admin))["memories"] == [memory]


@pytest.mark.parametrize("embedding_provider", ["local"], indirect=True)
async def test_an_edit_is_embedded_again(client, admin, container):
    memory = await add(client, admin, "User likes hiking in the mountains")
    name, before = await stored_vector(container, memory["uuid"])
    assert name is not None and before is not None
    r = await edit(client, admin, memory["uuid"], {"content": "User is allergic to shellfish"})
    assert r.status_code == 200, r.text
    after_name, after = await stored_vector(container, memory["uuid"])
    assert after_name == name and after is not None and after != before
    [expected] = await container.embedder.embed(["User is allergic to shellfish"], "passage")
    got = np.frombuffer(after, dtype="<f4")
    assert np.allclose(got, np.asarray(expected, dtype=np.float32), atol=1e-5)
