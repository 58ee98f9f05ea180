"""The chat request's hot path: the model starts, and its tokens flow, while the PENDING
record is written; the outcome is stored (and charged) only after that write."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from tests.helpers import CHAT, HELLO
from threadline.domain.events import Usage
from threadline.storage.tables import ai_records, users


@pytest.mark.parametrize("streaming", [False, True])
async def test_a_failed_pending_write_fails_the_reply_and_nothing_is_charged(
    client, admin, container, fakes, monkeypatch, streaming
):
    finished = []
    failed = asyncio.Event()  # the model's script waits on it after its first token

    async def broken_start(record, user_message, **_):
        await asyncio.sleep(0.05)  # the model has started meanwhile
        asyncio.get_running_loop().call_later(0.01, failed.set)
        raise RuntimeError("disk full")

    async def finish(*args):
        finished.append(args)

    monkeypatch.setattr(container.record_store, "start", broken_start)
    monkeypatch.setattr(container.record_store, "finish", finish)
    fakes["gpt-4o-mini"].enqueue(["x", failed, "y", Usage(10, 15)])
    if streaming:  # the first frame waits for the write, which fails: the stream ends with it
        r = await client.post(CHAT + "?isStreaming=true", headers=admin, json=HELLO)
        assert r.status_code == 200
        assert "event: content" not in r.text  # no frame names a record that was never stored
        assert "STORAGE_ERROR" in r.text.split("event: error")[1]
        assert "event: result" not in r.text and "event: done" not in r.text
        assert '"content":"y"' not in r.text  # the model was stopped
    else:
        r = await client.post(CHAT, headers=admin, json=HELLO)
        assert r.status_code == 500 and r.json()["error"]["code"] == "STORAGE_ERROR"
    await asyncio.sleep(0.1)
    assert container.runs.active == 0
    assert finished == []
    async with container.db.read() as conn:
        assert (await conn.execute(select(ai_records))).first() is None
        assert (await conn.execute(select(users.c.used_credit))).scalars().all() == [0]
        # the reservation the run took before its model started is given back
        assert (await conn.execute(select(users.c.reserved_credit))).scalars().all() == [0]


async def test_the_outcome_is_stored_after_a_slow_pending_write(
    client, admin, container, fakes, monkeypatch
):
    start = container.record_store.start

    async def slow_start(record, user_message, **options):
        await asyncio.sleep(0.1)  # slower than the whole reply
        await start(record, user_message, **options)

    monkeypatch.setattr(container.record_store, "start", slow_start)
    fakes["gpt-4o-mini"].enqueue(["fast", Usage(10, 15)])
    r = await client.post(CHAT, headers=admin, json=HELLO)
    assert r.status_code == 200
    record = r.json()["aiRecord"]
    assert record["status"] == "SUCCESS" and record["teamUser"]["usedCredit"] == 40
    async with container.db.read() as conn:
        status = (await conn.execute(select(ai_records.c.status))).scalars().all()
    assert status == ["SUCCESS"]


async def _member(client, admin) -> dict[str, str]:
    user = (await client.post("/api/admin/users", headers=admin, json={"name": "m"})).json()
    made = await client.post(
        "/api/admin/keys", headers=admin, json={"userId": user["user"]["userId"]}
    )
    return {"API-KEY": made.json()["apiKey"]["key"]}


async def _conversation(client, headers) -> str:
    r = await client.post(
        "/api/conversations",
        headers=headers,
        json={"title": "t", "type": "CHAT_WITH_AI", "model": "gpt-4o-mini"},
    )
    return str(r.json()["conversation"]["uuid"])


def _chat(conversation_id: str, prompt: str = "Hello") -> dict:
    return {
        "type": "UNIFY_CHAT_WITH_AI",
        "model": "gpt-4o-mini",
        "promptObject": {"prompt": prompt, "conversationId": conversation_id},
    }


async def test_history_checks_who_may_see_the_conversation(client, admin, fakes):
    member = await _member(client, admin)
    theirs, mine = await _conversation(client, member), await _conversation(client, admin)
    fakes["gpt-4o-mini"].enqueue(["first"])
    assert (await client.post(CHAT, headers=member, json=_chat(theirs))).status_code == 200
    # a member cannot chat in another user's conversation, nor in one that does not exist
    for cid in (mine, "00000000-0000-4000-8000-000000000000"):
        r = await client.post(CHAT, headers=member, json=_chat(cid))
        assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
    # an admin sees every conversation of the org, with its history
    fakes["gpt-4o-mini"].enqueue(["second"])
    assert (await client.post(CHAT, headers=admin, json=_chat(theirs, "again"))).status_code == 200
    sent = fakes["gpt-4o-mini"].requests[-1].messages
    assert [(m.role, m.content) for m in sent] == [
        ("user", "Hello"),
        ("assistant", "first"),
        ("user", "again"),
    ]
    # another org's admin does not
    other = await client.post("/api/admin/orgs", headers=admin, json={"name": "other"})
    outsider = {"API-KEY": other.json()["apiKey"]["key"]}
    r = await client.post(CHAT, headers=outsider, json=_chat(theirs))
    assert r.status_code == 404


def test_content_frames_are_the_json_a_general_encoder_makes():
    from threadline.api.dialects.oneminai import encode

    for text in ("hello", ' wörld "q" \\ \n\t\x00\x1f', "😀", "", "</script>\u2028"):
        frame_id = encode.event_id("rid", 7)
        assert encode.content_frame(text, "rid", 7) == encode.sse(
            "content", {"content": text}, frame_id
        )
        assert encode.content_frame(text, "rid", 7).startswith(b"id: rid:7\nevent: content\n")


async def test_the_model_is_asked_before_the_pending_record_is_written(
    client, admin, container, fakes, monkeypatch
):
    start, seen = container.record_store.start, []

    async def watching_start(record, user_message, **options):
        seen.append(len(fakes["gpt-4o-mini"].requests))
        await start(record, user_message, **options)

    monkeypatch.setattr(container.record_store, "start", watching_start)
    fakes["gpt-4o-mini"].enqueue(["hi"])
    assert (await client.post(CHAT, headers=admin, json=HELLO)).status_code == 200
    assert seen == [1]
