"""End to end with the real bundled model (SmolLM2-135M on llama.cpp): no fakes at all."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.helpers import sse_events
from threadline.container import create_app
from threadline.settings import Settings


async def test_streamed_answer_from_the_bundled_model(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path / 'db'}")
    assert settings.default_model == "smollm2-135m"
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        key = (await app.state.container.bootstrap()).secret
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", timeout=120
        ) as client:
            r = await client.post(
                "/api/chat-with-ai?isStreaming=true",
                headers={"API-KEY": key},
                json={"model": "smollm2-135m", "promptObject": {"prompt": "Name a colour."}},
            )
    assert r.status_code == 200
    events = sse_events(r.text)
    names = [name for name, _ in events]
    assert names[-2:] == ["result", "done"]
    assert names.count("content") >= 1
    record = events[-2][1]["aiRecord"]
    assert record["status"] == "SUCCESS"
    assert record["aiRecordDetail"]["resultObject"][0].strip()
    assert record["usage"]["outputTokens"] >= 1 and record["usage"]["inputTokens"] >= 1
    assert record["modelDetail"]["provider"] == "LOCAL"


async def test_a_reply_cut_at_max_tokens_says_length(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path / 'db'}")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        key = (await app.state.container.bootstrap()).secret
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", timeout=120
        ) as client:
            ask = {
                "model": "smollm2-135m",
                "messages": [{"role": "user", "content": "Write a long story about a dragon."}],
                "max_tokens": 1,
            }
            headers = {"Authorization": f"Bearer {key}"}
            whole = await client.post("/v1/chat/completions", headers=headers, json=ask)
            streamed = await client.post(
                "/v1/chat/completions", headers=headers, json={**ask, "stream": True}
            )
    assert whole.status_code == 200, whole.text
    choice = whole.json()["choices"][0]
    assert choice["finish_reason"] == "length"
    assert whole.json()["usage"]["completion_tokens"] == 1
    chunks = [
        json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: {")
    ]
    reasons = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert reasons[-1] == "length" and set(reasons[:-1]) == {None}
