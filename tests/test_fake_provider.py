"""FakeModel: the scripted in-process ChatModel that service tests lean on."""

from __future__ import annotations

import asyncio

import pytest

from threadline.domain.errors import ModelTimeout
from threadline.domain.events import Citation, ReplyEvent, TextDelta, Usage
from threadline.domain.ports import ChatMessage, ModelRequest
from threadline.providers.fake import FakeModel
from threadline.settings import ModelConfig


def ask(text: str) -> ModelRequest:
    return ModelRequest(messages=[ChatMessage("system", "Be kind."), ChatMessage("user", text)])


async def collect(model: FakeModel, request: ModelRequest) -> list[ReplyEvent]:
    return [event async for event in model.stream(request)]


async def test_scripts_are_used_one_per_call_and_record_requests():
    model = FakeModel()
    model.enqueue(["Hello", " world", Usage(5, 2)])
    model.enqueue([Citation("doc-1", "Manual"), "Second"])
    first, second = ask("one"), ask("two")

    assert await collect(model, first) == [TextDelta("Hello"), TextDelta(" world"), Usage(5, 2)]
    assert await collect(model, second) == [
        Citation("doc-1", "Manual"),
        TextDelta("Second"),
        Usage(input_tokens=3, output_tokens=1, estimated=True),
    ]
    assert model.requests == [first, second]


async def test_an_exception_in_the_script_is_raised_after_the_deltas_before_it():
    model = FakeModel()
    model.enqueue(["partial", ModelTimeout("too slow")])
    seen: list[ReplyEvent] = []

    with pytest.raises(ModelTimeout, match="too slow"):
        async for event in model.stream(ask("x")):
            seen.append(event)

    assert seen == [TextDelta("partial")]


async def test_without_a_script_it_echoes_the_last_user_message():
    events = await collect(FakeModel(), ask("ping pong"))

    assert events == [
        TextDelta("ping"),
        TextDelta(" pong"),
        Usage(input_tokens=4, output_tokens=2, estimated=True),
    ]


async def test_configured_replies_come_in_turn():
    config = ModelConfig(provider="fake", replies=["Canned one", "echo"])
    model = FakeModel("demo", config)

    texts = []
    for prompt in ("a", "b", "c"):
        events = await collect(model, ask(prompt))
        texts.append("".join(e.text for e in events if isinstance(e, TextDelta)))

    assert texts == ["Canned one", "b", "Canned one"]


async def test_delay_and_gate_pace_the_stream():
    model = FakeModel()
    model.delay = 0.05
    gate = asyncio.Event()
    model.enqueue(["a", gate, "b"])
    stream = model.stream(ask("x"))

    assert await anext(stream) == TextDelta("a")
    pending = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.1)
    assert not pending.done()
    gate.set()
    assert await pending == TextDelta("b")
    assert [event async for event in stream] == [Usage(3, 2, estimated=True)]
