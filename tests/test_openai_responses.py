"""OpenAI's Responses API (`/v1/responses`), judged by the official `openai` SDK (sync and
async, streaming and not, background and resume) against a real uvicorn server, on SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from uuid import UUID

import openai
import pytest

from tests.openai_live import OpenAILive, openai_live
from threadline.domain.errors import ModelError
from threadline.domain.events import Usage

MODEL = "gpt-4o-mini"  # priced 1 credit per input token, 2 per output token


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OpenAILive]:
    with openai_live(request, tmp_path_factory.mktemp("responses")) as running:
        yield running


def sent(live: OpenAILive) -> list[tuple[str, str]]:
    """The messages the model was given last, as (role, text)."""
    return [(m.role, m.content) for m in live.fakes[MODEL].requests[-1].messages]


def test_create_with_text_input_instructions_and_settings(live):
    live.fakes[MODEL].enqueue(["Hello", " there!", Usage(21, 3)])
    before = live.used_credit()
    response = live.client().responses.create(
        model=MODEL,
        input="Say hi",
        instructions="You are terse.",
        max_output_tokens=50,
        temperature=0.3,
        top_p=0.9,
        metadata={"ticket": "42"},
    )
    assert response.output_text == "Hello there!"
    assert response.status == "completed" and response.object == "response"
    assert response.id.startswith("resp_") and response.model == MODEL
    assert response.output[0].type == "message" and response.output[0].role == "assistant"
    usage = response.usage
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (21, 3, 24)
    assert response.metadata == {"ticket": "42"} and response.instructions == "You are terse."
    assert live.used_credit() - before == 21 + 2 * 3
    assert sent(live) == [("system", "You are terse."), ("user", "Say hi")]
    request = live.fakes[MODEL].requests[-1]
    assert (request.max_tokens, request.temperature, request.top_p) == (50, 0.3, 0.9)
    again = live.client().responses.retrieve(response.id)
    assert again.output_text == "Hello there!" and again.status == "completed"
    assert again.usage.total_tokens == 24


def test_previous_response_id_chains_and_instructions_do_not_carry_over(live):
    client = live.client()
    live.fakes[MODEL].enqueue(["Nice to meet you, Ada."])
    first = client.responses.create(model=MODEL, input="I am Ada.", instructions="Be kind.")
    live.fakes[MODEL].enqueue(["You are Ada."])
    second = client.responses.create(model=MODEL, input="Who am I?", previous_response_id=first.id)
    assert second.previous_response_id == first.id
    assert sent(live) == [
        ("user", "I am Ada."),
        ("assistant", "Nice to meet you, Ada."),
        ("user", "Who am I?"),
    ]
    # chaining onto the first again reads the path to it, not the later exchange
    live.fakes[MODEL].enqueue(["Grace, then."])
    client.responses.create(model=MODEL, input="No, I am Grace.", previous_response_id=first.id)
    assert sent(live) == [
        ("user", "I am Ada."),
        ("assistant", "Nice to meet you, Ada."),
        ("user", "No, I am Grace."),
    ]
    # and nothing was deleted: the second response is still there
    assert client.responses.retrieve(second.id).output_text == "You are Ada."


def test_input_items_are_sent_after_history_and_listed(live):
    client = live.client()
    live.fakes[MODEL].enqueue(["4"])
    response = client.responses.create(
        model=MODEL,
        input=[
            {"role": "developer", "content": "Answer with a number."},
            {"role": "user", "content": "1+1?"},
            {"role": "assistant", "content": [{"type": "output_text", "text": "2"}]},
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "2+2?"}],
            },
        ],
    )
    assert response.output_text == "4"
    assert sent(live) == [
        ("system", "Answer with a number."),
        ("user", "1+1?"),
        ("assistant", "2"),
        ("user", "2+2?"),
    ]
    items = client.responses.input_items.list(response.id, order="asc")
    assert [(i.role, i.content[0].text) for i in items.data] == [
        ("system", "Answer with a number."),
        ("user", "1+1?"),
        ("assistant", "2"),
        ("user", "2+2?"),
    ]
    page = client.responses.input_items.list(response.id, limit=2)  # newest first
    assert [i.content[0].text for i in page.data] == ["2+2?", "2"] and page.has_more
    rest = client.responses.input_items.list(response.id, limit=2, after=page.data[-1].id)
    assert [i.content[0].text for i in rest.data] == ["1+1?", "Answer with a number."]
    assert not rest.has_more and rest.first_id == rest.data[0].id


def test_sync_stream_has_the_real_event_sequence(live):
    live.fakes[MODEL].enqueue(["One", " two", " three", Usage(5, 3)])
    with live.client().responses.stream(model=MODEL, input="Count") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    numbers = [e.sequence_number for e in events]
    assert numbers == sorted(set(numbers)) and numbers[0] == 0
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == (
        "One two three"
    )
    assert final.output_text == "One two three" and final.usage.output_tokens == 3
    assert events[0].response.id == final.id and events[0].response.status == "in_progress"


async def test_async_create_and_stream(live):
    live.fakes[MODEL].enqueue(["async", " reply", Usage(4, 2)])
    live.fakes[MODEL].enqueue(["streamed", " async"])
    async with live.async_client() as client:
        response = await client.responses.create(model=MODEL, input="Hi")
        stream = await client.responses.create(
            model=MODEL, input="Again", previous_response_id=response.id, stream=True
        )
        events = [event async for event in stream]
    assert response.output_text == "async reply" and response.usage.total_tokens == 6
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "streamed async"


def test_max_output_tokens_makes_an_incomplete_response(live):
    live.fakes[MODEL].enqueue(["Once upon", Usage(3, 2, finish_reason="length")])
    response = live.client().responses.create(model=MODEL, input="Tell", max_output_tokens=2)
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "Once upon"
    live.fakes[MODEL].enqueue(["Cut", Usage(3, 1, finish_reason="length")])
    with live.client().responses.stream(model=MODEL, input="Tell", max_output_tokens=1) as stream:
        kinds = [e.type for e in stream]
    assert kinds[-1] == "response.incomplete"


def test_background_runs_on_and_resumes_from_any_event(live):
    client = live.client()
    gate = asyncio.Event()
    live.fakes[MODEL].enqueue(["first", gate, " second", " third"])
    started = client.responses.create(model=MODEL, input="Go", background=True)
    assert started.status in ("queued", "in_progress") and started.background
    # the first delta, then the run waits on the gate: a reader resumes live
    stream = client.responses.retrieve(started.id, stream=True, starting_after=1)
    events = iter(stream)
    seen = [next(events) for _ in range(3)]
    assert [e.type for e in seen] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    live.server.call(_open(gate))
    rest = list(events)
    assert rest[-1].type == "response.completed"
    assert rest[-1].response.output_text == "first second third"
    done = _wait_status(client, started.id, "completed")
    assert done.output_text == "first second third"
    # resuming after the first delta's number gives the rest of the text, and the end
    first_delta = seen[-1].sequence_number
    again = list(client.responses.retrieve(started.id, stream=True, starting_after=first_delta))
    text = "".join(e.delta for e in again if e.type == "response.output_text.delta")
    assert text == " second third"
    assert [e.sequence_number for e in again] == sorted(e.sequence_number for e in again)
    assert all(e.sequence_number > first_delta for e in again)
    # after the last event: nothing more
    last = again[-1].sequence_number
    assert list(client.responses.retrieve(started.id, stream=True, starting_after=last)) == []


async def _open(gate: asyncio.Event) -> None:
    gate.set()


def _wait_status(client: openai.OpenAI, response_id: str, status: str) -> object:
    deadline = time.monotonic() + 10
    while True:
        response = client.responses.retrieve(response_id)
        if response.status == status or time.monotonic() > deadline:
            return response
        time.sleep(0.02)


def test_cancel_a_background_response(live):
    client = live.client()
    gate = asyncio.Event()
    live.fakes[MODEL].enqueue(["partial", gate, " never"])
    started = client.responses.create(model=MODEL, input="Go", background=True)
    cancelled = client.responses.cancel(started.id)
    assert cancelled.status == "cancelled"
    assert client.responses.retrieve(started.id).status == "cancelled"
    live.server.call(_open(gate))


def test_delete_and_not_found(live):
    client = live.client()
    response = client.responses.create(model=MODEL, input="Hi")
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_nothing")
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model=MODEL, input="Hi", previous_response_id=response.id)
    assert caught.value.body["type"] == "invalid_request_error"


def test_store_false_is_answered_but_not_kept(live):
    client = live.client()
    live.fakes[MODEL].enqueue(["ephemeral"])
    response = client.responses.create(model=MODEL, input="Hi", store=False)
    assert response.output_text == "ephemeral"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_model_failure_is_a_server_error_and_a_failed_stream(live):
    client = live.client()
    live.fakes[MODEL].enqueue(["partial", ModelError("upstream returned 500")])
    with pytest.raises(openai.InternalServerError) as caught:
        client.responses.create(model=MODEL, input="Hi")
    assert "upstream returned 500" in caught.value.body["message"]
    live.fakes[MODEL].enqueue(["partial", ModelError("upstream dropped")])
    events = list(client.responses.create(model=MODEL, input="Hi", stream=True))
    assert events[-1].type == "response.failed"
    assert events[-1].response.status == "failed"
    assert "upstream dropped" in events[-1].response.error.message


def test_refusals_name_what_is_not_supported(live):
    client = live.client()
    cases = [
        ({"tools": [{"type": "web_search"}]}, "tools"),
        ({"include": ["message.output_text.logprobs"]}, "include"),
        (
            {"input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]},
            "input[0].type",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "input[0].content[0]",
        ),
    ]
    for extra, param in cases:
        body = {"model": MODEL, "input": "Hi", **extra}
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(**body)
        assert caught.value.body["param"] == param, caught.value.body
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input="Hi", extra_body={"frobnicate": 1})
    assert caught.value.body["code"] == "unknown_parameter"
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="gpt-17", input="Hi")
    assert caught.value.body["code"] == "model_not_found"


def test_input_ending_with_an_assistant_item_is_continued_as_sent(live):
    live.fakes[MODEL].enqueue([" world"])
    response = live.client().responses.create(
        model=MODEL,
        input=[
            {"role": "user", "content": "Say hello world"},
            {"role": "assistant", "content": "Hello"},
        ],
    )
    assert response.output_text == " world"
    assert sent(live) == [("user", "Say hello world"), ("assistant", "Hello")]


def test_resume_from_the_stored_record_numbers_events_as_the_live_stream_did(live):
    client = live.client()
    live.fakes[MODEL].enqueue(["alpha", " beta", " gamma"])
    with client.responses.stream(model=MODEL, input="Go") as stream:
        live_events = list(stream)
    response_id = live_events[0].response.id
    # the process no longer holds the run (retention passed, another process, a restart)
    org_id = live.server.call(live.container.accounts.authenticate(live.key)).org_id
    run = live.container.runs.get(org_id, UUID(hex=response_id.removeprefix("resp_")))
    assert run is not None and run.finished
    live.container.runs.forget(run)
    after = live_events[4].sequence_number  # after the first delta ("alpha")
    stored = list(client.responses.retrieve(response_id, stream=True, starting_after=after))
    assert "".join(e.delta for e in stored if e.type == "response.output_text.delta") == (
        " beta gamma"
    )
    closing = [e for e in live_events if e.sequence_number > live_events[6].sequence_number]
    assert [(e.type, e.sequence_number) for e in stored[-len(closing) :]] == [
        (e.type, e.sequence_number) for e in closing
    ]
    assert stored[-1].response.output_text == "alpha beta gamma"


def test_an_in_progress_response_shows_its_text_so_far(live):
    client = live.client()
    gate = asyncio.Event()
    live.fakes[MODEL].enqueue(["so far", gate, " and the rest"])
    started = client.responses.create(model=MODEL, input="Go", background=True)
    deadline = time.monotonic() + 10
    while (now := client.responses.retrieve(started.id)).output_text != "so far":
        assert time.monotonic() < deadline, now
        time.sleep(0.02)
    assert now.status == "in_progress" and now.usage is None
    live.server.call(_open(gate))
    assert _wait_status(client, started.id, "completed").output_text == "so far and the rest"


def test_a_refused_response_stores_no_conversation(live):
    before = live.get("/api/conversations", limit=1).json()["total"]
    with pytest.raises(openai.BadRequestError) as caught:
        live.client().responses.create(model=MODEL, input="Hi", max_output_tokens=10**9)
    assert "context window" in caught.value.body["message"]
    assert live.get("/api/conversations", limit=1).json()["total"] == before
