"""Documents: what users upload, what parsing makes of it, and what retrieval finds.

    Asset ──(1:1)── Document ──(1:n)── Chunk          (per org)
                       │
    Conversation ──(n:m, conversation_documents)

An *asset* is a stored upload (1min.ai's Asset API; its id goes into `fileList` and
`attachments.files`). Every asset gets a *document*: the result of ingesting it, with an
integer id (AI Hub Converse's document id), a state RUNNING → COMPLETE | FAILED with a
reason a person understands, and its page layout. A document's text is split into
*chunks* that keep their page span; chunks are what retrieval returns.

Pure data and Protocols; nothing here imports a library beyond the standard one.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol
from uuid import UUID


class DocumentState(enum.StrEnum):
    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"


@dataclass(frozen=True, slots=True)
class Asset:
    """A stored upload. `key` is its public name (e.g. `files/2026_11_22_..._report.pdf`);
    `blob_path` is where the bytes live, relative to the blob root, always generated."""

    id: UUID
    org_id: UUID
    user_id: UUID
    key: str
    name: str
    mime_type: str
    size: int
    sha256: str
    blob_path: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class PageLayout:
    """One page as the metadata endpoint shows it. `number` is 0-based (original order)."""

    number: int
    width: int
    height: int
    rotation: int = 0
    is_image_page: bool = False


@dataclass(frozen=True, slots=True)
class Document:
    id: int
    org_id: UUID
    user_id: UUID
    asset_id: UUID
    name: str
    mime_type: str
    state: DocumentState
    reason: str | None
    created_at: datetime
    updated_at: datetime
    page_count: int = 0
    char_count: int = 0
    token_count: int = 0
    pages: tuple[PageLayout, ...] = ()


@dataclass(frozen=True, slots=True)
class ConversationDocument:
    """A document attached to a conversation (1min.ai's `conversationFile`)."""

    conversation_id: UUID
    document: Document
    created_at: datetime
    created_by: str


# ---- parsing ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParsedPage:
    """The text of one page (a sheet, a slide, or the whole of a page-less format)."""

    number: int  # 0-based
    text: str
    width: int = 0
    height: int = 0
    rotation: int = 0
    is_image_page: bool = False  # no text layer; its text (if any) came from OCR


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    pages: tuple[ParsedPage, ...]
    notes: tuple[str, ...] = ()  # things a person should know ("page 3: OCR not installed")
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def text_chars(self) -> int:
        return sum(len(p.text) for p in self.pages)


class ParseFailed(Exception):
    """Parsing this file failed; `reason` is shown to the user ("encrypted PDF")."""

    def __init__(self, reason: str, *, retryable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class DocumentParser(Protocol):
    async def parse(self, path: Path, mime_type: str, name: str) -> ParsedDocument:
        """Parse an untrusted file (in a sandboxed child process). Raises `ParseFailed`."""
        ...


@dataclass(frozen=True, slots=True)
class LocalCopy:
    """A stored blob as a file on this machine, for as long as its user needs it: the
    store's own file, or a temporary copy (`temporary`) that `release()` deletes."""

    path: Path
    temporary: bool = False

    def release(self) -> None:
        if self.temporary:
            self.path.unlink(missing_ok=True)


class BlobStore(Protocol):
    """Where uploaded bytes live (storage/blobs.py: files, or chunks in the database).
    Blob paths are generated, never taken from a client."""

    def staging_path(self) -> Path: ...
    async def keep(self, org_id: UUID, staged: Path) -> str: ...
    async def fetch(self, blob_path: str) -> LocalCopy:
        """The blob as a local file (release it after use); FileNotFoundError if gone."""
        ...

    async def delete(self, blob_path: str) -> None: ...


# ---- chunks and retrieval -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Chunk:
    document_id: int
    ordinal: int
    page_start: int  # 0-based, inclusive
    page_end: int  # 0-based, inclusive
    text: str
    # what the chunk is from (file name · title · section heading), indexed and embedded
    # with the text (services/retrieval_context.py)
    context: str = ""


@dataclass(frozen=True, slots=True)
class ChunkHit:
    chunk_id: int
    document_id: int
    document_name: str
    ordinal: int
    page_start: int
    page_end: int
    text: str
    score: float  # higher is better; comparable only within one ranking
    context: str = ""  # the chunk's `Chunk.context` (file name · title · section heading)


EmbedKind = Literal["query", "passage"]


class Embedder(Protocol):
    """Turns text into unit-length vectors. `name` identifies the vector space: vectors
    of different names are never compared."""

    name: str
    dim: int

    async def embed(self, texts: Sequence[str], kind: EmbedKind) -> list[list[float]]: ...

    async def aclose(self) -> None: ...


class Reranker(Protocol):
    """Scores how well each passage answers a query (a cross-encoder: the two read
    together). Higher is better; scores are comparable only within one call."""

    name: str

    async def score(self, query: str, passages: Sequence[str]) -> list[float]: ...

    async def aclose(self) -> None: ...


class DocumentStore(Protocol):
    """Assets, documents and their links to conversations. Every method is org-scoped."""

    async def add_asset(self, asset: Asset) -> Asset: ...
    async def get_asset(self, org_id: UUID, asset_id: UUID) -> Asset | None: ...
    async def find_asset(self, org_id: UUID, id_or_key: str) -> Asset | None:
        """By id (a UUID string) or by key."""
        ...

    async def delete_asset(self, org_id: UUID, asset_id: UUID) -> bool:
        """Delete the asset, its document, chunks and conversation links."""
        ...

    async def list_assets(
        self, org_id: UUID, user_id: UUID, *, limit: int, offset: int
    ) -> tuple[list[tuple[Asset, Document]], int]:
        """One user's assets with their documents, newest first, and how many there are."""

    async def delete_conversation(
        self, org_id: UUID, conversation_id: UUID, asset_ids: Sequence[UUID]
    ) -> bool:
        """Delete the assets (as `delete_asset`), the conversation and its messages, in one
        transaction; False when the conversation was not there."""
        ...

    async def create_document(self, asset: Asset) -> Document:
        """A RUNNING document for the asset."""
        ...

    async def get_document(self, org_id: UUID, document_id: int) -> Document | None: ...
    async def document_for_asset(self, org_id: UUID, asset_id: UUID) -> Document | None: ...
    async def finish_document(
        self,
        org_id: UUID,
        document_id: int,
        *,
        state: DocumentState,
        reason: str | None,
        pages: Sequence[PageLayout] = (),
        char_count: int = 0,
        token_count: int = 0,
    ) -> None: ...

    async def running_documents(self) -> list[Document]:
        """Every RUNNING document, all orgs (for the reaper)."""
        ...

    async def link(
        self, org_id: UUID, conversation_id: UUID, document_ids: Sequence[int], created_by: str
    ) -> None: ...
    async def unlink(
        self, org_id: UUID, conversation_id: UUID, document_ids: Sequence[int]
    ) -> int: ...
    async def conversation_documents(
        self, org_id: UUID, conversation_id: UUID, *, user_id: UUID | None = None
    ) -> list[ConversationDocument] | None:
        """Oldest link first; None when the conversation is not the org's (with `user_id`:
        not that user's)."""
        ...

    async def documents_of_conversations(
        self, org_id: UUID, conversation_ids: Sequence[UUID], *, user_id: UUID | None = None
    ) -> dict[UUID, list[ConversationDocument]]:
        """`conversation_documents` of many conversations in one query: each one that is the
        org's (with `user_id`: that user's) maps to its documents, oldest link first (an
        empty list when it has none); the others are left out."""
        ...


class ChunkIndex(Protocol):
    """Chunks with full-text and vector search. Every search is scoped to one org and an
    explicit list of documents; an empty list finds nothing."""

    async def replace_chunks(
        self,
        org_id: UUID,
        document_id: int,
        chunks: Sequence[Chunk],
        embeddings: Sequence[Sequence[float]] | None,
        embedder: str | None,
        *,
        title: str | None = None,
    ) -> None:
        """Replace the document's chunks (idempotent, so a retried job is harmless), and
        record the document's title (from its metadata or its first page) beside them."""
        ...

    async def document_labels(
        self, org_id: UUID, document_ids: Sequence[int]
    ) -> dict[int, tuple[str, str | None]]:
        """What a question may call each document (the org's only): (file name, title)."""
        ...

    async def search_text(
        self, org_id: UUID, document_ids: Sequence[int], query: str, limit: int
    ) -> list[ChunkHit]:
        """BM25 (SQLite FTS5 / PostgreSQL full text), best first."""
        ...

    async def search_symbols(
        self, org_id: UUID, document_ids: Sequence[int], query: str, limit: int
    ) -> list[ChunkHit]:
        """The chunks with the question's symbols (identifiers, options, paths) as
        written, best first; none when the question has no symbol."""
        ...

    async def search_vector(
        self,
        org_id: UUID,
        document_ids: Sequence[int],
        vector: Sequence[float],
        embedder: str,
        limit: int,
    ) -> list[ChunkHit]:
        """Cosine similarity among chunks embedded by `embedder`, best first."""
        ...

    async def chunk_count(self, org_id: UUID | None = None) -> int: ...
    async def document_chunks(self, org_id: UUID, document_id: int) -> list[Chunk]:
        """The document's chunks in order (none when it is not the org's)."""
        ...


# ---- jobs ---------------------------------------------------------------------------


class JobState(enum.StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    DONE = "DONE"
    DEAD = "DEAD"  # failed max_attempts times


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    kind: str
    org_id: UUID | None
    payload: dict[str, Any]
    state: JobState
    attempts: int  # including the current one, once claimed
    max_attempts: int
    last_error: str | None
    created_at: datetime


class JobQueue(Protocol):
    """A durable queue with leases: a claimed job belongs to its worker until the lease
    ends; a worker that dies lets the lease lapse and `reap` hands the job out again."""

    async def enqueue(
        self, kind: str, payload: dict[str, Any], *, org_id: UUID | None, max_attempts: int = 3
    ) -> int: ...
    async def claim(self, worker: str, lease_seconds: float) -> Job | None:
        """The oldest due QUEUED job, now RUNNING with attempts + 1; None when idle."""
        ...

    async def extend(self, job_id: int, worker: str, lease_seconds: float) -> bool:
        """Renew the lease; False when the job is no longer this worker's."""
        ...

    async def complete(self, job_id: int, worker: str) -> None: ...
    async def fail(self, job_id: int, worker: str, error: str, retry_in: float) -> JobState:
        """QUEUED again after `retry_in` seconds, or DEAD when attempts are used up."""
        ...

    async def reap(self, retry_in: Callable[[int], float] = ...) -> list[Job]:
        """Jobs whose lease lapsed (their worker died or froze mid-attempt, which counts as
        a failed attempt): QUEUED again after `retry_in(attempts)` seconds, or DEAD when
        out of attempts (those returned, so their documents can be failed)."""
        ...

    async def active(self, kind: str) -> list[Job]:
        """The QUEUED and RUNNING jobs of a kind."""
        ...

    async def dead(self, kind: str) -> list[Job]:
        """The DEAD jobs of a kind (a restart must not bring their work back)."""
        ...

    async def counts(self) -> dict[str, int]:
        """Jobs per state (for /metrics and tests)."""
        ...
