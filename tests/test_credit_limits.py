"""Credit limits hold under concurrency (services/credits.py), through a real uvicorn server,
in every dialect that charges, on SQLite and PostgreSQL.

The storm: a user whose limit fits exactly two requests' reservations sends many at once.
The two admitted runs are held on a gate (their model waits) until every other request has
been answered, so the test sees what a burst sees: exactly two models run, the rest are the
dialect's 403 saying how many credits are left, and `usedCredit` ends at the real cost of
two runs, within the limit, with nothing left reserved.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from sqlalchemy import select

from tests.helpers import PRICED, Fakes, make_settings
from tests.live_server import LiveServer
from threadline.container import Container, create_app
from threadline.domain.events import Usage
from threadline.domain.image_generation import GeneratedImage, GenerationRequest
from threadline.providers.fake_images import COLOURS, picture
from threadline.settings import Credits, EmbeddingConfig, ModelConfig
from threadline.storage.tables import ai_records, credit_reservations, users

MODEL = "gpt-4o-mini"  # 1 credit per input token, 2 per output token
IMAGES = "sketcher"
PER_IMAGE = 10
PROMPT = "Tell me about the mill"
REPLY_USAGE = Usage(10, 15)  # what an admitted reply really costs: 10 + 2*15 = 40


class GatedImages:
    """An image model whose every call waits for `gate` (set from the test)."""

    def __init__(self) -> None:
        self.requests: list[GenerationRequest] = []
        self.gate = asyncio.Event()

    async def generate(self, request: GenerationRequest) -> list[GeneratedImage]:
        self.requests.append(request)
        await self.gate.wait()
        return [picture(COLOURS[i % len(COLOURS)], request.output_format) for i in range(request.n)]

    async def vary(self, request: Any) -> list[GeneratedImage]:
        raise AssertionError("not used here")

    async def aclose(self) -> None:
        return None


@dataclass
class Live:
    server: LiveServer
    container: Container
    fakes: Fakes
    images: GatedImages
    admin: dict[str, str]
    gate: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str) -> str:
        return f"{self.server.base_url}{path}"

    def member(self) -> tuple[str, str]:
        """A new MEMBER of the admin's org: (user id, API key)."""
        user = httpx.post(self.url("/api/admin/users"), headers=self.admin, json={"name": "m"})
        user_id = user.json()["user"]["userId"]
        key = httpx.post(self.url("/api/admin/keys"), headers=self.admin, json={"userId": user_id})
        return user_id, key.json()["apiKey"]["key"]

    def set_limit(self, user_id: str, limit: int) -> None:
        r = httpx.patch(
            self.url(f"/api/admin/users/{user_id}"), headers=self.admin, json={"creditLimit": limit}
        )
        assert r.status_code == 200, r.text

    def figures(self, user_id: str) -> tuple[int, int, int, int]:
        """(used, reserved, limit, reservation rows) as stored."""

        async def read() -> tuple[int, int, int, int]:
            async with self.container.db.read() as conn:
                row = (
                    await conn.execute(
                        select(
                            users.c.used_credit, users.c.reserved_credit, users.c.credit_limit
                        ).where(users.c.id == UUID(user_id))
                    )
                ).one()
                held = (await conn.execute(select(credit_reservations))).all()
            return row[0], row[1], row[2], len(held)

        return self.server.call(read())

    def open_gates(self) -> None:
        async def open_all() -> None:
            self.gate.set()
            self.images.gate.set()

        self.server.call(open_all())


@pytest.fixture
def live(tmp_path: Path, db_url: str, fakes: Fakes) -> Iterator[Live]:
    models = {
        MODEL: ModelConfig(provider="fake", credits=PRICED),
        IMAGES: ModelConfig(
            provider="fake", kind="images", credits=Credits(per_image=PER_IMAGE), max_images=3
        ),
    }
    settings = make_settings(
        tmp_path, db_url, models=models, embeddings=EmbeddingConfig(provider="none")
    )
    images = GatedImages()
    app = create_app(settings, model_factory=fakes.factory, image_factory=lambda n, c: images)
    server = LiveServer(app)
    server.start()
    try:
        container = app.state.container
        issued = server.call(container.bootstrap())
        yield Live(server, container, fakes, images, {"API-KEY": issued.secret})
    finally:
        server.stop()


Send = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


async def storm(live: Live, n: int, send: Send, ran: Callable[[], int]) -> list[httpx.Response]:
    """`n` requests at once; the two admitted are held until all the others are answered."""
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        tasks = [asyncio.create_task(send(client)) for _ in range(n)]
        deadline = time.monotonic() + 120
        while sum(t.done() for t in tasks) < n - 2:
            failed = [t for t in tasks if t.done() and t.exception() is not None]
            if failed:
                raise failed[0].exception()  # type: ignore[misc]
            assert time.monotonic() < deadline, f"{sum(t.done() for t in tasks)} answered of {n}"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # a third admitted run, had one slipped through, shows now
        assert ran() == 2
        live.open_gates()
        return list(await asyncio.gather(*tasks))


def cost_of(r: httpx.Response) -> int:
    """The most a refused request may cost, as its 403 says."""
    assert r.status_code == 403, r.text
    found = re.search(r"may cost up to (\d+) credits", r.text)
    assert found, r.text
    return int(found.group(1))


def check_outcome(
    live: Live,
    user_id: str,
    answers: list[httpx.Response],
    left: int | None,
    refused: Callable[[httpx.Response], str],
    real_cost: int,
) -> None:
    ok = [r for r in answers if r.status_code == 200]
    denied = [r for r in answers if r.status_code != 200]
    assert len(ok) == 2, [r.status_code for r in answers if r.status_code != 403]
    assert {r.status_code for r in denied} == {403}
    for r in denied:
        message = refused(r)  # the dialect's error shape, its message
        assert re.search(rf"{left if left is not None else '[0-9]+'} left", message), message
    used, reserved, limit, rows = live.figures(user_id)
    assert (used, reserved, rows) == (2 * real_cost, 0, 0)
    assert used <= limit


# ---- error shapes ---------------------------------------------------------------------


def oneminai_error(r: httpx.Response) -> str:
    body = r.json()
    assert body["success"] is False and body["error"]["code"] == "FORBIDDEN"
    return str(body["error"]["message"])


def openai_error(r: httpx.Response) -> str:
    error = r.json()["error"]
    assert error["type"] == "permission_error"
    return str(error["message"])


def sessions_error(r: httpx.Response) -> str:
    body = r.json()
    assert body["code"] == "FORBIDDEN"
    return str(body["detail"])


# ---- chat dialects ----------------------------------------------------------------------


def gated_replies(live: Live) -> None:
    for _ in range(2):
        live.fakes[MODEL].enqueue(["Once", live.gate, " upon a time", REPLY_USAGE])


async def chat_storm(
    live: Live,
    n: int,
    send: Callable[[httpx.AsyncClient, str], Awaitable[httpx.Response]],
    refused: Callable[[httpx.Response], str],
) -> None:
    user_id, key = live.member()
    live.set_limit(user_id, 1)
    async with httpx.AsyncClient(timeout=30) as client:
        most = cost_of(await send(client, key))
    assert live.fakes[MODEL].requests == []
    live.set_limit(user_id, 3 * most - 1)  # two reservations fit, a third does not
    gated_replies(live)
    answers = await storm(
        live, n, lambda client: send(client, key), lambda: len(live.fakes[MODEL].requests)
    )
    check_outcome(live, user_id, answers, most - 1, refused, REPLY_USAGE.input_tokens + 30)
    for r in answers:
        if r.status_code == 200:
            assert "upon a time" in r.text


def oneminai_chat(live: Live, streaming: bool) -> Callable[..., Awaitable[httpx.Response]]:
    query = "?isStreaming=true" if streaming else ""

    async def send(client: httpx.AsyncClient, key: str) -> httpx.Response:
        body = {"model": MODEL, "promptObject": {"prompt": PROMPT}}
        return await client.post(
            live.url(f"/api/chat-with-ai{query}"), headers={"API-KEY": key}, json=body
        )

    return send


def openai_chat(live: Live, streaming: bool) -> Callable[..., Awaitable[httpx.Response]]:
    async def send(client: httpx.AsyncClient, key: str) -> httpx.Response:
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": 20,
            "stream": streaming,
        }
        headers = {"Authorization": f"Bearer {key}"}
        return await client.post(live.url("/v1/chat/completions"), headers=headers, json=body)

    return send


@pytest.mark.parametrize("streaming", [False, True])
async def test_200_concurrent_v1_chats_run_exactly_the_two_that_fit(live, streaming):
    await chat_storm(live, 200, openai_chat(live, streaming), openai_error)


@pytest.mark.parametrize("streaming", [False, True])
async def test_200_concurrent_1min_chats_run_exactly_the_two_that_fit(live, streaming):
    await chat_storm(live, 200, oneminai_chat(live, streaming), oneminai_error)


async def test_concurrent_features_chats_run_exactly_the_two_that_fit(live):
    async def send(client: httpx.AsyncClient, key: str) -> httpx.Response:
        body = {"type": "CHAT_WITH_AI", "model": MODEL, "promptObject": {"prompt": PROMPT}}
        return await client.post(live.url("/api/features"), headers={"API-KEY": key}, json=body)

    await chat_storm(live, 30, send, oneminai_error)


async def test_concurrent_conversation_service_chats_run_exactly_the_two_that_fit(live):
    base = "/api/conversation"
    user_id, key = live.member()
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=live.server.base_url, headers=headers) as client:
        org = (await client.get("/api/me")).json()["user"]["teamId"]
        models = (await client.get("/api/models")).json()["models"]
        model_id = next(m["id"] for m in models if m["name"] == MODEL)
        sessions: list[str] = []
        for _ in range(30):  # one conversation each: no request's history holds another's
            made = await client.post(f"{base}/create?org_id={org}", json={"title": "t"})
            session = await client.post(
                f"{base}/create_session?org_id={org}",
                json={"conversation_id": made.json()["id"], "model_id": model_id},
            )
            sessions.append(session.json()["id"])
    turn = iter(sessions * 2)

    async def send(client: httpx.AsyncClient, _key: str) -> httpx.Response:
        body = {"chat_session_id": next(turn), "message": PROMPT}
        return await client.post(
            live.url(f"{base}/stream_chat?org_id={org}"), headers=headers, json=body
        )

    live.set_limit(user_id, 1)
    async with httpx.AsyncClient(timeout=30) as client:
        most = cost_of(await send(client, key))
    live.set_limit(user_id, 3 * most - 1)
    gated_replies(live)
    turn = iter(sessions)
    answers = await storm(
        live, 30, lambda client: send(client, key), lambda: len(live.fakes[MODEL].requests)
    )
    check_outcome(live, user_id, answers, most - 1, sessions_error, 40)


def converse_error(r: httpx.Response) -> str:
    assert set(r.json()) == {"message"}  # AI Hub's error body
    return str(r.json()["message"])


async def test_concurrent_converse_prompts_run_exactly_the_two_that_fit(live):
    api = "/api/v2/conversations"
    user_id, key = live.member()
    headers = {"Authorization": f"Bearer {key}"}
    notes = ("notes.txt", b"The mill was built in 1820 and ground corn until 1957.", "text/plain")
    async with httpx.AsyncClient(base_url=live.server.base_url, headers=headers) as client:
        made = await client.post(api, data={"name": "mill"}, files=[("files", notes)])
        assert made.status_code == 201, made.text
        conversation = made.json()["id"]
        deadline = time.monotonic() + 60
        while (info := (await client.get(f"{api}/{conversation}")).json())["state"] == "RUNNING":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        document = info["documents"][0]["id"]

    async def send(client: httpx.AsyncClient, _key: str) -> httpx.Response:
        body = {"question": "When was the mill built?", "document_ids": [document]}
        return await client.post(
            live.url(f"{api}/{conversation}/prompts"), headers=headers, json=body
        )

    live.set_limit(user_id, 1)
    async with httpx.AsyncClient(timeout=30) as client:
        most = cost_of(await send(client, key))
    live.set_limit(user_id, 3 * most - 1)
    gated_replies(live)
    answers = await storm(
        live, 20, lambda client: send(client, key), lambda: len(live.fakes[MODEL].requests)
    )
    # the second admitted prompt may hold a little more (the first's question in its
    # history), so what is left is not exactly `most - 1`: the message still says it
    check_outcome(live, user_id, answers, None, converse_error, 40)


# ---- images -----------------------------------------------------------------------------


async def image_storm(
    live: Live,
    n: int,
    send: Callable[[httpx.AsyncClient, str], Awaitable[httpx.Response]],
    refused: Callable[[httpx.Response], str],
) -> None:
    user_id, key = live.member()
    live.set_limit(user_id, 3 * PER_IMAGE - 1)  # two one-image requests fit, a third does not
    answers = await storm(
        live, n, lambda client: send(client, key), lambda: len(live.images.requests)
    )
    check_outcome(live, user_id, answers, PER_IMAGE - 1, refused, PER_IMAGE)
    for r in answers:
        if r.status_code == 403:
            assert f"may cost up to {PER_IMAGE} credits" in r.text


async def test_200_concurrent_image_generator_requests_run_exactly_the_two_that_fit(live):
    async def send(client: httpx.AsyncClient, key: str) -> httpx.Response:
        body = {
            "type": "IMAGE_GENERATOR",
            "model": IMAGES,
            "promptObject": {"prompt": "a mill", "num_outputs": 1, "aspect_ratio": "1:1"},
        }
        return await client.post(live.url("/api/features"), headers={"API-KEY": key}, json=body)

    await image_storm(live, 200, send, oneminai_error)


async def test_concurrent_v1_image_generations_run_exactly_the_two_that_fit(live):
    async def send(client: httpx.AsyncClient, key: str) -> httpx.Response:
        body = {"model": IMAGES, "prompt": "a mill", "n": 1}
        headers = {"Authorization": f"Bearer {key}"}
        return await client.post(live.url("/v1/images/generations"), headers=headers, json=body)

    await image_storm(live, 30, send, openai_error)


# ---- failures and crashes give the reservation back ----------------------------------------


async def test_a_failed_reply_releases_its_reservation(live):
    from threadline.domain.errors import ModelError

    user_id, key = live.member()
    live.fakes[MODEL].enqueue(["partial", ModelError("upstream broke")])
    async with httpx.AsyncClient(timeout=30) as client:
        r = await oneminai_chat(live, False)(client, key)
    assert r.status_code == 502, r.text
    used, reserved, _, rows = live.figures(user_id)
    assert (reserved, rows) == (0, 0)

    async def charged() -> list[int]:
        async with live.container.db.read() as conn:
            return list((await conn.execute(select(ai_records.c.credits))).scalars())

    assert [used] == live.server.call(charged())  # the failed record's charge, no more


async def test_a_failed_image_request_releases_its_reservation(live):
    from threadline.domain.errors import ModelError

    user_id, key = live.member()

    async def broken(request: GenerationRequest) -> list[GeneratedImage]:
        raise ModelError("upstream broke")

    live.images.generate = broken  # type: ignore[method-assign]
    body = {"model": IMAGES, "prompt": "a mill", "n": 1}
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.post(
            live.url("/v1/images/generations"),
            headers={"Authorization": f"Bearer {key}"},
            json=body,
        )
    assert r.status_code == 502, r.text
    assert live.figures(user_id)[:2] == (0, 0)
    assert live.figures(user_id)[3] == 0


async def test_a_cli_command_beside_a_live_server_leaves_its_reservations(live, tmp_path):
    """`threadline keys create` starts a container on the same database: it must not give
    back what the server's replies in progress hold (only an API server starting does)."""
    import os
    import subprocess
    import sys

    user_id, key = live.member()
    gated_replies(live)
    async with httpx.AsyncClient(timeout=60) as client:
        reply = asyncio.create_task(oneminai_chat(live, False)(client, key))
        deadline = time.monotonic() + 30
        while live.figures(user_id)[3] == 0:
            assert time.monotonic() < deadline and not reply.done()
            await asyncio.sleep(0.05)
        held = live.figures(user_id)
        env = {**os.environ, "THREADLINE_DATABASE_URL": live.container.settings.database_url}
        made = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "threadline", "keys", "create", "--data-dir", str(tmp_path)],
            env=env,
            capture_output=True,
            timeout=120,
        )
        assert made.returncode == 0, made.stderr.decode()[-2000:]
        assert live.figures(user_id) == held  # still held: the reply is still running
        live.open_gates()
        assert (await reply).status_code == 200
    used, reserved, _, rows = live.figures(user_id)
    assert (used, reserved, rows) == (40, 0, 0)
