"""Searching documents' chunks in SQL (full text and vectors), on SQLite and on a real
PostgreSQL with pgvector.

What a user would see go wrong: another org's text turning up in a search, a deleted file
still answering searches, a question with a quote in it failing, the wrong passage ranked
first.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sqlalchemy import text

from tests.helpers import texts_as_chunks
from threadline.storage.chunks import SqlChunkIndex
from threadline.storage.database import Database
from threadline.storage.documents import SqlDocumentStore
from threadline.storage.exact_vectors import ExactVectors
from threadline.storage.pg_search import (
    POSTGRES_VECTORS,
    PostgresSearch,
    hnsw_index_name,
    knn_statement,
    vector_index_kind,
)
from threadline.storage.search_terms import WordFrequencies
from threadline.storage.sqlite_search import SQLITE_VECTORS, SqliteSearch
from threadline.storage.vector_cache import VectorCache

EMBEDDER = "test-embedder"


# ---- full-text search ---------------------------------------------------------------

PASSAGES = [
    "Photosynthesis converts light energy into chemical energy in the chloroplast.",
    "Chlorophyll absorbs light; photosynthesis depends on chlorophyll in leaves.",
    "The mitochondrion is the powerhouse of the cell and runs cellular respiration.",
    "Running a marathon requires training, rest and a good diet.",
    "Quarterly revenue grew by 12 percent while operating costs fell.",
]


async def test_full_text_ranks_the_passage_with_more_of_the_words_first(db, a):
    index = SqlChunkIndex(db)
    document_id = await a.document("biology.pdf")
    await index.replace_chunks(
        a.org, document_id, texts_as_chunks(document_id, PASSAGES), None, None
    )
    hits = await index.search_text(
        a.org, [document_id], "How does chlorophyll help photosynthesis?", 10
    )
    assert [h.ordinal for h in hits][:2] == [1, 0]  # both words (twice each), then one word
    assert {h.ordinal for h in hits} == {0, 1}
    assert hits[0].score > hits[1].score
    assert hits[0].document_name == "biology.pdf" and hits[0].document_id == document_id

    # stemming: "runs" and "running" meet "run"; stop words alone do not match everything
    ran = await index.search_text(a.org, [document_id], "who runs?", 10)
    assert {h.ordinal for h in ran} == {2, 3}
    revenue = await index.search_text(a.org, [document_id], "What was the REVENUE?", 10)
    assert [h.ordinal for h in revenue] == [4]
    assert len(await index.search_text(a.org, [document_id], "photosynthesis", 1)) == 1


HOSTILE = [
    '"',
    '""',
    '"unbalanced quote',
    "NEAR(chlorophyll photosynthesis, 2)",
    "NEAR",
    "chloro*",
    "*",
    "AND",
    "OR OR OR",
    "NOT chlorophyll",
    "chlorophyll AND",
    "-chlorophyll",
    "text:chlorophyll",
    "^chlorophyll",
    "(chlorophyll",
    "chlorophyll)",
    "{text}: light",
    "light's energy",
    "'; DROP TABLE chunks; --",
    "a & b | !c <-> d",
    "\\x00 \x00 null",
    "über naïve café ☕ 光合作用",
    "",
    "   ",
    "?!.,;:",
    "_",
    "word " * 500,
]


@pytest.mark.parametrize("query", HOSTILE)
async def test_any_question_text_is_safe_to_search(db, a, query):
    index = SqlChunkIndex(db)
    document_id = await a.document()
    await index.replace_chunks(
        a.org, document_id, texts_as_chunks(document_id, PASSAGES), None, None
    )
    hits = await index.search_text(a.org, [document_id], query, 5)
    assert isinstance(hits, list)
    if query.startswith("NEAR(") or "chlorophyll" in query:
        assert any("hlorophyll" in h.text for h in hits)  # the words still count


async def test_full_text_sees_only_the_listed_documents_of_the_callers_org(db, a, b):
    index = SqlChunkIndex(db)
    mine, other_of_mine = await a.document("mine.pdf"), await a.document("also-mine.pdf")
    theirs = await b.document("theirs.pdf")
    for tenant, document_id in ((a, mine), (a, other_of_mine), (b, theirs)):
        await index.replace_chunks(
            tenant.org,
            document_id,
            texts_as_chunks(document_id, ["secret merger plan"]),
            None,
            None,
        )
    hits = await index.search_text(a.org, [mine, theirs], "merger", 10)
    assert [h.document_id for h in hits] == [mine]
    assert await index.search_text(a.org, [theirs], "merger", 10) == []
    assert await index.search_text(a.org, [], "merger", 10) == []
    both = await index.search_text(a.org, [mine, other_of_mine], "merger", 10)
    assert {h.document_id for h in both} == {mine, other_of_mine}


async def test_a_scope_of_many_documents_finds_the_same_in_scope_hits(db, a, b):
    """SQLite puts the scope into the MATCH (document tokens), or checks it on every match,
    whichever costs less: both find the same."""
    small = SqlChunkIndex(db, token_cost=0)
    big = SqlChunkIndex(db, token_cost=1_000_000)
    strong = [await a.document(f"strong{i}.pdf") for i in range(10)]
    weak = [await a.document(f"weak{i}.pdf") for i in range(3)]
    theirs = await b.document()
    for document_id in strong:
        await small.replace_chunks(
            a.org, document_id, texts_as_chunks(document_id, ["merger merger"]), None, None
        )
    for document_id in weak:
        filler = "merger " + "and then a long digression about other things " * 20
        await small.replace_chunks(
            a.org, document_id, texts_as_chunks(document_id, [filler]), None, None
        )
    await small.replace_chunks(
        b.org, theirs, texts_as_chunks(theirs, ["merger merger merger"]), None, None
    )
    for scope, limit in (([*strong, *weak, theirs], 20), ([*weak, theirs], 2), (strong, 3)):
        expected = await small.search_text(a.org, scope, "merger?", limit)
        got = await big.search_text(a.org, scope, "merger?", limit)
        assert [h.chunk_id for h in got] == [h.chunk_id for h in expected]
        assert theirs not in {h.document_id for h in got}
    assert len(await big.search_text(a.org, [*weak, theirs], "merger", 2)) == 2


async def test_the_most_common_words_count_only_when_the_rare_ones_find_too_little(db, a, b):
    document_id = await a.document()
    texts = ["common word"] * 5 + ["common and rare word", "rare word"]
    index = SqlChunkIndex(db, match_budget=3)
    await index.replace_chunks(a.org, document_id, texts_as_chunks(document_id, texts), None, None)
    if not db.is_sqlite:  # the word counts are the planner's statistics (autovacuum's job)
        async with db.write() as conn:
            await conn.execute(text("ANALYZE chunks"))
    top = await index.search_text(a.org, [document_id], "common rare nowhere", 2)
    assert {h.text for h in top} == {"common and rare word", "rare word"}
    everything = await index.search_text(a.org, [document_id], "common rare nowhere", 10)
    assert len(everything) == 7
    assert {h.text for h in everything[:2]} == {"common and rare word", "rare word"}
    assert len(await index.search_text(a.org, [document_id], "common", 10)) == 6
    assert await index.search_text(a.org, [document_id], "nowhere", 10) == []
    # what is left out at first: the words over the budget
    words = WordFrequencies()
    exact = ExactVectors(SQLITE_VECTORS if db.is_sqlite else POSTGRES_VECTORS, VectorCache(0))
    search: Any = (
        SqliteSearch(db, exact)
        if db.is_sqlite
        else PostgresSearch(db, exact, ef_search=1, exact_below=0)
    )
    total, counts = await search.count_words(a.org, ["common", "rare", "nowhere"])
    assert (total, counts) == (7, {"common": 6, "rare": 2, "nowhere": 0})
    words.add(a.org, total, counts)
    assert words.idf(a.org, "rare") > words.idf(a.org, "common")
    assert words.split(a.org, ["common", "rare", "nowhere"], 3) == (["nowhere", "rare"], ["common"])
    assert words.split(a.org, ["common"], 3) == (["common"], [])
    assert words.split(b.org, ["common", "rare"], 3) == (["common", "rare"], [])  # not counted


async def test_a_word_counted_in_no_chunk_is_found_once_a_document_has_it(db, a):
    index = SqlChunkIndex(db)
    first = await a.document()
    await index.replace_chunks(a.org, first, texts_as_chunks(first, ["alpha"]), None, None)
    assert await index.search_text(a.org, [first], "zyxel", 5) == []  # counted: in no chunk
    second = await a.document()
    await index.replace_chunks(
        a.org, second, texts_as_chunks(second, ["the zyxel router"]), None, None
    )
    [hit] = await index.search_text(a.org, [first, second], "zyxel", 5)
    assert hit.document_id == second


# ---- vector search ------------------------------------------------------------------


def unit(*values: float) -> list[float]:
    v = np.asarray(values, dtype=np.float64)
    return list(v / np.linalg.norm(v))


async def test_vector_search_orders_by_cosine_similarity(db, a, b):
    index = SqlChunkIndex(db)
    document_id = await a.document("vectors.pdf")
    vectors = [unit(1, 0, 0), unit(1, 1, 0), unit(0, 1, 0), unit(-1, 0, 0), unit(1, 0.1, 0)]
    await index.replace_chunks(
        a.org,
        document_id,
        texts_as_chunks(document_id, [f"chunk {i}" for i in range(5)]),
        vectors,
        EMBEDDER,
    )
    hits = await index.search_vector(a.org, [document_id], [2, 0, 0], EMBEDDER, 10)
    assert [h.ordinal for h in hits] == [0, 4, 1, 2, 3]
    expected = [1.0, 0.995037, 0.707107, 0.0, -1.0]
    assert [h.score for h in hits] == pytest.approx(expected, abs=1e-5)
    assert hits[0].document_name == "vectors.pdf" and hits[0].text == "chunk 0"
    top = await index.search_vector(a.org, [document_id], [0, 1, 0], EMBEDDER, 2)
    assert [h.ordinal for h in top] == [2, 1]

    # another embedder's space, another org, no documents, a zero vector: nothing
    assert await index.search_vector(a.org, [document_id], [1, 0, 0], "other", 10) == []
    assert await index.search_vector(b.org, [document_id], [1, 0, 0], EMBEDDER, 10) == []
    assert await index.search_vector(a.org, [], [1, 0, 0], EMBEDDER, 10) == []
    assert await index.search_vector(a.org, [document_id], [0, 0, 0], EMBEDDER, 10) == []


async def test_vector_search_filters_by_document_and_org(db, a, b):
    index = SqlChunkIndex(db)
    near, far, theirs = await a.document(), await a.document(), await b.document()
    for tenant, document_id, vector in (
        (a, near, unit(1, 0.2)),
        (a, far, unit(0, 1)),
        (b, theirs, unit(1, 0)),  # the best match of all, but another org's
    ):
        await index.replace_chunks(
            tenant.org, document_id, texts_as_chunks(document_id, ["x"]), [vector], EMBEDDER
        )
    hits = await index.search_vector(a.org, [near, far, theirs], [1, 0], EMBEDDER, 10)
    assert [h.document_id for h in hits] == [near, far]
    only_far = await index.search_vector(a.org, [far], [1, 0], EMBEDDER, 10)
    assert [h.document_id for h in only_far] == [far]


async def test_a_cached_vector_search_sees_chunks_another_process_replaced(db, db_url, a):
    index = SqlChunkIndex(db)
    document_id = await a.document()
    await index.replace_chunks(
        a.org, document_id, texts_as_chunks(document_id, ["first"]), [unit(1, 0)], EMBEDDER
    )
    assert [
        h.text for h in await index.search_vector(a.org, [document_id], [1, 0], EMBEDDER, 5)
    ] == ["first"]
    other_process = Database(db_url)  # its own engine (and, on SQLite, its own write lock)
    try:
        other = SqlChunkIndex(other_process)
        replaced = texts_as_chunks(document_id, ["second", "third"])
        await other.replace_chunks(a.org, document_id, replaced, [unit(0, 1), unit(1, 0)], EMBEDDER)
        hits = await index.search_vector(a.org, [document_id], [1, 0], EMBEDDER, 5)
        assert [h.text for h in hits] == ["third", "second"]
        await SqlDocumentStore(other_process).delete_asset(
            a.org, (await a.store.get_document(a.org, document_id)).asset_id
        )
        assert await index.search_vector(a.org, [document_id], [1, 0], EMBEDDER, 5) == []
    finally:
        await other_process.dispose()


async def test_vector_search_through_the_index_finds_a_small_scope_in_a_big_table(db, a):
    """HNSW filters after it searches; a scope of one small document among many must still
    get its hits (pgvector's iterative scan, or the exact fallback)."""
    index = SqlChunkIndex(db, exact_below=0)  # PostgreSQL: always try the index first
    rng = np.random.default_rng(7)
    dim = 16
    document_ids = [await a.document(f"d{i}.pdf") for i in range(40)]
    for document_id in document_ids:
        n = 50
        vectors = rng.normal(size=(n, dim))
        await index.replace_chunks(
            a.org,
            document_id,
            texts_as_chunks(document_id, [f"{document_id}-{i}" for i in range(n)]),
            vectors.tolist(),
            EMBEDDER,
        )
    target = document_ids[17]
    query = rng.normal(size=dim).tolist()
    hits = await index.search_vector(a.org, [target], query, EMBEDDER, 10)
    assert len(hits) == 10 and {h.document_id for h in hits} == {target}
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    exact = await SqlChunkIndex(db).search_vector(a.org, [target], query, EMBEDDER, 10)
    assert [h.chunk_id for h in hits] == [h.chunk_id for h in exact]
    everything = await index.search_vector(a.org, document_ids, query, EMBEDDER, 10)
    assert len(everything) == 10
    if not db.is_sqlite:
        async with db.read() as conn:
            found = await conn.execute(text("SELECT to_regclass(:n)"), {"n": hnsw_index_name(dim)})
            assert found.scalar_one() is not None


async def test_postgres_plans_the_vector_query_on_the_hnsw_index(db, a):
    if db.is_sqlite:
        pytest.skip("PostgreSQL's planner")
    index = SqlChunkIndex(db)
    document_id = await a.document()
    rng = np.random.default_rng(1)
    await index.replace_chunks(
        a.org,
        document_id,
        texts_as_chunks(document_id, ["x"] * 300),
        rng.normal(size=(300, 8)).tolist(),
        EMBEDDER,
    )
    params = {
        "org": a.org,
        "documents": [document_id],
        "dim": 8,
        "embedder": EMBEDDER,
        "q": "[1,0,0,0,0,0,0,0]",
        "limit": 5,
    }
    async with db.read() as conn:
        await conn.execute(text("SET LOCAL enable_seqscan = off"))  # a tiny table otherwise
        plan = "\n".join(
            r[0]
            for r in await conn.execute(
                text("EXPLAIN " + str(knn_statement(vector_index_kind(8)))), params
            )
        )
    assert hnsw_index_name(8) in plan, plan
