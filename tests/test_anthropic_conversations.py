"""Threadline's `conversation` extension of Anthropic's Messages API: one history across
dialects. An OpenAI conversation (official `openai` SDK) is continued through the 1min.ai
dialect (`/api/chat-with-ai`) and then through `/v1/messages` with `conversation` (official
`anthropic` SDK, `extra_body`), streamed and not, on a real uvicorn server, on SQLite and
PostgreSQL: what the model is given at each step, what is stored, listed and charged; and the
rules (the caller's conversation only, the request holds only the new turn)."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import anthropic
import pytest
from PIL import Image

from tests.openai_live import VISION, OpenAILive, openai_live
from threadline.domain.entities import Role

MODEL = "gpt-4o-mini"  # priced: 1 credit an input token, 2 an output token


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OpenAILive]:
    with openai_live(request, tmp_path_factory.mktemp("anthropic-conversations")) as running:
        yield running


def claude(live: OpenAILive, key: str | None = None) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=live.base_url, api_key=key or live.key, max_retries=0)


def sent(live: OpenAILive) -> list[tuple[str, str]]:
    """What the model was given last (role, text), in order."""
    return [(m.role, m.content) for m in live.fakes[MODEL].requests[-1].messages]


def said(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_an_openai_conversation_continued_by_1minai_and_anthropic_is_one_history(live):
    client = live.client()
    conversation = client.conversations.create(
        items=[{"type": "message", "role": "user", "content": "My name is Ada."}]
    )
    uuid = str(UUID(hex=conversation.id.removeprefix("conv_")))
    live.fakes[MODEL].enqueue(["Hello Ada."])
    client.responses.create(model=MODEL, input="Greet me.", conversation=conversation.id)
    history = [("user", "My name is Ada."), ("user", "Greet me.")]
    assert sent(live) == history
    history.append(("assistant", "Hello Ada."))

    # the 1min.ai dialect continues it (every model's exchanges count: isMixed)
    live.fakes[MODEL].enqueue(["Your name is Ada."])
    prompt = {
        "prompt": "What is my name?",
        "conversationId": uuid,
        "settings": {"historySettings": {"isMixed": True, "historyMessageLimit": 50}},
    }
    r = live.post(
        "/api/chat-with-ai", {"type": "UNIFY_CHAT_WITH_AI", "model": MODEL, "promptObject": prompt}
    )
    assert r.status_code == 200, r.text
    assert sent(live) == [*history, ("user", "What is my name?")]
    history += [("user", "What is my name?"), ("assistant", "Your name is Ada.")]

    # Anthropic's Messages API with `conversation`: the history precedes the new turn
    counted = claude(live).messages.count_tokens(
        model=MODEL, messages=said("Spell it."), extra_body={"conversation": conversation.id}
    )
    alone = claude(live).messages.count_tokens(model=MODEL, messages=said("Spell it."))
    assert counted.input_tokens > alone.input_tokens + 5 * 4  # 5 earlier messages counted
    live.fakes[MODEL].enqueue(["A-d-a."])
    before = live.used_credit()
    message = claude(live).messages.create(
        model=MODEL,
        max_tokens=100,
        system="Be brief.",
        messages=said("Spell it."),
        extra_body={"conversation": conversation.id},
    )
    assert [block.text for block in message.content] == ["A-d-a."]
    assert sent(live) == [("system", "Be brief."), *history, ("user", "Spell it.")]
    usage = message.usage
    assert live.used_credit() - before == usage.input_tokens + 2 * usage.output_tokens > 0
    record = live.server.call(_record(live, message.id))
    assert (record.type, str(record.conversation_id)) == ("ANTHROPIC_MESSAGE", uuid)
    assert record.prompt_object["conversation"] == conversation.id
    history += [("user", "Spell it."), ("assistant", "A-d-a.")]

    # streamed, naming the conversation by its UUID (as /api/conversations does)
    live.fakes[MODEL].enqueue(["Bye", " Ada."])
    with claude(live).messages.stream(
        model=MODEL, max_tokens=100, messages=said("Bye."), extra_body={"conversation": uuid}
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Bye Ada." and final.stop_reason == "end_turn"
    assert sent(live) == [*history, ("user", "Bye.")]
    history += [("user", "Bye."), ("assistant", "Bye Ada.")]

    # one history, listed by every dialect; the next reply reads it all
    items = client.conversations.items.list(conversation.id, order="asc", limit=100)
    assert [(i.role, i.content[0].text) for i in items.data] == history
    got = live.get(f"/api/conversations/{uuid}").json()["conversation"]
    assert [(m["role"], m["content"]) for m in got["messages"]] == history
    assert {m["status"] for m in got["messages"]} == {"SUCCESS"}
    live.fakes[MODEL].enqueue(["Again."])
    client.responses.create(model=MODEL, input="Once more.", conversation=conversation.id)
    assert sent(live) == [*history, ("user", "Once more.")]


def test_items_added_and_deleted_through_openai_keep_the_history_one_path(live):
    client = live.client()
    conversation = client.conversations.create(
        items=[{"type": "message", "role": "user", "content": t} for t in ("A", "B", "C")]
    )
    listed = client.conversations.items.list(conversation.id, order="asc").data
    client.conversations.items.delete(listed[1].id, conversation_id=conversation.id)
    client.conversations.items.delete(listed[2].id, conversation_id=conversation.id)  # the head
    client.conversations.items.create(
        conversation.id, items=[{"type": "message", "role": "assistant", "content": "D"}]
    )
    live.fakes[MODEL].enqueue(["E"])
    claude(live).messages.create(
        model=MODEL, max_tokens=10, messages=said("Q"), extra_body={"conversation": conversation.id}
    )
    assert sent(live) == [("user", "A"), ("assistant", "D"), ("user", "Q")]
    uuid = str(UUID(hex=conversation.id.removeprefix("conv_")))
    got = live.get(f"/api/conversations/{uuid}").json()["conversation"]["messages"]
    assert [m["content"] for m in got] == ["A", "D", "Q", "E"]


def test_an_image_in_the_new_turn_reaches_a_vision_model_after_the_history(live):
    conversation = live.client().conversations.create(
        items=[{"type": "message", "role": "user", "content": "Look closely."}]
    )
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (0, 0, 200)).save(buffer, "PNG")
    source = {
        "type": "base64",
        "media_type": "image/png",
        "data": base64.b64encode(buffer.getvalue()).decode(),
    }
    content = [{"type": "image", "source": source}, {"type": "text", "text": "What colour?"}]
    live.fakes[VISION].enqueue(["Blue."])
    message = claude(live).messages.create(
        model=VISION,
        max_tokens=10,
        messages=[{"role": "user", "content": content}],
        extra_body={"conversation": conversation.id},
    )
    assert message.content[0].text == "Blue."
    given = live.fakes[VISION].requests[-1].messages
    assert [(m.role, m.content) for m in given] == [
        ("user", "Look closely."),
        ("user", "What colour?"),
    ]
    assert len(given[-1].images) == 1 and not given[0].images


def test_another_users_or_an_unknown_conversation_is_not_found(live):
    conversation = live.client().conversations.create(items=[])
    stranger = claude(live, live.server.call(_other_org_key(live)))
    colleague = claude(live, live.server.call(_member_key(live)))  # same org, not an admin
    for who, named in (
        (stranger, conversation.id),
        (colleague, conversation.id),
        (claude(live), "conv_" + "0" * 32),
        (claude(live), "not-an-id"),
    ):
        requests = live.fakes[MODEL].requests[:]
        with pytest.raises(anthropic.NotFoundError) as caught:
            who.messages.create(
                model=MODEL, max_tokens=10, messages=said("Hi"), extra_body={"conversation": named}
            )
        assert caught.value.body["error"]["type"] == "not_found_error"
        assert "conversation" in caught.value.body["error"]["message"]
        with pytest.raises(anthropic.NotFoundError):
            who.messages.count_tokens(
                model=MODEL, messages=said("Hi"), extra_body={"conversation": named}
            )
        assert live.fakes[MODEL].requests == requests  # the model was not called
    items = live.client().conversations.items.list(conversation.id)
    assert items.data == []


def test_with_a_conversation_messages_hold_only_the_new_user_turn(live):
    conversation = live.client().conversations.create(items=[])
    turns = [
        [*said("Hello"), {"role": "assistant", "content": "Hi."}, *said("Again")],
        [*said("One"), *said("Two")],
    ]
    for messages in turns:
        with pytest.raises(anthropic.BadRequestError) as caught:
            claude(live).messages.create(
                model=MODEL,
                max_tokens=10,
                messages=messages,
                extra_body={"conversation": conversation.id},
            )
        error = caught.value.body["error"]
        assert error["type"] == "invalid_request_error"
        assert error["message"].startswith("messages: with conversation, messages must hold")
        assert f"got {len(messages)} messages" in error["message"]
        with pytest.raises(anthropic.BadRequestError):
            claude(live).messages.count_tokens(
                model=MODEL, messages=messages, extra_body={"conversation": conversation.id}
            )
    assert live.client().conversations.items.list(conversation.id).data == []  # nothing stored


async def _record(live: OpenAILive, message_id: str) -> Any:
    principal = await live.container.accounts.authenticate(live.key)
    record_id = UUID(message_id.removeprefix("msg_"))
    return await live.container.record_store.get(principal.org_id, record_id)


async def _member_key(live: OpenAILive) -> str:
    accounts = live.container.accounts
    admin = await accounts.authenticate(live.key)
    user = await accounts.create_user(
        admin, admin.org, f"member-{time.monotonic_ns()}", Role.MEMBER, None
    )
    return str((await accounts.create_key_for(admin, admin.org, user.id, "member")).secret)


async def _other_org_key(live: OpenAILive) -> str:
    accounts = live.container.accounts
    _, issued = await accounts.create_org(
        await accounts.operator(), f"other-{time.monotonic_ns()}", "stranger", None
    )
    return str(issued.secret)
