"""Chunks with full-text and vector search in SQL (implements `domain.documents.ChunkIndex`).

Every search is scoped twice: to the caller's org and to an explicit list of its documents
(a conversation's attachments, or all of the org's). Per backend:

=================  =========================================  ==================================
                   SQLite (embedded)                          PostgreSQL
=================  =========================================  ==================================
full text          FTS5 `chunks_fts`, MATCH, `bm25()`         `tsv @@ websearch_to_tsquery`,
                                                              `ts_rank_cd`, GIN index
vectors            numpy over cached float32 matrices         pgvector `<=>`: exact for small
                   (`vector_cache.py`), exact                 candidate sets, else HNSW with
                                                              iterative scan
=================  =========================================  ==================================

Questions become OR-ed quoted words (`search_terms.py`), so no user text is query syntax.

pgvector: `chunks.embedding` is an untyped `vector` (the dimension depends on the embedder).
An HNSW index needs a fixed dimension, so each dimension in use gets a partial expression
index, `((embedding::vector(N))) WHERE dim = N`, made the first time vectors of that
dimension are stored; searches order by the same expression so the planner can use it.
HNSW finds the nearest chunks of *all* orgs and documents and filters afterwards, which can
leave fewer than `limit` hits when the scope is a small part of the table; hence exact search
when the candidate set is small, and iterative index scans (pgvector >= 0.8) otherwise, with
an exact search as the fallback when even those come up short.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import numpy as np
from sqlalchemy import (
    BigInteger,
    Integer,
    Uuid,
    any_,
    bindparam,
    column,
    delete,
    func,
    insert,
    literal_column,
    select,
    table,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Row
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.expression import ColumnClause

from threadline.domain.documents import Chunk, ChunkHit
from threadline.domain.errors import NotFound
from threadline.storage.database import Database
from threadline.storage.search_terms import fts5_match, search_terms, websearch_query
from threadline.storage.tables import chunks as chunk_table
from threadline.storage.tables import documents
from threadline.storage.vector_cache import (
    DocumentVectors,
    Matrix,
    VectorCache,
    from_blobs,
    normalised,
    top_k,
)

__all__ = ["SqlChunkIndex", "hnsw_index_name"]

_fts = table("chunks_fts", column("rowid", Integer))
_fts_ref: ColumnClause[Any] = literal_column("chunks_fts")

# numpy work above this many candidate chunks runs in a thread, off the event loop.
_THREAD_ABOVE = 20_000
# HNSW over `vector` takes up to 2,000 dimensions, over `halfvec` up to 4,000.
_MAX_VECTOR_INDEX_DIM = 2000
_MAX_HALFVEC_INDEX_DIM = 4000


def hnsw_index_name(dim: int) -> str:
    return f"ix_chunks_embedding_hnsw_{dim}"


def _pg_vector_type(dim: int) -> tuple[str, str] | None:
    """(cast type, operator class) of the HNSW index for `dim`, or None: no index."""
    if dim <= _MAX_VECTOR_INDEX_DIM:
        return f"vector({dim})", "vector_cosine_ops"
    if dim <= _MAX_HALFVEC_INDEX_DIM:
        return f"halfvec({dim})", "halfvec_cosine_ops"
    return None


def _pg_vector_text(row: Matrix) -> str:
    return "[" + ",".join(map(repr, row.tolist())) + "]"


def _query_vector(vector: Sequence[float]) -> Matrix | None:
    q = np.asarray(vector, dtype=np.float32)
    if q.ndim != 1 or not q.size or not np.isfinite(q).all():
        raise ValueError("a query vector is a non-empty list of finite numbers")
    norm = float(np.linalg.norm(q))
    return None if norm == 0 else q / norm


def _hit(row: Any, name: str, score: float) -> ChunkHit:
    return ChunkHit(
        chunk_id=int(row.id),
        document_id=int(row.document_id),
        document_name=name,
        ordinal=int(row.ordinal),
        page_start=int(row.page_start),
        page_end=int(row.page_end),
        text=row.text,
        score=score,
    )


class SqlChunkIndex:
    """`cache_bytes`: the SQLite vector cache's budget (100k chunks of 384 dims take
    ~155 MB). `ef_search`: HNSW's candidate list on PostgreSQL. `exact_below`: on
    PostgreSQL, candidate sets up to this many chunks are searched exactly."""

    def __init__(
        self,
        db: Database,
        *,
        cache_bytes: int = 512 * 1024 * 1024,
        ef_search: int = 100,
        exact_below: int = 5000,
    ) -> None:
        self._db = db
        self._cache = VectorCache(cache_bytes)
        self._ef_search = ef_search
        self._exact_below = exact_below
        self._indexed_dims: set[int] = set()

    # ---- writing ----

    async def replace_chunks(
        self,
        org_id: UUID,
        document_id: int,
        chunks: Sequence[Chunk],
        embeddings: Sequence[Sequence[float]] | None,
        embedder: str | None,
    ) -> None:
        matrix = self._check(document_id, chunks, embeddings, embedder)
        dim = int(matrix.shape[1]) if matrix is not None else None
        if dim is not None and not self._db.is_sqlite:
            await self._ensure_hnsw_index(dim)
        rows = self._rows(org_id, document_id, chunks, matrix, embedder)
        doc_where = (documents.c.org_id == org_id, documents.c.id == document_id)
        async with self._db.write() as conn:
            # Bumping the version first also locks the document's row (PostgreSQL), so two
            # replacements of one document run one after the other.
            version = (
                await conn.execute(
                    update(documents)
                    .where(*doc_where)
                    .values(
                        chunks_version=documents.c.chunks_version + 1,
                        chunk_count=len(rows),
                    )
                    .returning(documents.c.chunks_version)
                )
            ).scalar_one_or_none()
            if version is None:
                raise NotFound(f"document {document_id} not found")
            await conn.execute(
                delete(chunk_table).where(
                    chunk_table.c.org_id == org_id, chunk_table.c.document_id == document_id
                )
            )
            if rows:
                await conn.execute(insert(chunk_table), rows)
            ids: list[int] = []
            if matrix is not None and self._db.is_sqlite:
                ids = list(
                    (
                        await conn.execute(
                            select(chunk_table.c.id)
                            .where(
                                chunk_table.c.org_id == org_id,
                                chunk_table.c.document_id == document_id,
                            )
                            .order_by(chunk_table.c.ordinal)
                        )
                    ).scalars()
                )
        self._cache.forget(document_id)
        if matrix is not None and embedder is not None and self._db.is_sqlite:
            order = np.argsort([c.ordinal for c in chunks], kind="stable")
            entry = DocumentVectors(version, np.asarray(ids, np.int64), matrix[order])
            self._cache.put(document_id, embedder, entry)

    @staticmethod
    def _check(
        document_id: int,
        chunks: Sequence[Chunk],
        embeddings: Sequence[Sequence[float]] | None,
        embedder: str | None,
    ) -> Matrix | None:
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
            matrix = np.asarray(embeddings, dtype=np.float32)
        except ValueError as exc:
            raise ValueError("embeddings must all have the same dimension") from exc
        if matrix.ndim != 2 or matrix.shape[1] == 0 or not np.isfinite(matrix).all():
            raise ValueError("embeddings must be non-empty lists of finite numbers")
        if matrix.shape[1] > 16000:
            raise ValueError("embeddings have more than 16,000 dimensions")
        return normalised(matrix)

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
                embedding = (
                    vector.astype("<f4").tobytes()
                    if self._db.is_sqlite
                    else _pg_vector_text(vector)
                )
            rows.append(
                {
                    "org_id": org_id,
                    "document_id": document_id,
                    "ordinal": c.ordinal,
                    "page_start": c.page_start,
                    "page_end": c.page_end,
                    "text": c.text,
                    "embedder": embedder if matrix is not None else None,
                    "dim": dim,
                    "embedding": embedding,
                }
            )
        return rows

    async def _ensure_hnsw_index(self, dim: int) -> None:
        """Create the HNSW index for `dim` the first time (per process) it is needed."""
        if dim in self._indexed_dims:
            return
        kind = _pg_vector_type(dim)
        if kind is not None:
            name = hnsw_index_name(dim)
            async with self._db.read() as conn:
                exists = (
                    await conn.execute(text("SELECT to_regclass(:name)"), {"name": name})
                ).scalar_one()
            if exists is None:
                cast_type, opclass = kind
                statement = (
                    f"CREATE INDEX IF NOT EXISTS {name} ON chunks "
                    f"USING hnsw ((embedding::{cast_type}) {opclass}) WHERE dim = {dim}"
                )
                try:
                    async with self._db.write() as conn:
                        await conn.execute(text(statement))
                except DBAPIError:
                    # Another process made it at the same moment (a unique violation on the
                    # catalog); anything else shows again at the next check.
                    async with self._db.read() as conn:
                        check = text("SELECT to_regclass(:name)")
                        if (await conn.execute(check, {"name": name})).scalar_one() is None:
                            raise
        self._indexed_dims.add(dim)

    async def chunk_count(self, org_id: UUID | None = None) -> int:
        query = select(func.count()).select_from(chunk_table)
        if org_id is not None:
            query = query.where(chunk_table.c.org_id == org_id)
        async with self._db.read() as conn:
            return int((await conn.execute(query)).scalar_one())

    # ---- full text ----

    async def search_text(
        self, org_id: UUID, document_ids: Sequence[int], query: str, limit: int
    ) -> list[ChunkHit]:
        terms = search_terms(query)
        ids = list(dict.fromkeys(document_ids))
        if not terms or not ids or limit <= 0:
            return []
        if self._db.is_sqlite:
            return await self._search_text_sqlite(org_id, ids, terms, limit)
        return await self._search_text_postgres(org_id, ids, terms, limit)

    async def _search_text_sqlite(
        self, org_id: UUID, ids: list[int], terms: list[str], limit: int
    ) -> list[ChunkHit]:
        score = func.bm25(_fts_ref)  # lower is better
        query = (
            select(
                chunk_table.c.id,
                chunk_table.c.document_id,
                chunk_table.c.ordinal,
                chunk_table.c.page_start,
                chunk_table.c.page_end,
                chunk_table.c.text,
                documents.c.name,
                score.label("score"),
            )
            .select_from(
                _fts.join(chunk_table, chunk_table.c.id == _fts.c.rowid).join(
                    documents, documents.c.id == chunk_table.c.document_id
                )
            )
            .where(
                _fts_ref.op("MATCH")(fts5_match(terms)),
                chunk_table.c.org_id == org_id,
                chunk_table.c.document_id.in_(ids),
                documents.c.org_id == org_id,
            )
            .order_by(score, chunk_table.c.id)
            .limit(limit)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_hit(r, r.name, -float(r.score)) for r in rows]

    async def _search_text_postgres(
        self, org_id: UUID, ids: list[int], terms: list[str], limit: int
    ) -> list[ChunkHit]:
        statement = text(
            """
            SELECT c.id, c.document_id, c.ordinal, c.page_start, c.page_end, c.text, d.name,
                   ts_rank_cd(c.tsv, q, 1) AS score
            FROM websearch_to_tsquery('english', :query) AS q,
                 chunks AS c JOIN documents AS d ON d.id = c.document_id
            WHERE c.tsv @@ q AND c.org_id = :org AND c.document_id = ANY(:ids)
              AND d.org_id = :org
            ORDER BY score DESC, c.id
            LIMIT :limit
            """
        ).bindparams(
            bindparam("org", type_=Uuid),
            bindparam("ids", type_=ARRAY(BigInteger)),
        )
        params = {"query": websearch_query(terms), "org": org_id, "ids": ids, "limit": limit}
        async with self._db.read() as conn:
            rows = (await conn.execute(statement, params)).all()
        return [_hit(r, r.name, float(r.score)) for r in rows]

    # ---- vectors ----

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
        if self._db.is_sqlite:
            return await self._search_vector_sqlite(org_id, ids, q, embedder, limit)
        return await self._search_vector_postgres(org_id, ids, q, embedder, limit)

    async def _search_vector_sqlite(
        self, org_id: UUID, ids: list[int], q: Matrix, embedder: str, limit: int
    ) -> list[ChunkHit]:
        async with self._db.read() as conn:
            docs = {
                r.id: (r.chunks_version, r.name)
                for r in await conn.execute(
                    select(documents.c.id, documents.c.chunks_version, documents.c.name).where(
                        documents.c.org_id == org_id, documents.c.id.in_(ids)
                    )
                )
            }
            entries: list[DocumentVectors] = []
            stale: list[int] = []
            for document_id, (version, _name) in docs.items():
                entry = self._cache.get(document_id, embedder, version)
                if entry is None:
                    stale.append(document_id)
                else:
                    entries.append(entry)
            if stale:
                entries += await self._load_vectors(conn, org_id, stale, embedder, docs)
            candidates = sum(len(e.chunk_ids) for e in entries)
            if candidates > _THREAD_ABOVE:
                best = await asyncio.to_thread(top_k, entries, q, limit)
            else:
                best = top_k(entries, q, limit)
            if not best:
                return []
            found = {
                r.id: r
                for r in await conn.execute(
                    select(
                        chunk_table.c.id,
                        chunk_table.c.document_id,
                        chunk_table.c.ordinal,
                        chunk_table.c.page_start,
                        chunk_table.c.page_end,
                        chunk_table.c.text,
                    ).where(
                        chunk_table.c.org_id == org_id, chunk_table.c.id.in_([i for i, _ in best])
                    )
                )
            }
        return [
            _hit(found[i], docs[found[i].document_id][1], score)
            for i, score in best
            if i in found and found[i].document_id in docs
        ]

    async def _load_vectors(
        self,
        conn: AsyncConnection,
        org_id: UUID,
        document_ids: list[int],
        embedder: str,
        docs: dict[int, tuple[int, str]],
    ) -> list[DocumentVectors]:
        """Read the vectors of documents missing from the cache, and cache them. Each is
        stamped with the version read together with its chunks (one statement, one
        snapshot), so an entry is never older than its stamp."""
        query = (
            select(
                chunk_table.c.document_id,
                documents.c.chunks_version,
                chunk_table.c.id,
                chunk_table.c.embedding,
            )
            .join(documents, documents.c.id == chunk_table.c.document_id)
            .where(
                chunk_table.c.org_id == org_id,
                chunk_table.c.document_id.in_(document_ids),
                chunk_table.c.embedder == embedder,
                chunk_table.c.embedding.is_not(None),
            )
            .order_by(chunk_table.c.document_id, chunk_table.c.ordinal)
        )
        versions = {d: docs[d][0] for d in document_ids}
        chunk_ids: dict[int, list[int]] = {d: [] for d in document_ids}
        blobs: dict[int, list[bytes]] = {d: [] for d in document_ids}
        for row in await conn.execute(query):
            versions[row.document_id] = row.chunks_version
            chunk_ids[row.document_id].append(row.id)
            blobs[row.document_id].append(row.embedding)
        loaded = []
        for d in document_ids:
            entry = from_blobs(versions[d], chunk_ids[d], blobs[d])
            self._cache.put(d, embedder, entry)
            loaded.append(entry)
        return loaded

    async def _search_vector_postgres(
        self, org_id: UUID, ids: list[int], q: Matrix, embedder: str, limit: int
    ) -> list[ChunkHit]:
        dim = int(q.shape[0])
        kind = _pg_vector_type(dim)
        params = {
            "org": org_id,
            "ids": ids,
            "dim": dim,
            "embedder": embedder,
            "q": _pg_vector_text(q),
            "limit": limit,
        }
        async with self._db.read() as conn:
            candidates = (
                await conn.execute(
                    select(func.coalesce(func.sum(documents.c.chunk_count), 0)).where(
                        documents.c.org_id == org_id,
                        documents.c.id == any_(bindparam("doc_ids", ids, ARRAY(BigInteger))),
                    )
                )
            ).scalar_one()
            rows: Sequence[Row[Any]] = []
            use_index = kind is not None and candidates > self._exact_below
            if use_index:
                await conn.execute(
                    text(
                        "SELECT set_config('hnsw.ef_search', :ef, true),"
                        " set_config('hnsw.iterative_scan', 'relaxed_order', true)"
                    ),
                    {"ef": str(max(self._ef_search, limit))},
                )
                rows = (await conn.execute(_pg_knn(kind), params)).all()
            if not use_index or len(rows) < min(limit, candidates):
                rows = (await conn.execute(_pg_knn(None), params)).all()
        # relaxed_order: an iterative scan may return hits slightly out of order
        ordered = sorted(rows, key=lambda r: (r.distance, r.id))
        return [_hit(r, r.name, 1.0 - float(r.distance)) for r in ordered]


def _pg_knn(kind: tuple[str, str] | None) -> Any:
    """Nearest chunks by cosine distance: through the HNSW index of `kind`'s dimension
    (the index's own expression), or exactly (an expression no index matches)."""
    if kind is None:
        vector, query = "c.embedding", "CAST(:q AS vector)"
    else:
        cast_type = kind[0]
        vector, query = f"(c.embedding::{cast_type})", f"CAST(:q AS {cast_type})"
    statement = text(
        f"""
        WITH nearest AS MATERIALIZED (
            SELECT c.id, c.document_id, c.ordinal, c.page_start, c.page_end, c.text,
                   {vector} <=> {query} AS distance
            FROM chunks AS c
            WHERE c.org_id = :org AND c.document_id = ANY(:ids)
              AND c.dim = :dim AND c.embedder = :embedder
            ORDER BY distance
            LIMIT :limit
        )
        SELECT n.*, d.name FROM nearest AS n JOIN documents AS d ON d.id = n.document_id
        WHERE d.org_id = :org
        """
    )
    return statement.bindparams(
        bindparam("org", type_=Uuid),
        bindparam("ids", type_=ARRAY(BigInteger)),
    )
