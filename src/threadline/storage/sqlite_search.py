"""Full-text and vector search over chunks on SQLite (the embedded backend).

Full text: FTS5's `bm25()` reads the whole posting list of every phrase in the MATCH
expression (for its IDF) and then scores every row the expression yields, about a
microsecond each. At 100k chunks an OR of common words costs tens of milliseconds; hence
the rare words first (`chunks.py`), and the scope inside the MATCH:

- the scope is checked on each matching chunk (its row looked up by id: about a
  microsecond), or, when the words match many chunks and the scope is a few documents, put
  into the MATCH as document tokens, `text : ("w1" OR "w2") AND scope : ("d1" OR "d2")`, so
  that FTS5 intersects the posting lists and ranks only the chunks in scope. A token costs
  a lookup in every segment of the index, twice (match, IDF): tens of microseconds, hence
  the choice by estimated cost (`token_cost`).

Vectors: exact cosine in numpy over cached per-document matrices (`exact_vectors.py`,
`vector_cache.py`); a scope of many documents is stacked into one matrix (cached too), so a
query is one matrix-vector product.

Chunk rows are fetched by id for the top hits only. `+c.org_id` (unary plus) keeps SQLite's
planner from choosing an index on org_id over the lookup by id or document.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import Uuid, bindparam, text

from threadline.domain.documents import ChunkHit
from threadline.storage.database import Database
from threadline.storage.documents import chunk_hit
from threadline.storage.exact_vectors import ExactVectors, Owned, VectorStatements
from threadline.storage.search_terms import CONTEXT_WEIGHT, WordFrequencies, fts5_match
from threadline.storage.vector_cache import Matrix

__all__ = ["SQLITE_VECTORS", "SqliteSearch"]

_CHUNKS = text(
    """
    SELECT id, document_id, ordinal, page_start, page_end, text, context FROM chunks
    WHERE id IN :ids AND +org_id = :org
    """
).bindparams(bindparam("ids", expanding=True), bindparam("org", type_=Uuid))


def _ranked_chunks(ranked: str) -> Any:
    """The rows of a ranking query (`id`, `score`: bm25, lower is better), best first, with
    the chunk's columns when it is the org's (NULL otherwise, and skipped). One statement:
    the text is read for the top rows only."""
    return text(
        f"""
        WITH ranked AS ({ranked})
        SELECT ranked.id, c.document_id, c.ordinal, c.page_start, c.page_end, c.text, c.context,
               ranked.score
        FROM ranked LEFT JOIN chunks AS c ON c.id = ranked.id AND +c.org_id = :org
        ORDER BY ranked.score, ranked.id
        """
    ).bindparams(bindparam("org", type_=Uuid))


# What a search matches, and bm25's column weights (text, scope: never ranked, context,
# symbols) for it: the words of a question in the text and the context; or its symbols.
_SEARCHES = {
    "text": ("{text context}", f"1.0, 0.0, {CONTEXT_WEIGHT}, 0.0"),
    "symbols": ("symbols", "0.0, 0.0, 0.0, 1.0"),
}


def _top(weights: str) -> Any:
    return _ranked_chunks(
        f"""
        SELECT rowid AS id, bm25(chunks_fts, {weights}) AS score FROM chunks_fts
        WHERE chunks_fts MATCH :expr ORDER BY score, rowid LIMIT :limit
        """
    )


def _top_in_scope(weights: str) -> Any:
    return _ranked_chunks(
        f"""
        SELECT chunks_fts.rowid AS id, bm25(chunks_fts, {weights}) AS score
        FROM chunks_fts JOIN chunks AS c ON c.id = chunks_fts.rowid
        WHERE chunks_fts MATCH :expr AND +c.document_id IN :documents AND +c.org_id = :org
        ORDER BY score, chunks_fts.rowid LIMIT :limit
        """
    ).bindparams(bindparam("documents", expanding=True))


_TOP = {name: _top(weights) for name, (_, weights) in _SEARCHES.items()}
_TOP_IN_SCOPE = {name: _top_in_scope(weights) for name, (_, weights) in _SEARCHES.items()}

_OWNED = text(
    """
    SELECT id, chunks_version, name, chunk_count FROM documents
    WHERE id IN :documents AND +org_id = :org
    """
).bindparams(bindparam("documents", expanding=True), bindparam("org", type_=Uuid))

_VECTORS = text(
    """
    SELECT c.document_id, d.chunks_version, c.id, c.embedding
    FROM chunks AS c JOIN documents AS d ON d.id = c.document_id
    WHERE c.document_id IN :documents AND +c.org_id = :org AND c.embedder = :embedder
      AND c.embedding IS NOT NULL
    ORDER BY c.document_id, c.ordinal
    """
).bindparams(bindparam("documents", expanding=True), bindparam("org", type_=Uuid))


SQLITE_VECTORS = VectorStatements(owned=_OWNED, vectors=_VECTORS, chunks=_CHUNKS)


def _quoted(token: str) -> str:
    return f'"{token}"'


class SqliteSearch:
    def __init__(self, db: Database, exact: ExactVectors, *, token_cost: int = 50) -> None:
        self._db = db
        self.exact = exact
        self._token_cost = token_cost

    # ---- full text ----

    async def text(
        self,
        org_id: UUID,
        document_ids: list[int],
        terms: list[str],
        limit: int,
        words: WordFrequencies,
        *,
        column: str = "text",
    ) -> list[ChunkHit]:
        """Best first by FTS5's BM25 (which weighs the words itself). The scope goes into
        the MATCH as document tokens when that is cheaper than checking the document of
        every chunk the words match: fewer than `token_cost` matches per document.
        `column`: "text" (the text and context) or "symbols" (`symbols.py`)."""
        async with self._db.read() as conn:
            documents = await self.exact.owned(conn, org_id, document_ids)
            ids = [d for d in document_ids if d in documents]
            if not ids:
                return []
            matches = sum(words.count(org_id, t) for t in terms)
            params: dict[str, Any] = {"org": org_id, "limit": limit}
            expr = f"{_SEARCHES[column][0]} : ({fts5_match(terms)})"
            if len(ids) * self._token_cost < matches:
                scope = " OR ".join(_quoted(f"d{d}") for d in ids)
                params["expr"] = f"{expr} AND scope : ({scope})"
                rows = await conn.execute(_TOP[column], params)
            else:
                params.update(expr=expr, documents=ids)
                rows = await conn.execute(_TOP_IN_SCOPE[column], params)
            return _hits(rows.all(), documents, limit)

    async def count_words(self, org_id: UUID, terms: list[str]) -> tuple[int, dict[str, int]]:
        """How many chunks there are, and how many contain each term: in the whole table,
        as it is the whole table that `bm25()` reads (its IDF is table-wide too);
        restricting the count to the org would double its cost. `org_id` is not used."""
        counts = ", ".join(
            f"(SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH :t{i})"
            for i in range(len(terms))
        )
        # No column filter (`text :`): it makes FTS5 read the positions. A word spelled like
        # a scope token ("d42") is over-counted; this is a heuristic.
        params: dict[str, Any] = {f"t{i}": _quoted(t) for i, t in enumerate(terms)}
        statement = text(f"SELECT (SELECT coalesce(sum(chunk_count), 0) FROM documents), {counts}")
        async with self._db.read() as conn:
            total, *row = (await conn.execute(statement, params)).one()
        return int(total), {t: int(n) for t, n in zip(terms, row, strict=True)}

    # ---- vectors ----

    async def vector(
        self, org_id: UUID, document_ids: list[int], q: Matrix, embedder: str, limit: int
    ) -> list[ChunkHit]:
        async with self._db.read() as conn:
            documents = await self.exact.owned(conn, org_id, document_ids)
            return await self.exact.search(conn, org_id, documents, q, embedder, limit)


def _hits(rows: Sequence[Any], documents: dict[int, Owned], limit: int) -> list[ChunkHit]:
    """The first `limit` rows that are of the given (the org's) documents, as hits."""
    hits = []
    for row in rows:
        if row.document_id in documents:
            hits.append(chunk_hit(row, documents[row.document_id].name, -float(row.score)))
            if len(hits) == limit:
                break
    return hits
