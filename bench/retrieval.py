"""Retrieval benchmark: how fast `SqlChunkIndex` answers the searches of one hybrid query.

Builds an org's chunks on SQLite (a temp file) and on PostgreSQL 18 + pgvector (the
embedded server of tests/pg_server.py, in a temp dir): realistic English text (paragraphs of
the files under /usr/share/doc, packed into ~1,000-character chunks, documents of 10-90
chunks) with random unit vectors of 384 dimensions (MiniLM-class). At each size (10k and
100k chunks by default) it times, per query, what a hybrid retrieval runs:

- text: `search_text` (BM25 / ts_rank_cd), top 10, for a question made of words of a chunk;
- vector: `search_vector`, top 10, for a random unit vector;
- hybrid: what `Retriever.search` runs: the documents' labels, then text, vector and symbol
  searches at once (`asyncio.gather`), the wall time of it all,

against two scopes: a conversation's 100 documents (what Threadline's retrieval searches, and
where the target is checked), and all of the org's documents (for scale). p50 and
p99 over `--queries` questions after a warm-up (the first query of a scope, which fills the
vector cache, is reported apart as "cold"). Also: ingestion speed (chunks/s through
`replace_chunks`, embeddings included) and, on PostgreSQL, the recall@10 of the vector
search against an exact numpy search (HNSW is approximate; random vectors, with no structure
to exploit, are its worst case: real embeddings get a much higher recall at the same
`ef_search`). Target: hybrid p50 <= 20 ms at 100k chunks.

    .venv/bin/python bench/retrieval.py                      # 10k and 100k, both backends
    .venv/bin/python bench/retrieval.py --sizes 10000 --backends sqlite --no-append

Hit rates (BM25 vs vectors vs hybrid on real questions) are not measured here yet: see
`hit_rates` below, the hook for that part.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gzip
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import numpy as np
from sqlalchemy import text as sqltext

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from threadline.domain.documents import Asset, Chunk, ChunkHit, Embedder  # noqa: E402
from threadline.domain.entities import Role  # noqa: E402
from threadline.services.retrieval import CANDIDATES  # noqa: E402
from threadline.storage.accounts import SqlAccountStore  # noqa: E402
from threadline.storage.chunks import SqlChunkIndex  # noqa: E402
from threadline.storage.database import Database, utcnow  # noqa: E402
from threadline.storage.documents import SqlDocumentStore  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
DIM = 384
EMBEDDER = "bench-random-384"
TOP_K = 10
HYBRID_DEPTH = CANDIDATES  # per ranking, as `Retriever.search` asks (--depth to compare)
CONVERSATION_DOCS = 100
TARGET_P50_MS = 20.0
CHUNK_CHARS = 1000

# ---------------------------------------------------------------------------- corpus

_WORD = re.compile(r"[A-Za-z]{3,}")


def paragraphs(root: Path = Path("/usr/share/doc")) -> list[str]:
    """Prose paragraphs (mostly letters, 80-2,000 characters) from the text files under
    `root`, deduplicated, in a fixed order."""
    seen: set[str] = set()
    found: list[str] = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        name = path.name.lower()
        if not (name.endswith((".txt", ".md", ".rst", ".gz")) or name.startswith("readme")):
            continue
        try:
            raw = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
        except (OSError, EOFError, gzip.BadGzipFile):
            continue
        text = raw.decode("utf-8", "ignore")
        for block in re.split(r"\n\s*\n", text):
            para = " ".join(block.split())
            letters = sum(c.isalpha() for c in para)
            if 80 <= len(para) <= 2000 and letters > 0.7 * len(para) and para not in seen:
                seen.add(para)
                found.append(para)
    return found


def chunk_texts(paras: list[str], n: int, rng: random.Random) -> list[str]:
    """`n` chunks of about CHUNK_CHARS characters, each a run of paragraphs from a random
    place in the corpus (so chunks repeat paragraphs, not whole chunks)."""
    out = []
    for _ in range(n):
        i = rng.randrange(len(paras))
        parts: list[str] = []
        size = 0
        while size < CHUNK_CHARS:
            para = paras[i % len(paras)]
            parts.append(para)
            size += len(para) + 1
            i += 1
        out.append(" ".join(parts)[: CHUNK_CHARS + 200])
    return out


def question_from(text: str, rng: random.Random) -> str:
    """A question that shares 3-5 words with `text`, worded like a user's."""
    words = [w.lower() for w in _WORD.findall(text)]
    picked = rng.sample(words, min(len(words), rng.randint(3, 5))) if words else ["manual"]
    return rng.choice(["What does the ", "How is ", "Where can I find ", "Explain "]) + (
        " ".join(picked) + "?"
    )


def unit_vectors(n: int, rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal((n, DIM), dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


# ---------------------------------------------------------------------------- corpus in the store


@dataclass
class Corpus:
    db: Database
    index: SqlChunkIndex
    org_id: UUID
    user_id: UUID
    document_ids: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # every chunk's text, in insert order
    vectors: list[np.ndarray] = field(default_factory=list)  # per document
    doc_chunks: list[int] = field(default_factory=list)
    ingest_seconds: float = 0.0
    server_pid: int | None = None  # PostgreSQL's postmaster

    @property
    def chunks(self) -> int:
        return len(self.texts)

    async def grow(self, target: int, paras: list[str], seed: int) -> None:
        """Add documents until the org holds `target` chunks."""
        rng = random.Random(seed)
        nrng = np.random.default_rng(seed)
        store = SqlDocumentStore(self.db)
        while self.chunks < target:
            n = min(rng.randint(10, 90), target - self.chunks)
            asset = await store.add_asset(
                Asset(
                    id=uuid4(),
                    org_id=self.org_id,
                    user_id=self.user_id,
                    key=f"files/bench_{uuid4().hex}.pdf",
                    name=f"doc-{len(self.document_ids)}.pdf",
                    mime_type="application/pdf",
                    size=n * CHUNK_CHARS,
                    sha256="0" * 64,
                    blob_path=f"blobs/{uuid4().hex}",
                    created_at=utcnow(),
                )
            )
            document_id = (await store.create_document(asset)).id
            texts = chunk_texts(paras, n, rng)
            vectors = unit_vectors(n, nrng)
            name = f"doc-{len(self.document_ids)}.pdf"
            chunks = [
                Chunk(document_id, i, i // 3, i // 3, t, f"{name} · Manual · Section {i // 9}")
                for i, t in enumerate(texts)
            ]
            began = time.perf_counter()
            await self.index.replace_chunks(
                self.org_id, document_id, chunks, vectors.tolist(), EMBEDDER
            )
            self.ingest_seconds += time.perf_counter() - began
            self.document_ids.append(document_id)
            self.texts += texts
            self.vectors.append(vectors)
            self.doc_chunks.append(n)

    def exact_top(self, scope: Sequence[int], query: np.ndarray, k: int) -> set[tuple[int, int]]:
        """Positions (document index, chunk ordinal) of the exact top k, for recall."""
        wanted = set(scope)
        scores, keys = [], []
        for i, document_id in enumerate(self.document_ids):
            if document_id in wanted:
                scores.append(self.vectors[i] @ query)
                keys += [(document_id, j) for j in range(self.doc_chunks[i])]
        flat = np.concatenate(scores)
        best = np.argsort(-flat)[:k]
        return {keys[b] for b in best}


async def make_corpus(db: Database) -> Corpus:
    await db.migrate()
    accounts = SqlAccountStore(db)
    org = await accounts.create_org(f"bench-{uuid4().hex[:8]}")
    user = await accounts.create_user(org.id, "bench", Role.ADMIN, 0, "bench")
    return Corpus(db, SqlChunkIndex(db), org.id, user.id)


# ---------------------------------------------------------------------------- timing


@dataclass
class Timing:
    backend: str
    chunks: int
    scope: str
    scope_chunks: int
    cold_ms: float
    text_ms: list[float]
    vector_ms: list[float]
    hybrid_ms: list[float]
    text_hits: float
    recall: float | None
    cpu_ms: float  # CPU per hybrid query: this process (+ the PostgreSQL server's backends)


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(server_pid: int | None) -> float:
    """CPU time of this process, plus that of the server's child processes (PostgreSQL's
    backends) when there is a server."""
    total = time.process_time()
    if server_pid is None:
        return total
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
        for pid in children:
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def timed(call: Awaitable[Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    result = await call
    return (time.perf_counter() - began) * 1000, result


async def hybrid(index: SqlChunkIndex, org: Any, scope: list[int], q: str, v: list[float]) -> None:
    """What `Retriever.search` asks the index for one query: the documents' labels (is one
    named?), then full text, vectors and symbols at once, each for the candidates the
    fusion takes (`CANDIDATES`, more than the chat's top_k)."""
    await index.document_labels(org, scope)
    await asyncio.gather(
        index.search_text(org, scope, q, HYBRID_DEPTH),
        index.search_vector(org, scope, v, EMBEDDER, HYBRID_DEPTH),
        index.search_symbols(org, scope, q, HYBRID_DEPTH),
    )


async def measure(
    corpus: Corpus, backend: str, scope_name: str, scope: list[int], queries: int, seed: int
) -> Timing:
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    index, org = corpus.index, corpus.org_id
    questions = [question_from(rng.choice(corpus.texts), rng) for _ in range(queries + 5)]
    vectors = unit_vectors(queries + 5, nrng)
    cold_ms, _ = await timed(index.search_vector(org, scope, vectors[0].tolist(), EMBEDDER, TOP_K))
    for i in range(5):  # warm-up
        await index.search_text(org, scope, questions[i], TOP_K)
        await index.search_vector(org, scope, vectors[i].tolist(), EMBEDDER, TOP_K)
    text_ms, vector_ms, hybrid_ms, hits, recalls = [], [], [], [], []
    cpu = 0.0
    for i in range(5, queries + 5):
        q, v = questions[i], vectors[i].tolist()
        ms, found = await timed(index.search_text(org, scope, q, TOP_K))
        text_ms.append(ms)
        hits.append(len(found))
        ms, vhits = await timed(index.search_vector(org, scope, v, EMBEDDER, TOP_K))
        vector_ms.append(ms)
        cpu_before = cpu_seconds(corpus.server_pid)
        ms, _ = await timed(hybrid(index, org, scope, q, v))
        cpu += cpu_seconds(corpus.server_pid) - cpu_before
        hybrid_ms.append(ms)
        if backend == "postgres" and i < 55:  # recall of the approximate search
            exact = corpus.exact_top(scope, vectors[i], TOP_K)
            got = {(h.document_id, h.ordinal) for h in vhits}
            recalls.append(len(exact & got) / TOP_K)
    scope_chunks = sum(
        n for d, n in zip(corpus.document_ids, corpus.doc_chunks, strict=True) if d in set(scope)
    )
    return Timing(
        backend,
        corpus.chunks,
        scope_name,
        scope_chunks,
        cold_ms,
        text_ms,
        vector_ms,
        hybrid_ms,
        statistics.mean(hits),
        statistics.mean(recalls) if recalls else None,
        cpu * 1000 / queries,
    )


# ---------------------------------------------------------------------------- hit rates (hook)


@dataclass(frozen=True)
class RetrievalCase:
    """One real question about the corpus and where its answer is: the chunks (by document
    and ordinal) a good retrieval puts in the top k."""

    question: str
    document_ids: tuple[int, ...]  # the scope the question is asked against
    answers: frozenset[tuple[int, int]]  # (document id, chunk ordinal)


def fuse(rankings: Sequence[Sequence[ChunkHit]], k: int, rrf_k: int = 60) -> list[ChunkHit]:
    """Reciprocal-rank fusion of several rankings (what a hybrid retrieval would return)."""
    scores: dict[int, float] = {}
    by_id: dict[int, ChunkHit] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + 1.0 / (rrf_k + rank + 1)
            by_id.setdefault(hit.chunk_id, hit)
    best = sorted(scores, key=lambda c: (-scores[c], c))[:k]
    return [by_id[c] for c in best]


async def hit_rates(
    index: SqlChunkIndex,
    org_id: UUID,
    cases: Sequence[RetrievalCase],
    embedder: Embedder,
    k: int = TOP_K,
) -> dict[str, float]:
    """The share of cases with an answer chunk in the top k, per method (bm25, vector,
    hybrid). The hook for the hit-rate part: it needs a corpus of real documents ingested
    with a real embedder, and `cases` written for it; neither exists yet, so `main` does
    not call this."""
    found = {"bm25": 0, "vector": 0, "hybrid": 0}
    for case in cases:
        [vector] = await embedder.embed([case.question], "query")
        text_hits, vector_hits = await asyncio.gather(
            index.search_text(org_id, case.document_ids, case.question, k),
            index.search_vector(org_id, case.document_ids, vector, embedder.name, k),
        )
        for method, hits in (
            ("bm25", text_hits),
            ("vector", vector_hits),
            ("hybrid", fuse([text_hits, vector_hits], k)),
        ):
            if {(h.document_id, h.ordinal) for h in hits} & case.answers:
                found[method] += 1
    return {m: n / len(cases) for m, n in found.items()} if cases else {}


# ---------------------------------------------------------------------------- backends


@contextlib.contextmanager
def database_url(backend: str, workdir: Path) -> Iterator[tuple[str, int | None]]:
    """The database's URL, and the PostgreSQL server's pid (None for SQLite)."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{workdir / 'bench.db'}", None
        return
    from tests import pg_server

    # The test server's 16 MB of shared buffers would hold neither the HNSW index (~200 MB
    # at 100k chunks) nor the GIN index: give it what a server for this much data has.
    pg_server.SERVER_SETTINGS["shared_buffers"] = "1GB"
    server = pg_server.EmbeddedPostgres(workdir / "pg")
    server.start()
    try:
        yield server.create_database("bench"), server.pid
    finally:
        server.stop()


async def run_backend(
    backend: str, sizes: list[int], queries: int, paras: list[str], workdir: Path
) -> tuple[list[Timing], list[str]]:
    timings: list[Timing] = []
    notes: list[str] = []
    with database_url(backend, workdir) as (url, server_pid):
        db = Database(url)
        try:
            corpus = await make_corpus(db)
            corpus.server_pid = server_pid
            for step, size in enumerate(sizes):
                # PostgreSQL past the first size: grow without the HNSW index and build it
                # after (what one would do for a bulk load; maintaining it costs ~half of
                # the ingestion rate, which the first size measures).
                bulk = backend == "postgres" and step > 0
                if bulk:
                    await drop_hnsw_index(db)
                before, seconds_before = corpus.chunks, corpus.ingest_seconds
                await corpus.grow(size, paras, seed=size)
                rate = (corpus.chunks - before) / max(corpus.ingest_seconds - seconds_before, 1e-9)
                notes.append(
                    f"{backend} {corpus.chunks:,} chunks: ingest {rate:,.0f} chunks/s "
                    f"(replace_chunks, {DIM}-dim vectors included"
                    + (", HNSW index dropped meanwhile)" if bulk else ")")
                )
                if bulk:
                    seconds = await build_hnsw_index(db)
                    notes[-1] += f"; HNSW index built in {seconds:.0f} s"
                if backend == "postgres":
                    async with db.write() as conn:  # fresh planner statistics, as autovacuum would
                        await conn.exec_driver_sql("ANALYZE")
                print(notes[-1], flush=True)
                rng = random.Random(size)
                scopes = {
                    f"conversation ({CONVERSATION_DOCS} docs)": rng.sample(
                        corpus.document_ids, min(CONVERSATION_DOCS, len(corpus.document_ids))
                    ),
                    f"org (all {len(corpus.document_ids)} docs)": list(corpus.document_ids),
                }
                for name, scope in scopes.items():
                    if backend == "postgres":
                        notes.append(
                            f"{corpus.chunks:,} chunks, {name}: "
                            + await knn_plan(db, corpus, scope)
                        )
                        print(notes[-1], flush=True)
                    timing = await measure(corpus, backend, name, scope, queries, seed=size)
                    timings.append(timing)
                    print(row(timing), flush=True)
        finally:
            await db.dispose()
    return timings, notes


async def drop_hnsw_index(db: Database) -> None:
    from threadline.storage.pg_search import hnsw_index_name

    async with db.write() as conn:
        await conn.exec_driver_sql(f"DROP INDEX IF EXISTS {hnsw_index_name(DIM)}")


async def build_hnsw_index(db: Database) -> float:
    """Build the HNSW index the way `SqlChunkIndex` makes it; seconds taken."""
    from threadline.storage.pg_search import hnsw_index_name, vector_index_kind

    kind = vector_index_kind(DIM)
    assert kind is not None
    began = time.perf_counter()
    async with db.write() as conn:
        await conn.exec_driver_sql("SET LOCAL maintenance_work_mem = '1GB'")
        await conn.exec_driver_sql(
            f"CREATE INDEX {hnsw_index_name(DIM)} ON chunks "
            f"USING hnsw ((embedding::{kind[0]}) {kind[1]}) WHERE dim = {DIM}"
        )
    return time.perf_counter() - began


async def knn_plan(db: Database, corpus: Corpus, scope: list[int]) -> str:
    """Whether PostgreSQL plans the index path of the vector search on the HNSW index
    (and what the search would choose for this scope: exact or index)."""
    from threadline.storage.pg_search import hnsw_index_name, knn_statement, vector_index_kind

    q = unit_vectors(1, np.random.default_rng(0))[0]
    params = {
        "org": corpus.org_id,
        "documents": scope,
        "dim": DIM,
        "embedder": EMBEDDER,
        "q": "[" + ",".join(map(repr, q.tolist())) + "]",
        "limit": TOP_K,
    }
    statement = knn_statement(vector_index_kind(DIM))
    async with db.read() as conn:
        rows = await conn.execute(sqltext("EXPLAIN " + str(statement)), params)
        plan = "\n".join(r[0] for r in rows)
    used = hnsw_index_name(DIM) in plan
    scope_chunks = sum(
        n for d, n in zip(corpus.document_ids, corpus.doc_chunks, strict=True) if d in set(scope)
    )
    chosen = "index" if scope_chunks > corpus.index.exact_below else "exact"
    return (
        f"the index query's plan {'uses' if used else 'does NOT use'} the HNSW index "
        f"(search_vector picks {chosen} search for {scope_chunks:,} chunks)"
    )


# ---------------------------------------------------------------------------- report

HEADER = (
    "| backend | chunks | scope | scope chunks | cold ms | text p50/p99 ms "
    "| vector p50/p99 ms | hybrid p50/p99 ms | hybrid CPU ms | text hits | vector recall@10 |\n"
    "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def row(t: Timing) -> str:
    def pair(values: list[float]) -> str:
        return f"{pct(values, 0.5):.1f} / {pct(values, 0.99):.1f}"

    recall = "exact" if t.recall is None else f"{t.recall:.2f}"
    return (
        f"| {t.backend} | {t.chunks:,} | {t.scope} | {t.scope_chunks:,} | {t.cold_ms:.0f} | "
        f"{pair(t.text_ms)} | {pair(t.vector_ms)} | {pair(t.hybrid_ms)} | {t.cpu_ms:.1f} | "
        f"{t.text_hits:.1f} | {recall} |"
    )


def machine() -> str:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"nproc {os.cpu_count()}, {cpu}, Python {platform.python_version()}, " + (
        platform.platform(terse=True)
    )


def commit() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return done.stdout.strip() or "unknown"
    return "unknown"


def loadavg() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


def verdicts(timings: list[Timing], biggest: int) -> list[str]:
    lines = []
    for t in timings:
        if t.chunks == biggest and t.scope.startswith("conversation"):
            p50 = pct(t.hybrid_ms, 0.5)
            result = "PASS" if p50 <= TARGET_P50_MS else "MISS"
            lines.append(
                f"| {t.backend}, {t.scope}: hybrid p50 <= {TARGET_P50_MS:g} ms at "
                f"{biggest:,} chunks | {p50:.1f} ms | **{result}** |"
            )
    return lines


def report(timings: list[Timing], notes: list[str], load: tuple[str, str], queries: int) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    biggest = max(t.chunks for t in timings)
    out = [
        f"\n## retrieval.py — {now}\n",
        f"- machine: {machine()}",
        f"- commit: {commit()}",
        f"- load average (1/5/15 min) at start: {load[0]}, at end: {load[1]}",
        f"- {queries} queries per row after 5 warm-up ones; top {TOP_K}; {DIM}-dim random unit "
        f"vectors; questions of 3-5 words of a chunk; hybrid = labels, then text, vector and "
        f"symbol searches at once, {HYBRID_DEPTH} hits each; "
        "hybrid CPU = CPU time per hybrid query of the benchmark process (SQLite runs in it) "
        "plus PostgreSQL's backends: less disturbed by other work on the machine than latency",
        *[f"- {n}" for n in notes],
        "- the target is checked on the search Threadline runs, over one conversation's "
        "documents (every retrieval is scoped to a conversation or a message's files); the "
        "org-wide rows (all of an org's documents, never searched in the product) show scale",
        "",
        HEADER,
        *[row(t) for t in timings],
        "",
        "| target | measured | result |",
        "|---|---|---|",
        *verdicts(timings, biggest),
    ]
    return "\n".join(out) + "\n"


async def amain(args: argparse.Namespace) -> int:
    sizes = sorted(int(s) for s in args.sizes.split(","))
    print("reading paragraphs under /usr/share/doc ...", flush=True)
    paras = paragraphs()
    print(f"{len(paras):,} paragraphs", flush=True)
    load_start = loadavg()
    timings: list[Timing] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="threadline-retrieval-") as tmp:
        for backend in args.backends.split(","):
            workdir = Path(tmp) / backend
            workdir.mkdir()
            got, said = await run_backend(backend, sizes, args.queries, paras, workdir)
            timings += got
            notes += said
    text = report(timings, notes, (load_start, loadavg()), args.queries)
    print(text)
    if not args.no_append:
        with RESULTS.open("a") as f:
            f.write(text)
        print(f"appended to {RESULTS.relative_to(ROOT)}")
    biggest = max(sizes)
    return 0 if all("PASS" in line for line in verdicts(timings, biggest)) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="chunk counts, comma-separated")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--no-append", action="store_true", help="do not write RESULTS.md")
    parser.add_argument(
        "--depth", type=int, default=CANDIDATES, help="hybrid: hits asked of each ranking"
    )
    args = parser.parse_args()
    global HYBRID_DEPTH
    HYBRID_DEPTH = args.depth
    return asyncio.run(amain(args))


if __name__ == "__main__":
    raise SystemExit(main())
