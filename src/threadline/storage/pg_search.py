"""Full-text and vector search over chunks on PostgreSQL (with pgvector).

Full text: the generated column `chunks.tsv` (`english` configuration, GIN index) matched by
`websearch_to_tsquery` over the question's OR-ed words, ranked by `ts_rank_cd` per word
weighted by the word's IDF (from the org's document frequencies, `search_terms.py`), in two
stages (see `_text_statement`).

Vectors: a scope of at most `exact_below` chunks (a conversation's documents) is searched
exactly in numpy over cached per-document matrices (`exact_vectors.py`, as on SQLite):
fetching and filtering its rows costs PostgreSQL ~1 us a chunk, ~17 ms for a 5k-chunk
scope, against a fraction of a millisecond for the product. Bigger scopes (an org's whole
library) use pgvector. `chunks.embedding` is an untyped `vector` (the dimension depends on
the embedder). An HNSW index needs a fixed dimension, so each dimension in use gets a
partial expression index, `((embedding::vector(N))) WHERE dim = N` (`halfvec` above 2,000
dimensions, none above 4,000), made the first time vectors of that dimension are stored; a
search orders by the same expression so the planner can use it. HNSW finds the nearest
chunks of *all* orgs and documents and filters afterwards, which can leave fewer than
`limit` hits when the scope is a small part of the table: pgvector's iterative scan
(>= 0.8) keeps scanning until `limit` rows pass the filter, and an exact search in SQL is
the fallback when even that comes up short (and the search for a dimension too big to
index).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import BigInteger, Uuid, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError

from threadline.domain.documents import ChunkHit
from threadline.storage.database import Database
from threadline.storage.documents import chunk_hit
from threadline.storage.exact_vectors import ExactVectors, VectorStatements
from threadline.storage.search_terms import CONTEXT_WEIGHT, WordFrequencies, websearch_query
from threadline.storage.vector_cache import Matrix

__all__ = [
    "POSTGRES_VECTORS",
    "PostgresSearch",
    "hnsw_index_name",
    "knn_statement",
    "vector_index_kind",
]

# HNSW over `vector` takes up to 2,000 dimensions, over `halfvec` up to 4,000.
_MAX_VECTOR_INDEX_DIM = 2000
_MAX_HALFVEC_INDEX_DIM = 4000


@functools.lru_cache(maxsize=4)
def _word_stats(column: str, config: str) -> Any:
    """Per term: the table's row estimate and the term's share of rows from the column's
    most common elements (0 when not among them)."""
    return text(
        f"""
        WITH stats AS (
            SELECT most_common_elems::text::text[] AS lexemes, most_common_elem_freqs AS freqs
            FROM pg_stats
            WHERE schemaname = current_schema() AND tablename = 'chunks'
              AND attname = '{column}'
        )
        SELECT t.word,
               (SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = 'chunks'::regclass)
                   AS total,
               coalesce((SELECT s.freqs[array_position(s.lexemes, l.lexeme)] FROM stats AS s), 0)
                   AS freq
        FROM unnest(CAST(:terms AS text[])) AS t(word)
        LEFT JOIN LATERAL (
            SELECT lexeme FROM unnest(to_tsvector('{config}', t.word)) LIMIT 1
        ) AS l ON true
        """
    )


_OWNED = text(
    """
    SELECT id, chunks_version, name, chunk_count FROM documents
    WHERE org_id = :org AND id = ANY(:documents)
    """
).bindparams(bindparam("org", type_=Uuid), bindparam("documents", type_=ARRAY(BigInteger)))

_VECTORS = text(
    """
    SELECT c.document_id, d.chunks_version, c.id, vector_send(c.embedding) AS embedding
    FROM chunks AS c JOIN documents AS d ON d.id = c.document_id
    WHERE c.org_id = :org AND c.document_id = ANY(:documents) AND c.embedder = :embedder
      AND c.embedding IS NOT NULL
    ORDER BY c.document_id, c.ordinal
    """
).bindparams(bindparam("org", type_=Uuid), bindparam("documents", type_=ARRAY(BigInteger)))

_CHUNKS = text(
    """
    SELECT id, document_id, ordinal, page_start, page_end, text, context FROM chunks
    WHERE id = ANY(:ids) AND org_id = :org
    """
).bindparams(bindparam("org", type_=Uuid), bindparam("ids", type_=ARRAY(BigInteger)))

# pgvector's binary form: dimension and a reserved field (int16 each), then float4s, all in
# network byte order.
POSTGRES_VECTORS = VectorStatements(
    owned=_OWNED, vectors=_VECTORS, chunks=_CHUNKS, dtype=">f4", header=4
)

# For this transaction. Custom plans: asyncpg prepares statements, and from the sixth run
# PostgreSQL may switch to a generic plan, which cannot see how many documents are in scope
# and sorts the whole scope instead of walking the HNSW index (measured: 6 ms -> 30-40 ms).
_CUSTOM_PLANS = text("SELECT set_config('plan_cache_mode', 'force_custom_plan', true)")
_HNSW_SETTINGS = text(
    "SELECT set_config('hnsw.ef_search', :ef, true),"
    " set_config('hnsw.iterative_scan', 'relaxed_order', true),"
    " set_config('plan_cache_mode', 'force_custom_plan', true)"
)


# ts_rank_cd's weights of the labels D, C, B, A: the text is D, the context A (0008).
_RANK_WEIGHTS = f"{{1.0, 0.2, 0.4, {CONTEXT_WEIGHT}}}"


@functools.lru_cache(maxsize=64)
def _text_statement(words: int) -> Any:
    """Two stages: the chunks that match any word, ordered by the IDF-weighted sum of the
    words they contain (a cheap `@@` each), give `:candidates`; those are ranked by the
    IDF-weighted sum of `ts_rank_cd` per word (~6 us a call: too dear for every match)."""
    has = " + ".join(
        f"(c.tsv @@ plainto_tsquery('english', :t{i}))::int * CAST(:w{i} AS float8)"
        for i in range(words)
    )
    rank = " + ".join(
        f"ts_rank_cd('{_RANK_WEIGHTS}', k.tsv, plainto_tsquery('english', :t{i}), 1)"
        f" * CAST(:w{i} AS float8)"
        for i in range(words)
    )
    return text(
        f"""
        WITH candidates AS MATERIALIZED (
            SELECT c.id, c.tsv
            FROM websearch_to_tsquery('english', :query) AS q, chunks AS c
            WHERE c.tsv @@ q AND c.org_id = :org AND c.document_id = ANY(:documents)
            ORDER BY {has} DESC, c.id
            LIMIT :candidates
        )
        SELECT c.id, c.document_id, c.ordinal, c.page_start, c.page_end, c.text, c.context, d.name,
               {rank} AS score
        FROM candidates AS k JOIN chunks AS c ON c.id = k.id
             JOIN documents AS d ON d.id = c.document_id
        WHERE d.org_id = :org
        ORDER BY score DESC, c.id
        LIMIT :limit
        """
    ).bindparams(bindparam("org", type_=Uuid), bindparam("documents", type_=ARRAY(BigInteger)))


_SYMBOLS = text(
    """
    SELECT c.id, c.document_id, c.ordinal, c.page_start, c.page_end, c.text, c.context, d.name,
           ts_rank(c.symbols_tsv, q) AS score
    FROM to_tsquery('simple', :query) AS q, chunks AS c
         JOIN documents AS d ON d.id = c.document_id
    WHERE c.symbols_tsv @@ q AND c.org_id = :org AND c.document_id = ANY(:documents)
      AND d.org_id = :org
    ORDER BY score DESC, c.id
    LIMIT :limit
    """
).bindparams(bindparam("org", type_=Uuid), bindparam("documents", type_=ARRAY(BigInteger)))


def hnsw_index_name(dim: int) -> str:
    return f"ix_chunks_embedding_hnsw_{dim}"


def vector_index_kind(dim: int) -> tuple[str, str] | None:
    """(cast type, operator class) of the HNSW index for `dim`, or None: no index."""
    if dim <= _MAX_VECTOR_INDEX_DIM:
        return f"vector({dim})", "vector_cosine_ops"
    if dim <= _MAX_HALFVEC_INDEX_DIM:
        return f"halfvec({dim})", "halfvec_cosine_ops"
    return None


def vector_text(vector: Matrix) -> str:
    """pgvector's text form of a vector, `[0.1,0.2,...]`."""
    return "[" + ",".join(map(repr, vector.tolist())) + "]"


def knn_statement(kind: tuple[str, str] | None) -> Any:
    """Nearest chunks by cosine distance: through the HNSW index of `kind`'s dimension
    (ordered by the index's own expression), or exactly (`kind` None: an expression no
    index matches)."""
    if kind is None:
        vector, query = "c.embedding", "CAST(:q AS vector)"
    else:
        vector, query = f"(c.embedding::{kind[0]})", f"CAST(:q AS {kind[0]})"
    statement = text(
        f"""
        WITH nearest AS MATERIALIZED (
            SELECT c.id, c.document_id, c.ordinal, c.page_start, c.page_end, c.text, c.context,
                   {vector} <=> {query} AS distance
            FROM chunks AS c
            WHERE c.org_id = :org AND c.document_id = ANY(:documents)
              AND c.dim = :dim AND c.embedder = :embedder
            ORDER BY distance
            LIMIT :limit
        )
        SELECT n.*, d.name FROM nearest AS n JOIN documents AS d ON d.id = n.document_id
        WHERE d.org_id = :org
        """
    )
    return statement.bindparams(
        bindparam("org", type_=Uuid), bindparam("documents", type_=ARRAY(BigInteger))
    )


class PostgresSearch:
    def __init__(
        self, db: Database, exact: ExactVectors, *, ef_search: int, exact_below: int
    ) -> None:
        self._db = db
        self.exact = exact
        self._ef_search = ef_search
        self._exact_below = exact_below
        self._indexed_dims: set[int] = set()

    async def text(
        self,
        org_id: UUID,
        document_ids: list[int],
        terms: list[str],
        limit: int,
        words: WordFrequencies,
    ) -> list[ChunkHit]:
        """Best first by the sum over the words of their IDF times their `ts_rank_cd`:
        `ts_rank_cd` alone weighs a word found in every chunk like a rare one."""
        params: dict[str, Any] = {
            "query": websearch_query(terms),
            "org": org_id,
            "documents": document_ids,
            "limit": limit,
            "candidates": max(50, 5 * limit),
        }
        for i, term in enumerate(terms):
            params[f"t{i}"], params[f"w{i}"] = term, words.idf(org_id, term)
        async with self._db.read() as conn:
            await conn.execute(_CUSTOM_PLANS)
            rows = (await conn.execute(_text_statement(len(terms)), params)).all()
        return [chunk_hit(r, r.name, float(r.score)) for r in rows]

    async def symbols(
        self, org_id: UUID, document_ids: list[int], terms: list[str], limit: int
    ) -> list[ChunkHit]:
        """Chunks with any of the encoded symbols (`symbols.py`: letters and digits only,
        so safe in a tsquery), the ones with more of them first."""
        params = {
            "query": " | ".join(terms),
            "org": org_id,
            "documents": document_ids,
            "limit": limit,
        }
        async with self._db.read() as conn:
            await conn.execute(_CUSTOM_PLANS)
            rows = (await conn.execute(_SYMBOLS, params)).all()
        return [chunk_hit(r, r.name, float(r.score)) for r in rows]

    async def count_words(
        self, org_id: UUID, terms: list[str], *, symbols: bool = False
    ) -> tuple[int, dict[str, int]]:
        """Estimates, from the planner's statistics (ANALYZE; autovacuum keeps them
        fresh): how many chunks the table has, and how many contain each term. Counting
        for real takes a bitmap scan of the GIN index per word: tens of milliseconds for a
        common word at 100k chunks, more than the search. The statistics list the ~1,000
        most common lexemes; any other word counts as 0 (rare). Table-wide, like FTS5's
        IDF on SQLite: `org_id` is not used. `symbols`: encoded symbols, in
        `symbols_tsv`."""
        statement = (
            _word_stats("symbols_tsv", "simple") if symbols else _word_stats("tsv", "english")
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(statement, {"terms": terms})).all()
        total = int(rows[0].total) if rows else 0
        return total, {r.word: round(float(r.freq) * total) for r in rows}

    async def vector(
        self, org_id: UUID, document_ids: list[int], q: Matrix, embedder: str, limit: int
    ) -> list[ChunkHit]:
        async with self._db.read() as conn:
            documents = await self.exact.owned(conn, org_id, document_ids)
            candidates = sum(d.chunk_count for d in documents.values())
            if candidates <= self._exact_below:
                return await self.exact.search(conn, org_id, documents, q, embedder, limit)
            dim = int(q.shape[0])
            kind = vector_index_kind(dim)
            params = {
                "org": org_id,
                "documents": list(documents),
                "dim": dim,
                "embedder": embedder,
                "q": vector_text(q),
                "limit": limit,
            }
            rows: Sequence[Any] = []
            if kind is not None:
                ef = str(max(self._ef_search, limit))
                await conn.execute(_HNSW_SETTINGS, {"ef": ef})
                rows = (await conn.execute(knn_statement(kind), params)).all()
            if len(rows) < min(limit, candidates):
                rows = (await conn.execute(knn_statement(None), params)).all()
        # an iterative scan in relaxed order may return the hits slightly out of order
        ordered = sorted(rows, key=lambda r: (r.distance, r.id))
        return [chunk_hit(r, r.name, 1.0 - float(r.distance)) for r in ordered]

    async def ensure_hnsw_index(self, dim: int) -> None:
        """Create the HNSW index for `dim` the first time (per process) it is needed.
        On a big table this takes a while and holds off writes to `chunks` meanwhile: it
        happens once per dimension, when an embedder of a new dimension is first used."""
        if dim in self._indexed_dims:
            return
        kind = vector_index_kind(dim)
        if kind is not None and not await self._index_exists(dim):
            cast_type, opclass = kind
            statement = (
                f"CREATE INDEX IF NOT EXISTS {hnsw_index_name(dim)} ON chunks "
                f"USING hnsw ((embedding::{cast_type}) {opclass}) WHERE dim = {dim}"
            )
            try:
                async with self._db.write() as conn:
                    await conn.execute(text(statement))
            except DBAPIError:
                # Another process made it at the same moment (a unique violation in the
                # catalog); anything else is raised.
                if not await self._index_exists(dim):
                    raise
        self._indexed_dims.add(dim)

    async def _index_exists(self, dim: int) -> bool:
        async with self._db.read() as conn:
            found = await conn.execute(
                text("SELECT to_regclass(:name)"), {"name": hnsw_index_name(dim)}
            )
            return found.scalar_one() is not None
