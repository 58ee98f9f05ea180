"""A real uvicorn Threadline in front of a fake upstream whose model is priced in credits,
for the idempotency tests (tests/test_idempotency*.py): keys, and what was stored and
charged."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import uuid4

from sqlalchemy import func, select

from tests.fake_upstream import FakeUpstream, Reply
from tests.helpers import PRICED, make_settings
from tests.live_server import LiveServer
from threadline.container import create_app
from threadline.domain.entities import Role
from threadline.settings import ModelConfig
from threadline.storage.tables import ai_records, users

UPSTREAM_KEY = "sk-upstream-idem"
REPLY = Reply("one two three four five six")


class Live:
    """A server with one upstream model priced in credits, and the test's keys."""

    def __init__(
        self,
        tmp_path: Path,
        db_url: str,
        upstream: FakeUpstream,
        models: dict[str, ModelConfig] | None = None,
        **overrides: Any,
    ) -> None:
        model = ModelConfig(
            provider="openai-compatible",
            base_url=upstream.url,
            api_key_env="FAKE_UPSTREAM_KEY",
            upstream_model="fake-upstream-model",
            credits=PRICED,
        )
        settings = make_settings(
            tmp_path,
            db_url,
            models={"gpt-4o-mini": model, **(models or {})},
            documents={"embedded_worker": False},
            embeddings={"provider": "none"},
            **overrides,
        )
        self.upstream = upstream
        self.server = LiveServer(create_app(settings))
        self.server.start()
        self.key = self.server.call(self.container.bootstrap()).secret

    @property
    def container(self) -> Any:
        return self.server.app.state.container

    def url(self, path: str) -> str:
        return self.server.base_url + path

    def headers(self, idem: str | None = None, key: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {key or self.key}"}
        if idem is not None:
            headers["Idempotency-Key"] = idem
        return headers

    def member_key(self) -> str:
        async def issue() -> str:
            admin = await self.container.accounts.authenticate(self.key)
            issued = await self.container.accounts.issue_key(
                admin.org, role=Role.MEMBER, user_name=f"m-{uuid4().hex[:6]}", created_by="t"
            )
            return str(issued.secret)

        return self.server.call(issue())

    def charges(self) -> tuple[int, int]:
        """(aiRecords stored, credits used by every user)."""

        async def read() -> tuple[int, int]:
            async with self.container.db.read() as conn:
                records = (await conn.execute(select(func.count()).select_from(ai_records))).one()
                used = (await conn.execute(select(func.sum(users.c.used_credit)))).one()
            return int(records[0]), int(used[0] or 0)

        return self.server.call(read())

    def record_credits(self) -> int:
        """The credits the stored aiRecords were charged, in all (more than 0)."""

        async def read() -> int:
            async with self.container.db.read() as conn:
                return int((await conn.execute(select(func.sum(ai_records.c.credits)))).one()[0])

        charged = self.server.call(read())
        assert charged > 0
        return charged


@contextmanager
def live_server(tmp_path: Path, db_url: str, **settings: Any) -> Iterator[Live]:
    """The server and its upstream (`FAKE_UPSTREAM_KEY` must be set to UPSTREAM_KEY)."""
    with FakeUpstream(api_key=UPSTREAM_KEY, default=REPLY) as upstream:
        server = Live(tmp_path, db_url, upstream, **settings)
        try:
            yield server
        finally:
            server.server.stop()
