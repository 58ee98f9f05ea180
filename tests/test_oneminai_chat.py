"""The 1min.ai Chat with AI and AI Feature APIs (001_*, 002_*), in process, on both DBs."""

from __future__ import annotations

import pytest

from tests.helpers import sse_events
from threadline.domain.errors import ModelError
from threadline.domain.events import Usage

CHAT = "/api/chat-with-ai"


def body(prompt: str = "Explain quantum computing in simple terms", **prompt_extra):
    return {
        "type": "UNIFY_CHAT_WITH_AI",
        "model": "gpt-4o-mini",
        "promptObject": {"prompt": prompt, **prompt_extra},
    }


async def new_conversation(client, admin, model="gpt-4o-mini") -> str:
    r = await client.post(
        "/api/conversations",
        headers=admin,
        json={"title": "My AI Conversation", "type": "CHAT_WITH_AI", "model": model},
    )
    assert r.status_code == 200, r.text
    return r.json()["conversation"]["uuid"]


async def test_non_streaming_example_returns_the_documented_ai_record(client, admin, fakes):
    fakes["gpt-4o-mini"].enqueue(["Quantum computing", " uses qubits.", Usage(12, 5)])
    r = await client.post(CHAT, headers=admin, json=body())
    assert r.status_code == 200
    record = r.json()["aiRecord"]
    assert record["status"] == "SUCCESS"
    assert record["type"] == "UNIFY_CHAT_WITH_AI"
    assert record["model"] == "gpt-4o-mini"
    assert record["conversationId"] is None
    assert record["aiRecordDetail"]["resultObject"] == ["Quantum computing uses qubits."]
    assert record["aiRecordDetail"]["promptObject"] == {
        "prompt": "Explain quantum computing in simple terms",
        "linkContentList": [],
        "searchContentList": [],
    }
    assert record["modelDetail"]["name"] == "gpt-4o-mini"
    assert set(record) >= {
        "uuid",
        "userId",
        "teamId",
        "teamUser",
        "metadata",
        "rating",
        "feedback",
        "createdAt",
    }
    # priced at 1 credit per input token and 2 per output token
    assert record["teamUser"]["usedCredit"] == 12 + 2 * 5
    assert record["teamUser"]["role"] == "ADMIN"


async def test_streaming_emits_content_result_done(client, admin, fakes):
    fakes["gpt-4o-mini"].enqueue(["Artificial intelligence is", " a branch of computer science..."])
    r = await client.post(CHAT + "?isStreaming=true", headers=admin, json=body("What is AI?"))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    names = [name for name, _ in events]
    assert names == ["content", "content", "result", "done"]
    assert events[0][1] == {"content": "Artificial intelligence is"}
    result = events[2][1]["aiRecord"]
    assert result["aiRecordDetail"]["resultObject"] == [
        "Artificial intelligence is a branch of computer science..."
    ]
    assert events[3][1] == {"message": "Stream completed"}
    # each frame is the spec's `event:` + `data:` lines after an SSE id: the aiRecord and the
    # characters of text so far (what a client resumes from, see test_durable_streams)
    rid = r.headers["x-ai-record-id"]
    assert rid == result["uuid"]
    frames = r.text.split("\n\n")
    assert (
        frames[0]
        == f'id: {rid}:26\nevent: content\ndata: {{"content":"Artificial intelligence is"}}'
    )
    assert frames[1].startswith(f"id: {rid}:58\nevent: content\ndata: ")
    assert frames[2].startswith(f"id: {rid}:58\nevent: result\ndata: ")
    assert frames[3] == f'id: {rid}:58\nevent: done\ndata: {{"message":"Stream completed"}}'
    assert frames[4:] == [""]


async def test_history_example_uses_this_models_earlier_replies(client, admin, fakes):
    cid = await new_conversation(client, admin)
    fakes["gpt-4o-mini"].enqueue(["First answer."])
    await client.post(CHAT, headers=admin, json=body("First question", conversationId=cid))
    fakes["other-model"].enqueue(["Other model answer."])
    other = body("Question to the other model", conversationId=cid)
    other["model"] = "other-model"
    await client.post(CHAT, headers=admin, json=other)

    example = body(
        "Can you elaborate on that?",
        conversationId=cid,
        settings={"historySettings": {"isMixed": False, "historyMessageLimit": 10}},
    )
    r = await client.post(CHAT + "?isStreaming=true", headers=admin, json=example)
    assert r.status_code == 200
    sent = [(m.role, m.content) for m in fakes["gpt-4o-mini"].requests[-1].messages]
    assert sent == [
        ("user", "First question"),
        ("assistant", "First answer."),
        ("user", "Can you elaborate on that?"),
    ]
    mixed = body("And now?", conversationId=cid, settings={"historySettings": {"isMixed": True}})
    await client.post(CHAT, headers=admin, json=mixed)
    contents = [m.content for m in fakes["gpt-4o-mini"].requests[-1].messages]
    assert "Other model answer." in contents


async def test_history_message_limit_counts_messages(client, admin, fakes):
    cid = await new_conversation(client, admin)
    for i in range(3):
        fakes["gpt-4o-mini"].enqueue([f"answer {i}"])
        await client.post(CHAT, headers=admin, json=body(f"question {i}", conversationId=cid))
    limited = body(
        "last", conversationId=cid, settings={"historySettings": {"historyMessageLimit": 2}}
    )
    await client.post(CHAT, headers=admin, json=limited)
    sent = [m.content for m in fakes["gpt-4o-mini"].requests[-1].messages]
    assert sent == ["question 2", "answer 2", "last"]


@pytest.mark.parametrize(
    ("prompt_object", "named"),
    [
        (
            {
                "settings": {
                    "webSearchSettings": {"webSearch": True, "numOfSite": 3, "maxWord": 1000}
                }
            },
            "Web search (webSearch) is not configured",
        ),
        ({"attachments": {"files": ["20ad0277-74df-4629-8c50-56a2549acbd7"]}}, "file"),
    ],
)
async def test_settings_not_supported_or_configured_are_refused_by_name(
    client, admin, prompt_object, named
):
    r = await client.post(
        CHAT + "?isStreaming=true", headers=admin, json=body("Hi", **prompt_object)
    )
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "UNPROCESSABLE_ENTITY"
    assert named in error["message"]


# brandVoiceId is supported: tests/test_brand_voices.py; YouTube links: tests/test_youtube.py;
# attachments.images: tests/test_images.py;
# web search with a provider configured: tests/test_web_search.py


async def test_web_search_off_is_fine(client, admin):
    off = body("Hi", settings={"webSearchSettings": {"webSearch": False}})
    assert (await client.post(CHAT, headers=admin, json=off)).status_code == 200


async def test_prompt_of_wrong_type_is_a_prompt_object_validation_error(client, admin):
    r = await client.post(CHAT, headers=admin, json=body(123))
    assert r.status_code == 422
    assert r.json() == {
        "success": False,
        "error": {
            "code": "PROMPT_OBJECT_VALIDATION_FAILED",
            "message": "Invalid prompt object",
            "details": [{"field": "prompt", "message": "prompt must be a string"}],
        },
    }


async def test_unknown_setting_is_named(client, admin):
    r = await client.post(CHAT, headers=admin, json=body("Hi", settings={"historySetting": {}}))
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["field"] == "settings.historySetting"


@pytest.mark.parametrize(
    "payload",
    [
        {"type": "UNIFY_CHAT_WITH_AI", "promptObject": {"prompt": "x"}},
        {"type": "UNIFY_CHAT_WITH_AI", "model": "gpt-4o-mini"},
        {"type": "CHAT_WITH_AI", "model": "gpt-4o-mini", "promptObject": {"prompt": "x"}},
        {"model": 5, "promptObject": {"prompt": "x"}},
    ],
)
async def test_malformed_requests_are_400(client, admin, payload):
    r = await client.post(CHAT, headers=admin, json=payload)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "INVALID_REQUEST"


async def test_invalid_json_is_400(client, admin):
    r = await client.post(CHAT, headers=admin, content=b"{not json")
    assert r.status_code == 400
    assert r.json()["success"] is False


async def test_type_defaults_to_unify(client, admin):
    r = await client.post(
        CHAT, headers=admin, json={"model": "gpt-4o-mini", "promptObject": {"prompt": "x"}}
    )
    assert r.status_code == 200
    assert r.json()["aiRecord"]["type"] == "UNIFY_CHAT_WITH_AI"


async def test_unknown_model_is_422_naming_the_available_models(client, admin):
    payload = {**body("Hi"), "model": "gpt-9"}
    r = await client.post(CHAT, headers=admin, json=payload)
    assert r.status_code == 422
    message = r.json()["error"]["message"]
    assert "gpt-9" in message and "gpt-4o-mini" in message and "fake" in message


async def test_failed_reply_is_stored_failed_with_partial_text(client, admin, fakes, container):
    cid = await new_conversation(client, admin)
    fakes["gpt-4o-mini"].enqueue(
        ["partial answer", ModelError("model 'gpt-4o-mini': upstream returned 500: boom")]
    )
    r = await client.post(
        CHAT + "?isStreaming=true", headers=admin, json=body("Hi", conversationId=cid)
    )
    events = sse_events(r.text)
    assert [n for n, _ in events] == ["content", "error"]
    assert "upstream returned 500" in events[1][1]["error"]["message"]
    got = (await client.get(f"/api/conversations/{cid}", headers=admin)).json()["conversation"]
    assert [(m["role"], m["status"], m["content"]) for m in got["messages"]] == [
        ("user", "FAILED", "Hi"),
        ("assistant", "FAILED", "partial answer"),
    ]
    fakes["gpt-4o-mini"].enqueue([ModelError("model 'gpt-4o-mini': upstream returned 500: boom")])
    r = await client.post(CHAT, headers=admin, json=body("Hi again"))
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "MODEL_ERROR"


async def test_failed_exchanges_stay_out_of_history(client, admin, fakes):
    cid = await new_conversation(client, admin)
    fakes["gpt-4o-mini"].enqueue([ModelError("boom")])
    await client.post(CHAT, headers=admin, json=body("lost", conversationId=cid))
    await client.post(CHAT, headers=admin, json=body("kept", conversationId=cid))
    assert [m.content for m in fakes["gpt-4o-mini"].requests[-1].messages] == ["kept"]


# ---- the legacy AI Feature API (002_*) ----


async def test_feature_chat_without_context_raw_text_stream(client, admin, fakes):
    fakes["gpt-4o-mini"].enqueue(["This is an example", " streaming chat response"])
    r = await client.post(
        "/api/features?isStreaming=true",
        headers=admin,
        json={
            "type": "CHAT_WITH_AI",
            "model": "gpt-4o-mini",
            "promptObject": {"prompt": "Tell me about artificial intelligence", "isMixed": False},
        },
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert r.text == "This is an example streaming chat response"


async def test_feature_example_with_web_search_is_refused_by_name(client, admin):
    r = await client.post(
        "/api/features?isStreaming=true",
        headers=admin,
        json={
            "type": "CHAT_WITH_AI",
            "model": "gpt-4o-mini",
            "promptObject": {
                "prompt": "Tell me about artificial intelligence",
                "isMixed": False,
                "webSearch": True,
                "numOfSite": 1,
                "maxWord": 500,
            },
        },
    )
    assert r.status_code == 422
    assert "webSearch" in r.json()["error"]["message"]


async def test_feature_chat_with_context_and_metadata(client, admin, fakes):
    cid = await new_conversation(client, admin)
    fakes["gpt-4o-mini"].enqueue(["Earlier."])
    await client.post(CHAT, headers=admin, json=body("Earlier question", conversationId=cid))
    r = await client.post(
        "/api/features",
        headers=admin,
        json={
            "type": "CHAT_WITH_AI",
            "conversationId": cid,
            "model": "gpt-4o-mini",
            "promptObject": {
                "prompt": "Can you elaborate on that?",
                "isMixed": False,
                "webSearch": False,
            },
            "metadata": {"messageGroup": "1727596968593_71"},
        },
    )
    assert r.status_code == 200
    record = r.json()["aiRecord"]
    assert record["type"] == "CHAT_WITH_AI"
    assert record["conversationId"] == cid
    assert record["metadata"] == {"messageGroup": "1727596968593_71"}
    assert record["additionalData"] is None
    sent = [m.content for m in fakes["gpt-4o-mini"].requests[-1].messages]
    assert sent == ["Earlier question", "Earlier.", "Can you elaborate on that?"]


async def test_image_features_need_an_image_model(client, admin):
    r = await client.post(
        "/api/features",
        headers=admin,
        json={
            "type": "IMAGE_VARIATOR",
            "model": "gpt-4o-mini",
            "promptObject": {"imageUrl": "development/images/x.png", "mode": "fast", "n": 4},
        },
    )
    assert r.status_code == 422
    assert "image" in r.json()["error"]["message"]


async def test_feature_prompt_errors_are_prompt_object_errors(client, admin):
    r = await client.post(
        "/api/features",
        headers=admin,
        json={
            "type": "CHAT_WITH_IMAGE",
            "model": "gpt-4o-mini",
            "promptObject": {"prompt": "x", "imageList": "a"},
        },
    )
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "PROMPT_OBJECT_VALIDATION_FAILED"
    assert r.json()["error"]["details"][0]["field"] == "imageList"


async def test_a_cut_reply_is_stored_length_and_the_migration_round_trips(
    client, admin, fakes, container
):
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.config import Config
    from alembic.migration import MigrationContext
    from sqlalchemy import inspect, select

    from threadline.storage.database import MIGRATIONS_DIR
    from threadline.storage.tables import ai_records, metadata

    fakes["gpt-4o-mini"].enqueue(["Quantum", Usage(12, 1, finish_reason="length")])
    r = await client.post(CHAT, headers=admin, json=body())
    assert r.json()["aiRecord"]["aiRecordDetail"]["finishReason"] == "length"
    async with container.db.engine.connect() as conn:
        stored = (await conn.execute(select(ai_records.c.finish_reason))).scalars().all()
    assert stored == ["length"]

    def round_trip(connection) -> tuple[set[str], set[str]]:
        only_records = {
            "include_name": lambda name, kind, _: kind != "table" or name == "ai_records"
        }
        context = MigrationContext.configure(connection, opts=only_records)
        assert [d for d in compare_metadata(context, metadata) if "ai_records" in repr(d)] == []
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = connection
        command.downgrade(config, "0005")
        down = {c["name"] for c in inspect(connection).get_columns("ai_records")}
        command.upgrade(config, "head")
        return down, {c["name"] for c in inspect(connection).get_columns("ai_records")}

    async with container.db.engine.begin() as conn:
        down, up = await conn.run_sync(round_trip)
    assert "finish_reason" not in down and "error" in down
    assert "finish_reason" in up
