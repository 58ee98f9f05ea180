"""Idempotent retries (services/idempotency.py, api/idempotency.py): a request sent again
with its `Idempotency-Key` gets the first answer, charged once, through a real uvicorn server
in front of a fake upstream over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fake_upstream import Reply
from tests.helpers import frames_of
from tests.idem_server import UPSTREAM_KEY, Live, live_server

CHAT = "/api/chat-with-ai"
HELLO = {"type": "UNIFY_CHAT_WITH_AI", "model": "gpt-4o-mini", "promptObject": {"prompt": "Hi"}}


@pytest.fixture
def live(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Live]:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", UPSTREAM_KEY)
    with live_server(tmp_path, db_url) as server:
        yield server


def test_same_key_same_answer_charged_once(live: Live) -> None:
    first = httpx.post(live.url(CHAT), headers=live.headers("k-1"), json=HELLO)
    assert first.status_code == 200, first.text
    assert "idempotent-replayed" not in first.headers
    records, used = live.charges()
    assert (records, used) == (1, live.record_credits())

    again = httpx.post(live.url(CHAT), headers=live.headers("k-1"), json=HELLO)
    assert again.status_code == 200
    assert again.content == first.content  # the same aiRecord, byte for byte
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["content-type"] == first.headers["content-type"]
    reordered = {"promptObject": {"prompt": "Hi"}, "model": "gpt-4o-mini", **HELLO}
    assert httpx.post(live.url(CHAT), headers=live.headers("k-1"), json=reordered).content == (
        first.content
    )
    assert len(live.upstream.requests) == 1
    assert live.charges() == (records, used)

    other = {**HELLO, "promptObject": {"prompt": "Something else"}}
    conflict = httpx.post(live.url(CHAT), headers=live.headers("k-1"), json=other)
    assert conflict.status_code == 422
    error = conflict.json()["error"]
    assert "Idempotency-Key 'k-1'" in error["message"]
    assert f"POST {CHAT}" in error["message"]
    streamed = httpx.post(
        live.url(CHAT), headers=live.headers("k-1"), json=HELLO, params={"isStreaming": "true"}
    )
    assert streamed.status_code == 422  # another query is another request

    # another API key's same string is another key: it runs (and is charged) on its own
    member = live.member_key()
    theirs = httpx.post(live.url(CHAT), headers=live.headers("k-1", member), json=HELLO)
    assert theirs.status_code == 200
    theirs_id = theirs.json()["aiRecord"]["uuid"]
    assert theirs_id != first.json()["aiRecord"]["uuid"]
    assert live.charges()[0] == records + 1
    assert len(live.upstream.requests) == 2


# (a value with blanks at either end cannot be sent: h11 refuses it, as the server would)
BAD_KEYS = [b"x" * 256, b"with\ttab", b"", "na\u00efve".encode()]


def test_garbage_keys_are_refused(live: Live) -> None:
    for bad in BAD_KEYS:
        headers: dict[str, Any] = {**live.headers(), "Idempotency-Key": bad}
        r = httpx.post(live.url(CHAT), headers=headers, content=json.dumps(HELLO).encode())
        assert r.status_code == 400, bad
        assert "Idempotency-Key" in r.json()["error"]["message"]
    assert live.charges()[0] == 0


def test_twenty_concurrent_duplicates_make_one_run(live: Live) -> None:
    live.upstream.enqueue(Reply("slow " * 12, delay=0.05))

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            send = [
                client.post(live.url(CHAT), headers=live.headers("burst"), json=HELLO)
                for _ in range(20)
            ]
            return await asyncio.gather(*send)

    answers = asyncio.run(burst())
    assert [r.status_code for r in answers] == [200] * 20, answers[0].text
    assert {r.json()["aiRecord"]["uuid"] for r in answers} == {
        answers[0].json()["aiRecord"]["uuid"]
    }
    assert {r.json()["aiRecord"]["aiRecordDetail"]["resultObject"][0] for r in answers} == {
        "slow " * 12
    }
    assert sum("idempotent-replayed" not in r.headers for r in answers) == 1
    assert len(live.upstream.requests) == 1
    assert live.charges() == (1, live.record_credits())


def stream(live: Live, idem: str, *, until: int | None = None) -> tuple[str, list[dict[str, Any]]]:
    frames: list[dict[str, Any]] = []
    url = live.url(CHAT + "?isStreaming=true")
    with httpx.stream("POST", url, headers=live.headers(idem), json=HELLO, timeout=30) as r:
        assert r.status_code == 200, r.read()
        for frame in frames_of(r.iter_lines()):
            frames.append(frame)
            if until is not None and len(frames) >= until:
                break
        return r.headers["x-ai-record-id"], frames


def test_a_stream_is_replayed_with_the_same_record(live: Live) -> None:
    live.upstream.enqueue(Reply("a b c d e f g h", delay=0.03))
    record_id, _ = stream(live, "s-1", until=2)  # the client hangs up mid-stream
    again_id, frames = stream(live, "s-1")  # and retries: the same run, from the start
    assert again_id == record_id
    text = "".join(json.loads(f["data"])["content"] for f in frames if f["event"] == "content")
    assert text == "a b c d e f g h"
    result = next(json.loads(f["data"]) for f in frames if f["event"] == "result")
    assert result["aiRecord"]["uuid"] == record_id
    third_id, third = stream(live, "s-1")  # after the end too
    assert third_id == record_id and third == frames
    assert len(live.upstream.requests) == 1
    assert live.charges()[0] == 1


def test_a_refused_request_does_not_use_up_its_key(live: Live) -> None:
    """Refused before anything happened (no credits left: 403): the key is released, and
    the same request with it runs once the user may pay."""
    member = live.member_key()
    me = httpx.get(live.url("/api/me"), headers=live.headers(key=member)).json()["user"]
    limit = {"creditLimit": 0}
    path = f"/api/admin/users/{me['userId']}"
    assert httpx.patch(live.url(path), headers=live.headers(), json=limit).status_code == 200
    refused = httpx.post(live.url(CHAT), headers=live.headers("r-1", member), json=HELLO)
    assert refused.status_code == 403
    limit = {"creditLimit": 1_000_000}
    assert httpx.patch(live.url(path), headers=live.headers(), json=limit).status_code == 200
    ok = httpx.post(live.url(CHAT), headers=live.headers("r-1", member), json=HELLO)
    assert ok.status_code == 200, ok.text
    assert "idempotent-replayed" not in ok.headers
    assert live.charges()[0] == 1
