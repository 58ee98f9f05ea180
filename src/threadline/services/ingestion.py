"""Ingestion: the `ingest` job that turns a RUNNING document into searchable chunks.

parse (sandboxed child process) → chunk → embed (batched) → index, then the document is
COMPLETE with its page layout and counts. A file that cannot be parsed FAILS its document
with the parser's reason and the job ends normally (retrying would not help). Anything
else (the database, the embedder) raises, so the job queue retries it with back-off, as it
does an attempt that timed out or whose process died; when the attempts are used up,
`fail_exhausted` fails the document with the last error.
Every step is idempotent, so a job that runs twice (a worker died after indexing) does no
harm.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from uuid import UUID

import structlog

from threadline.domain.clock import utcnow
from threadline.domain.documents import (
    BlobStore,
    Chunk,
    ChunkIndex,
    Document,
    DocumentParser,
    DocumentState,
    DocumentStore,
    Embedder,
    Job,
    JobQueue,
    PageLayout,
    ParsedDocument,
    ParsedPage,
    ParseFailed,
)
from threadline.domain.progress import progressed
from threadline.services.chat_prompt import estimate_tokens
from threadline.services.documents import INGEST_JOB
from threadline.services.retrieval_context import contexts

log = structlog.get_logger(__name__)

ORPHAN_AGE_SECONDS = 60.0

Chunker = Callable[[int, Sequence[ParsedPage]], list[Chunk]]


@dataclass(frozen=True, slots=True)
class IngestStats:
    document_id: int
    state: DocumentState
    pages: int = 0
    chunks: int = 0
    seconds: float = 0.0


class IngestionService:
    def __init__(
        self,
        *,
        store: DocumentStore,
        blobs: BlobStore,
        parser: DocumentParser,
        chunker: Chunker,
        index: ChunkIndex,
        embedder: Embedder | None,
        embed_batch: int = 64,
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._parser = parser
        self._chunker = chunker
        self._index = index
        self._embedder = embedder
        self._embed_batch = embed_batch

    async def run_job(self, job: Job) -> None:
        """The `ingest` job handler."""
        if job.org_id is None:
            raise ValueError(f"ingest job {job.id} has no org")
        await self.ingest(job.org_id, int(job.payload["document_id"]))

    async def ingest(self, org_id: UUID, document_id: int) -> IngestStats:
        started = time.perf_counter()
        document = await self._store.get_document(org_id, document_id)
        if document is None or document.state is not DocumentState.RUNNING:
            # deleted meanwhile, or a duplicate job for a finished document
            state = document.state if document else DocumentState.FAILED
            return IngestStats(document_id, state)
        asset = await self._store.get_asset(org_id, document.asset_id)
        if asset is None:
            return IngestStats(document_id, DocumentState.FAILED)
        try:
            copy = await self._blobs.fetch(asset.blob_path)
        except FileNotFoundError:
            await self._fail(document, "the uploaded file is no longer stored")
            return IngestStats(document_id, DocumentState.FAILED)
        try:
            parsed = await self._parser.parse(copy.path, document.mime_type, document.name)
        except ParseFailed as failure:
            if failure.retryable:
                raise
            await self._fail(document, failure.reason)
            return IngestStats(document_id, DocumentState.FAILED)
        finally:
            copy.release()
        progressed()
        # Chunking and counting grow with the text (tens of MB for a big upload): a thread,
        # so the event loop (every tenant's) never waits on them.
        chunks, tokens = await asyncio.to_thread(self._chunk_and_count, document, parsed)
        progressed()
        title = parsed.metadata.get("title")
        await self._index_chunks(document, chunks, title if isinstance(title, str) else None)
        text_chars = parsed.text_chars
        await self._store.finish_document(
            org_id,
            document.id,
            state=DocumentState.COMPLETE,
            reason="; ".join(parsed.notes) or None,
            pages=[_layout(p) for p in parsed.pages],
            char_count=text_chars,
            token_count=tokens,
        )
        elapsed = time.perf_counter() - started
        log.info(
            "document ingested",
            document=document.id,
            pages=len(parsed.pages),
            chunks=len(chunks),
            ms=round(elapsed * 1000),
        )
        return IngestStats(
            document_id, DocumentState.COMPLETE, len(parsed.pages), len(chunks), elapsed
        )

    def _chunk_and_count(
        self, document: Document, parsed: ParsedDocument
    ) -> tuple[list[Chunk], int]:
        pages = parsed.pages
        chunks = self._chunker(document.id, pages)
        # page numbers are 0-based and dense in a parsed document
        page_count = max((p.number for p in pages), default=-1) + 1
        starts = [(c.page_start, c.text) for c in chunks]
        lines = contexts(document.name, parsed.metadata, starts, page_count)
        chunks = [replace(c, context=line) for c, line in zip(chunks, lines, strict=True)]
        return chunks, sum(estimate_tokens(p.text) for p in pages)

    async def _index_chunks(
        self, document: Document, chunks: list[Chunk], title: str | None
    ) -> None:
        vectors: list[list[float]] | None = None
        if self._embedder is not None and chunks:
            vectors = []
            for start in range(0, len(chunks), self._embed_batch):
                # The chunk's context (file name, title, heading) goes with each passage:
                # chunk text rarely repeats it, and questions often name the product or
                # file ("libtasn1 header"), or the section.
                batch = [
                    f"{c.context or document.name}\n{c.text}"
                    for c in chunks[start : start + self._embed_batch]
                ]
                vectors.extend(await self._embedder.embed(batch, "passage"))
                progressed()  # a big document is many batches: it is moving
        await self._index.replace_chunks(
            document.org_id,
            document.id,
            chunks,
            vectors,
            self._embedder.name if self._embedder is not None else None,
            title=title,
        )

    async def resume_orphans(self, jobs: JobQueue, max_attempts: int) -> int:
        """Queue a job for every RUNNING document that has none (its process died between
        storing the document and queueing the job). Documents younger than a minute are
        left alone: their job may be on its way. A document whose job is DEAD (its process
        died between giving the job up and failing the document) is failed now, never
        queued afresh: a job that crashed its server every time must not come back with new
        attempts. Returns how many were queued."""
        active = {job.payload.get("document_id") for job in await jobs.active(INGEST_JOB)}
        dead = {job.payload.get("document_id"): job for job in await jobs.dead(INGEST_JOB)}
        cutoff = utcnow() - timedelta(seconds=ORPHAN_AGE_SECONDS)
        queued = 0
        for document in await self._store.running_documents():
            if document.id in active:
                continue
            gone = dead.get(document.id)
            if gone and gone.org_id == document.org_id and gone.created_at >= document.created_at:
                await self.fail_exhausted(gone)
                continue
            if document.updated_at > cutoff:
                continue
            await jobs.enqueue(
                INGEST_JOB,
                {"document_id": document.id},
                org_id=document.org_id,
                max_attempts=max_attempts,
            )
            queued += 1
        if queued:
            log.warning("queued ingestion for documents left without a job", count=queued)
        return queued

    async def fail_exhausted(self, job: Job) -> None:
        """A job that will not run again: fail its document with the last error (a crash,
        a timeout or an exception), which the user reads as the document's reason."""
        if job.org_id is None or "document_id" not in job.payload:
            return
        document = await self._store.get_document(job.org_id, int(job.payload["document_id"]))
        if document is not None and document.state is DocumentState.RUNNING:
            await self._fail(
                document,
                f"ingestion failed after {job.attempts} attempt"
                f"{'' if job.attempts == 1 else 's'}; last error: "
                f"{job.last_error or 'the worker stopped'}",
            )

    async def _fail(self, document: Document, reason: str) -> None:
        log.info("document failed", document=document.id, reason=reason)
        await self._store.finish_document(
            document.org_id, document.id, state=DocumentState.FAILED, reason=reason
        )


def _layout(page: ParsedPage) -> PageLayout:
    return PageLayout(
        number=page.number,
        width=page.width,
        height=page.height,
        rotation=page.rotation,
        is_image_page=page.is_image_page,
    )
