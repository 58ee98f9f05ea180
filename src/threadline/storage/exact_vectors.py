"""Exact vector search over cached per-document matrices, on either backend.

A conversation's scope is a few thousand chunks. Searching it exactly is one matrix-vector
product in numpy (well under a millisecond) once the vectors are in memory; reading them
from the database for every query costs far more (PostgreSQL spends ~1 us a row fetching
and filtering them, ~17 ms for a 5k-chunk scope at 100k chunks). So both backends keep
each document's unit-length float32 matrix in a `VectorCache` and read from the database
only the documents' versions (one small query), the vectors of documents missing from the
cache or replaced since, and the chunk rows of the hits.

Only the SQL differs per backend: `VectorStatements` holds it, along with how the stored
vectors are encoded (SQLite: little-endian float32 blobs; PostgreSQL: pgvector's binary
form, `vector_send()`: a 4-byte header, then big-endian float32).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, NamedTuple
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.domain.documents import ChunkHit
from threadline.storage.documents import chunk_hit
from threadline.storage.vector_cache import DocumentVectors, Matrix, VectorCache, from_blobs, top_k

__all__ = ["ExactVectors", "Owned", "VectorStatements"]

# numpy work above this many candidate chunks runs in a thread, off the event loop.
_THREAD_ABOVE = 20_000


class Owned(NamedTuple):
    """A document of the caller's org, as a search needs it."""

    version: int  # chunks_version: bumped by every replace_chunks
    name: str
    chunk_count: int


@dataclass(frozen=True, slots=True)
class VectorStatements:
    """The backend's SQL. Parameters: `:org`, `:documents` (document ids), `:embedder`,
    `:ids` (chunk ids).

    - `owned`: id, chunks_version, name, chunk_count of the org's documents among `:documents`;
    - `vectors`: document_id, chunks_version, id, embedding of their chunks by `:embedder`,
      ordered by document and ordinal;
    - `chunks`: id, document_id, ordinal, page_start, page_end, text, context of the org's chunks
      among `:ids`.
    """

    owned: Any
    vectors: Any
    chunks: Any
    dtype: str = "<f4"  # the stored floats
    header: int = 0  # bytes before them in each stored vector


class ExactVectors:
    def __init__(self, statements: VectorStatements, cache: VectorCache) -> None:
        self._sql = statements
        self.cache = cache

    async def owned(
        self, conn: AsyncConnection, org_id: UUID, document_ids: list[int]
    ) -> dict[int, Owned]:
        """Those of the documents that are the org's."""
        rows = await conn.execute(self._sql.owned, {"documents": document_ids, "org": org_id})
        return {r.id: Owned(r.chunks_version, r.name, r.chunk_count) for r in rows}

    async def search(
        self,
        conn: AsyncConnection,
        org_id: UUID,
        documents: dict[int, Owned],
        q: Matrix,
        embedder: str,
        limit: int,
    ) -> list[ChunkHit]:
        """The `limit` chunks of `documents` (from `owned`) nearest to the unit vector `q`."""
        entries: dict[int, DocumentVectors] = {}
        stale: list[int] = []
        for document_id, owned in documents.items():
            entry = self.cache.get(document_id, embedder, owned.version)
            if entry is None:
                stale.append(document_id)
            else:
                entries[document_id] = entry
        if stale:
            entries.update(await self._load(conn, org_id, stale, embedder, documents))
        searched = self.cache.stacked(embedder, int(q.shape[0]), entries)
        if sum(len(e.chunk_ids) for e in searched) > _THREAD_ABOVE:
            best = await asyncio.to_thread(top_k, searched, q, limit)
        else:
            best = top_k(searched, q, limit)
        if not best:
            return []
        params = {"ids": [chunk_id for chunk_id, _ in best], "org": org_id}
        rows = {r.id: r for r in await conn.execute(self._sql.chunks, params)}
        return [
            chunk_hit(rows[i], documents[rows[i].document_id].name, score)
            for i, score in best
            if i in rows
        ]

    async def _load(
        self,
        conn: AsyncConnection,
        org_id: UUID,
        document_ids: list[int],
        embedder: str,
        documents: dict[int, Owned],
    ) -> dict[int, DocumentVectors]:
        """Read the vectors of documents missing from the cache, and cache them. Each is
        stamped with the version read together with its chunks (one statement, one
        snapshot), so an entry is never older than its stamp."""
        stamp = {d: documents[d].version for d in document_ids}
        chunk_ids: dict[int, list[int]] = {d: [] for d in document_ids}
        blobs: dict[int, list[bytes]] = {d: [] for d in document_ids}
        params = {"documents": document_ids, "org": org_id, "embedder": embedder}
        for row in await conn.execute(self._sql.vectors, params):
            stamp[row.document_id] = row.chunks_version
            chunk_ids[row.document_id].append(row.id)
            blobs[row.document_id].append(row.embedding)
        loaded = {}
        for d in document_ids:
            entry = from_blobs(
                stamp[d], chunk_ids[d], blobs[d], dtype=self._sql.dtype, header=self._sql.header
            )
            loaded[d] = entry
            self.cache.put(d, embedder, entry)
        return loaded
