"""The 1min.ai Conversation API (000_*) and its list/get/delete companions."""

from __future__ import annotations

from sqlalchemy import func, select

from threadline.storage.tables import conversations

CONV = "/api/conversations"


async def count_conversations(container) -> int:
    async with container.db.read() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(conversations))).scalar_one()
        )


async def test_basic_conversation_example(client, admin):
    r = await client.post(
        CONV,
        headers=admin,
        json={"title": "My AI Conversation", "type": "CHAT_WITH_AI", "model": "gpt-4o-mini"},
    )
    assert r.status_code == 200
    c = r.json()["conversation"]
    assert c["title"] == "My AI Conversation"
    assert c["status"] == "ACTIVE"
    assert c["metadata"] == {"fileToken": 0, "fileCharacter": 0}
    assert c["conversationFile"] == []
    assert c["createdAt"].endswith("Z")
    assert len(c["uuid"]) == 36


async def test_pdf_conversation_example_refuses_unknown_file_ids(client, admin, container):
    r = await client.post(
        CONV,
        headers=admin,
        json={
            "title": "Document Analysis Chat",
            "type": "CHAT_WITH_PDF",
            "model": "gpt-4o-mini",
            "fileList": [
                "20ad0277-74df-4629-8c50-56a2549acbd7",
                "73560309-5804-4092-99d7-0a262fba92f5",
            ],
        },
    )
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "UNPROCESSABLE_ENTITY"
    assert "20ad0277-74df-4629-8c50-56a2549acbd7" in r.json()["error"]["message"]
    assert await count_conversations(container) == 0


async def test_pdf_conversation_needs_file_list(client, admin):
    r = await client.post(
        CONV, headers=admin, json={"title": "Docs", "type": "CHAT_WITH_PDF", "model": "gpt-4o-mini"}
    )
    assert r.status_code == 400
    assert "fileList" in r.json()["error"]["message"]


async def test_title_of_91_is_fine_and_92_is_refused_leaving_nothing(client, admin, container):
    ok = await client.post(
        CONV,
        headers=admin,
        json={"title": "t" * 91, "type": "UNIFY_CHAT_WITH_AI", "model": "gpt-4o-mini"},
    )
    assert ok.status_code == 200
    r = await client.post(
        CONV,
        headers=admin,
        json={"title": "t" * 92, "type": "CHAT_WITH_AI", "model": "gpt-4o-mini"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "INVALID_REQUEST"
    assert r.json()["error"]["details"][0]["field"] == "title"
    assert await count_conversations(container) == 1


async def test_missing_fields_and_wrong_types(client, admin, container):
    for payload in (
        {"type": "CHAT_WITH_AI", "model": "gpt-4o-mini"},
        {"title": "x", "model": "gpt-4o-mini"},
        {"title": "x", "type": "CHAT_WITH_AI"},
        {"title": 5, "type": "CHAT_WITH_AI", "model": "gpt-4o-mini"},
        {"title": "x", "type": "NOT_A_TYPE", "model": "gpt-4o-mini"},
    ):
        r = await client.post(CONV, headers=admin, json=payload)
        assert r.status_code == 400, payload
        assert r.json()["success"] is False
    assert await count_conversations(container) == 0


async def test_unsupported_model_is_422(client, admin, container):
    r = await client.post(
        CONV, headers=admin, json={"title": "x", "type": "CHAT_WITH_AI", "model": "nope"}
    )
    assert r.status_code == 422
    assert "gpt-4o-mini" in r.json()["error"]["message"]
    assert await count_conversations(container) == 0


async def test_list_is_paginated_newest_first(client, admin):
    for i in range(5):
        await client.post(
            CONV, headers=admin, json={"title": f"c{i}", "type": "CHAT_WITH_AI", "model": "fake"}
        )
    page = (await client.get(CONV + "?limit=2&offset=1", headers=admin)).json()
    assert page["total"] == 5 and page["limit"] == 2 and page["offset"] == 1
    assert [c["title"] for c in page["conversations"]] == ["c3", "c2"]
    past = (await client.get(CONV + "?offset=50", headers=admin)).json()
    assert past["conversations"] == []
    assert (await client.get(CONV + "?limit=0", headers=admin)).status_code == 400
    assert (await client.get(CONV + "?limit=100000", headers=admin)).json()["limit"] == 100


async def test_get_and_delete(client, admin, fakes):
    cid = (
        await client.post(
            CONV, headers=admin, json={"title": "x", "type": "CHAT_WITH_AI", "model": "fake"}
        )
    ).json()["conversation"]["uuid"]
    fakes["fake"].enqueue(["pong"])
    await client.post(
        "/api/chat-with-ai",
        headers=admin,
        json={"model": "fake", "promptObject": {"prompt": "ping", "conversationId": cid}},
    )
    got = (await client.get(f"{CONV}/{cid}", headers=admin)).json()["conversation"]
    assert [(m["role"], m["content"], m["status"]) for m in got["messages"]] == [
        ("user", "ping", "SUCCESS"),
        ("assistant", "pong", "SUCCESS"),
    ]
    assert got["messageCount"] == 2
    r = await client.delete(f"{CONV}/{cid}", headers=admin)
    assert r.status_code == 200 and r.json()["success"] is True
    assert (await client.get(f"{CONV}/{cid}", headers=admin)).status_code == 404
    assert (await client.delete(f"{CONV}/{cid}", headers=admin)).status_code == 404


async def test_unknown_and_malformed_ids_are_404(client, admin):
    for cid in ("c5c5e1d4-76a9-46a6-bf6b-1ba843b838db", "not-a-uuid"):
        r = await client.get(f"{CONV}/{cid}", headers=admin)
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "NOT_FOUND"
    r = await client.post(
        "/api/chat-with-ai",
        headers=admin,
        json={
            "model": "fake",
            "promptObject": {
                "prompt": "x",
                "conversationId": "c5c5e1d4-76a9-46a6-bf6b-1ba843b838db",
            },
        },
    )
    assert r.status_code == 404


async def test_another_orgs_conversation_is_404_everywhere(client, admin, container):
    cid = (
        await client.post(
            CONV, headers=admin, json={"title": "secret", "type": "CHAT_WITH_AI", "model": "fake"}
        )
    ).json()["conversation"]["uuid"]
    created = await client.post("/api/admin/orgs", headers=admin, json={"name": "acme"})
    other = {"API-KEY": created.json()["apiKey"]["key"]}
    assert (await client.get(f"{CONV}/{cid}", headers=other)).status_code == 404
    assert (await client.delete(f"{CONV}/{cid}", headers=other)).status_code == 404
    r = await client.post(
        "/api/chat-with-ai",
        headers=other,
        json={"model": "fake", "promptObject": {"prompt": "x", "conversationId": cid}},
    )
    assert r.status_code == 404
    assert (await client.get(CONV, headers=other)).json()["total"] == 0
    assert (await client.get(f"{CONV}/{cid}", headers=admin)).status_code == 200


async def test_members_see_only_their_own_conversations(client, admin):
    user = (await client.post("/api/admin/users", headers=admin, json={"name": "mia"})).json()[
        "user"
    ]
    key = (
        await client.post("/api/admin/keys", headers=admin, json={"userId": user["userId"]})
    ).json()["apiKey"]["key"]
    member = {"API-KEY": key}
    cid = (
        await client.post(
            CONV, headers=admin, json={"title": "admin's", "type": "CHAT_WITH_AI", "model": "fake"}
        )
    ).json()["conversation"]["uuid"]
    assert (await client.get(f"{CONV}/{cid}", headers=member)).status_code == 404
    mine = await client.post(
        CONV, headers=member, json={"title": "mine", "type": "CHAT_WITH_AI", "model": "fake"}
    )
    assert mine.status_code == 200
    assert [
        c["title"] for c in (await client.get(CONV, headers=member)).json()["conversations"]
    ] == ["mine"]
    assert (await client.get(CONV, headers=admin)).json()["total"] == 2
