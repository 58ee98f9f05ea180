"""Model routing end to end: a routed `openai-compatible` model on fake upstreams over real
HTTP (tests/fake_upstream.py) that answer 500, 429 with Retry-After, hang, drop the
connection after N tokens or send an error event mid-stream, through the 1min.ai and the
OpenAI dialects, streaming and not. Each test asserts the client's reply, the record (text,
model, route, status), what was charged, and which upstreams were called how often."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest

from tests.fake_upstream import Disconnect, ErrorEvent, FakeUpstream, Hang, Reply, Status
from tests.helpers import make_settings, running_app, sse_events
from threadline.container import Container
from threadline.domain.entities import RecordStatus, RouteSegment
from threadline.settings import Credits, ModelConfig

ROUTED = Credits(input_per_1k=1000, output_per_1k=2000)  # 1 credit / input token, 2 / output
BACKUP = Credits(input_per_1k=3000, output_per_1k=5000)
CUT = "one two three four five"  # what Disconnect/ErrorEvent(after_chunks=5) stream first
CONTINUED = "four five six seven eight."  # the next upstream repeats two words, then goes on


@pytest.fixture
def ups() -> AsyncIterator[dict[str, FakeUpstream]]:
    servers = {name: FakeUpstream().start() for name in ("a", "b", "c")}
    for server in servers.values():
        server.default = Reply("Hello from the fake upstream.")
    yield servers  # type: ignore[misc]
    for server in servers.values():
        server.stop()


@pytest.fixture
def sqlite_url(tmp_path: Path, migrated_sqlite: Path) -> str:
    path = tmp_path / "routing.db"
    path.write_bytes(migrated_sqlite.read_bytes())
    return f"sqlite+aiosqlite:///{path}"


def _models(ups: dict[str, FakeUpstream], **routing: Any) -> dict[str, ModelConfig]:
    weights = routing.pop("weights", (3, 1))
    routed = ModelConfig(
        provider="openai-compatible",
        credits=ROUTED,
        upstreams=[
            {"base_url": ups["a"].url, "name": "a", "weight": weights[0]},
            {"base_url": ups["b"].url, "name": "b", "weight": weights[1]},
        ],
        **routing,
    )
    backup = ModelConfig(provider="openai-compatible", base_url=ups["c"].url, credits=BACKUP)
    return {"routed": routed, "backup": backup}


@asynccontextmanager
async def _app(
    tmp_path: Path, url: str, ups: dict[str, FakeUpstream], **routing: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str], Container]]:
    settings = make_settings(
        tmp_path, url, models=_models(ups, **routing), default_model="routed", aliases={}
    )
    async with running_app(settings, None) as running:
        yield running


async def _ask(
    client: httpx.AsyncClient, headers: dict[str, str], dialect: str, stream: bool
) -> tuple[int, str, str, UUID | None]:
    """(status, the reply's text, the model the response names, the record id)."""
    if dialect == "oneminai":
        body = {"model": "routed", "promptObject": {"prompt": "count"}}
        suffix = "?isStreaming=true" if stream else ""
        r = await client.post(f"/api/chat-with-ai{suffix}", headers=headers, json=body)
        if r.status_code != 200:
            return r.status_code, r.text, "", None
        if stream:
            events = sse_events(r.text)
            text = "".join(data["content"] for name, data in events if name == "content")
            results = [data["aiRecord"] for name, data in events if name == "result"]
            assert results, r.text
            return r.status_code, text, results[0]["model"], UUID(r.headers["x-ai-record-id"])
        record = r.json()["aiRecord"]
        text = record["aiRecordDetail"]["resultObject"][0]
        return r.status_code, text, record["model"], UUID(record["uuid"])
    body = {"model": "routed", "messages": [{"role": "user", "content": "count"}]}
    r = await client.post("/v1/chat/completions", headers=headers, json={**body, "stream": stream})
    if r.status_code != 200:
        return r.status_code, r.text, "", None
    if not stream:
        answer = r.json()
        return 200, answer["choices"][0]["message"]["content"], answer["model"], None
    chunks = [json.loads(b[6:]) for b in r.text.split("\n\n") if b.startswith("data: {")]
    assert all("error" not in c for c in chunks), r.text
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert len({c["model"] for c in chunks}) == 1, "every chunk names the same model"
    return 200, text, chunks[0]["model"], None


async def _last_record(container: Container, record_id: UUID | None) -> Any:
    from sqlalchemy import select

    from threadline.storage.tables import ai_records

    async with container.db.read() as conn:
        query = select(ai_records.c.id, ai_records.c.org_id).order_by(ai_records.c.created_at)
        rows = (await conn.execute(query)).all()
    found = {row.id: row.org_id for row in rows}
    chosen = record_id or rows[-1].id
    return await container.record_store.get(found[chosen], chosen)


def _words(messages: list[dict[str, Any]]) -> int:
    return max(1, sum(len(str(m["content"]).split()) for m in messages))


# ---- retries before the first token


async def test_a_500_is_retried_on_the_other_upstream_and_only_the_answer_is_charged(
    tmp_path, db_url, ups
):
    ups["a"].enqueue(Status(500, {"error": {"message": "boom"}}))
    async with _app(tmp_path, db_url, ups) as (client, headers, container):
        status, text, model, record_id = await _ask(client, headers, "oneminai", False)
        record = await _last_record(container, record_id)
    assert (status, text, model) == (200, "Hello from the fake upstream.", "routed")
    assert (len(ups["a"].requests), len(ups["b"].requests), len(ups["c"].requests)) == (1, 1, 0)
    asked = _words(ups["b"].requests[0]["messages"])
    assert (record.input_tokens, record.output_tokens) == (asked, 5)  # b's counts only
    assert record.credits == asked * 1 + 5 * 2
    assert record.status is RecordStatus.SUCCESS
    assert record.route == (RouteSegment("routed", "b", len(text)),)


async def test_429_waits_its_retry_after_then_the_same_upstream_answers(tmp_path, sqlite_url, ups):
    ups["a"].enqueue(Status(429, {"error": {"message": "slow down"}}, {"Retry-After": "0.4"}))
    async with _app(
        tmp_path, sqlite_url, ups, weights=(1, 1), retry={"attempts": 2, "backoff_ms": 0}
    ) as (client, headers, _):
        ups["b"].default = Status(503, None, {"Retry-After": "3600"})  # past the cap: not again
        started = time.monotonic()
        status, text, _, _ = await _ask(client, headers, "openai", False)
    assert (status, text) == (200, "Hello from the fake upstream.")
    assert time.monotonic() - started >= 0.4  # the upstream asked for 0.4 s
    # a (429), b (503, asking for an hour), then a again after its 0.4 s
    assert (len(ups["a"].requests), len(ups["b"].requests)) == (2, 1)


async def test_a_hang_before_the_first_byte_moves_on_to_the_other_upstream(
    tmp_path, sqlite_url, ups
):
    ups["a"].enqueue(Hang(10))
    async with _app(
        tmp_path, sqlite_url, ups, retry={"attempts": 1}, timeout={"first_token_seconds": 2}
    ) as (client, headers, _):
        started = time.monotonic()
        status, text, _, _ = await _ask(client, headers, "oneminai", True)
    assert (status, text) == (200, "Hello from the fake upstream.")
    assert time.monotonic() - started < 5
    assert (len(ups["a"].requests), len(ups["b"].requests)) == (1, 1)


@pytest.mark.parametrize("refused", [400, 401, 404, 422])
async def test_a_refusal_of_the_request_is_reported_not_retried_nor_fallen_back(
    tmp_path, sqlite_url, ups, refused
):
    ups["a"].enqueue(Status(refused, {"error": {"message": "bad request here"}}))
    async with _app(tmp_path, sqlite_url, ups, fallbacks=["backup"]) as running:
        client, headers, container = running
        status, body, _, _ = await _ask(client, headers, "openai", False)
        record = await _last_record(container, None)
    assert status == 502 and f"upstream returned {refused}" in body, body
    assert record.status is RecordStatus.FAILED and record.credits == 0
    assert (len(ups["a"].requests), len(ups["b"].requests), len(ups["c"].requests)) == (1, 0, 0)


# ---- fallbacks


@pytest.mark.parametrize(("dialect", "stream"), [("openai", True), ("oneminai", False)])
async def test_when_every_upstream_fails_the_fallback_answers_at_its_own_prices(
    tmp_path, db_url, ups, dialect, stream
):
    ups["a"].default = Status(500)
    ups["b"].enqueue(Status(429, None, {"Retry-After": "3600"}))  # longer than the cap
    ups["c"].default = Reply("The backup answers.")
    async with _app(tmp_path, db_url, ups, fallbacks=["backup"]) as (client, headers, container):
        status, text, model, record_id = await _ask(client, headers, dialect, stream)
        record = await _last_record(container, record_id)
    assert (status, text, model) == (200, "The backup answers.", "backup")
    assert (len(ups["a"].requests), len(ups["b"].requests), len(ups["c"].requests)) == (2, 1, 1)
    asked = _words(ups["c"].requests[0]["messages"])
    assert record.model == "backup" and record.status is RecordStatus.SUCCESS
    assert (record.input_tokens, record.output_tokens) == (asked, 3)
    assert record.credits == asked * 3 + 3 * 5  # the backup's prices, nothing for the failures
    assert record.route == (RouteSegment("backup", None, len(text)),)


# ---- continue on failure


@pytest.mark.parametrize(
    "fault", [Disconnect, ErrorEvent, Hang], ids=["reset", "error-event", "idle-timeout"]
)
@pytest.mark.parametrize(
    ("dialect", "stream"),
    [("oneminai", True), ("oneminai", False), ("openai", True), ("openai", False)],
)
async def test_a_reply_cut_after_5_tokens_continues_on_the_next_upstream(
    tmp_path, sqlite_url, ups, fault, dialect, stream
):
    ups["a"].enqueue(fault(after_chunks=5))
    ups["b"].enqueue(Reply(CONTINUED))
    idle = {"idle_seconds": 0.5}  # a Hang after 5 tokens sends nothing more
    async with _app(tmp_path, sqlite_url, ups, continue_on_failure=True, timeout=idle) as running:
        client, headers, container = running
        status, text, model, record_id = await _ask(client, headers, dialect, stream)
        record = await _last_record(container, record_id)
    whole = "one two three four five six seven eight."
    assert (status, text, model) == (200, whole, "routed")
    assert len(text.split()) == len(set(text.split())), "no word repeated"
    continued = ups["b"].requests[0]["messages"]
    assert continued[-2] == {"role": "assistant", "content": CUT}
    assert "Continue it exactly" in continued[-1]["content"]
    assert record.status is RecordStatus.SUCCESS and record.result_text == whole
    assert record.route == (
        RouteSegment("routed", "a", len(CUT)),
        RouteSegment("routed", "b", len(whole) - len(CUT)),
    )
    asked_b = _words(continued)
    assert record.output_tokens > 5  # a's words (estimated) and b's 5
    assert record.input_tokens > asked_b  # both attempts' prompts
    assert record.credits == record.input_tokens + 2 * record.output_tokens


async def test_continuing_on_a_fallback_model_from_the_text_so_far(tmp_path, db_url, ups):
    ups["a"].enqueue(Disconnect(after_chunks=5))
    ups["b"].default = Status(503)
    ups["c"].enqueue(Reply(CONTINUED))
    async with _app(
        tmp_path, db_url, ups, fallbacks=["backup"], continue_on_failure=True
    ) as running:
        client, headers, container = running
        status, text, model, record_id = await _ask(client, headers, "oneminai", True)
        record = await _last_record(container, record_id)
    assert (status, text, model) == (200, "one two three four five six seven eight.", "backup")
    assert [(s.model, s.upstream) for s in record.route] == [("routed", "a"), ("backup", None)]
    assert record.status is RecordStatus.SUCCESS and record.model == "backup"


async def test_without_continue_on_failure_a_cut_reply_fails_with_its_partial_text(
    tmp_path, sqlite_url, ups
):
    ups["a"].enqueue(Disconnect(after_chunks=5))
    async with _app(tmp_path, sqlite_url, ups) as (client, headers, container):
        r = await client.post(
            "/api/chat-with-ai?isStreaming=true",
            headers=headers,
            json={"model": "routed", "promptObject": {"prompt": "count"}},
        )
        record = await _last_record(container, UUID(r.headers["x-ai-record-id"]))
    assert [name for name, _ in sse_events(r.text)][-1] == "error"
    assert record.status is RecordStatus.FAILED and record.result_text == CUT
    assert len(ups["b"].requests) == 0


# ---- circuit breaking, state, balancing, queueing


async def test_when_every_attempt_fails_before_a_word_nothing_is_charged(tmp_path, db_url, ups):
    ups["a"].default = Status(500)
    ups["b"].default = Status(502)
    async with _app(tmp_path, db_url, ups, retry={"attempts": 2, "backoff_ms": 0}) as running:
        client, headers, container = running
        status, body, _, _ = await _ask(client, headers, "oneminai", False)
        record = await _last_record(container, None)
        me = (await client.get("/api/me", headers=headers)).json()["user"]
    assert status == 502 and "upstream returned 502" in body, body  # the last failure
    assert (len(ups["a"].requests), len(ups["b"].requests)) == (2, 2)
    assert record.status is RecordStatus.FAILED and record.credits == 0
    assert me["usedCredit"] == 0


async def test_the_circuit_stops_calling_a_broken_upstream_and_says_so(tmp_path, sqlite_url, ups):
    ups["a"].default = Status(500)
    async with _app(
        tmp_path, sqlite_url, ups, weights=(1, 1), circuit={"failures": 2, "open_seconds": 60}
    ) as (client, headers, _):
        for _ in range(8):
            status, text, _, _ = await _ask(client, headers, "openai", False)
            assert (status, text) == (200, "Hello from the fake upstream.")
        state = (await client.get("/api/admin/upstreams", headers=headers)).json()
        metrics = (await client.get("/metrics")).text
    assert len(ups["a"].requests) == 2 and len(ups["b"].requests) == 8
    routed = next(m for m in state["models"] if m["model"] == "routed")
    a, b = routed["upstreams"]
    assert (a["name"], a["circuit"], a["failures"], a["requests"]) == ("a", "open", 2, 2)
    assert (b["name"], b["circuit"], b["failures"], b["requests"]) == ("b", "closed", 0, 8)
    assert 'threadline_upstream_circuit{model="routed",state="open",upstream="a"} 1.0' in metrics
    assert 'threadline_upstream_requests_total{model="routed",upstream="b"} 8.0' in metrics


async def test_the_upstreams_endpoint_is_for_admins_only(tmp_path, sqlite_url, ups):
    async with _app(tmp_path, sqlite_url, ups) as (client, headers, _):
        made = await client.post(
            "/api/admin/users", headers=headers, json={"name": "member", "role": "MEMBER"}
        )
        user_id = made.json()["user"]["userId"]
        key = await client.post("/api/admin/keys", headers=headers, json={"userId": user_id})
        member = {"Authorization": f"Bearer {key.json()['apiKey']['key']}"}
        r = await client.get("/api/admin/upstreams", headers=member)
    assert r.status_code == 403


async def test_requests_spread_by_weight(tmp_path, sqlite_url, ups):
    async with _app(tmp_path, sqlite_url, ups) as (client, headers, _):
        for _ in range(40):
            assert (await _ask(client, headers, "openai", False))[0] == 200
    share = len(ups["a"].requests) / 40
    assert abs(share - 0.75) <= 0.05, share


async def test_max_concurrency_queues_then_refuses_with_retry_after(tmp_path, sqlite_url, ups):
    ups["a"].default = Reply(tokens=10, delay=0.15)
    models = _models(ups, timeout={"queue_seconds": 0.3})
    models["routed"].upstreams[0].max_concurrency = 1
    models["routed"].upstreams.pop()
    settings = make_settings(
        tmp_path, sqlite_url, models=models, default_model="routed", aliases={}
    )
    async with running_app(settings, None) as (client, headers, _):
        first, second = await asyncio.gather(
            _ask(client, headers, "openai", False), _ask(client, headers, "openai", False)
        )
    statuses = sorted([first[0], second[0]])
    assert statuses == [200, 503], (first, second)
    refused = first if first[0] == 503 else second
    assert "max_concurrency" in refused[1]
    assert len(ups["a"].requests) == 1


async def test_after_open_seconds_one_probe_closes_the_circuit_again(tmp_path, sqlite_url, ups):
    ups["a"].default = Status(500)
    async with _app(
        tmp_path, sqlite_url, ups, weights=(100, 1), circuit={"failures": 1, "open_seconds": 0.3}
    ) as (client, headers, _):
        for _ in range(2):  # a fails and opens; then it is skipped
            assert (await _ask(client, headers, "openai", False))[0] == 200
        assert (len(ups["a"].requests), len(ups["b"].requests)) == (1, 2)
        await asyncio.sleep(0.35)
        ups["a"].default = Reply("a is back.")
        status, text, _, _ = await _ask(client, headers, "openai", False)  # the probe
        state = (await client.get("/api/admin/upstreams", headers=headers)).json()
    assert (status, text) == (200, "a is back.")
    a = state["models"][0]["upstreams"][0]
    assert (a["name"], a["circuit"], a["requests"], a["failure_streak"]) == ("a", "closed", 2, 0)
