"""Hostile input never stalls the server: every step whose cost grows with one request's input
grows linearly (twice the input, at most 3 times the time; medians of repeats), and /healthz
answers while the big work runs. Beside these, the loop-lag guard (tests/loop_watch.py)
fails any of them that blocks the app's event loop for more than 250 ms."""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert

from tests.helpers import make_settings
from threadline.container import Container
from threadline.domain.documents import ParsedPage
from threadline.domain.events import Usage
from threadline.domain.ports import ChatMessage
from threadline.ingestion.chunking import chunk_pages
from threadline.ingestion.sandbox import SandboxedParser
from threadline.services.chat_prompt import fit
from threadline.services.links import links_in, videos_in
from threadline.services.memory_rules import extract_facts
from threadline.settings import EmbeddingConfig, Settings
from threadline.storage.search_terms import search_terms
from threadline.storage.tables import messages as message_table

MAX_RATIO = 3.0  # linear is ~2x, quadratic 4x; the margin absorbs GC and cache effects


def words(chars: int) -> str:
    """Unpunctuated text: distinct-ish words, one space apart, no sentence end, no newline."""
    text = " ".join(f"w{i % 9973}x{i % 7}" for i in range(chars // 8 + 1))
    return text[:chars]


def _cpu_seconds(run: Callable[[], Any]) -> float:
    gc.collect()
    gc.disable()  # the collector's passes grow with the whole test process's heap
    try:
        started = time.thread_time()
        run()
        return time.thread_time() - started
    finally:
        gc.enable()


def medians(
    small: Callable[[], Any], big: Callable[[], Any], repeats: int = 5
) -> tuple[float, float]:
    """Median CPU times of this thread (not wall time: the machine may be shared), the two
    sizes measured in turn so that both see the same load."""
    pairs = [(_cpu_seconds(small), _cpu_seconds(big)) for _ in range(repeats)]
    return statistics.median(a for a, _ in pairs), statistics.median(b for _, b in pairs)


async def amedians(
    small: Callable[[], Awaitable[Any]], big: Callable[[], Awaitable[Any]], repeats: int = 3
) -> tuple[float, float]:
    """Median CPU times of this process (the app's threads included; a PostgreSQL server's
    or a parser child's not), the two sizes in turn."""
    pairs = []
    for _ in range(repeats):
        pair = []
        for run in (small, big):
            gc.collect()
            started = time.process_time()
            await run()
            pair.append(time.process_time() - started)
        pairs.append(pair)
    return statistics.median(a for a, _ in pairs), statistics.median(b for _, b in pairs)


def assert_linear(small: float, big: float, what: str) -> None:
    assert big <= MAX_RATIO * small, (
        f"{what}: twice the input took {big / small:.2f}× the time ({small * 1000:.0f} ms → "
        f"{big * 1000:.0f} ms); linear work takes about 2×"
    )


# ---- pure steps, sizes of megabytes


TEXTS: dict[str, Callable[[int], str]] = {
    "unpunctuated": words,
    "one enormous line": lambda n: ("A sentence of some words ends here. " * (n // 36 + 1))[:n],
    "no whitespace": lambda n: "x" * n,
    "spaces runs and lone newlines": lambda n: ("word \n" + " " * 200 + "\n" * 1)[:40] * (n // 40),
}


@pytest.mark.parametrize("shape", list(TEXTS))
def test_chunking_is_linear_and_bounded(shape: str) -> None:
    make = TEXTS[shape]
    small, big = make(1_000_000), make(2_000_000)
    chunks = chunk_pages(1, [ParsedPage(0, big)])
    assert chunks and all(len(c.text) <= 1200 + 150 + 1 for c in chunks)  # size + overlap
    t1, t2 = medians(
        lambda: chunk_pages(1, [ParsedPage(0, small)]), lambda: chunk_pages(1, [ParsedPage(0, big)])
    )
    assert_linear(t1, t2, f"chunking {shape} text")


def test_prompt_fitting_is_linear() -> None:
    def history(count: int) -> list[ChatMessage]:
        return [ChatMessage("user" if i % 2 else "assistant", "word") for i in range(count)]

    small, big = history(100_000), history(200_000)
    kept = fit(big, 100)
    assert kept[-1] is big[-1] and len(kept) < 100
    t1, t2 = medians(lambda: fit(small, 100), lambda: fit(big, 100))
    assert_linear(t1, t2, "fitting a 100k/200k message list")


PROMPT_STEPS: dict[str, Callable[[str], Any]] = {
    "links": links_in,
    "videos": videos_in,
    "memory rules": extract_facts,
    "search terms": search_terms,
}
PROMPTS: dict[str, Callable[[int], str]] = {
    "unpunctuated": words,
    "links": lambda n: (" ".join(f"http://h{i}.example/p" for i in range(n // 20 + 1)))[:n],
    "closing brackets": lambda n: "see http://a.example/" + ")" * n,
    "fillers": lambda n: "i live in x" + " now" * (n // 4) + " y",
    "stop words": lambda n: "the " * (n // 4),
}


@pytest.mark.parametrize("step", list(PROMPT_STEPS))
def test_prompt_scans_are_linear_and_fast(step: str) -> None:
    """A 1 MB prompt of any shape: each scan of it takes well under a second (they run on
    the event loop, or in a thread for the memory rules) and grows linearly."""
    scan = PROMPT_STEPS[step]
    for shape, make in PROMPTS.items():
        small, big = make(500_000), make(1_000_000)
        t1, t2 = medians(lambda s=small: scan(s), lambda b=big: scan(b), repeats=3)  # type: ignore[misc]
        assert t2 < 0.5, f"{step} over a 1 MB {shape} prompt took {t2:.2f} s"
        if t2 > 0.02:  # below that, timer noise decides the ratio
            assert_linear(t1, t2, f"{step} over a {shape} prompt")


def test_links_of_a_hostile_prompt_are_listed_sanely() -> None:
    assert links_in("see http://a.example/x" + ")" * 100_000) == []  # too long for a link
    assert links_in("see (http://a.example/x_(y)).") == ["http://a.example/x_(y)"]
    many = " ".join(f"http://h{i}.example/" for i in range(1000))
    assert len(links_in(many)) == 100  # MAX_LINKS_LISTED


# ---- through the API


async def test_openai_20k_messages_is_linear(client: httpx.AsyncClient, admin: dict[str, str]):
    """The request of issue 12: 20,000 one-word messages (was 48.8 s, quadratic)."""

    def body(count: int) -> dict[str, Any]:
        messages = [
            {"role": "user" if i % 2 == 0 else "assistant", "content": "hi"} for i in range(count)
        ]
        return {"model": "fake", "messages": messages}

    headers = {"Authorization": f"Bearer {admin['API-KEY']}"}
    small, big = body(10_001), body(20_001)

    async def post(payload: dict[str, Any]) -> None:
        r = await client.post("/v1/chat/completions", json=payload, headers=headers)
        assert r.status_code == 200, r.text

    await post(small)  # warm
    t1, t2 = await amedians(lambda: post(small), lambda: post(big), repeats=5)
    assert t2 < 10
    assert_linear(t1, t2, "/v1/chat/completions with 10k/20k messages")


async def test_1mb_prompt_is_linear(client: httpx.AsyncClient, admin: dict[str, str], fakes):
    """A prompt near max_body_bytes, full of links and fillers (memories off: the reply
    is short, the prompt is what is measured)."""

    def prompt(chars: int) -> str:
        return (words(chars // 2) + " " + PROMPTS["links"](chars // 2))[: chars - 2000]

    async def post(text: str) -> None:
        fakes["fake"].enqueue(["ok", Usage(1, 1)])
        payload = {"type": "UNIFY_CHAT_WITH_AI", "model": "fake", "promptObject": {"prompt": text}}
        r = await client.post("/api/chat-with-ai", json=payload, headers=admin)
        assert r.status_code in (200, 422), r.text  # 422: links, when link reading is off

    small, big = prompt(500_000), prompt(1_000_000)
    await post(small)
    t1, t2 = await amedians(lambda: post(small), lambda: post(big))
    assert_linear(t1, t2, "a 0.5/1 MB prompt")


async def test_a_long_reply_streams_linearly(client: httpx.AsyncClient, admin: dict[str, str]):
    """The echo of a long prompt: SSE encoding of a reply of 25k/50k words."""

    async def stream(count: int) -> None:
        text = words(count * 8)
        payload = {"type": "UNIFY_CHAT_WITH_AI", "model": "fake", "promptObject": {"prompt": text}}
        async with client.stream(
            "POST", "/api/chat-with-ai?isStreaming=true", json=payload, headers=admin
        ) as r:
            assert r.status_code == 200
            body = b"".join([chunk async for chunk in r.aiter_raw()])
        assert b"event: done" in body

    await stream(1000)
    t1, t2 = await amedians(lambda: stream(25_000), lambda: stream(50_000), repeats=3)
    assert_linear(t1, t2, "streaming a 25k/50k word reply")


async def test_history_of_5000_stored_messages(
    client: httpx.AsyncClient, admin: dict[str, str], container: Container
):
    """History assembly reads the window, not the conversation: 5,000 stored messages
    cost what 2,500 do."""

    async def conversation(stored: int) -> str:
        r = await client.post(
            "/api/conversations",
            headers=admin,
            json={"title": "long", "type": "CHAT_WITH_AI", "model": "fake"},
        )
        cid = r.json()["conversation"]["uuid"]
        principal = await container.accounts.authenticate(admin["API-KEY"])
        now = datetime.now(UTC)
        rows = [
            {
                "id": uuid.uuid4(),
                "org_id": principal.org_id,
                "conversation_id": uuid.UUID(cid),
                "role": "user" if i % 2 == 0 else "assistant",
                "content": f"message {i} " * 20,
                "model": "fake",
                "status": "SUCCESS",
                "created_at": now,
            }
            for i in range(stored)
        ]
        async with container.db.write() as conn:
            for start in range(0, len(rows), 500):
                await conn.execute(insert(message_table), rows[start : start + 500])
        return cid

    async def chat(cid: str) -> None:
        payload = {
            "type": "UNIFY_CHAT_WITH_AI",
            "model": "fake",
            "promptObject": {
                "prompt": "and now?",
                "conversationId": cid,
                "settings": {"historySettings": {"historyMessageLimit": 100}},
            },
        }
        r = await client.post("/api/chat-with-ai", json=payload, headers=admin)
        assert r.status_code == 200, r.text

    small, big = await conversation(2_500), await conversation(5_000)
    await chat(small)
    t1, t2 = await amedians(lambda: chat(small), lambda: chat(big))
    assert_linear(t1, t2 / 2 if t2 > 2 * t1 else t1, "history of 2,500/5,000 messages")
    assert t2 < 2 * max(t1, 0.05), f"5,000 stored messages: {t2:.2f} s vs {t1:.2f} s for 2,500"
    r = await client.get(f"/api/conversations/{big}/messages", headers=admin)
    assert r.status_code in (200, 404)


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    """Without embeddings: the local model costs the same per chunk whatever the text, and
    takes minutes for megabytes on a shared machine (bench/stall.py measures it)."""
    return make_settings(tmp_path, db_url, embeddings=EmbeddingConfig(provider="none"))


async def test_ingestion_is_linear_and_healthz_answers_meanwhile(
    client: httpx.AsyncClient, admin: dict[str, str]
):
    """Unpunctuated uploads of 1 and 2 MB through the whole path (upload, parse in the
    sandbox, chunk, index) while /healthz is polled."""
    key = {"API-KEY": admin["API-KEY"]}
    latencies: list[float] = []
    stop = asyncio.Event()

    async def poll() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            assert (await client.get("/healthz")).status_code == 200
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)

    async def ingest(chars: int) -> None:
        files = {"asset": ("long.txt", words(chars).encode(), "text/plain")}
        r = await client.post("/api/assets", headers=key, files=files)
        assert r.status_code == 200, r.text
        asset = r.json()["asset"]
        for _ in range(1200):
            r = await client.get(f"/api/assets/{asset['uuid']}", headers=key)
            if r.json()["asset"]["status"] != "RUNNING":
                break
            await asyncio.sleep(0.05)
        assert r.json()["asset"]["status"] == "COMPLETE", r.json()

    poller = asyncio.create_task(poll())
    try:
        await ingest(100_000)  # warm: the sandbox child
        t1, t2 = await amedians(lambda: ingest(1_000_000), lambda: ingest(2_000_000))
    finally:
        stop.set()
        await poller
    assert_linear(t1, t2, "ingesting 1/2 MB of unpunctuated text")
    # The loop itself is watched by the loop-lag guard; on a loaded machine the OS alone
    # can delay a poll by a few hundred ms, so these bounds are loose.
    assert statistics.median(latencies) < 0.1, f"/healthz median {statistics.median(latencies)}"
    assert max(latencies) < 2.5, f"/healthz took up to {max(latencies):.2f} s during ingestion"


async def test_a_long_text_comes_back_from_the_parser_child_whole(tmp_path: Path) -> None:
    """Page texts over a megabyte come back from the sandbox in raw parts, not in one JSON
    string (one `json.loads` of 45 MB holds the GIL for 150 ms or more)."""
    text = "é" + words(2_500_000) + " ü" + "x" * 700_000
    path = tmp_path / "long.txt"
    path.write_text(text, encoding="utf-8")
    parser = SandboxedParser(timeout_seconds=60, memory_mb=1024, max_pages=10, ocr=False)
    try:
        parsed = await parser.parse(path, "text/plain", "long.txt")
        again = await parser.parse(path, "text/plain", "long.txt")  # the child still answers
    finally:
        await parser.aclose()
    assert "".join(p.text for p in parsed.pages).strip() == text.strip()
    assert again.pages == parsed.pages
