"""The one place where settings become objects and objects are wired together.

`create_app(settings)` builds the ASGI app; nothing is built at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import uuid4

from sqlalchemy import text

from threadline.api.metrics import Metrics
from threadline.domain.documents import BlobStore
from threadline.domain.errors import Unavailable
from threadline.domain.image_generation import SOURCE_KINDS, SOURCE_TYPES
from threadline.domain.ports import Invalidations, RateLimiter, RunFeed
from threadline.ingestion.chunking import chunk_pages
from threadline.ingestion.detect import SUPPORTED_TYPES, detect_file
from threadline.ingestion.image_facts import inspect_image
from threadline.ingestion.page_render import render_page
from threadline.ingestion.sandbox import SandboxedParser
from threadline.jobs.worker import Backoff, Worker
from threadline.providers.embeddings import build_embedder
from threadline.providers.registry import REGISTRY as PROVIDER_REGISTRY
from threadline.providers.rerankers import build_reranker
from threadline.services.accounts import AccountService, IssuedKey
from threadline.services.branches import BranchService
from threadline.services.brand_voices import BrandVoiceService
from threadline.services.catalog import ImageModelFactory, ModelCatalog, ModelFactory
from threadline.services.chat import ChatService
from threadline.services.chat_grounding import ReplyGrounder
from threadline.services.chat_run import RunDriver
from threadline.services.checkpoints import CheckpointPolicy
from threadline.services.conversation_files import ConversationFiles
from threadline.services.conversation_items import ConversationItems
from threadline.services.conversation_turns import ConversationTurns
from threadline.services.conversations import ConversationService
from threadline.services.credits import CreditService
from threadline.services.documents import INGEST_JOB, DocumentLimits, DocumentService
from threadline.services.grounding import DocumentGrounder
from threadline.services.idempotency import IdempotencyService
from threadline.services.image_generation import ImageGenerationService
from threadline.services.images import ImageLimits, ImageReader
from threadline.services.ingestion import IngestionService
from threadline.services.links import LinkReader
from threadline.services.memories import REMEMBER_JOB, MemoryService
from threadline.services.memory_model import ModelExtractor
from threadline.services.memory_rules import RuleExtractor
from threadline.services.nodes import NodeKeeper
from threadline.services.page_images import PageImages
from threadline.services.pages import PageReader
from threadline.services.record_views import RecordViews
from threadline.services.replays import ReplayService
from threadline.services.reranking import SecondStage
from threadline.services.responses import ResponseService
from threadline.services.retrieval import Retriever
from threadline.services.runs import RunRegistry
from threadline.services.sessions import SessionService
from threadline.services.usage import UsageService
from threadline.services.web_search import WebSearchReader
from threadline.settings import Settings
from threadline.shared.local import LocalInvalidations, LocalRunFeed
from threadline.storage.accounts import SqlAccountStore
from threadline.storage.blobs import DatabaseBlobStore, FileBlobStore
from threadline.storage.brand_voices import SqlBrandVoiceStore
from threadline.storage.chunks import SqlChunkIndex
from threadline.storage.conversation_items import SqlConversationItemStore
from threadline.storage.conversations import SqlConversationStore
from threadline.storage.credits import SqlCreditStore
from threadline.storage.database import Database
from threadline.storage.documents import SqlDocumentStore
from threadline.storage.idempotency import SqlIdempotencyStore
from threadline.storage.jobs import SqlJobQueue
from threadline.storage.memories import SqlMemoryStore
from threadline.storage.nodes import SqlNodeStore
from threadline.storage.rate_limits import WindowRateLimiter
from threadline.storage.records import SqlRecordStore
from threadline.storage.sessions import SqlSessionStore
from threadline.storage.usage import SqlUsageStore
from threadline.tools.fetcher import SafeFetcher
from threadline.tools.search import build_searcher
from threadline.tools.youtube import YouTubeTranscripts

if TYPE_CHECKING:
    from fastapi import FastAPI

    from threadline.shared.redis_link import RedisLink
    from threadline.shared.redis_runs import RedisRunFeed

SHUTDOWN_GRACE_SECONDS = 30.0


class Container:
    def __init__(
        self,
        settings: Settings,
        *,
        model_factory: ModelFactory | None = None,
        image_factory: ImageModelFactory | None = None,
    ) -> None:
        self.settings = settings
        self.db = Database(settings.resolved_database_url)
        self.account_store = SqlAccountStore(self.db)
        self.conversation_store = SqlConversationStore(self.db)
        self.node_id = uuid4()  # this process among those on the database (services/nodes.py)
        self.record_store = SqlRecordStore(self.db, self.node_id)
        self.session_store = SqlSessionStore(self.db)
        self.usage = UsageService(SqlUsageStore(self.db))
        self.catalog = ModelCatalog(
            settings.models,
            settings.default_model,
            PROVIDER_REGISTRY,
            factory=model_factory,
            image_factory=image_factory,
            aliases=settings.model_aliases(),
        )
        self._accounts(settings)
        self.conversations = ConversationService(
            self.conversation_store, self.catalog, settings.page_size_max
        )
        self.brand_voices = BrandVoiceService(SqlBrandVoiceStore(self.db), settings.page_size_max)
        self._documents(settings)
        fetch = settings.fetch
        self.fetcher = SafeFetcher(
            timeout_seconds=fetch.timeout_seconds,
            connect_timeout_seconds=fetch.connect_timeout_seconds,
            max_bytes=fetch.max_bytes,
            max_redirects=fetch.max_redirects,
            user_agent=fetch.user_agent,
            allow_private_hosts=fetch.allow_private_hosts,
        )
        self._web(settings)
        self._chat_images(settings)
        self._memories(settings)
        self._chat(settings)
        self._image_generation(settings)

    def _accounts(self, settings: Settings) -> None:
        """Runs, keys and credits, and what this process shares with the others: replays,
        the shared state (Redis or memory), idempotency keys, its node row and heartbeat."""
        self.runs = RunRegistry(settings.stream_retention_seconds)
        self._shared_state(settings)
        self.replays = ReplayService(
            self.runs, self.record_store, self.account_store, feed=self.run_feed
        )
        self.idempotency = IdempotencyService(SqlIdempotencyStore(self.db))
        self.metrics = Metrics(
            active_runs=lambda: self.runs.active,
            upstreams=self.upstreams,
            redis_up=None if self.redis is None else lambda: float(self.redis_up),
        )
        self.accounts = AccountService(
            self.account_store,
            settings.default_credit_limit,
            settings.auth_cache_seconds,
            rate_limiter=self.rate_limiter,
            invalidations=self.invalidations,
        )
        credit_store = SqlCreditStore(self.db, self.node_id)
        self.credits = CreditService(credit_store, self.account_store)
        self.nodes = NodeKeeper(
            SqlNodeStore(self.db),
            self.record_store,
            credit_store,
            lease_seconds=settings.node_lease_seconds,
            node_id=self.node_id,
        )

    def _shared_state(self, settings: Settings) -> None:
        """What several processes share besides the database: in Redis when `redis_url` is
        set (shared/redis_*.py, degraded to this process's memory while it is away), else in
        this process's memory (shared/local.py)."""
        self.redis: RedisLink | None = None
        self._redis_feed: RedisRunFeed | None = None
        self.invalidations: Invalidations
        self.run_feed: RunFeed
        self.rate_limiter: RateLimiter
        if settings.redis_url is None:
            self.invalidations, self.run_feed = LocalInvalidations(), LocalRunFeed()
            self.rate_limiter = WindowRateLimiter(settings.rate_limit_per_minute)
            return
        from threadline.shared.redis_link import RedisLink  # the `scale` extra
        from threadline.shared.redis_runs import RedisRunFeed
        from threadline.shared.redis_state import RedisInvalidations, SharedRateLimiter

        self.redis = RedisLink(settings.redis_url)
        self.invalidations = RedisInvalidations(self.redis)
        self.run_feed = self._redis_feed = RedisRunFeed(
            self.redis, ended_seconds=settings.stream_retention_seconds
        )
        self.rate_limiter = SharedRateLimiter(settings.rate_limit_per_minute, self.redis)

    @property
    def redis_up(self) -> bool:
        """Redis configured and reachable now (full mode)."""
        return self.redis is not None and self.redis.up

    def _chat(self, settings: Settings) -> None:
        """The chat engine with every kind of grounding built above, and the sessions on it."""
        grounder = ReplyGrounder(
            documents=self.grounder,
            brand_voices=self.brand_voices,
            links=self.links,
            web_search=self.web_search,
            memories=self.memories,
            images=self.images,
        )
        driver = RunDriver(
            records=self.record_store,
            accounts=self.accounts,
            credits=self.credits,
            runs=self.runs,
            checkpoints=CheckpointPolicy(
                settings.stream_checkpoint_seconds, settings.stream_checkpoint_chars
            ),
            observer=self.metrics.observe_record,
            feed=self.run_feed,
        )
        self.chat = ChatService(
            catalog=self.catalog,
            conversations=self.conversations,
            grounder=grounder,
            runs=driver,
            history_limit_max=settings.history_limit_max,
            replays=self.replays,
        )
        self.sessions = SessionService(
            self.session_store, self.conversations, self.chat, self.catalog, self.replays
        )
        self.branches = BranchService(self.conversations, self.conversation_store, self.chat)
        self.conversation_files = ConversationFiles(
            self.conversations, self.documents, self.catalog, self.chat
        )
        self.record_views = RecordViews(self.accounts, self.replays, self.catalog)
        items = SqlConversationItemStore(self.db)
        self.conversation_items = ConversationItems(self.conversations, items)
        self.responses = ResponseService(
            chat=self.chat,
            conversations=self.conversations,
            items=items,
            records=self.record_store,
            runs=self.runs,
            documents=self.documents,
            history_limit=settings.history_limit_max,
            feed=self.run_feed,
        )
        self.conversation_turns = ConversationTurns(
            chat=self.chat,
            conversations=self.conversations,
            history_limit=settings.history_limit_max,
        )

    def _image_generation(self, settings: Settings) -> None:
        """Images out: image models, and the fetcher that reads a variator's source URL (the
        link reader's SSRF rules and caps, for the pictures the variator takes only)."""
        max_bytes = settings.fetch.max_bytes
        self.image_generation = ImageGenerationService(
            catalog=self.catalog,
            records=self.record_store,
            accounts=self.accounts,
            credits=self.credits,
            documents=self.documents,
            fetcher=self.fetcher.for_images(
                max_bytes=max_bytes, content_types=SOURCE_TYPES, accepted=SOURCE_KINDS
            ),
            inspect=inspect_image,
            max_source_bytes=max_bytes,
            observer=self.metrics.observe_record,
        )

    def _web(self, settings: Settings) -> None:
        """Links in the prompt (pages and YouTube transcripts) and the web search provider."""
        fetch, youtube = settings.fetch, settings.youtube
        pages = PageReader(self.fetcher, self.parser)
        transcripts = None
        if youtube.enabled:
            transcripts = YouTubeTranscripts(
                languages=youtube.languages,
                timeout_seconds=youtube.timeout_seconds,
                base_url=youtube.base_url,
            )
        self.links = LinkReader(
            pages,
            transcripts=transcripts,
            max_links=fetch.max_links,
            max_words=fetch.max_words_per_link,
            max_videos=youtube.max_videos,
            max_video_words=youtube.max_words,
        )
        self.searcher = build_searcher(settings.search)
        self.web_search = WebSearchReader(self.searcher, pages) if self.searcher else None

    def _chat_images(self, settings: Settings) -> None:
        """Images in chat requests: assets, or URLs through a fetcher of image types only."""
        limits = settings.chat_images
        self.image_fetcher = self.fetcher.for_images(max_bytes=limits.max_bytes)
        self.images = ImageReader(
            self.documents,
            self.chunk_index,
            self.image_fetcher,
            self.parser,
            inspect_image,
            ImageLimits(
                max_images=limits.max_per_request,
                max_bytes=limits.max_bytes,
                wait_seconds=settings.documents.ready_wait_seconds,
                chunk_overlap=settings.documents.chunk_overlap_chars,
            ),
        )

    def _documents(self, settings: Settings) -> None:
        """The document pipeline: store, blobs, parser, embedder, index, jobs, grounding."""
        config = settings.documents
        self.blobs: BlobStore = (
            DatabaseBlobStore(self.db, settings.data_dir / "blobs" / "staging")
            if settings.blob_store == "database"
            else FileBlobStore(settings.data_dir / "blobs")
        )
        self.document_store = SqlDocumentStore(self.db)
        self.chunk_index = SqlChunkIndex(self.db)
        self.job_queue = SqlJobQueue(self.db)
        self.embedder = build_embedder(settings.embeddings)
        self.reranker = build_reranker(settings.rerank)
        self.parser = SandboxedParser(
            timeout_seconds=config.parse_timeout_seconds,
            memory_mb=config.parse_memory_mb,
            max_pages=config.max_pages,
            ocr=config.ocr,
            ocr_engine=config.ocr_engine,
        )
        self.documents = DocumentService(
            self.document_store,
            self.blobs,
            self.job_queue,
            self.conversations,
            detect_file,
            DocumentLimits(
                max_file_bytes=config.max_file_bytes,
                max_documents_per_conversation=config.max_documents_per_conversation,
                supported=", ".join(dict.fromkeys(SUPPORTED_TYPES.values())),
                job_max_attempts=config.job_max_attempts,
            ),
            on_enqueued=lambda: self.worker.poke(),
        )
        self.page_images = PageImages(
            self.documents, render_page, settings.data_dir / "page-images"
        )
        self.retriever = Retriever(
            self.chunk_index,
            self.embedder,
            SecondStage(self.reranker, config.rerank, config.rerank_candidates),
        )
        self.grounder = DocumentGrounder(
            self.documents,
            self.retriever,
            top_k=config.top_k,
            advanced_top_k=config.advanced_top_k,
            wait_seconds=config.ready_wait_seconds,
        )
        self._ingestion(settings)

    def _ingestion(self, settings: Settings) -> None:
        """The `ingest` job and the worker that runs it (and, later, `remember`)."""
        config = settings.documents
        self.ingestion = IngestionService(
            store=self.document_store,
            blobs=self.blobs,
            parser=self.parser,
            chunker=lambda doc_id, pages: chunk_pages(
                doc_id, pages, config.chunk_chars, config.chunk_overlap_chars
            ),
            index=self.chunk_index,
            embedder=self.embedder,
        )
        self.worker = Worker(
            self.job_queue,
            {INGEST_JOB: self.ingestion.run_job},
            concurrency=config.worker_concurrency,
            lease_seconds=config.job_lease_seconds,
            timeout_seconds=config.job_timeout_seconds,
            backoff=Backoff(config.job_retry_base_seconds, config.job_retry_max_seconds),
            on_dead=self.ingestion.fail_exhausted,
        )

    def _memories(self, settings: Settings) -> None:
        """Memories across conversations: their store, the fact extractor, the job."""
        config = settings.memories
        extractor = (
            ModelExtractor(self.catalog, config.model)
            if config.extractor == "model" and config.model
            else RuleExtractor()
        )
        self.memories = MemoryService(
            SqlMemoryStore(self.db),
            extractor,
            self.embedder,
            self.job_queue,
            self.record_store,
            top_k=config.top_k,
            max_per_user=config.max_per_user,
            page_max=settings.page_size_max,
            on_enqueued=lambda: self.worker.poke(),
        )
        self.worker.handle(REMEMBER_JOB, self.memories.run_job)

    def upstreams(self, *, build: bool = False) -> list[dict[str, Any]]:
        """Every routed model's upstreams (chat, images) and the embedder's, if routed:
        circuit state and figures, for /metrics and GET /api/admin/upstreams."""
        found = self.catalog.upstreams(build=build)
        snapshot = getattr(self.embedder, "snapshot", None)
        if snapshot is not None:
            name = getattr(self.embedder, "name", "embeddings")
            found.append({"model": name, "kind": "embeddings", "upstreams": snapshot()})
        return found

    async def start(self, *, worker: bool | None = None, release_credits: bool = True) -> None:
        """Migrate, join the processes on the database and fail the replies of those that
        are gone (never a live sibling's: services/nodes.py), release the credits they held
        (`release_credits`), keep a heartbeat, and start the embedded job worker (`worker`:
        default `documents.embedded_worker`)."""
        await self.db.migrate()
        if self.redis is not None and self._redis_feed is not None:
            await self.redis.start()
            await self._redis_feed.start()
        await self.nodes.join(release_credits=release_credits)
        self.nodes.start()
        if release_credits:
            await self.idempotency.purge()  # expired keys (each is also replaced on reuse)
        if self.settings.documents.embedded_worker if worker is None else worker:
            if self.settings.documents.parser_warm_start:
                await self.parser.warm_up()
            await self.ingestion.resume_orphans(
                self.job_queue, self.settings.documents.job_max_attempts
            )
            self.worker.start()

    async def bootstrap(self) -> IssuedKey | None:
        """First start with an empty database: an admin key, to be shown once."""
        if not self.settings.bootstrap_admin:
            return None
        async with self.db.exclusive():  # N processes starting at once: one key, once
            return await self.accounts.bootstrap()

    async def stop(self) -> None:
        await self.runs.drain(SHUTDOWN_GRACE_SECONDS)
        if self.redis is not None and self._redis_feed is not None:
            await self._redis_feed.stop()
            await self.redis.stop()
        await self.worker.stop()
        await self.nodes.stop()
        await self.parser.aclose()
        if self.embedder is not None:
            await self.embedder.aclose()
        if self.reranker is not None:
            await self.reranker.aclose()
        await self.catalog.aclose()
        if self.searcher is not None:
            await self.searcher.aclose()
        await self.db.dispose()

    async def readiness(self) -> dict[str, str]:
        """What `/readyz` checks: the database answers, its schema is current, and Redis
        answers when one is configured (`redis_url`; else "not configured"). Each check's
        value is "ok" or what is wrong. (Without Redis a process still serves, in degraded
        mode; not ready tells a load balancer to prefer the processes that have it.)"""
        checks: dict[str, str] = {}
        try:
            current, head = await self.db.revisions()
        except Unavailable:
            checks["database"] = "unreachable"
            checks["migrations"] = "unknown"
        else:
            checks["database"] = "ok"
            checks["migrations"] = (
                "ok" if current == head else f"at {current}, this version needs {head}"
            )
        if self.redis is None:
            checks["redis"] = "not configured"
        else:
            checks["redis"] = "ok" if self.redis_up else "unreachable (degraded mode)"
        return checks

    async def ping_database(self) -> None:
        async with self.db.read() as conn:
            await conn.execute(text("SELECT 1"))


def create_app(
    settings: Settings | None = None,
    *,
    model_factory: ModelFactory | None = None,
    image_factory: ImageModelFactory | None = None,
) -> FastAPI:
    # The API (FastAPI and every dialect's routes, about a second of imports) is loaded only
    # by what serves it: the CLI's other commands build a Container alone.
    from threadline.api.app import build_app

    container = Container(
        settings or Settings(), model_factory=model_factory, image_factory=image_factory
    )
    return build_app(container)
