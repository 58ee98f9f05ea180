"""Retrieval's second stage: a reranker reorders the first fused candidates.

Why: the fusion of BM25, vectors and the other rankings finds the answering page among its
first 30 candidates for 65 of bench/twins.json's 66 questions, but puts it first for only 47
(71 %). The rankings judge the question's words and its vector apart from the passage; a
cross-encoder (`domain.documents.Reranker`) reads the two together.

`documents.rerank` says when it runs: "off"; "on", every search, and a reranker that fails
fails the search; "auto" (the default), when a reranker is configured, and if it fails
or is slow (`[rerank] timeout_seconds`) the fused order stands, a warning is logged, and
the next `COOL_DOWN` seconds' searches do not ask it, so a reranker that is down costs one
search its time-out, not every search. The first
`documents.rerank_candidates` hits are scored in one call, each with its context line
(file name · title · section heading, `retrieval_context.py`) before its text: a question
often names the manual or the section it asks about. The hits after them keep their
places.

Groups keep their order: a question that names a document searches that document first
(`retrieval_names.py`), and a reranker must not lift the twin document's page above it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Literal

import structlog

from threadline.domain.documents import ChunkHit, Reranker
from threadline.domain.errors import ModelError

log = structlog.get_logger(__name__)

RerankMode = Literal["off", "on", "auto"]
COOL_DOWN = 30.0  # seconds "auto" leaves a failed reranker alone


class SecondStage:
    def __init__(
        self,
        reranker: Reranker | None,
        mode: RerankMode,
        candidates: int,
        *,
        cool_down: float = COOL_DOWN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reranker = reranker if mode != "off" else None
        self.mode = mode
        self.candidates = candidates
        self._cool_down = cool_down
        self._clock = clock
        self._resting_until = float("-inf")

    @property
    def active(self) -> bool:
        return self.reranker is not None

    async def reorder(self, query: str, groups: Sequence[Sequence[ChunkHit]]) -> list[ChunkHit]:
        """The groups' hits, one group after another; within the first `candidates` hits,
        each group's by the reranker's scores (ties keep the fused order)."""
        flat = [hit for group in groups for hit in group]
        if self.reranker is None or len(flat) < 2 or self._clock() < self._resting_until:
            return flat
        head = flat[: self.candidates]
        passages = [f"{hit.context or hit.document_name}\n{hit.text}" for hit in head]
        try:
            scores = await self.reranker.score(query, passages)
        except ModelError as exc:
            if self.mode == "on":
                raise
            self._resting_until = self._clock() + self._cool_down
            log.warning(
                "rerank failed; the fused order stands",
                reranker=self.reranker.name,
                error=str(exc),
                resting_seconds=self._cool_down,
            )
            return flat
        score_of = {hit.chunk_id: s for hit, s in zip(head, scores, strict=True)}
        ordered: list[ChunkHit] = []
        for group in groups:
            scored = [hit for hit in group if hit.chunk_id in score_of]
            rest = [hit for hit in group if hit.chunk_id not in score_of]
            # sorted() is stable: equal scores keep the fused order
            ordered.extend(sorted(scored, key=lambda hit: -score_of[hit.chunk_id]))
            ordered.extend(rest)
        return ordered
