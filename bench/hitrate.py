"""Retrieval quality: hit rate at k and MRR of BM25, vectors and hybrid (RRF) retrieval on
questions over real documents, each question tied to the page(s) that answer it.

The documents are PDFs no one here wrote, from Debian documentation under /usr/share/doc
(bzip2, Valgrind, shared-mime-info, libtasn1); the questions (`bench/questions.json`) were
written by reading the pages: mostly paraphrased, as a user would ask, some keyword-style.
Each question carries, per answering page, a verbatim evidence snippet; `--check` confirms
every snippet is on its page (1-based PDF page, not the printed page number).

The files go through the real pipeline in-process (Container on a temp data dir,
`DocumentService.add`, `worker.run_until_idle()`), then every question is asked of
`Retriever.search_text` (BM25), `search_vector` and `search` (hybrid; `--advanced` adds
`advanced=True`) with limit k, twice: over the question's own document, and over all the
documents (harder: the other manuals compete). A question is a hit when a top-k chunk of its
document spans an answering page; MRR uses the rank of the first such chunk.

    PYTHONPATH=src .venv/bin/python bench/hitrate.py --embeddings local --advanced
    PYTHONPATH=src .venv/bin/python bench/hitrate.py --embeddings none --no-record
    PYTHONPATH=src .venv/bin/python bench/hitrate.py --check      # verify the question set

`--set twins` runs issue 18's harder set instead (`twins.py`: 16 manuals in near-duplicate
pairs, 66 questions of three kinds, hit@1 / hit@k / MRR / answer-in-prompt per kind); its
documents are fetched first by `fetch_docs.py` into `--cache`.

    PYTHONPATH=src .venv/bin/python bench/hitrate.py --set twins
    PYTHONPATH=src .venv/bin/python bench/hitrate.py --set twins --check
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pypdfium2

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
QUESTIONS = ROOT / "bench" / "questions.json"
DOC_ROOT = Path("/usr/share/doc")
SCOPES = ("document", "all")


@dataclass(frozen=True, slots=True)
class Question:
    file: str  # relative to /usr/share/doc
    pages: tuple[int, ...]  # 1-based PDF pages that answer it
    question: str
    kind: str  # "paraphrase" | "keyword"
    evidence: tuple[str, ...]  # per page: a verbatim snippet of the answer


def load_questions(path: Path = QUESTIONS, max_pages: int | None = None) -> list[Question]:
    """The question set; with `max_pages`, answering pages beyond it are dropped, and so
    are questions left without any."""
    questions = []
    for item in json.loads(path.read_text()):
        pairs = [
            (p, e)
            for p, e in zip(item["pages"], item["evidence"], strict=True)
            if max_pages is None or p <= max_pages
        ]
        if pairs:
            questions.append(
                Question(
                    item["file"],
                    tuple(p for p, _ in pairs),
                    item["question"],
                    item["kind"],
                    tuple(e for _, e in pairs),
                )
            )
    return questions


# ---- the documents -------------------------------------------------------------------


def unpack(files: Sequence[str], work: Path, max_pages: int | None) -> dict[str, Path]:
    """Each file as a plain PDF in `work` (gunzipped; cut to its first `max_pages`)."""
    paths = {}
    for rel in files:
        source = DOC_ROOT / rel
        if not source.exists():
            sys.exit(f"{source} is missing: install its Debian documentation package")
        target = work / rel.replace("/", "__").removesuffix(".gz")
        if source.suffix == ".gz":
            with gzip.open(source) as src, target.open("wb") as out:
                shutil.copyfileobj(src, out)
        else:
            shutil.copyfile(source, target)
        if max_pages is not None:
            _truncate(target, max_pages)
        paths[rel] = target
    return paths


def _truncate(path: Path, max_pages: int) -> None:
    pdf = pypdfium2.PdfDocument(str(path))
    try:
        if len(pdf) <= max_pages:
            return
        cut = pypdfium2.PdfDocument.new()
        cut.import_pages(pdf, list(range(max_pages)))
        cut.save(str(path.with_suffix(".cut")))
        cut.close()
    finally:
        pdf.close()
    path.with_suffix(".cut").replace(path)


def page_texts(path: Path) -> list[str]:
    pdf = pypdfium2.PdfDocument(str(path))
    try:
        texts = []
        for page in pdf:
            textpage = page.get_textpage()
            texts.append(textpage.get_text_range())
            textpage.close()
            page.close()
        return texts
    finally:
        pdf.close()


def _squash(text: str) -> str:
    """Text for evidence matching: no whitespace or hyphens (pdfium breaks lines and marks
    hyphenation with U+FFFE), straight quotes, lower case."""
    for curly, straight in (("’", "'"), ("‘", "'"), ("“", '"'), ("”", '"')):
        text = text.replace(curly, straight)
    return re.sub(r"[\s\-\ufffe]+", "", text).lower()


def check_questions(questions: Sequence[Question], paths: dict[str, Path]) -> list[str]:
    """Problems with the question set: evidence not found on the page it is tied to."""
    problems = []
    texts = {rel: [_squash(t) for t in page_texts(path)] for rel, path in paths.items()}
    for q in questions:
        for page, evidence in zip(q.pages, q.evidence, strict=True):
            pages = texts[q.file]
            if page > len(pages) or _squash(evidence) not in pages[page - 1]:
                problems.append(f"{q.file} p.{page}: {evidence!r} not found ({q.question})")
    return problems


async def ingest(container: Any, caller: Any, paths: dict[str, Path]) -> dict[str, int]:
    """Upload each file through DocumentService and run the ingestion jobs to the end;
    file -> document id."""
    from threadline.domain.documents import DocumentState
    from threadline.services.documents import Upload

    ids = {}
    for rel, path in paths.items():
        upload = Upload(path.name, "application/pdf", io.BytesIO(path.read_bytes()))
        [outcome] = await container.documents.add(caller, [upload])
        if outcome.document is None:
            raise RuntimeError(f"{rel}: upload refused: {outcome.reason}")
        ids[rel] = outcome.document.id
    await container.worker.run_until_idle()
    for rel, document_id in ids.items():
        document = await container.documents.get_document(caller, document_id)
        if document.state is not DocumentState.COMPLETE:
            raise RuntimeError(f"{rel}: ingestion ended {document.state}: {document.reason}")
    return ids


# ---- the evaluation ------------------------------------------------------------------

Search = Callable[[Sequence[int], str, int], Awaitable[list[Any]]]


def methods(container: Any, caller: Any, advanced: bool) -> dict[str, Search]:
    retriever, org = container.retriever, caller.org_id

    def hybrid(deep: bool) -> Search:
        return lambda ids, q, k: retriever.search(org, ids, q, limit=k, advanced=deep)

    chosen: dict[str, Search] = {
        "bm25": lambda ids, q, k: retriever.search_text(org, ids, q, k),
    }
    if container.embedder is not None:
        chosen["vectors"] = lambda ids, q, k: retriever.search_vector(org, ids, q, k)
    chosen["hybrid"] = hybrid(False)
    if advanced:
        chosen["hybrid-advanced"] = hybrid(True)
    return chosen


def first_hit(hits: Sequence[Any], document_id: int, pages: Sequence[int]) -> int | None:
    """1-based rank of the first hit of the right document whose page span (0-based,
    inclusive) contains an answering page (1-based); None if there is none."""
    for rank, hit in enumerate(hits, start=1):
        if hit.document_id == document_id and any(
            hit.page_start <= page - 1 <= hit.page_end for page in pages
        ):
            return rank
    return None


async def hit_rates(
    container: Any,
    caller: Any,
    k: int = 5,
    *,
    questions: Sequence[Question] | None = None,
    advanced: bool = False,
    max_pages: int | None = None,
) -> dict[str, Any]:
    """Ingest the questions' documents into `container` (a started one, on a scratch data
    dir) and measure every retrieval method in both scopes. Returns the figures, the
    per-question outcomes and the misses."""
    questions = list(questions or load_questions(max_pages=max_pages))
    files = sorted({q.file for q in questions})
    with tempfile.TemporaryDirectory(prefix="hitrate-") as tmp:
        paths = unpack(files, Path(tmp), max_pages)
        pages = {rel: len(page_texts(path)) for rel, path in paths.items()}
        started = time.perf_counter()
        ids = await ingest(container, caller, paths)
        ingest_s = time.perf_counter() - started
    every = sorted(ids.values())
    outcomes = []
    for name, search in methods(container, caller, advanced).items():
        for scope in SCOPES:
            for q in questions:
                scoped = [ids[q.file]] if scope == "document" else every
                t0 = time.perf_counter()
                hits = await search(scoped, q.question, k)
                elapsed_ms = (time.perf_counter() - t0) * 1000
                rank = first_hit(hits, ids[q.file], q.pages)
                outcomes.append(
                    {
                        "method": name,
                        "scope": scope,
                        "file": q.file,
                        "kind": q.kind,
                        "question": q.question,
                        "pages": list(q.pages),
                        "rank": rank,
                        "ms": elapsed_ms,
                        "got": [_describe(h, ids) for h in hits],
                    }
                )
    embedder = container.embedder.name if container.embedder is not None else "none"
    own = [o for o in outcomes if o["scope"] == "document"]
    return {
        "k": k,
        "embedder": embedder,
        "questions": len(questions),
        "documents": {
            rel: {"pages": pages[rel], "questions": sum(q.file == rel for q in questions)}
            for rel in files
        },
        "chunks": await container.chunk_index.chunk_count(caller.org_id),
        "ingest_seconds": ingest_s,
        "rows": summarise(outcomes, ("method", "scope")),
        "by_file": summarise(own, ("method", "file")),
        "by_kind": summarise(own, ("method", "kind")),
        "outcomes": outcomes,
    }


def _describe(hit: Any, ids: dict[str, int]) -> str:
    names = {v: k.split("/")[0] for k, v in ids.items()}
    span = f"{hit.page_start + 1}" + (
        f"-{hit.page_end + 1}" if hit.page_end != hit.page_start else ""
    )
    return f"{names.get(hit.document_id, hit.document_id)}:{span}"


def summarise(outcomes: Sequence[dict[str, Any]], keys: tuple[str, str]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for o in outcomes:
        groups.setdefault((o[keys[0]], o[keys[1]]), []).append(o)
    rows = []
    for (a, b), group in groups.items():
        ranks = [o["rank"] for o in group]
        rows.append(
            {
                keys[0]: a,
                keys[1]: b,
                "n": len(group),
                "hits": sum(r is not None for r in ranks),
                "hit_rate": sum(r is not None for r in ranks) / len(group),
                "mrr": sum(1 / r for r in ranks if r is not None) / len(group),
                "p50_ms": statistics.median(o["ms"] for o in group),
            }
        )
    return rows


# ---- the report ----------------------------------------------------------------------


def report(result: dict[str, Any], args: argparse.Namespace) -> str:
    k = result["k"]
    docs = ", ".join(
        f"{rel} ({d['pages']} p., {d['questions']} q.)" for rel, d in result["documents"].items()
    )
    cut = f"; PDFs cut to their first {args.max_pages} pages" if args.max_pages else ""
    lines = [
        f"\n## hitrate.py — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n",
        f"- machine: {machine()}; commit {commit()}",
        f"- embedder: {result['embedder']}; k = {k}; {result['questions']} questions "
        f"(bench/questions.json){cut}",
        f"- documents: {docs}; {result['chunks']} chunks, ingested in "
        f"{result['ingest_seconds']:.1f} s",
        "",
        f"| method | scope | hit@{k} | MRR@{k} | p50 ms |",
        "|---|---|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['method']} | {row['scope']} | {row['hit_rate']:.1%} ({row['hits']}/"
            f"{row['n']}) | {row['mrr']:.3f} | {row['p50_ms']:.1f} |"
        )
    lines += ["", f"hit@{k} per document and question kind (scope: own document):", ""]
    columns = [*sorted({r["file"] for r in result["by_file"]}), "paraphrase", "keyword"]
    lines.append("| method | " + " | ".join(c.split("/")[0] for c in columns) + " |")
    lines.append("|---|" + "---:|" * len(columns))
    cells: dict[tuple[str, str], str] = {}
    for row in result["by_file"]:
        cells[(row["method"], row["file"])] = f"{row['hits']}/{row['n']}"
    for row in result["by_kind"]:
        cells[(row["method"], row["kind"])] = f"{row['hits']}/{row['n']}"
    for method in dict.fromkeys(r["method"] for r in result["rows"]):
        lines.append(
            f"| {method} | " + " | ".join(cells.get((method, c), "-") for c in columns) + " |"
        )
    return "\n".join(lines)


def misses(result: dict[str, Any]) -> str:
    lines = []
    for o in result["outcomes"]:
        if o["rank"] is None:
            lines.append(
                f"MISS {o['method']:15} {o['scope']:8} {o['file'].split('/')[0]} "
                f"p.{o['pages']} got {o['got']}: {o['question']}"
            )
    return "\n".join(lines)


def machine() -> str:
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, load average {load}, "
        f"Python {platform.python_version()}"
    )


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


async def run_twins(args: argparse.Namespace, data: Path, paths: dict[str, Path]) -> str:
    """The twins set on a fresh container; the report's text."""
    import twins

    container, caller = await _started(args, data)
    try:
        result = await twins.evaluate(container, caller, paths, _kept(ingest, data))
    finally:
        await container.stop()
    header = [
        f"\n## hitrate.py --set twins — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n",
        f"- machine: {machine()}; commit {commit()}",
    ]
    text = twins.report(result, header)
    if args.misses:
        print(twins.misses(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return text


def _kept(
    ingest_all: Callable[[Any, Any, dict[str, Path]], Awaitable[dict[str, int]]], data: Path
) -> Callable[[Any, Any, dict[str, Path]], Awaitable[dict[str, int]]]:
    """`ingest_all`, done once per data dir: its ids are kept in the dir (`--data`), so a
    second run measures query-time changes without embedding every chunk again."""
    record = data / "twins-ids.json"

    async def ingest_once(container: Any, caller: Any, paths: dict[str, Path]) -> dict[str, int]:
        if record.exists():
            ids: dict[str, int] = json.loads(record.read_text())
            if set(ids) == set(paths):
                return ids
        ids = await ingest_all(container, caller, paths)
        record.write_text(json.dumps(ids))
        return ids

    return ingest_once


async def _started(args: argparse.Namespace, data: Path) -> tuple[Any, Any]:
    from threadline.providers import local_embeddings

    if args.embed_niceness is not None:
        # The server embeds at niceness 10 (it yields to the event loop); on a shared
        # machine that starves a benchmark's ingestion (~0.3 pages/s here at load 15).
        local_embeddings.EMBED_NICENESS = args.embed_niceness
    from threadline import container as container_module
    from threadline.container import Container
    from threadline.settings import Settings

    if args.embed_model == "e5-numpy":
        import e5_numpy

        container_module.build_embedder = lambda config: e5_numpy.BenchEmbedder()

    rerank = {}
    if getattr(args, "rerank_url", None):
        rerank = {
            "provider": "cohere-compatible",
            "base_url": args.rerank_url,
            "model": args.rerank_model,
            "api_key_env": args.rerank_key_env,
        }
    settings = Settings(
        data_dir=data,
        embeddings={"provider": args.embeddings},
        rerank=rerank,
        documents={"embedded_worker": False, **_chunking(args)},
        log_level="WARNING",
    )
    container = Container(settings)
    await container.start(worker=False)
    return container, await container.accounts.operator()


def _chunking(args: argparse.Namespace) -> dict[str, int]:
    """The `[documents]` chunking settings given on the command line (else the defaults)."""
    chosen = {"chunk_chars": args.chunk_chars, "chunk_overlap_chars": args.chunk_overlap}
    return {key: value for key, value in chosen.items() if value is not None}


def main_twins(args: argparse.Namespace) -> None:
    import fetch_docs
    import twins

    paths = fetch_docs.fetch(args.cache, fetch_docs.load_set())
    if args.check:
        problems = twins.check(twins.load_questions(), paths)
        count = len(twins.load_questions())
        print("\n".join(problems) or f"{count} questions: each answer on its page and no other")
        sys.exit(1 if problems else 0)
    if args.data is not None:
        args.data.mkdir(parents=True, exist_ok=True)
        text = asyncio.run(run_twins(args, args.data, paths))
    else:
        with tempfile.TemporaryDirectory(prefix="hitrate-data-") as tmp:
            text = asyncio.run(run_twins(args, Path(tmp), paths))
    print(text)
    if not args.no_record:
        with RESULTS.open("a") as out:
            out.write(text + "\n")


async def run(args: argparse.Namespace, data: Path) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "src"))
    container, caller = await _started(args, data)
    try:
        return await hit_rates(
            container, caller, args.k, advanced=args.advanced, max_pages=args.max_pages
        )
    finally:
        await container.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-k", type=int, default=5, help="top k chunks per question (5)")
    parser.add_argument("--embeddings", default="local", choices=("none", "local"))
    parser.add_argument(
        "--embed-model",
        choices=("e5-numpy",),
        help="instead of the bundled model: e5-numpy (bench/e5_numpy.py, a rejected candidate)",
    )
    parser.add_argument("--advanced", action="store_true", help="also hybrid, advanced=True")
    parser.add_argument("--max-pages", type=int, default=None, help="cut PDFs to N pages")
    parser.add_argument("--misses", action="store_true", help="print every miss")
    parser.add_argument("--json", type=Path, help="write the full result (with outcomes)")
    parser.add_argument("--check", action="store_true", help="verify the question set only")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    parser.add_argument("--set", choices=("questions", "twins"), default="questions")
    parser.add_argument(
        "--embed-niceness", type=int, default=None, help="embedding threads' niceness (10)"
    )
    parser.add_argument(
        "--rerank-url",
        help="twins: a rerank server's base URL (POST {url}/rerank, Cohere's and Jina's API: "
        "llama-server --reranking, text-embeddings-inference, ...); adds hybrid+rerank",
    )
    parser.add_argument("--rerank-model", default="reranker", help="its model name")
    parser.add_argument("--rerank-key-env", help="the variable holding its API key, if any")
    parser.add_argument("--chunk-chars", type=int, help="documents.chunk_chars (default)")
    parser.add_argument("--chunk-overlap", type=int, help="documents.chunk_overlap_chars")
    parser.add_argument("--cache", type=Path, help="twins: where the documents are fetched to")
    parser.add_argument(
        "--data",
        type=Path,
        help="twins: keep the data dir here; a second run reuses its ingested documents "
        "(query-time changes only; ingest seconds are then those of the lookup)",
    )
    args = parser.parse_args()
    if args.set == "twins":
        sys.path.insert(0, str(ROOT / "src"))
        import fetch_docs

        args.cache = args.cache or fetch_docs.DEFAULT_CACHE
        main_twins(args)
        return
    if args.check:
        questions = load_questions()
        with tempfile.TemporaryDirectory() as tmp:
            paths = unpack(sorted({q.file for q in questions}), Path(tmp), None)
            problems = check_questions(questions, paths)
        print("\n".join(problems) or f"{len(questions)} questions: every evidence on its page")
        sys.exit(1 if problems else 0)
    with tempfile.TemporaryDirectory(prefix="hitrate-data-") as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    text = report(result, args)
    print(text)
    if args.misses:
        print("\n" + misses(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if not args.no_record:
        with RESULTS.open("a") as out:
            out.write(text + "\n")


if __name__ == "__main__":
    main()
