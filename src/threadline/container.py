"""The one place where settings become objects and objects are wired together.

`create_app(settings)` builds the ASGI app; nothing is built at import time.
"""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy import text

from threadline.api.app import build_app
from threadline.api.metrics import Metrics
from threadline.services.accounts import AccountService, IssuedKey
from threadline.services.catalog import ModelCatalog, ModelFactory
from threadline.services.chat import ChatService
from threadline.services.clock import utcnow
from threadline.services.conversations import ConversationService
from threadline.services.ratelimit import KeyRateLimiter
from threadline.services.runs import RunRegistry
from threadline.services.sessions import SessionService
from threadline.settings import Settings
from threadline.storage.accounts import SqlAccountStore
from threadline.storage.conversations import SqlConversationStore
from threadline.storage.database import Database
from threadline.storage.records import SqlRecordStore
from threadline.storage.sessions import SqlSessionStore

SHUTDOWN_GRACE_SECONDS = 30.0


class Container:
    def __init__(self, settings: Settings, *, model_factory: ModelFactory | None = None) -> None:
        if model_factory is None:
            from threadline.providers import build_model

            model_factory = build_model
        self.settings = settings
        self.db = Database(settings.resolved_database_url)
        self.account_store = SqlAccountStore(self.db)
        self.conversation_store = SqlConversationStore(self.db)
        self.record_store = SqlRecordStore(self.db)
        self.session_store = SqlSessionStore(self.db)
        self.catalog = ModelCatalog(settings.models, settings.default_model, model_factory)
        self.runs = RunRegistry()
        self.metrics = Metrics(active_runs=lambda: self.runs.active)
        self.accounts = AccountService(
            self.account_store, settings.default_credit_limit, settings.auth_cache_seconds
        )
        self.rate_limiter = KeyRateLimiter(settings.rate_limit_per_minute)
        self.conversations = ConversationService(
            self.conversation_store, self.catalog, settings.page_size_max
        )
        self.chat = ChatService(
            catalog=self.catalog,
            records=self.record_store,
            conversations=self.conversations,
            accounts=self.accounts,
            runs=self.runs,
            history_limit_max=settings.history_limit_max,
            observer=self.metrics.observe_record,
        )
        self.sessions = SessionService(
            self.session_store, self.conversations, self.chat, self.catalog
        )

    async def start(self) -> None:
        """Migrate, and fail the replies a previous process left unfinished."""
        await self.db.migrate()
        await self.record_store.fail_unfinished(
            "the server stopped before the reply ended", before=utcnow()
        )

    async def bootstrap(self) -> IssuedKey | None:
        """First start with an empty database: an admin key, to be shown once."""
        if not self.settings.bootstrap_admin:
            return None
        return await self.accounts.bootstrap()

    async def stop(self) -> None:
        await self.runs.drain(SHUTDOWN_GRACE_SECONDS)
        await self.catalog.aclose()
        await self.db.dispose()

    async def ping_database(self) -> None:
        async with self.db.read() as conn:
            await conn.execute(text("SELECT 1"))


def create_app(
    settings: Settings | None = None, *, model_factory: ModelFactory | None = None
) -> FastAPI:
    return build_app(Container(settings or Settings(), model_factory=model_factory))
