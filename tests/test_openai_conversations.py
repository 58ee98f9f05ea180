"""OpenAI's Conversations API (`/v1/conversations` and items) on the one store, judged by the
official `openai` SDK on a real uvicorn server, on SQLite and PostgreSQL: an OpenAI
conversation is a Threadline conversation, continued through the 1min.ai dialect with one
history; responses append their input and output items to it; images and files as input."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from uuid import UUID

import httpx
import openai
import pytest
from PIL import Image
from reportlab.pdfgen import canvas

from tests.openai_live import VISION, OpenAILive, openai_live
from threadline.domain.events import Usage

MODEL = "gpt-4o-mini"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OpenAILive]:
    with openai_live(request, tmp_path_factory.mktemp("conversations")) as running:
        yield running


def sent(live: OpenAILive, model: str = MODEL) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in live.fakes[model].requests[-1].messages]


def texts(items: object) -> list[tuple[str, str]]:
    return [(i.role, i.content[0].text) for i in items.data]  # type: ignore[attr-defined]


def test_conversation_crud_and_items(live):
    client = live.client()
    conversation = client.conversations.create(
        metadata={"topic": "demo"},
        items=[
            {"type": "message", "role": "system", "content": "You are a pirate."},
            {"type": "message", "role": "user", "content": "Ahoy"},
        ],
    )
    assert conversation.id.startswith("conv_") and conversation.object == "conversation"
    assert conversation.metadata == {"topic": "demo"}
    assert client.conversations.retrieve(conversation.id).metadata == {"topic": "demo"}
    updated = client.conversations.update(conversation.id, metadata={"topic": "sea"})
    assert updated.metadata == {"topic": "sea"}
    added = client.conversations.items.create(
        conversation.id,
        items=[
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Arr"}],
            },
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Gold?"}],
            },
        ],
    )
    assert [i.role for i in added.data] == ["assistant", "user"]
    listed = client.conversations.items.list(conversation.id, order="asc")
    assert texts(listed) == [
        ("system", "You are a pirate."),
        ("user", "Ahoy"),
        ("assistant", "Arr"),
        ("user", "Gold?"),
    ]
    page = client.conversations.items.list(conversation.id, limit=3)  # newest first
    assert [t for _, t in texts(page)] == ["Gold?", "Arr", "Ahoy"] and page.has_more
    assert page.first_id == page.data[0].id and page.last_id == page.data[-1].id
    rest = client.conversations.items.list(conversation.id, limit=3, after=page.last_id)
    assert texts(rest) == [("system", "You are a pirate.")] and not rest.has_more
    one = client.conversations.items.retrieve(added.data[0].id, conversation_id=conversation.id)
    assert one.content[0].text == "Arr" and one.content[0].type == "output_text"
    client.conversations.items.delete(added.data[0].id, conversation_id=conversation.id)
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve(added.data[0].id, conversation_id=conversation.id)
    deleted = client.conversations.delete(conversation.id)
    assert deleted.deleted and deleted.id == conversation.id
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conversation.id)


def test_responses_append_to_a_conversation_that_the_1minai_dialect_continues(live):
    client = live.client()
    conversation = client.conversations.create(
        items=[{"type": "message", "role": "user", "content": "My name is Ada."}]
    )
    live.fakes[MODEL].enqueue(["Hello Ada."])
    first = client.responses.create(model=MODEL, input="Greet me.", conversation=conversation.id)
    assert first.conversation.id == conversation.id
    assert sent(live) == [("user", "My name is Ada."), ("user", "Greet me.")]
    # the same conversation, through the 1min.ai dialect: the whole history, one store
    uuid = conversation.id.removeprefix("conv_")
    listed = live.get("/api/conversations", limit=100).json()["conversations"]
    assert any(c["uuid"].replace("-", "") == uuid for c in listed)
    live.fakes[MODEL].enqueue(["Your name is Ada."])
    body = {
        "type": "UNIFY_CHAT_WITH_AI",
        "model": MODEL,
        "promptObject": {
            "prompt": "What is my name?",
            "conversationId": str(UUID(hex=uuid)),
            "settings": {"historySettings": {"isMixed": True, "historyMessageLimit": 50}},
        },
    }
    r = live.post("/api/chat-with-ai", body)
    assert r.status_code == 200, r.text
    assert sent(live) == [
        ("user", "My name is Ada."),
        ("user", "Greet me."),
        ("assistant", "Hello Ada."),
        ("user", "What is my name?"),
    ]
    # and back in OpenAI's API: the 1min.ai exchange is in the items and the history
    items = client.conversations.items.list(conversation.id, order="asc")
    assert texts(items) == [
        ("user", "My name is Ada."),
        ("user", "Greet me."),
        ("assistant", "Hello Ada."),
        ("user", "What is my name?"),
        ("assistant", "Your name is Ada."),
    ]
    assert items.data[2].id == first.output[0].id  # the response's output item is the message
    live.fakes[MODEL].enqueue(["Goodbye."])
    client.responses.create(model=MODEL, input="Bye", conversation={"id": conversation.id})
    assert sent(live)[-3:] == [
        ("user", "What is my name?"),
        ("assistant", "Your name is Ada."),
        ("user", "Bye"),
    ]
    detail = live.get(f"/api/conversations/{body['promptObject']['conversationId']}").json()
    assert detail["conversation"]["messageCount"] == 7


def test_a_response_without_a_conversation_is_a_threadline_conversation_too(live):
    client = live.client()
    live.fakes[MODEL].enqueue(["Sure."])
    response = client.responses.create(model=MODEL, input="A standalone question")
    assert response.conversation is None
    listed = live.get("/api/conversations", limit=100).json()["conversations"]
    mine = [c for c in listed if c["title"] == "A standalone question"]
    assert len(mine) == 1 and mine[0]["type"] == "OPENAI_RESPONSES"


def test_unknown_conversation_and_another_orgs_are_not_found(live):
    client = live.client()
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=MODEL, input="Hi", conversation="conv_" + "0" * 32)
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.list("conv_nope")
    issued = live.server.call(_other_org_key(live))
    conversation = client.conversations.create(items=[])
    stranger = openai.OpenAI(base_url=f"{live.base_url}/v1", api_key=issued, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        stranger.conversations.retrieve(conversation.id)
    with pytest.raises(openai.NotFoundError):
        stranger.responses.create(model=MODEL, input="Hi", conversation=conversation.id)


async def _other_org_key(live: OpenAILive) -> str:
    accounts = live.container.accounts
    _, issued = await accounts.create_org(
        await accounts.operator(), f"other-{time.monotonic_ns()}", "stranger", None
    )
    return str(issued.secret)


def test_input_image_goes_to_a_vision_model(live):
    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), (200, 0, 0)).save(buffer, "PNG")
    data = buffer.getvalue()
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    live.fakes[VISION].enqueue(["A red square."])
    response = live.client().responses.create(
        model=VISION,
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": url, "detail": "auto"},
                ],
            }
        ],
    )
    assert response.output_text == "A red square."
    last = live.fakes[VISION].requests[-1].messages[-1]
    assert last.content == "What is this?" and [i.data for i in last.images] == [data]


def make_pdf(pages: list[str]) -> bytes:
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer)
    for text in pages:
        pdf.drawString(72, 720, text)
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def test_input_file_is_answered_from_the_document_with_file_citations(live):
    pages = ["Welcome to the guide.", "Expense reports are due on the fifth working day."]
    files = {"asset": ("guide.pdf", make_pdf(pages), "application/pdf")}
    r = httpx.post(f"{live.base_url}/api/assets", headers=live.headers, files=files, timeout=60)
    assert r.status_code == 200, r.text
    asset_id = r.json()["asset"]["uuid"]
    live.fakes[MODEL].enqueue(["By the fifth working day.", Usage(40, 6)])
    response = live.client().responses.create(
        model=MODEL,
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_file", "file_id": asset_id},
                    {"type": "input_text", "text": "When are expense reports due?"},
                ],
            }
        ],
    )
    notes = response.output[0].content[0].annotations
    assert notes and notes[0].type == "file_citation"
    assert notes[0].file_id == asset_id and notes[0].filename == "guide.pdf"
    system = live.fakes[MODEL].requests[-1].messages[0]
    assert system.role == "system" and "fifth working day" in system.content
    with pytest.raises(openai.BadRequestError) as caught:
        live.client().responses.create(
            model=MODEL,
            input=[
                {
                    "role": "user",
                    "content": [{"type": "input_file", "file_url": "https://example.com/a.pdf"}],
                }
            ],
        )
    assert "file_url" in caught.value.body["message"]
