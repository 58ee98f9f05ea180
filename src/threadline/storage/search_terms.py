"""A user's question made safe for full-text search.

Questions are prose, not query syntax: quotes, `NEAR`, `*`, `-`, parentheses or a lone
`AND` in them must neither raise nor change the meaning. So both backends get the same
thing: the question's words (letters and digits only), without English stop words, each
one quoted and OR-ed. OR gives recall (a chunk needs only one of the words); the ranking
(BM25 on SQLite, IDF-weighted `ts_rank_cd` on PostgreSQL) puts chunks with more and rarer
words first. Stop words go because an OR of "the" matches nearly every chunk: slow, for
nothing. `WordFrequencies` keeps the document frequencies that let a search try the rare
words first (see `SqlChunkIndex.search_text`).
"""

from __future__ import annotations

import math
import re
import time
from uuid import UUID

__all__ = [
    "CONTEXT_WEIGHT",
    "MAX_TERMS",
    "WordFrequencies",
    "fts5_match",
    "search_terms",
    "websearch_query",
]

MAX_TERMS = 32
# How much a word of a chunk's context (file name, title, heading) counts against the same
# word in its text, on both backends (FTS5 column weight; `ts_rank_cd` weight of label A).
CONTEXT_WEIGHT = 0.5
MAX_QUERY_CHARS = 16_384  # words past these are not searched (a bound on work on the loop)
_WORD = re.compile(r"[^\W_]+")  # letters and digits, any script; `_` and punctuation split

# The Snowball English stop words (the list PostgreSQL's `english` configuration uses),
# plus the question words that carry no topic.
_STOP_WORDS_TEXT = """
    a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for
    from further had has have having he her here hers herself him himself his how i if in
    into is it its itself just me more most my myself no nor not now of off on once only or
    other our ours ourselves out over own s same she should so some such t than that the
    their theirs them themselves then there these they this those through to too under
    until up very was we were what when where which while who whom why will with would you
    your yours yourself yourselves please tell explain describe
"""
STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())


def search_terms(query: str, *, max_terms: int = MAX_TERMS) -> list[str]:
    """The question's distinct words, lower-cased, stop words dropped (unless that leaves
    nothing), in order of first appearance, at most `max_terms`. Reads the question only as
    far as it needs to: a long one stops at its `max_terms`-th distinct content word, and
    none is read past `MAX_QUERY_CHARS`."""
    seen: dict[str, None] = {}
    kept: list[str] = []
    for match in _WORD.finditer(query, 0, MAX_QUERY_CHARS):
        word = match.group().lower()
        if word in seen:
            continue
        seen[word] = None
        if word not in STOP_WORDS:
            kept.append(word)
            if len(kept) == max_terms:
                break
    return kept or list(seen)[:max_terms]


def fts5_match(terms: list[str]) -> str:
    """An FTS5 MATCH expression: every term a quoted string, OR-ed. Terms from
    `search_terms` hold no quote, so quoting cannot be escaped."""
    return " OR ".join(f'"{t}"' for t in terms)


def websearch_query(terms: list[str]) -> str:
    """Input for PostgreSQL's `websearch_to_tsquery` (which never raises): the terms joined
    by its `or` operator. A term "or" is a stop word and never reaches here unless the
    question is only stop words, and then it is harmless."""
    return " or ".join(terms)


class WordFrequencies:
    """How many chunks contain each word (its document frequency), counted on first use
    and kept for `ttl` seconds: a heuristic, so a little stale is fine. Keyed by org, so a
    backend may count per org; both count table-wide, as their IDF is (FTS5's `bm25()`
    reads the whole table; PostgreSQL's statistics are per table). So what other orgs store
    can change which words are tried first and how they weigh; never what is returned."""

    def __init__(self, *, ttl: float = 600.0, max_words: int = 100_000) -> None:
        self._ttl = ttl
        self._max_words = max_words
        self._counts: dict[tuple[UUID, str], int] = {}
        self._totals: dict[UUID, int] = {}
        self._since = time.monotonic()

    def unknown(self, org_id: UUID, terms: list[str]) -> list[str]:
        if time.monotonic() - self._since > self._ttl or len(self._counts) > self._max_words:
            self._counts.clear()
            self._totals.clear()
            self._since = time.monotonic()
        return [t for t in terms if (org_id, t) not in self._counts]

    def add(self, org_id: UUID, total: int, counts: dict[str, int]) -> None:
        """`counts` of chunks with each word, out of `total` chunks."""
        self._totals[org_id] = total
        self._counts.update(((org_id, t), n) for t, n in counts.items())

    def count(self, org_id: UUID, term: str) -> int:
        """The chunks counted with `term` (0 when never counted)."""
        return self._counts.get((org_id, term), 0)

    def idf(self, org_id: UUID, term: str) -> float:
        """BM25's inverse document frequency (FTS5's formula, floored the same way)."""
        total = self._totals.get(org_id, 0)
        n = self._counts.get((org_id, term), 0)
        return max(math.log(max(total - n, 0) + 0.5) - math.log(n + 0.5), 1e-6)

    def split(self, org_id: UUID, terms: list[str], budget: int) -> tuple[list[str], list[str]]:
        """(rare, common): the rarest terms that together match at most `budget` chunks
        (at least one), and the others. A term counted in no chunk stays in: the count may
        predate a document just added, and such a term costs nothing to search."""
        counted = {t: self._counts.get((org_id, t), 0) for t in terms}
        rare: list[str] = []
        common: list[str] = []
        total = 0
        for term in sorted(terms, key=lambda t: counted[t]):
            if not rare or total + counted[term] <= budget:
                rare.append(term)
                total += counted[term]
            else:
                common.append(term)
        return rare, common
