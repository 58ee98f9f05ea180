"""The twins set: retrieval over many similar documents, measured as a chat would see it.

Issue 18's own hard set (`bench/twins.json`): 16 manuals from Debian documentation packages
in 8 pairs on the same product or topic (bash's man page and its reference manual, GLPK's
API and its modelling language, gnuplot and Gri, Libgcrypt and GnuTLS, four pairs of R
manuals), fetched at set-up time by `fetch_docs.py`. 66 questions, each tied to the one
page that answers it by an answer string that occurs on that page and on no other page of
the whole set (`check`). Three kinds:

- lookup: a symbol or setting as written (`glp_exact`, `R_DEFAULT_PACKAGES=NULL`);
- conceptual: a user's own words, few terms shared with the page;
- confusable: the question names its document ("In the Bash Reference Manual, ..."), whose
  twin has the same or nearly the same text.

All 16 documents are in one scope, as in a conversation holding them all, and every method
returns `top_k` hits (the chat's setting). Per question: the rank of the first hit whose
document and page span hold the answering page (hit@1 = the first citation, hit@k = cited),
and the prompt the chat would build from those hits (`grounding._context`, the chat's
excerpt block at its largest room): whether the answer string is in it, and its size.
"""

from __future__ import annotations

import inspect
import json
import re
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hitrate import page_texts  # the bench's one PDF page reader

ROOT = Path(__file__).resolve().parents[1]
TWINS = ROOT / "bench" / "twins.json"
KINDS = ("lookup", "conceptual", "confusable")
# query-time stages of `Retriever.search`, by keyword: `names` (a named document first),
# `symbols` (a third ranking over the symbol index), `phrase` (a short query found as
# written), `excerpts` (neighbouring chunks joined into one excerpt), `pointers` (tables of
# contents and indexes last), `rerank` (the second stage, when a reranker is configured)
STAGES = ("names", "symbols", "phrase", "excerpts", "pointers", "rerank")


@dataclass(frozen=True, slots=True)
class TwinQuestion:
    file: str  # the document's name in the set
    page: int  # 1-based PDF page (of the cut PDF) that answers it
    kind: str  # lookup | conceptual | confusable
    question: str
    answer: str  # verbatim text of the answer, on that page only


def load_questions(path: Path = TWINS) -> list[TwinQuestion]:
    return [TwinQuestion(**q) for q in json.loads(path.read_text())["questions"]]


def squash(text: str) -> str:
    """Text for answer matching: no whitespace or hyphens (PDF text breaks lines and marks
    hyphenation with U+FFFE), straight quotes, lower case."""
    for curly, straight in (("’", "'"), ("‘", "'"), ("“", '"'), ("”", '"')):
        text = text.replace(curly, straight)
    return re.sub(r"[\s\-\ufffe]+", "", text).lower()


def check(questions: Sequence[TwinQuestion], paths: dict[str, Path]) -> list[str]:
    """Problems: an answer not on its page, or on any other page of any document."""
    pages = {name: [squash(t) for t in page_texts(path)] for name, path in paths.items()}
    problems = []
    for q in questions:
        answer = squash(q.answer)
        found = [
            (n, i + 1) for n, texts in pages.items() for i, t in enumerate(texts) if answer in t
        ]
        if found != [(q.file, q.page)]:
            problems.append(f"{q.file} p.{q.page}: {q.answer!r} found on {found}")
    return problems


Search = Callable[[Sequence[int], str, int], Awaitable[list[Any]]]


def methods(container: Any, caller: Any) -> dict[str, Search]:
    """BM25, vectors, hybrid and hybrid with `advanced` (each new stage off), then hybrid
    with each stage the retriever has on, and with all of them."""
    retriever, org = container.retriever, caller.org_id
    chosen: dict[str, Search] = {"bm25": lambda ids, q, k: retriever.search_text(org, ids, q, k)}
    if container.embedder is not None:
        chosen["vectors"] = lambda ids, q, k: retriever.search_vector(org, ids, q, k)
    # stages a commit may not have yet: each is measured off (plain hybrid) and on
    stages = [s for s in STAGES if s in inspect.signature(retriever.search).parameters]
    if getattr(container, "reranker", None) is None and "rerank" in stages:
        stages.remove("rerank")  # no reranker configured (hitrate.py --rerank-url)
    off = {stage: False for stage in stages}
    chosen["hybrid"] = lambda ids, q, k: retriever.search(org, ids, q, limit=k, **off)
    chosen["hybrid-advanced"] = lambda ids, q, k: retriever.search(
        org, ids, q, limit=k, advanced=True, **off
    )
    for stage in stages:
        chosen[f"hybrid+{stage}"] = _with(retriever, org, {**off, stage: True})
    if len(stages) > 1:
        chosen["hybrid+all"] = _with(retriever, org, {stage: True for stage in stages})
    return chosen


def _with(retriever: Any, org: Any, switches: dict[str, bool]) -> Search:
    return lambda ids, q, k: retriever.search(org, ids, q, limit=k, **switches)


async def evaluate(
    container: Any,
    caller: Any,
    paths: dict[str, Path],
    ingest: Callable[[Any, Any, dict[str, Path]], Awaitable[dict[str, int]]],
    *,
    k: int | None = None,
) -> dict[str, Any]:
    """Ingest the set's documents into `container` (with `ingest`, hitrate.py's upload and
    run-the-jobs) and measure every method."""
    from threadline.services.chat_prompt import MAX_CONTEXT_CHARS
    from threadline.services.grounding import _context

    questions = load_questions()
    k = k or container.settings.documents.top_k
    pages = sum(len(page_texts(p)) for p in paths.values())
    started = time.perf_counter()
    ids = await ingest(container, caller, paths)
    ingest_s = time.perf_counter() - started
    every = sorted(ids.values())
    outcomes = []
    for name, search in methods(container, caller).items():
        for q in questions:
            t0 = time.perf_counter()
            hits = await search(every, q.question, k)
            ms = (time.perf_counter() - t0) * 1000
            prompt = _context(hits, [], MAX_CONTEXT_CHARS).system
            outcomes.append(
                {
                    "method": name,
                    "kind": q.kind,
                    "file": q.file,
                    "page": q.page,
                    "question": q.question,
                    "rank": _rank(hits, ids[q.file], q.page),
                    "in_prompt": squash(q.answer) in squash(prompt),
                    "prompt_chars": len(prompt),
                    "ms": ms,
                    "got": [_describe(h, ids) for h in hits],
                }
            )
    return {
        "k": k,
        "embedder": container.embedder.name if container.embedder is not None else "none",
        "questions": len(questions),
        "documents": len(paths),
        "pages": pages,
        "chunks": await container.chunk_index.chunk_count(caller.org_id),
        "ingest_seconds": ingest_s,
        "rows": summarise(outcomes),
        "outcomes": outcomes,
    }


def _rank(hits: Sequence[Any], document_id: int, page: int) -> int | None:
    for rank, hit in enumerate(hits, start=1):
        if hit.document_id == document_id and hit.page_start <= page - 1 <= hit.page_end:
            return rank
    return None


def _describe(hit: Any, ids: dict[str, int]) -> str:
    names = {v: n for n, v in ids.items()}
    return f"{names.get(hit.document_id, hit.document_id)}:{hit.page_start + 1}"


def summarise(outcomes: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for o in outcomes:
        groups.setdefault((o["method"], o["kind"]), []).append(o)
        groups.setdefault((o["method"], "all"), []).append(o)
    rows = []
    for (method, kind), group in groups.items():
        ranks = [o["rank"] for o in group]
        n = len(group)
        rows.append(
            {
                "method": method,
                "kind": kind,
                "n": n,
                "hit1": sum(r == 1 for r in ranks) / n,
                "hitk": sum(r is not None for r in ranks) / n,
                "mrr": sum(1 / r for r in ranks if r is not None) / n,
                "in_prompt": sum(o["in_prompt"] for o in group) / n,
                "prompt_p50": statistics.median(o["prompt_chars"] for o in group),
                "p50_ms": statistics.median(o["ms"] for o in group),
            }
        )
    order = {kind: i for i, kind in enumerate(("all", *KINDS))}
    methods_seen = list(dict.fromkeys(o["method"] for o in outcomes))
    rows.sort(key=lambda r: (methods_seen.index(r["method"]), order.get(r["kind"], 9)))
    return rows


def report(result: dict[str, Any], header: list[str]) -> str:
    k = result["k"]
    lines = [
        *header,
        f"- set: bench/twins.json, {result['questions']} questions over {result['documents']} "
        f"documents ({result['pages']} pages, {result['chunks']} chunks), all in one scope; "
        f"embedder {result['embedder']}; k = {k}",
        f"- ingest: {result['ingest_seconds']:.1f} s "
        f"({result['pages'] / max(result['ingest_seconds'], 1e-9):.1f} pages/s, "
        "upload to indexed, embedding included)",
        "",
        f"| method | kind | n | hit@1 | hit@{k} | MRR | answer in prompt | prompt p50 chars "
        "| query p50 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['method']} | {r['kind']} | {r['n']} | {r['hit1']:.1%} | {r['hitk']:.1%} "
            f"| {r['mrr']:.3f} | {r['in_prompt']:.1%} | {r['prompt_p50']:.0f} "
            f"| {r['p50_ms']:.1f} |"
        )
    return "\n".join(lines)


def misses(result: dict[str, Any], method: str = "hybrid+all") -> str:
    """The questions `method` (the default: every stage on) does not answer first."""
    lines = []
    for o in result["outcomes"]:
        if o["method"] == method and o["rank"] != 1:
            lines.append(
                f"{o['rank'] or '-':>2} {o['kind']:10} {o['file']}:{o['page']} got {o['got']}: "
                f"{o['question']}"
            )
    return "\n".join(lines)
