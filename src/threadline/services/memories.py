"""Memory use cases: remember facts a user states (`withMemories`), recall the relevant ones
for later prompts in any of their conversations, and let the user list, add and delete them.

    reply stored ──enqueue──▶ `remember` job ──▶ extractor ──▶ merge into the user's memories
    next prompt  ──recall──▶ top_k memories by similarity ──▶ system block + the record's sources

Remembering runs on the durable job queue, after the reply is stored, so it never delays a
reply and survives a crash (the job is retried; merging is idempotent). Merging keeps one
memory per fact: a fact of the same kind as an older one replaces it (a new name, a new
home), and one with the same normalised text or a near-identical embedding updates it
instead of piling up. Past `max_per_user`, the least recently updated memories go.

Recall ranks the user's memories by cosine similarity to the prompt (exact, in numpy: a user
has at most `max_per_user` of them), or, without an embedder, by the prompt's content words
they share; the `top_k` best that fit the room the caller gives are used. Every read and
write names the org *and* the user: memories never cross users.
"""

from __future__ import annotations

import asyncio
import builtins
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from uuid import UUID, uuid4

import numpy as np
import structlog

from threadline.domain.clock import utcnow
from threadline.domain.documents import Embedder, EmbedKind, Job, JobQueue
from threadline.domain.entities import Page, Principal, RecordStatus
from threadline.domain.errors import InvalidRequest, NotFound, ThreadlineError
from threadline.domain.memories import (
    CONTENT_MAX,
    Fact,
    FactExtractor,
    Memory,
    MemorySource,
    MemoryStore,
)
from threadline.domain.ports import RecordStore
from threadline.domain.sources import RecalledMemory
from threadline.services.memory_rules import normal_text

log = structlog.get_logger(__name__)

REMEMBER_JOB = "remember"
JOB_ATTEMPTS = 3
NEAR_DUPLICATE = 0.95  # cosine similarity at which two facts are the same fact reworded
INSTRUCTIONS = (
    "What you remember about the user from earlier conversations (they asked you to; use it "
    "where it helps, and do not recite it unprompted):"
)
_WORD = re.compile(r"\w+")
IN_THREAD_CHARS = 10_000
_STOP_WORDS = (
    "a an and are as at be by for from has have how i in is it its of on or that the this "
    "to was were what when where which who why will with do does did you your me my mine "
    "user user's users am can could would should tell about know remember"
)
_STOP = frozenset(_STOP_WORDS.split())


class MemoryService:
    def __init__(
        self,
        store: MemoryStore,
        extractor: FactExtractor,
        embedder: Embedder | None,
        jobs: JobQueue,
        records: RecordStore,
        *,
        top_k: int,
        max_per_user: int,
        page_max: int,
        on_enqueued: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._extractor = extractor
        self._embedder = embedder
        self._jobs = jobs
        self._records = records
        self.top_k = top_k
        self.max_per_user = max_per_user
        self.page_max = page_max
        self._on_enqueued = on_enqueued

    # ---- the user's own memories (the API) --------------------------------------------

    async def list(self, caller: Principal, *, limit: int, offset: int) -> Page:
        if limit < 1:
            raise InvalidRequest(f"limit must be at least 1 (got {limit})")
        if offset < 0:
            raise InvalidRequest(f"offset must not be negative (got {offset})")
        return await self._store.list(
            caller.org_id, caller.user.id, limit=min(limit, self.page_max), offset=offset
        )

    async def get(self, caller: Principal, memory_id: UUID) -> Memory:
        memory = await self._store.get(caller.org_id, caller.user.id, memory_id)
        if memory is None:
            raise NotFound(f"memory {memory_id} not found")
        return memory

    async def add(self, caller: Principal, content: str) -> Memory:
        """Remember `content` as written (merged like an extracted fact without a kind)."""
        text = _valid_content(content)
        [memory] = await self._merge(
            caller.org_id, caller.user.id, [Fact(text)], MemorySource.MANUAL, None
        )
        return memory

    async def update(self, caller: Principal, memory_id: UUID, content: str) -> Memory:
        """Replace the text of one of the caller's memories, keeping its id, kind, source and
        creation time (re-embedded with the current embedder, if any). Unlike `add` nothing
        is merged: the user chose which memory the text belongs to."""
        text = _valid_content(content)
        old = await self.get(caller, memory_id)
        vectors = await self._embed([text], "passage")
        memory = replace(
            old,
            content=text,
            updated_at=utcnow(),
            embedder=self._embedder.name if self._embedder is not None and vectors else None,
            vector=vectors[0] if vectors else None,
        )
        await self._store.save(
            caller.org_id, caller.user.id, added=[], changed=[memory], keep=self.max_per_user
        )
        return await self.get(caller, memory_id)  # as stored (404 if deleted meanwhile)

    async def delete(self, caller: Principal, memory_id: UUID) -> None:
        if not await self._store.delete(caller.org_id, caller.user.id, memory_id):
            raise NotFound(f"memory {memory_id} not found")

    async def delete_all(self, caller: Principal) -> int:
        return await self._store.delete_all(caller.org_id, caller.user.id)

    # ---- chat: recall before a reply, remember after it --------------------------------

    async def recall(self, caller: Principal, prompt: str, max_chars: int) -> builtins.list[Memory]:
        """The user's `top_k` memories most related to `prompt`, best first, as many of them
        as fit `max_chars` in the system block."""
        if max_chars <= len(INSTRUCTIONS):
            return []
        memories = await self._store.all(caller.org_id, caller.user.id)
        if not memories:
            return []
        ranked = await self._ranked(caller, memories, prompt)
        return _fitting(ranked[: self.top_k], max_chars)

    async def remember_later(self, caller: Principal, record_id: UUID, message: str) -> None:
        """Queue the extraction of facts from `message`, whose reply is the record."""
        payload = {"user_id": str(caller.user.id), "record_id": str(record_id), "message": message}
        await self._jobs.enqueue(
            REMEMBER_JOB, payload, org_id=caller.org_id, max_attempts=JOB_ATTEMPTS
        )
        if self._on_enqueued is not None:
            self._on_enqueued()

    async def run_job(self, job: Job) -> None:
        """The `remember` job handler. A record that is gone, not the user's, or did not
        succeed gives no memories."""
        if job.org_id is None:
            raise ValueError(f"remember job {job.id} has no org")
        user_id = UUID(job.payload["user_id"])
        record_id = UUID(job.payload["record_id"])
        record = await self._records.get(job.org_id, record_id)
        if record is None or record.user_id != user_id or record.status != RecordStatus.SUCCESS:
            return
        facts = await self._extractor.extract(job.payload["message"], record.result_text)
        if facts:
            await self._merge(job.org_id, user_id, facts, MemorySource.CHAT, record_id)

    # ---- merging and ranking -----------------------------------------------------------

    async def _merge(
        self,
        org_id: UUID,
        user_id: UUID,
        facts: Sequence[Fact],
        source: MemorySource,
        record_id: UUID | None,
    ) -> builtins.list[Memory]:
        """Store `facts`, each as a new memory or as the new state of the one it repeats or
        replaces. Returns the stored memories, one per fact."""
        pool = await self._store.all(org_id, user_id)
        vectors = await self._embed([f.text for f in facts], "passage")
        embedder = self._embedder.name if self._embedder is not None and vectors else None
        now = utcnow()
        added: dict[UUID, Memory] = {}
        changed: dict[UUID, Memory] = {}
        stored: builtins.list[Memory] = []
        for n, fact in enumerate(facts):
            vector = vectors[n] if vectors else None
            old = _same_fact(pool, fact, vector, embedder)
            memory = Memory(
                id=old.id if old else uuid4(),
                org_id=org_id,
                user_id=user_id,
                content=fact.text,
                kind=fact.kind or (old.kind if old else None),
                source=source,
                record_id=record_id,
                created_at=old.created_at if old else now,
                updated_at=now,
                embedder=embedder,
                vector=vector,
            )
            if old is None:
                added[memory.id] = memory
                pool.insert(0, memory)
            else:
                (added if old.id in added else changed)[memory.id] = memory
                pool[pool.index(old)] = memory
            stored.append(memory)
        await self._store.save(
            org_id,
            user_id,
            added=list(added.values()),
            changed=list(changed.values()),
            keep=self.max_per_user,
        )
        return stored

    async def _ranked(
        self, caller: Principal, memories: builtins.list[Memory], prompt: str
    ) -> builtins.list[Memory]:
        """Most similar to the prompt first (ties: most recently updated first)."""
        memories = await self._with_vectors(caller, memories)
        query = await self._embed([prompt], "query")
        vectors = [m.vector for m in memories if m.vector is not None]
        if query is None or len(vectors) < len(memories):
            if len(prompt) > IN_THREAD_CHARS:  # a long prompt's words: off the event loop
                return await asyncio.to_thread(_by_shared_words, memories, prompt)
            return _by_shared_words(memories, prompt)
        scores = _cosines(query[0], vectors)
        order = sorted(range(len(memories)), key=lambda i: -scores[i])
        return [memories[i] for i in order]

    async def _with_vectors(
        self, caller: Principal, memories: builtins.list[Memory]
    ) -> builtins.list[Memory]:
        """The memories, those without a vector of the current embedder (it changed, or was
        unreachable when they were stored) embedded now and stored so."""
        if self._embedder is None:
            return memories
        name = self._embedder.name
        stale = [m for m in memories if m.embedder != name or m.vector is None]
        vectors = await self._embed([m.content for m in stale], "passage")
        if not stale or vectors is None:
            return memories
        fresh = {
            m.id: replace(m, embedder=name, vector=v) for m, v in zip(stale, vectors, strict=True)
        }
        await self._store.save(
            caller.org_id,
            caller.user.id,
            added=[],
            changed=list(fresh.values()),
            keep=self.max_per_user,
        )
        return [fresh.get(m.id, m) for m in memories]

    async def _embed(
        self, texts: builtins.list[str], kind: EmbedKind
    ) -> builtins.list[tuple[float, ...]] | None:
        """Vectors for `texts`; None without an embedder or when it fails (the memories then
        go without, and are embedded at a later recall)."""
        if self._embedder is None or not texts:
            return None
        try:
            vectors = await self._embedder.embed(texts, kind)
        except ThreadlineError as error:
            log.warning("memory embedding failed", error=error.code)
            return None
        return [tuple(float(x) for x in v) for v in vectors]


def _valid_content(content: str) -> str:
    """`content` with its runs of whitespace made single spaces; 400 unless 1 to CONTENT_MAX
    characters remain."""
    text = " ".join(content.split())
    if not 1 <= len(text) <= CONTENT_MAX:
        message = f"content must be 1 to {CONTENT_MAX} characters"
        raise InvalidRequest(message, details=[{"field": "content", "message": message}])
    return text


def system_block(memories: Sequence[Memory]) -> str | None:
    """The system text that gives the model the recalled memories (None: none)."""
    if not memories:
        return None
    return "\n".join([INSTRUCTIONS, *(f"- {m.content}" for m in memories)])


def recalled(memories: Sequence[Memory]) -> tuple[RecalledMemory, ...]:
    """What the reply's record keeps: the memories the model was given."""
    return tuple(RecalledMemory(m.id, m.content) for m in memories)


def _fitting(memories: Sequence[Memory], max_chars: int) -> list[Memory]:
    """The leading memories whose system block fits `max_chars`."""
    room = max_chars - len(INSTRUCTIONS)
    kept: list[Memory] = []
    for memory in memories:
        room -= len(memory.content) + 3  # "\n- "
        if room < 0:
            break
        kept.append(memory)
    return kept


def _same_fact(
    pool: Sequence[Memory], fact: Fact, vector: tuple[float, ...] | None, embedder: str | None
) -> Memory | None:
    """The memory `fact` repeats or replaces: the one of its kind, else the one with its
    normalised text, else the most similar one past NEAR_DUPLICATE (of no other kind)."""
    if fact.kind is not None:
        for memory in pool:
            if memory.kind == fact.kind:
                return memory
    text = normal_text(fact.text)
    for memory in pool:
        if normal_text(memory.content) == text:
            return memory
    if vector is None:
        return None
    candidates = [
        m
        for m in pool
        if m.vector is not None
        and m.embedder == embedder
        and (m.kind is None or fact.kind is None or m.kind == fact.kind)
    ]
    if not candidates:
        return None
    scores = _cosines(vector, [m.vector for m in candidates if m.vector is not None])
    best = int(np.argmax(scores))
    return candidates[best] if scores[best] >= NEAR_DUPLICATE else None


def _cosines(query: Sequence[float], vectors: Sequence[Sequence[float]]) -> list[float]:
    matrix = np.asarray(vectors, dtype=np.float32)
    q = np.asarray(query, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1) * (np.linalg.norm(q) or 1.0)
    norms[norms == 0] = 1.0
    return [float(s) for s in (matrix @ q) / norms]


def _by_shared_words(memories: Sequence[Memory], prompt: str) -> list[Memory]:
    """Most content words shared with the prompt first (ties keep the given order)."""
    wanted = _terms(prompt)
    return sorted(memories, key=lambda m: -len(wanted & _terms(m.content)))


def _terms(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP}


def _stem(word: str) -> str:
    for suffix in ("ing", "ies", "es", "s", "ed"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word
