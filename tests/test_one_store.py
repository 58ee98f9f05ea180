"""One store: a conversation is one object whichever dialect made it or talks to it.

The Conversation Service dialect (003_*) and the 1min.ai dialect (000_*/001_*) read and write
the same conversations, messages, titles and timestamps; a chat session's history is its
model's history in the conversation, whoever wrote it. And a client that hangs up on
`stream_chat` still gets its reply stored, once (a real uvicorn server, a real TCP hang-up).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests.helpers import Fakes
from tests.live_server import LiveServer
from threadline.container import create_app
from threadline.settings import Settings
from threadline.storage.tables import ai_records, messages

BASE = "/api/conversation"
MODEL = "gpt-4o-mini"


@pytest.fixture
async def org_id(client: httpx.AsyncClient, bearer: dict[str, str]) -> str:
    return str((await client.get("/api/me", headers=bearer)).json()["user"]["teamId"])


async def model_id(client: httpx.AsyncClient, headers: dict[str, str], name: str = MODEL) -> str:
    models = (await client.get("/api/models", headers=headers)).json()["models"]
    return next(m["id"] for m in models if m["name"] == name)


async def session_for(client, headers, org, conversation, name=MODEL) -> str:
    body = {"conversation_id": conversation, "model_id": await model_id(client, headers, name)}
    r = await client.post(f"{BASE}/create_session?org_id={org}", headers=headers, json=body)
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


async def stream_chat(client, headers, org, session, message) -> None:
    body = {"chat_session_id": session, "message": message}
    r = await client.post(f"{BASE}/stream_chat?org_id={org}", headers=headers, json=body)
    assert r.status_code == 200 and "event: end" in r.text, r.text


async def chat_with_ai(client, headers, conversation, prompt, model=MODEL) -> None:
    body = {"model": model, "promptObject": {"prompt": prompt, "conversationId": conversation}}
    r = await client.post("/api/chat-with-ai", headers=headers, json=body)
    assert r.status_code == 200, r.text


async def test_stream_chat_messages_show_in_the_1minai_conversation(
    client, bearer, admin, org_id, fakes
):
    made = await client.post(
        f"{BASE}/create?org_id={org_id}", headers=bearer, json={"title": "Made by sessions"}
    )
    conversation = made.json()["id"]
    session = await session_for(client, bearer, org_id, conversation)
    fakes[MODEL].enqueue(["From", " the session"])
    await stream_chat(client, bearer, org_id, session, "Hello from 003")

    got = (await client.get(f"/api/conversations/{conversation}", headers=admin)).json()
    c = got["conversation"]
    assert c["title"] == "Made by sessions"
    assert [(m["role"], m["content"], m["model"], m["status"]) for m in c["messages"]] == [
        ("user", "Hello from 003", MODEL, "SUCCESS"),
        ("assistant", "From the session", MODEL, "SUCCESS"),
    ]
    ours = (
        await client.get(
            f"{BASE}/messages?org_id={org_id}&conversation_id={conversation}", headers=bearer
        )
    ).json()["messages"]
    assert [m["id"] for m in ours] == [m["uuid"] for m in c["messages"]]
    listed = (await client.get("/api/conversations", headers=admin)).json()["conversations"]
    assert [x["uuid"] for x in listed] == [conversation]
    # timestamps are the same object's, after the reply moved updated_at
    mine = (await client.get(f"{BASE}/list?org_id={org_id}", headers=bearer)).json()[0]
    assert (mine["created_at"], mine["updated_at"]) == (c["createdAt"], c["updatedAt"])
    assert mine["updated_at"] > mine["created_at"]


async def test_1minai_messages_show_in_the_session_api_and_feed_its_history(
    client, bearer, admin, org_id, fakes
):
    r = await client.post(
        "/api/conversations",
        headers=admin,
        json={"title": "Made by 1min.ai", "type": "UNIFY_CHAT_WITH_AI", "model": MODEL},
    )
    conversation = r.json()["conversation"]["uuid"]
    fakes[MODEL].enqueue(["Paris."])
    await chat_with_ai(client, admin, conversation, "Capital of France?")
    fakes["other-model"].enqueue(["Other model speaking."])
    await chat_with_ai(client, admin, conversation, "Anyone else?", model="other-model")

    page = (
        await client.get(
            f"{BASE}/messages?org_id={org_id}&conversation_id={conversation}", headers=bearer
        )
    ).json()
    assert [(m["role"], m["content"], m["model_name"]) for m in page["messages"]] == [
        ("user", "Capital of France?", MODEL),
        ("assistant", "Paris.", MODEL),
        ("user", "Anyone else?", "other-model"),
        ("assistant", "Other model speaking.", "other-model"),
    ]
    assert {m["chat_session_id"] for m in page["messages"]} == {None}
    got = (
        await client.get(
            f"{BASE}/get_with_sessions?org_id={org_id}&conversation_id={conversation}",
            headers=bearer,
        )
    ).json()
    assert got["title"] == "Made by 1min.ai" and got["chat_sessions"] == []

    # a session on that conversation continues its model's thread, not the other model's
    session = await session_for(client, bearer, org_id, conversation)
    fakes[MODEL].enqueue(["About 2.1 million."])
    await stream_chat(client, bearer, org_id, session, "Its population?")
    sent = [(m.role, m.content) for m in fakes[MODEL].requests[-1].messages]
    assert sent == [
        ("user", "Capital of France?"),
        ("assistant", "Paris."),
        ("user", "Its population?"),
    ]
    # and 1min.ai's history for the model includes what the session said
    fakes[MODEL].enqueue(["ok"])
    await chat_with_ai(client, admin, conversation, "Thanks")
    contents = [m.content for m in fakes[MODEL].requests[-1].messages]
    assert contents[-3:] == ["Its population?", "About 2.1 million.", "Thanks"]


async def test_deleting_through_1minai_removes_the_sessions_too(
    client, bearer, admin, org_id, fakes
):
    made = await client.post(f"{BASE}/create?org_id={org_id}", headers=bearer, json={"title": "x"})
    conversation = made.json()["id"]
    session = await session_for(client, bearer, org_id, conversation)
    await stream_chat(client, bearer, org_id, session, "hello")
    assert (await client.delete(f"/api/conversations/{conversation}", headers=admin)).json()[
        "success"
    ]
    query = f"org_id={org_id}&conversation_id={conversation}"
    assert (
        await client.get(f"{BASE}/get_with_sessions?{query}", headers=bearer)
    ).status_code == 404
    r = await client.post(
        f"{BASE}/stream_chat?org_id={org_id}",
        headers=bearer,
        json={"chat_session_id": session, "message": "still there?"},
    )
    assert r.status_code == 404


async def test_members_see_only_their_own_conversations_in_both_dialects(
    client, bearer, admin, org_id
):
    made = await client.post(
        f"{BASE}/create?org_id={org_id}", headers=bearer, json={"title": "admin's"}
    )
    conversation = made.json()["id"]
    user = (await client.post("/api/admin/users", headers=admin, json={"name": "m"})).json()
    key = (
        await client.post("/api/admin/keys", headers=admin, json={"userId": user["user"]["userId"]})
    ).json()["apiKey"]["key"]
    member = {"Authorization": f"Bearer {key}"}
    assert (await client.get(f"{BASE}/list?org_id={org_id}", headers=member)).json() == []
    query = f"org_id={org_id}&conversation_id={conversation}"
    assert (await client.get(f"{BASE}/messages?{query}", headers=member)).status_code == 404
    assert (await client.get(f"/api/conversations/{conversation}", headers=member)).status_code == (
        404
    )


# ---- a client that hangs up mid-stream, against a real server ----


@pytest.fixture
def live(settings: Settings, fakes: Fakes) -> Iterator[tuple[str, dict[str, str], Any]]:
    app = create_app(settings, model_factory=fakes.factory)
    server = LiveServer(app)
    base_url = server.start()
    try:
        container = app.state.container
        key = server.call(container.bootstrap()).secret
        yield base_url, {"Authorization": f"Bearer {key}"}, (server, container)
    finally:
        server.stop()


def count_rows(server: LiveServer, container: Any, table: Any) -> int:
    async def count() -> int:
        async with container.db.read() as conn:
            return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())

    return server.call(count())


async def test_hanging_up_on_stream_chat_still_stores_the_reply_once(live, fakes):
    base_url, headers, (server, container) = live
    words = ["Vector", " databases", " index", " embeddings", " for", " search."]
    fakes[MODEL].delay = 0.25
    fakes[MODEL].enqueue(words)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client:
        org = (await client.get("/api/me")).json()["user"]["teamId"]
        made = await client.post(f"{BASE}/create?org_id={org}", json={"title": "hang-up"})
        conversation = made.json()["id"]
        session = await session_for(client, headers, org, conversation)
        body = {"chat_session_id": session, "message": "How do vector databases work?"}
        seen: list[str] = []
        async with client.stream("POST", f"{BASE}/stream_chat?org_id={org}", json=body) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: ") and "content" in line:
                    seen.append(json.loads(line[6:])["content"])
                    break  # hang up after the first chunk
        assert seen == ["Vector"]
        url = f"{BASE}/messages?org_id={org}&conversation_id={conversation}"
        at_hang_up = (await client.get(url)).json()["messages"]
        assert [(m["role"], m["status"]) for m in at_hang_up] == [("user", "pending")]

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            stored = (await client.get(url)).json()["messages"]
            if len(stored) == 2:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # nothing more arrives
        stored = (await client.get(url)).json()["messages"]
    assert [(m["role"], m["content"], m["status"]) for m in stored] == [
        ("user", "How do vector databases work?", "completed"),
        ("assistant", "".join(words), "completed"),
    ]
    assert count_rows(server, container, ai_records) == 1
    assert count_rows(server, container, messages) == 2
