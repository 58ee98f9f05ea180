"""PostgreSQL stopped under light load (issue 13, test 4): while it is away every request
gets its dialect's 503 with Retry-After, soon (not a 500, not a hang); `/readyz` says the
database is unreachable while `/healthz` (alive) still answers; when the database returns
on its port the same server process serves again by itself, no restart.

A PostgreSQL of this module's own (the session's is shared with other tests), stopped and
started again on the same port and data dir."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fake_upstream import FakeUpstream, Reply
from tests.pg_server import EmbeddedPostgres
from tests.server_process import ServerProcess, upstream_model

OUTAGE_SECONDS = 10.0
CHAT = {"type": "UNIFY_CHAT_WITH_AI", "model": "gpt-4o-mini", "promptObject": {"prompt": "Hi"}}
OPENAI_CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path_factory.mktemp("outage-pg"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        server.default = Reply("hello again")
        yield server


def _requests(client: httpx.Client, server: ServerProcess) -> list[httpx.Response]:
    """One round of light load: the native and the OpenAI dialect, a read and a chat."""
    base, headers = server.base_url, server.headers()
    return [
        client.get(f"{base}/api/me", headers=headers),
        client.post(f"{base}/api/chat-with-ai", headers=headers, json=CHAT),
        client.post(
            f"{base}/v1/chat/completions",
            headers={"Authorization": f"Bearer {server.key}"},
            json=OPENAI_CHAT,
        ),
    ]


def test_a_database_outage_answers_503_and_recovers_without_a_restart(
    tmp_path: Path, database: EmbeddedPostgres, upstream: FakeUpstream
) -> None:
    server = ServerProcess(
        tmp_path / "server",
        models={"gpt-4o-mini": upstream_model(upstream.url)},
        database_url=database.url,
        settings={"auth_cache_seconds": 0},
    )
    server.start()
    pid = server.pid
    try:
        with httpx.Client(timeout=15) as client:
            assert [r.status_code for r in _requests(client, server)] == [200, 200, 200]
            assert client.get(f"{server.base_url}/readyz").json()["status"] == "ready"

            database.stop()
            stopped = time.monotonic()
            seen: list[int] = []
            while time.monotonic() - stopped < OUTAGE_SECONDS:
                began = time.monotonic()
                for r in _requests(client, server):
                    seen.append(r.status_code)
                    assert r.status_code == 503, (r.status_code, r.text)
                    assert int(r.headers["retry-after"]) > 0
                assert time.monotonic() - began < 10  # an answer soon, not a hang
                ready = client.get(f"{server.base_url}/readyz")
                assert ready.status_code == 503 and ready.headers["retry-after"]
                assert ready.json()["checks"]["database"] == "unreachable"
                assert client.get(f"{server.base_url}/healthz").status_code == 200
            native, _, openai = _requests(client, server)
            assert native.json()["error"]["code"] == "SERVICE_UNAVAILABLE", native.text
            assert openai.json()["error"]["type"] == "server_error", openai.text
            assert len(seen) >= 6

            database.start(same_port=True)
            back = time.monotonic()
            while True:  # the first requests after may still meet a connection of before
                statuses = [r.status_code for r in _requests(client, server)]
                if statuses == [200, 200, 200]:
                    break
                assert set(statuses) <= {200, 503}, statuses
                assert time.monotonic() - back < 30, "did not recover"
            for _ in range(3):
                assert [r.status_code for r in _requests(client, server)] == [200, 200, 200]
            assert client.get(f"{server.base_url}/readyz").json()["status"] == "ready"
        assert server.pid == pid  # the same process throughout
    finally:
        server.kill()
