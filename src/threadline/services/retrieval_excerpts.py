"""From ranked chunks to the excerpts a chat is given: neighbouring chunks become one excerpt.

Chunks are cut at ~1,200 characters, so the passage a question is about often spans two
consecutive chunks, and both rank: on bench/twins.json, 69 of the 396 excerpts the chat got
(66 questions x 6) were a second chunk of a page already among them, in 44 of the 66
questions. Given as separate excerpts they repeat the chunker's overlap, read as two sources,
and take a place another page could have had. Here a chunk next to one already chosen (same
document and page, ordinal one before or after) is joined to it instead, at the better
one's rank, with the overlap said once. Only on one page: a citation names one page, the
best chunk's, and an excerpt joined across a page break would be cited by its first page
(measured, it also counted as a hit when the answer was on the neighbour's page).

The prompt stays the size it was: the excerpts together hold no more text than the first
`limit` chunks of the ranking did, so what the joins save (the overlaps) goes to the next
candidates. Measured (bench/RESULTS.md): dropping the neighbour instead of joining it
loses answers (answer in prompt 86 -> 76 %), and joining without this budget grows the
prompt from 6.3 to 9.9 kB.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from threadline.domain.documents import ChunkHit

__all__ = ["excerpts"]

MAX_JOINED = 2  # chunks per excerpt at most, so one excerpt cannot crowd out the others
DEPTH = 5  # candidates looked at: `limit` x DEPTH
_MIN_OVERLAP = 20  # shorter common text is a coincidence, not the chunker's overlap
# Longer common text is not looked for: the chunker's overlap is ~150 characters, and each
# candidate start costs a comparison (a chunk of one repeated letter has one everywhere;
# this runs on the event loop, whatever `chunk_chars` is).
MAX_OVERLAP = 2000


@dataclass(frozen=True, slots=True)
class _Excerpt:
    first: ChunkHit  # the best-ranked chunk: its id, score and document stay the excerpt's
    low: int  # ordinals covered, inclusive
    high: int
    text: str
    page_start: int
    page_end: int

    def hit(self) -> ChunkHit:
        return replace(
            self.first, text=self.text, page_start=self.page_start, page_end=self.page_end
        )


def excerpts(hits: Sequence[ChunkHit], limit: int) -> list[ChunkHit]:
    """At most `limit` excerpts of `hits` (best first), each a run of neighbouring chunks
    that ranked, holding together no more text than `hits[:limit]`."""
    budget = sum(len(h.text) + 1 for h in hits[:limit])  # + a line break per join
    chosen: list[_Excerpt] = []
    used = 0
    seen: set[int] = set()
    for hit in hits[: limit * DEPTH]:
        if hit.chunk_id in seen:
            continue
        seen.add(hit.chunk_id)
        target = _neighbour(chosen, hit)
        if target is not None:
            grown = _joined_to(target, hit)
            if used - len(target.text) + len(grown.text) <= budget:
                used += len(grown.text) - len(target.text)
                chosen[chosen.index(target)] = grown
        elif len(chosen) < limit and used + len(hit.text) <= budget:
            chosen.append(
                _Excerpt(hit, hit.ordinal, hit.ordinal, hit.text, hit.page_start, hit.page_end)
            )
            used += len(hit.text)
        else:
            break  # no later, shorter chunk jumps the queue: excerpts follow the ranking
    return [e.hit() for e in chosen]


def _neighbour(chosen: list[_Excerpt], hit: ChunkHit) -> _Excerpt | None:
    for excerpt in chosen:
        if (
            excerpt.first.document_id == hit.document_id
            and excerpt.high - excerpt.low + 1 < MAX_JOINED
            and hit.ordinal in (excerpt.low - 1, excerpt.high + 1)
            and (hit.page_start, hit.page_end) == (excerpt.page_start, excerpt.page_end)
        ):
            return excerpt
    return None


def _joined_to(excerpt: _Excerpt, hit: ChunkHit) -> _Excerpt:
    after = hit.ordinal > excerpt.high
    return _Excerpt(
        excerpt.first,
        min(excerpt.low, hit.ordinal),
        max(excerpt.high, hit.ordinal),
        joined(excerpt.text, hit.text) if after else joined(hit.text, excerpt.text),
        min(excerpt.page_start, hit.page_start),
        max(excerpt.page_end, hit.page_end),
    )


def joined(before: str, after: str) -> str:
    """`before` then `after`, the text they share (the chunker's overlap: the end of one
    chunk is the start of the next) said once."""
    head = after[:_MIN_OVERLAP]
    if len(head) == _MIN_OVERLAP:
        at = before.find(head, max(0, len(before) - min(len(after), MAX_OVERLAP)))
        while at != -1:
            if after.startswith(before[at:]):
                return before[:at] + after
            at = before.find(head, at + 1)
    return before + "\n" + after
