"""Brand voices: the `/api/brand-voices` CRUD endpoints (Threadline's design, README "Brand
voices") and `brandVoiceId` in the Chat with AI API (001_*), on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from tests.helpers import count, key_only, until_done
from threadline.storage.database import MIGRATIONS_DIR
from threadline.storage.tables import ai_records, brand_voices, messages, metadata

VOICES = "/api/brand-voices"
CHAT = "/api/chat-with-ai"
UNKNOWN_ID = "c5c5e1d4-76a9-46a6-bf6b-1ba843b838db"
ACME = {
    "name": "Acme friendly",
    "instructions": "Warm, upbeat and concise. Use the customer's first name. Never use jargon.",
    "examples": ["Hi Sam! Great news: your order is on its way.", "Thanks a ton, Priya!"],
}


def chat(prompt: str = "Tell me about our return policy", **extra):
    return {
        "type": "UNIFY_CHAT_WITH_AI",
        "model": "gpt-4o-mini",
        "promptObject": {"prompt": prompt},
        **extra,
    }


async def create(client, headers, **overrides) -> dict:
    r = await client.post(VOICES, headers=headers, json={**ACME, **overrides})
    assert r.status_code == 200, r.text
    return r.json()["brandVoice"]


async def new_member(client, admin, name="mia") -> tuple[dict[str, str], str]:
    user = (await client.post("/api/admin/users", headers=admin, json={"name": name})).json()
    user_id = user["user"]["userId"]
    key = await client.post("/api/admin/keys", headers=admin, json={"userId": user_id})
    return {"API-KEY": key.json()["apiKey"]["key"]}, user_id


async def other_org(client, admin) -> dict[str, str]:
    created = await client.post("/api/admin/orgs", headers=admin, json={"name": "globex"})
    return {"API-KEY": created.json()["apiKey"]["key"]}


# ---- CRUD ---------------------------------------------------------------------------


async def test_create_get_list_patch_delete(client, admin):
    me = (await client.get("/api/me", headers=admin)).json()["user"]
    voice = await create(client, admin)
    assert voice["name"] == ACME["name"]
    assert voice["instructions"] == ACME["instructions"]
    assert voice["examples"] == ACME["examples"]
    assert voice["teamId"] == me["teamId"]
    assert voice["createdBy"] == voice["updatedBy"] == me["userId"]
    assert voice["createdAt"] == voice["updatedAt"] and voice["createdAt"].endswith("Z")
    vid = voice["uuid"]

    got = await client.get(f"{VOICES}/{vid}", headers=admin)
    assert got.status_code == 200 and got.json() == {"brandVoice": voice}
    listed = (await client.get(VOICES, headers=admin)).json()
    assert listed == {"brandVoices": [voice], "total": 1, "limit": 20, "offset": 0}

    r = await client.patch(f"{VOICES}/{vid}", headers=admin, json={"name": "Acme formal"})
    assert r.status_code == 200, r.text
    patched = r.json()["brandVoice"]
    assert patched["name"] == "Acme formal"
    assert patched["instructions"] == ACME["instructions"]  # untouched fields are kept
    assert patched["examples"] == ACME["examples"]
    assert patched["createdAt"] == voice["createdAt"] and patched["updatedAt"] > voice["updatedAt"]
    r = await client.patch(f"{VOICES}/{vid}", headers=admin, json={"examples": ["Dear Sir."]})
    assert r.json()["brandVoice"]["examples"] == ["Dear Sir."]  # the list is replaced
    r = await client.patch(f"{VOICES}/{vid}", headers=admin, json={"examples": []})
    assert r.json()["brandVoice"]["examples"] == []  # instructions are left: still a voice
    assert (await client.get(f"{VOICES}/{vid}", headers=admin)).json()["brandVoice"][
        "name"
    ] == "Acme formal"

    r = await client.delete(f"{VOICES}/{vid}", headers=admin)
    assert r.status_code == 200 and r.json() == {"success": True, "uuid": vid}
    assert (await client.get(f"{VOICES}/{vid}", headers=admin)).status_code == 404
    assert (await client.delete(f"{VOICES}/{vid}", headers=admin)).status_code == 404
    assert (await client.get(VOICES, headers=admin)).json()["total"] == 0


async def test_limits_are_inclusive_and_whitespace_is_trimmed(client, admin):
    voice = await create(
        client,
        admin,
        name="  " + "n" * 100 + "  ",
        instructions="i" * 4000,
        examples=["e" * 1000] * 10,
    )
    assert voice["name"] == "n" * 100
    only_examples = await create(client, admin, name="Samples", instructions="")
    assert only_examples["instructions"] == ""


async def test_invalid_bodies_are_400_naming_the_field_and_store_nothing(client, admin, container):
    cases = [
        ({"name": ""}, "name"),
        ({"name": "n" * 101}, "name"),
        ({"name": "   "}, "name"),
        ({"name": 5}, "name"),
        ({"instructions": "i" * 4001}, "instructions"),
        ({"examples": ["e"] * 11}, "examples"),
        ({"examples": ["ok", "e" * 1001]}, "examples.1"),
        ({"examples": ["ok", ""]}, "examples.1"),
        ({"examples": "one string"}, "examples"),
        ({"tone": "casual"}, "tone"),
        ({"instructions": "", "examples": []}, "instructions"),
    ]
    for change, field in cases:
        r = await client.post(VOICES, headers=admin, json={**ACME, **change})
        assert r.status_code == 400, (change, r.text)
        error = r.json()["error"]
        assert error["code"] == "INVALID_REQUEST", change
        assert [d["field"] for d in error["details"]] == [field], (change, error)
    r = await client.post(VOICES, headers=admin, json={"instructions": "x"})
    assert r.json()["error"]["details"] == [{"field": "name", "message": "name is required"}]
    r = await client.post(VOICES, headers=admin, json={**ACME, "tone": "casual"})
    assert r.json()["error"]["details"] == [
        {"field": "tone", "message": "tone is not a known field"}
    ]
    assert await count(container, brand_voices) == 0


async def test_invalid_patches_are_400_and_change_nothing(client, admin):
    voice = await create(client, admin)
    path = f"{VOICES}/{voice['uuid']}"
    for change, field in [
        ({"name": None}, "name"),
        ({"examples": None}, "examples"),
        ({"name": "n" * 101}, "name"),
        ({"examples": ["e"] * 11}, "examples"),
        ({"uuid": UNKNOWN_ID}, "uuid"),
    ]:
        r = await client.patch(path, headers=admin, json=change)
        assert r.status_code == 400, (change, r.text)
        assert [d["field"] for d in r.json()["error"]["details"]] == [field], change
    r = await client.patch(path, headers=admin, json={"name": None})
    assert "must not be null" in r.json()["error"]["details"][0]["message"]
    r = await client.patch(path, headers=admin, json={})
    assert r.status_code == 400 and "nothing to change" in r.json()["error"]["message"]
    r = await client.patch(path, headers=admin, json={"instructions": "", "examples": []})
    assert r.status_code == 400
    assert "instructions or at least one example" in r.json()["error"]["message"]
    assert (await client.get(path, headers=admin)).json()["brandVoice"] == voice


async def test_list_is_paginated_newest_first(client, admin):
    for i in range(5):
        await create(client, admin, name=f"v{i}")
    page = (await client.get(f"{VOICES}?limit=2&offset=1", headers=admin)).json()
    assert page["total"] == 5 and page["limit"] == 2 and page["offset"] == 1
    assert [v["name"] for v in page["brandVoices"]] == ["v3", "v2"]
    last = (await client.get(f"{VOICES}?limit=2&offset=4", headers=admin)).json()
    assert [v["name"] for v in last["brandVoices"]] == ["v0"]
    past = (await client.get(f"{VOICES}?offset=50", headers=admin)).json()
    assert past["brandVoices"] == [] and past["total"] == 5
    for bad in ("limit=0", "offset=-1", "limit=many"):
        r = await client.get(f"{VOICES}?{bad}", headers=admin)
        assert r.status_code == 400, bad
    assert (await client.get(f"{VOICES}?limit=100000", headers=admin)).json()["limit"] == 100


async def test_unknown_and_malformed_ids_are_404(client, admin):
    for vid in (UNKNOWN_ID, "not-a-uuid"):
        for method in ("GET", "DELETE"):
            r = await client.request(method, f"{VOICES}/{vid}", headers=admin)
            assert r.status_code == 404, (method, vid)
            assert r.json()["error"]["code"] == "NOT_FOUND"
        r = await client.patch(f"{VOICES}/{vid}", headers=admin, json={"name": "x"})
        assert r.status_code == 404


async def test_another_orgs_brand_voice_is_not_found_anywhere(client, admin, container, fakes):
    voice = await create(client, admin)
    vid = voice["uuid"]
    other = await other_org(client, admin)
    assert (await client.get(f"{VOICES}/{vid}", headers=other)).status_code == 404
    r = await client.patch(f"{VOICES}/{vid}", headers=other, json={"name": "mine now"})
    assert r.status_code == 404
    assert (await client.delete(f"{VOICES}/{vid}", headers=other)).status_code == 404
    assert (await client.get(VOICES, headers=other)).json() == {
        "brandVoices": [],
        "total": 0,
        "limit": 20,
        "offset": 0,
    }
    r = await client.post(CHAT, headers=other, json=chat(brandVoiceId=vid))
    assert r.status_code == 422 and "Unknown brandVoiceId" in r.json()["error"]["message"]
    assert fakes["gpt-4o-mini"].requests == []
    assert (await client.get(f"{VOICES}/{vid}", headers=admin)).json()["brandVoice"] == voice


async def test_members_use_every_voice_but_change_only_their_own(client, admin, fakes):
    admins = await create(client, admin, name="Admin's voice")
    member, member_id = await new_member(client, admin)
    assert (await client.get(VOICES, headers=member)).json()["total"] == 1
    assert (await client.get(f"{VOICES}/{admins['uuid']}", headers=member)).status_code == 200
    r = await client.post(CHAT, headers=member, json=chat(brandVoiceId=admins["uuid"]))
    assert r.status_code == 200, r.text

    path = f"{VOICES}/{admins['uuid']}"
    r = await client.patch(path, headers=member, json={"name": "hijacked"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN"
    assert "creator or an admin" in r.json()["error"]["message"]
    assert (await client.delete(path, headers=member)).status_code == 403
    assert (await client.get(path, headers=admin)).json()["brandVoice"]["name"] == "Admin's voice"

    mine = await create(client, member, name="Mia's voice")
    assert mine["createdBy"] == member_id
    r = await client.patch(f"{VOICES}/{mine['uuid']}", headers=member, json={"name": "Mia 2"})
    assert r.status_code == 200
    r = await client.patch(f"{VOICES}/{mine['uuid']}", headers=admin, json={"name": "Mia 3"})
    assert r.status_code == 200  # an admin may edit any voice of the org
    assert r.json()["brandVoice"]["createdBy"] == member_id
    assert r.json()["brandVoice"]["updatedBy"] != member_id
    assert (await client.delete(f"{VOICES}/{mine['uuid']}", headers=member)).status_code == 200


# ---- chat ---------------------------------------------------------------------------


async def test_chat_gives_the_voice_to_the_model_and_records_it(client, admin, fakes):
    voice = await create(client, admin)
    fakes["gpt-4o-mini"].enqueue(["Hi there! Returns are free for 30 days."])
    r = await client.post(CHAT, headers=admin, json=chat(brandVoiceId=voice["uuid"]))
    assert r.status_code == 200, r.text
    sent = fakes["gpt-4o-mini"].requests[-1].messages
    assert [m.role for m in sent] == ["system", "user"]
    system = sent[0].content
    assert ACME["instructions"] in system
    assert all(example in system for example in ACME["examples"])
    assert '"Acme friendly"' in system
    assert sent[1].content == "Tell me about our return policy"
    record = r.json()["aiRecord"]
    assert record["aiRecordDetail"]["promptObject"]["brandVoiceId"] == voice["uuid"]
    assert record["aiRecordDetail"]["resultObject"] == ["Hi there! Returns are free for 30 days."]

    # streamed, in a conversation: the voice comes first, before the history
    conversation = await client.post(
        "/api/conversations",
        headers=admin,
        json={"title": "Support", "type": "UNIFY_CHAT_WITH_AI", "model": "gpt-4o-mini"},
    )
    cid = conversation.json()["conversation"]["uuid"]
    first = {**chat(), "promptObject": {"prompt": "First", "conversationId": cid}}
    assert (await client.post(CHAT, headers=admin, json=first)).status_code == 200
    second = {**chat(), "promptObject": {"prompt": "Second", "conversationId": cid}}
    r = await client.post(
        CHAT + "?isStreaming=true", headers=admin, json={**second, "brandVoiceId": voice["uuid"]}
    )
    assert r.status_code == 200 and "event: done" in r.text
    sent = fakes["gpt-4o-mini"].requests[-1].messages
    assert [m.role for m in sent] == ["system", "user", "assistant", "user"]
    assert ACME["instructions"] in sent[0].content
    # without brandVoiceId, no voice
    await client.post(CHAT, headers=admin, json=chat("Plain"))
    assert [m.role for m in fakes["gpt-4o-mini"].requests[-1].messages] == ["user"]


async def test_unknown_brand_voice_ids_are_422_and_store_nothing(client, admin, container, fakes):
    deleted = await create(client, admin, name="gone")
    await client.delete(f"{VOICES}/{deleted['uuid']}", headers=admin)
    conversation = await client.post(
        "/api/conversations",
        headers=admin,
        json={"title": "Support", "type": "UNIFY_CHAT_WITH_AI", "model": "gpt-4o-mini"},
    )
    cid = conversation.json()["conversation"]["uuid"]
    for bad in (UNKNOWN_ID, "bv-1", "", deleted["uuid"]):
        payload = {**chat(), "brandVoiceId": bad}
        payload["promptObject"] = {"prompt": "Hi", "conversationId": cid}
        for streaming in ("", "?isStreaming=true"):
            r = await client.post(CHAT + streaming, headers=admin, json=payload)
            assert r.status_code == 422, (bad, r.text)
            error = r.json()["error"]
            assert error["code"] == "UNPROCESSABLE_ENTITY"
            assert error["message"].startswith(f"Unknown brandVoiceId {bad!r}"), error
    r = await client.post(CHAT, headers=admin, json={**chat(), "brandVoiceId": 7})
    assert r.status_code == 400  # not a string at all: a malformed request
    assert fakes["gpt-4o-mini"].requests == []
    assert await count(container, ai_records) == 0
    assert await count(container, messages) == 0


async def test_a_voice_too_long_for_the_models_context_is_422(client, admin, container, fakes):
    # the fake models have a 2,048-token window and keep 512 for the reply (~6,000 chars left)
    voice = await create(client, admin, instructions="i " * 2000, examples=["e " * 500] * 4)
    r = await client.post(CHAT, headers=admin, json=chat(brandVoiceId=voice["uuid"]))
    assert r.status_code == 422
    assert "too long for model 'gpt-4o-mini'" in r.json()["error"]["message"]
    assert fakes["gpt-4o-mini"].requests == [] and await count(container, ai_records) == 0


async def test_brand_voice_and_document_excerpts_both_reach_the_model(client, admin, fakes):
    text = b"The office parrot is named Captain Nibbles and he speaks Portuguese."
    r = await client.post(
        "/api/assets", headers=key_only(admin), files={"asset": ("notes.txt", text, "text/plain")}
    )
    assert r.status_code == 200, r.text
    asset_id = r.json()["asset"]["uuid"]
    assert (await until_done(client, admin, asset_id))["status"] == "COMPLETE"
    voice = await create(client, admin)
    fakes["gpt-4o-mini"].enqueue(["Hi! His name is Captain Nibbles [1]."])
    payload = chat("What is the parrot called?", brandVoiceId=voice["uuid"])
    payload["promptObject"]["attachments"] = {"files": [asset_id]}
    r = await client.post(CHAT, headers=admin, json=payload)
    assert r.status_code == 200, r.text
    system = fakes["gpt-4o-mini"].requests[-1].messages[0]
    assert system.role == "system"
    assert ACME["instructions"] in system.content and ACME["examples"][0] in system.content
    assert "Captain Nibbles" in system.content
    # the voice first, then the excerpts
    assert system.content.index(ACME["instructions"]) < system.content.index("Captain Nibbles")
    detail = r.json()["aiRecord"]["aiRecordDetail"]
    assert detail["citations"] and detail["citations"][0]["title"] == "notes.txt"
    assert detail["promptObject"]["brandVoiceId"] == voice["uuid"]


# ---- storage ------------------------------------------------------------------------


async def test_the_migration_matches_the_tables_and_downgrades(container):
    def check(connection) -> set[str]:
        only_ours = {
            "include_name": lambda name, kind, _: kind != "table" or name == "brand_voices"
        }
        context = MigrationContext.configure(connection, opts=only_ours)
        assert [d for d in compare_metadata(context, metadata) if "brand_voices" in repr(d)] == []
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = connection
        command.downgrade(config, "0003")
        down = set(inspect(connection).get_table_names())
        command.upgrade(config, "head")
        assert "brand_voices" in inspect(connection).get_table_names()
        return down

    async with container.db.engine.begin() as conn:
        tables = await conn.run_sync(check)
    assert "brand_voices" not in tables and "chunks" in tables
