"""Hybrid retrieval: full text (BM25) and vector similarity, fused by reciprocal rank, and
a third ranking by the question's symbols (`storage/symbols.py`) when it has any.

Both rankings run concurrently over the caller's org and an explicit set of documents,
so nothing outside a conversation's documents can be found. Reciprocal rank fusion
(score = Σ 1 / (60 + rank)) needs no score calibration between the two rankings.

Each ranking gives at least `CANDIDATES` hits to the fusion, however few the caller wants: a
page that two rankings both place 15th-30th is a better answer than one only a single
ranking places 10th, and fusing short lists cannot see that (bench/twins.json: the right
page among the top 6 for 61 of 66 questions with 30 per ranking, 60 with 12).

A question that names one of the documents in scope ("In the Bash Reference Manual, ...",
`retrieval_names.py`) is searched twice, concurrently: over the named documents (without
the words that name them) and over all; the named documents' hits come first, the others'
after them. Within the named documents the candidates are reordered as in `advanced` mode
(by how much of the question each covers): their pages share the document's topic, its
name and often its wording, so the fused ranks tell them apart poorly, and the question's
remaining words are what singles out the page that answers it.

`advanced` mode (AI Hub's advanced model) retrieves a wider candidate set and reranks it
by how much of the question each chunk covers (words and their close forms), with the
fused rank as the tie-breaker.

After the fusion (each stage measured alone by bench/hitrate.py --set twins): a short query
that a candidate holds as written is one more ranking in the fusion (`_as_written`); a
configured reranker reorders the first candidates (`reranking.py`); tables of contents and
indexes go last (`pointers_last`); and neighbouring chunks that both rank become one
excerpt, within the text the first `limit` chunks had (`retrieval_excerpts.py`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import replace
from uuid import UUID

from threadline.domain.documents import ChunkHit, ChunkIndex, Embedder
from threadline.services.reranking import SecondStage
from threadline.services.retrieval_excerpts import excerpts as join_neighbours
from threadline.services.retrieval_names import MAX_DOCUMENTS, naming

RRF_K = 60
CANDIDATES = 30  # hits each ranking gives to the fusion, at least
_WORD = re.compile(r"\w+", re.UNICODE)
_STOP_WORDS = (
    "a an and are as at be by for from has have how i in is it its of on or that the this "
    "to was were what when where which who why will with do does did you your me my"
)
_STOP = frozenset(_STOP_WORDS.split())


class Retriever:
    def __init__(
        self, index: ChunkIndex, embedder: Embedder | None, second: SecondStage | None = None
    ) -> None:
        self._index = index
        self._embedder = embedder
        self._second = second or SecondStage(None, "off", 0)

    async def search(
        self,
        org_id: UUID,
        document_ids: Sequence[int],
        query: str,
        *,
        limit: int,
        advanced: bool = False,
        names: bool = True,
        symbols: bool = True,
        excerpts: bool = True,
        pointers: bool = True,
        phrase: bool = True,
        rerank: bool = True,
    ) -> list[ChunkHit]:
        """The best `limit` excerpts. Stages that can be left out (to measure them):
        `names=False` ignores documents the question names, `symbols=False` leaves out the
        ranking by the question's symbols, `excerpts=False` gives single chunks instead of
        joining neighbouring ones (`retrieval_excerpts.py`), `pointers=False` leaves tables of
        contents and indexes where they ranked, `phrase=False` adds no ranking of the candidates
        that hold a short query as written, `rerank=False` skips the second stage
        (`reranking.py`) even when one is configured."""
        if not document_ids or not query.strip():
            return []
        named: list[int] = []
        rest = query
        if names and 1 < len(document_ids) <= MAX_DOCUMENTS:
            labels = await self._index.document_labels(org_id, document_ids)
            named, rest = naming(query, labels)
        # symbols that name a document (`R-admin`, `gmpl.pdf`) are no symbols to look up
        by_symbol = (rest if named else query) if symbols else None
        if not named:
            groups = [
                await self._hybrid(org_id, document_ids, query, limit, advanced, by_symbol, phrase)
            ]
        else:
            focused, everything = await asyncio.gather(
                self._hybrid(org_id, named, rest, limit, True, by_symbol, phrase),
                self._hybrid(org_id, document_ids, query, limit, advanced, by_symbol, phrase),
            )
            chosen = {h.document_id for h in focused} | set(named)
            groups = [focused, [h for h in everything if h.document_id not in chosen]]
        if rerank and self._second.active:
            ranked = await self._second.reorder(query, groups)
        else:
            ranked = [hit for group in groups for hit in group]
        if pointers:
            ranked = pointers_last(ranked)
        return join_neighbours(ranked, limit) if excerpts else ranked[:limit]

    async def _hybrid(
        self,
        org_id: UUID,
        document_ids: Sequence[int],
        query: str,
        limit: int,
        advanced: bool,
        symbol_query: str | None,
        phrase: bool = True,
    ) -> list[ChunkHit]:
        depth = max(limit * (4 if advanced else 2), CANDIDATES)
        searches = [
            self._index.search_text(org_id, document_ids, query, depth),
            self._vector_search(org_id, document_ids, query, depth),
        ]
        if symbol_query is not None:
            searches.append(self._index.search_symbols(org_id, document_ids, symbol_query, depth))
        rankings = list(await asyncio.gather(*searches))
        fused = fuse(rankings)
        as_written = _as_written(query, fused) if phrase else []
        if as_written:
            fused = fuse([*rankings, as_written])
        if advanced:
            fused = rerank(query, fused)
        return fused  # every candidate: `search` keeps the first `limit` excerpts

    async def search_text(
        self, org_id: UUID, document_ids: Sequence[int], query: str, limit: int
    ) -> list[ChunkHit]:
        return await self._index.search_text(org_id, document_ids, query, limit)

    async def search_vector(
        self, org_id: UUID, document_ids: Sequence[int], query: str, limit: int
    ) -> list[ChunkHit]:
        return await self._vector_search(org_id, document_ids, query, limit)

    async def _vector_search(
        self, org_id: UUID, document_ids: Sequence[int], query: str, limit: int
    ) -> list[ChunkHit]:
        if self._embedder is None:
            return []
        [vector] = await self._embedder.embed([query], "query")
        return await self._index.search_vector(
            org_id, document_ids, vector, self._embedder.name, limit
        )


def fuse(rankings: Sequence[Sequence[ChunkHit]]) -> list[ChunkHit]:
    """Reciprocal rank fusion; a hit's score becomes its fused score."""
    scores: dict[int, float] = {}
    hits: dict[int, ChunkHit] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + 1.0 / (RRF_K + rank)
            hits.setdefault(hit.chunk_id, hit)
    ordered = sorted(scores, key=lambda cid: (-scores[cid], cid))
    return [replace(hits[cid], score=scores[cid]) for cid in ordered]


MAX_PHRASE_WORDS = 8  # a longer question is a sentence, not a phrase to find as written
_SPACE = re.compile(r"\s+")


def _as_written(query: str, hits: Sequence[ChunkHit]) -> list[ChunkHit]:
    """The candidates holding a short query of several words as written (case and spacing
    aside), in their fused order: a ranking of its own in the fusion. Each word ranking
    sees the words apart; a chunk with `set image colorscale hsb` itself is likelier the
    answer than one with `set`, `image` and `hsb` in different sentences."""
    words = query.split()
    if not 2 <= len(words) <= MAX_PHRASE_WORDS:
        return []
    phrase = " ".join(words).lower()
    return [h for h in hits if phrase in _SPACE.sub(" ", h.text.lower())]


_LEADER = re.compile(r"(?:\.\s?){5,}")  # the dots from an entry to its page number
POINTER_SHARE = 0.2  # of a chunk's characters in dot leaders: a table of contents or index


def pointers_last(hits: Sequence[ChunkHit]) -> list[ChunkHit]:
    """Chunks of a table of contents or an index after all others, in their order: they
    name the symbol or topic a question asks about, often several times, so they rank
    high, but they hold no answer, only printed page numbers (bench/twins.json: 356 of 3,543
    chunks; `R_DISABLE_HTTPD` found R-admin's index before its page)."""
    pointers = [h for h in hits if _pointer(h.text)]
    if not pointers:
        return list(hits)
    ids = {h.chunk_id for h in pointers}
    return [*(h for h in hits if h.chunk_id not in ids), *pointers]


def _pointer(text: str) -> bool:
    leaders = sum(len(m.group()) for m in _LEADER.finditer(text))
    return leaders > POINTER_SHARE * max(len(text), 1)


def rerank(query: str, hits: Sequence[ChunkHit]) -> list[ChunkHit]:
    """Order by the share of the question's content words a chunk covers, then by the
    fused score."""
    terms = {_stem(w) for w in _WORD.findall(query.lower()) if w not in _STOP}
    if not terms:
        return list(hits)

    def coverage(hit: ChunkHit) -> float:
        words = {_stem(w) for w in _WORD.findall(hit.text.lower())}
        return len(terms & words) / len(terms)

    scored = [(coverage(h), h) for h in hits]
    scored.sort(key=lambda pair: (-(pair[0] + pair[1].score * RRF_K / 2), pair[1].chunk_id))
    return [hit for _, hit in scored]


def _stem(word: str) -> str:
    for suffix in ("ing", "edly", "ed", "es", "s", "ly"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word
