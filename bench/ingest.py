"""Ingestion throughput: pages per second of Threadline's whole pipeline against raw
pypdfium2 text extraction of the same files (the ceiling), measured in one run.

The corpus is real PDFs no one here wrote: the ones Debian documentation packages put under
/usr/share/doc (`*.pdf`, and `*.pdf.gz` unpacked to a temp dir). `make bench` installs a
few such packages when apt is available. The pipeline is upload → job → sandboxed parse →
chunk → index (SQLite FTS5), with embeddings off (the issue's target, ≥ 50 % of the
ceiling) and, with `--embeddings local`, on.

    .venv/bin/python bench/ingest.py                 # appends to bench/RESULTS.md
    .venv/bin/python bench/ingest.py --no-record --limit 3
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pypdfium2

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
DOC_ROOT = Path("/usr/share/doc")
TARGET = 0.50


def corpus(work: Path, limit: int | None) -> list[Path]:
    """The PDFs under /usr/share/doc that pypdfium2 opens, gzipped ones unpacked."""
    found: list[Path] = []
    for path in sorted(DOC_ROOT.rglob("*.pdf")) + sorted(DOC_ROOT.rglob("*.pdf.gz")):
        target = path
        if path.suffix == ".gz":
            target = work / f"{len(found)}_{path.name[:-3]}"
            with gzip.open(path) as src, target.open("wb") as out:
                shutil.copyfileobj(src, out)
        try:
            pypdfium2.PdfDocument(str(target)).close()
        except pypdfium2.PdfiumError:
            continue
        found.append(target)
        if limit and len(found) >= limit:
            break
    return found


def raw_extract(files: list[Path]) -> tuple[int, int, float]:
    """(pages, characters, seconds) of plain pypdfium2 text extraction."""
    started = time.perf_counter()
    pages = chars = 0
    for path in files:
        pdf = pypdfium2.PdfDocument(str(path))
        for page in pdf:
            textpage = page.get_textpage()
            chars += len(textpage.get_text_range())
            textpage.close()
            page.close()
            pages += 1
        pdf.close()
    return pages, chars, time.perf_counter() - started


async def pipeline(files: list[Path], data: Path, embeddings: str) -> tuple[int, int, float]:
    """(pages, chunks, seconds) through Threadline: upload, job, parse, chunk, index."""
    sys.path.insert(0, str(ROOT / "src"))
    from threadline.container import Container
    from threadline.domain.documents import DocumentState
    from threadline.services.documents import Upload
    from threadline.settings import Settings

    settings = Settings(
        data_dir=data,
        embeddings={"provider": embeddings},
        documents={"embedded_worker": False},
        log_level="WARNING",
    )
    container = Container(settings)
    await container.start(worker=False)
    try:
        caller = await container.accounts.operator()
        started = time.perf_counter()
        ids = []
        for path in files:
            [outcome] = await container.documents.add(
                caller, [Upload(path.name, "application/pdf", io.BytesIO(path.read_bytes()))]
            )
            assert outcome.document is not None, outcome.reason
            ids.append(outcome.document.id)
        await container.worker.run_until_idle()
        elapsed = time.perf_counter() - started
        pages = 0
        for document_id in ids:
            document = await container.documents.get_document(caller, document_id)
            if document.state is not DocumentState.COMPLETE:
                print(f"  {document.name}: {document.state} {document.reason}")
            pages += document.page_count
        chunks = await container.chunk_index.chunk_count(caller.org_id)
        return pages, chunks, elapsed
    finally:
        await container.stop()


def machine() -> str:
    load = Path("/proc/loadavg").read_text().split()[:3]
    return f"{platform.machine()}, {os.cpu_count()} cores, load {' '.join(load)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="use at most N files")
    parser.add_argument("--embeddings", default="none", help="none (target) or local")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = corpus(work, args.limit)
        if not files:
            sys.exit("no PDFs under /usr/share/doc: install e.g. gri-pdf-doc (see bench/README.md)")
        raw_pages, raw_chars, raw_s = raw_extract(files)
        pages, chunks, tl_s = asyncio.run(pipeline(files, work / "data", args.embeddings))
    raw_rate, tl_rate = raw_pages / raw_s, pages / tl_s
    ratio = tl_rate / raw_rate
    verdict = "PASS" if ratio >= TARGET or args.embeddings != "none" else "MISS"
    lines = [
        f"\n## ingest.py — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC ({machine()})\n",
        f"{len(files)} PDFs from /usr/share/doc, {raw_pages} pages, {raw_chars:,} characters; "
        f"embeddings: {args.embeddings}\n",
        "| path | pages | seconds | pages/s |",
        "|---|---|---|---|",
        f"| raw pypdfium2 text (ceiling) | {raw_pages} | {raw_s:.2f} | {raw_rate:.1f} |",
        f"| Threadline pipeline ({chunks} chunks) | {pages} | {tl_s:.2f} | {tl_rate:.1f} |",
        "",
        f"Threadline = {ratio:.0%} of the ceiling (target ≥ {TARGET:.0%} without embeddings): "
        f"**{verdict}**",
    ]
    report = "\n".join(lines)
    print(report)
    if not args.no_record:
        with RESULTS.open("a") as out:
            out.write(report + "\n")


if __name__ == "__main__":
    main()
