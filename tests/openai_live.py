"""A live server for the OpenAI SDK tests, shared by a test module (one per backend).

Why it exists: the Responses and Conversations tests drive many short exchanges through the
official `openai` SDK; one uvicorn server per module and backend (SQLite, PostgreSQL) keeps
them cheap. Each test makes its own conversations and responses, so they share nothing else.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI

from tests.helpers import PRICED, Fakes, make_settings
from tests.live_server import LiveServer
from threadline.container import Container, create_app
from threadline.settings import ModelConfig

MIGRATED_TEMPLATE = "threadline_migrated"
VISION = "vision-fake"  # a fake model that takes images


@dataclass
class OpenAILive:
    server: LiveServer
    container: Container
    key: str
    fakes: Fakes

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def client(self) -> OpenAI:
        return OpenAI(base_url=f"{self.base_url}/v1", api_key=self.key, max_retries=0)

    def async_client(self) -> AsyncOpenAI:
        return AsyncOpenAI(base_url=f"{self.base_url}/v1", api_key=self.key, max_retries=0)

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(f"{self.base_url}{path}", headers=self.headers, params=params)

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"{self.base_url}{path}", headers=self.headers, json=body, timeout=30)

    def used_credit(self) -> int:
        return int(self.get("/api/me").json()["user"]["usedCredit"])


def database_url(request: pytest.FixtureRequest, backend: str, tmp: Any) -> str:
    """A new database migrated to head (the session's migrated copy or template)."""
    if backend == "sqlite":
        path = tmp / "threadline.db"
        shutil.copyfile(request.getfixturevalue("migrated_sqlite"), path)
        return f"sqlite+aiosqlite:///{path}"
    server = request.getfixturevalue("postgres")
    return str(server.create_database(f"t_{os.urandom(6).hex()}", MIGRATED_TEMPLATE))


@contextmanager
def openai_live(request: pytest.FixtureRequest, tmp: Any) -> Iterator[OpenAILive]:
    fakes = Fakes()
    models = {
        "fake": ModelConfig(provider="fake"),
        "gpt-4o-mini": ModelConfig(provider="fake", credits=PRICED),
        VISION: ModelConfig(provider="fake", vision=True),
    }
    settings = make_settings(tmp, database_url(request, request.param, tmp), models=models)
    app = create_app(settings, model_factory=fakes.factory)
    server = LiveServer(app)
    server.start()
    try:
        container = app.state.container
        issued = server.call(container.bootstrap())
        yield OpenAILive(server, container, issued.secret, fakes)
    finally:
        server.stop()
