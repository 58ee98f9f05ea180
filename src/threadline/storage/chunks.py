"""Chunks with full-text and vector search in SQL (implements `domain.documents.ChunkIndex`).

Every search is scoped twice: to the caller's org and to an explicit list of its documents
(a conversation's attachments, or all of the org's). Questions become OR-ed quoted words
(`search_terms.py`), so no user text is ever query syntax. The searches themselves are per
backend:

=============  ======================================  =====================================
               SQLite (`sqlite_search.py`)             PostgreSQL (`pg_search.py`)
=============  ======================================  =====================================
full text      FTS5 MATCH, `bm25()`; the scope as      `tsv @@ websearch_to_tsquery`, GIN
               document tokens or checked per match    index; IDF-weighted `ts_rank_cd`
vectors        exact cosine in numpy over cached       the same for a small scope (a
               float32 matrices                        conversation's), else pgvector HNSW
=============  ======================================  =====================================

Writing is the same on both: `replace_chunks` deletes and inserts a document's chunks in one
transaction and bumps the document's `chunks_version`, which is what keeps the vector cache
of every process current. A big document has tens of thousands of chunks: their vectors and
rows are prepared in a thread, in blocks (one numpy call over all of them would hold the GIL,
and with it the event loop, for a second), and inserted `INSERT_BATCH` rows per executemany
(SQLAlchemy prepares each batch's parameters on the event loop).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import numpy as np
from sqlalchemy import delete, func, insert, select, update

from threadline.domain.documents import Chunk, ChunkHit
from threadline.domain.errors import NotFound
from threadline.storage.database import Database
from threadline.storage.exact_vectors import ExactVectors
from threadline.storage.pg_search import POSTGRES_VECTORS, PostgresSearch, vector_text
from threadline.storage.search_terms import WordFrequencies, search_terms
from threadline.storage.sqlite_search import SQLITE_VECTORS, SqliteSearch
from threadline.storage.symbols import symbol_terms, symbol_text
from threadline.storage.tables import chunks as chunk_table
from threadline.storage.tables import documents
from threadline.storage.vector_cache import DocumentVectors, Matrix, VectorCache, normalised

__all__ = ["SqlChunkIndex"]

MAX_DIM = 16_000  # pgvector's limit for `vector`
INSERT_BATCH = 500
MATRIX_BLOCK = 1024  # rows converted from lists per numpy call
MAX_TITLE_CHARS = 500


def _query_vector(vector: Sequence[float]) -> Matrix | None:
    q = np.asarray(vector, dtype=np.float32)
    if q.ndim != 1 or not q.size or not np.isfinite(q).all():
        raise ValueError("a query vector is a non-empty list of finite numbers")
    norm = float(np.linalg.norm(q))
    return None if norm == 0 else q / norm


class SqlChunkIndex:
    """Tuning. `match_budget`: how many chunks the rare words of a question may match
    before the more common ones are left out (see `search_text`). `cache_bytes`, the
    vector cache's budget (100k chunks of 384 dimensions take ~155 MB). `symbol_budget`: a
    symbol of the question found in more chunks than this is left out of the symbol search
    (it would rank too many). SQLite: `token_cost`, see `sqlite_search.py`. PostgreSQL:
    `ef_search`, HNSW's candidate list; `exact_below`, scopes of up to this many chunks are
    searched exactly (in numpy, from the cache; bigger ones through pgvector)."""

    def __init__(
        self,
        db: Database,
        *,
        cache_bytes: int = 512 * 1024 * 1024,
        token_cost: int = 50,
        match_budget: int = 2_000,
        ef_search: int = 200,
        exact_below: int = 10_000,
        symbol_budget: int = 50,
    ) -> None:
        self._db = db
        self._symbol_budget = symbol_budget
        self.exact_below = exact_below
        self._match_budget = match_budget
        self._words = WordFrequencies()
        statements = SQLITE_VECTORS if db.is_sqlite else POSTGRES_VECTORS
        self._exact = ExactVectors(statements, VectorCache(cache_bytes))
        self._sqlite = (
            SqliteSearch(db, self._exact, token_cost=token_cost) if db.is_sqlite else None
        )
        self._pg = (
            None
            if db.is_sqlite
            else PostgresSearch(db, self._exact, ef_search=ef_search, exact_below=exact_below)
        )

    # ---- writing ----

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
        matrix, rows = await asyncio.to_thread(
            self._prepare, org_id, document_id, chunks, embeddings, embedder
        )
        if matrix is not None and self._pg is not None:
            await self._pg.ensure_hnsw_index(int(matrix.shape[1]))
        async with self._db.write() as conn:
            # Bumping the version first also locks the document's row (PostgreSQL), so two
            # replacements of one document run one after the other.
            version = (
                await conn.execute(
                    update(documents)
                    .where(documents.c.org_id == org_id, documents.c.id == document_id)
                    .values(
                        chunks_version=documents.c.chunks_version + 1,
                        chunk_count=len(rows),
                        title=(title or "").strip()[:MAX_TITLE_CHARS] or None,
                    )
                    .returning(documents.c.chunks_version)
                )
            ).scalar_one_or_none()
            if version is None:
                raise NotFound(f"document {document_id} not found")
            await conn.execute(
                delete(chunk_table).where(
                    chunk_table.c.document_id == document_id, chunk_table.c.org_id == org_id
                )
            )
            for start in range(0, len(rows), INSERT_BATCH):
                await conn.execute(insert(chunk_table), rows[start : start + INSERT_BATCH])
            ids: list[int] = []
            if matrix is not None:
                ids = list(
                    (
                        await conn.execute(
                            select(chunk_table.c.id)
                            .where(chunk_table.c.document_id == document_id)
                            .order_by(chunk_table.c.ordinal)
                        )
                    ).scalars()
                )
        cache = self._exact.cache
        cache.forget(document_id)
        if matrix is not None and embedder is not None:
            # write-through: the next search needs not read these vectors back
            order = np.argsort([c.ordinal for c in chunks], kind="stable")
            cache.put(
                document_id, embedder, DocumentVectors(version, np.asarray(ids), matrix[order])
            )

    def _prepare(
        self,
        org_id: UUID,
        document_id: int,
        chunks: Sequence[Chunk],
        embeddings: Sequence[Sequence[float]] | None,
        embedder: str | None,
    ) -> tuple[Matrix | None, list[dict[str, Any]]]:
        """The checked matrix and the rows to insert (run in a thread)."""
        matrix = _checked(document_id, chunks, embeddings, embedder)
        return matrix, self._rows(org_id, document_id, chunks, matrix, embedder)

    def _rows(
        self,
        org_id: UUID,
        document_id: int,
        chunks: Sequence[Chunk],
        matrix: Matrix | None,
        embedder: str | None,
    ) -> list[dict[str, Any]]:
        dim = int(matrix.shape[1]) if matrix is not None else None
        rows = []
        for i, c in enumerate(chunks):
            embedding: bytes | str | None = None
            if matrix is not None:
                vector = matrix[i]
                embedding = vector.astype("<f4").tobytes() if self._sqlite else vector_text(vector)
            rows.append(
                {
                    "org_id": org_id,
                    "document_id": document_id,
                    "ordinal": c.ordinal,
                    "page_start": c.page_start,
                    "page_end": c.page_end,
                    "text": c.text,
                    "context": c.context or None,
                    "symbols": symbol_text(c.text) or None,
                    "embedder": embedder if matrix is not None else None,
                    "dim": dim,
                    "embedding": embedding,
                }
            )
        return rows

    async def chunk_count(self, org_id: UUID | None = None) -> int:
        query = select(func.count()).select_from(chunk_table)
        if org_id is not None:
            query = query.where(chunk_table.c.org_id == org_id)
        async with self._db.read() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def document_labels(
        self, org_id: UUID, document_ids: Sequence[int]
    ) -> dict[int, tuple[str, str | None]]:
        ids = list(dict.fromkeys(document_ids))
        if not ids:
            return {}
        d = documents.c
        query = select(d.id, d.name, d.title).where(d.org_id == org_id, d.id.in_(ids))
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return {int(r.id): (r.name, r.title) for r in rows}

    async def document_chunks(self, org_id: UUID, document_id: int) -> list[Chunk]:
        c = chunk_table.c
        query = (
            select(c.document_id, c.ordinal, c.page_start, c.page_end, c.text, c.context)
            .where(c.org_id == org_id, c.document_id == document_id)
            .order_by(c.ordinal)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [
            Chunk(r.document_id, r.ordinal, r.page_start, r.page_end, r.text, r.context or "")
            for r in rows
        ]

    # ---- searching ----

    async def search_text(
        self, org_id: UUID, document_ids: Sequence[int], query: str, limit: int
    ) -> list[ChunkHit]:
        """The question's rarer words first: the common ones cost most of the time (every
        chunk they are in gets ranked) and add little to the ranking (low IDF); they count
        only when the rare ones find fewer than `limit` hits."""
        terms = search_terms(query)
        ids = list(dict.fromkeys(document_ids))
        if not terms or not ids or limit <= 0:
            return []
        backend: SqliteSearch | PostgresSearch = self._sqlite or self._pg  # type: ignore[assignment]
        unknown = self._words.unknown(org_id, terms)
        if unknown:
            self._words.add(org_id, *await backend.count_words(org_id, unknown))
        rare, common = self._words.split(org_id, terms, self._match_budget)
        hits = await backend.text(org_id, ids, rare, limit, self._words)
        if len(hits) < limit and common:
            hits = await backend.text(org_id, ids, rare + common, limit, self._words)
        return hits

    async def search_symbols(
        self, org_id: UUID, document_ids: Sequence[int], query: str, limit: int
    ) -> list[ChunkHit]:
        """The chunks with the question's symbols as written (`symbols.py`), the ones
        with more and rarer of them first; nothing when the question has no symbol."""
        terms = symbol_terms(query)
        ids = list(dict.fromkeys(document_ids))
        if not terms or not ids or limit <= 0:
            return []
        unknown = self._words.unknown(org_id, terms)
        if unknown:
            if self._sqlite is not None:
                counted = await self._sqlite.count_words(org_id, unknown)
            else:
                assert self._pg is not None
                counted = await self._pg.count_words(org_id, unknown, symbols=True)
            self._words.add(org_id, *counted)
        # a symbol on many pages (`X.509` in a TLS manual) tells none of them apart
        terms = [t for t in terms if self._words.count(org_id, t) <= self._symbol_budget]
        if not terms:
            return []
        if self._sqlite is not None:
            return await self._sqlite.text(org_id, ids, terms, limit, self._words, column="symbols")
        assert self._pg is not None
        return await self._pg.symbols(org_id, ids, terms, limit)

    async def search_vector(
        self,
        org_id: UUID,
        document_ids: Sequence[int],
        vector: Sequence[float],
        embedder: str,
        limit: int,
    ) -> list[ChunkHit]:
        q = _query_vector(vector)
        ids = list(dict.fromkeys(document_ids))
        if q is None or not ids or limit <= 0:
            return []
        if self._sqlite is not None:
            return await self._sqlite.vector(org_id, ids, q, embedder, limit)
        assert self._pg is not None
        return await self._pg.vector(org_id, ids, q, embedder, limit)


def _checked(
    document_id: int,
    chunks: Sequence[Chunk],
    embeddings: Sequence[Sequence[float]] | None,
    embedder: str | None,
) -> Matrix | None:
    """The embeddings as unit-length float32 rows (None without embeddings), or
    ValueError saying what is wrong with the arguments."""
    if any(c.document_id != document_id for c in chunks):
        raise ValueError("every chunk must belong to the document being replaced")
    if len({c.ordinal for c in chunks}) != len(chunks):
        raise ValueError("chunk ordinals must be distinct")
    if embeddings is None:
        return None
    if not embedder:
        raise ValueError("embeddings need the embedder's name")
    if len(embeddings) != len(chunks):
        raise ValueError(f"{len(chunks)} chunks but {len(embeddings)} embeddings")
    if not chunks:
        return None
    try:
        blocks = [
            np.asarray(embeddings[start : start + MATRIX_BLOCK], dtype=np.float32)
            for start in range(0, len(embeddings), MATRIX_BLOCK)
        ]
        if len({block.shape[1:] for block in blocks}) != 1:
            raise ValueError("inhomogeneous shapes")
        matrix = np.concatenate(blocks)
    except ValueError as exc:
        raise ValueError("embeddings must all have the same dimension") from exc
    if matrix.ndim != 2 or matrix.shape[1] == 0 or not np.isfinite(matrix).all():
        raise ValueError("embeddings must be non-empty lists of finite numbers")
    if matrix.shape[1] > MAX_DIM:
        raise ValueError(f"embeddings have more than {MAX_DIM:,} dimensions")
    return normalised(matrix)
