"""Parsing throughput: Threadline's sandboxed parser vs raw pypdfium2 on the same PDF.

Makes a text PDF (reportlab; --pages pages of --lines lines each), then measures, each --runs
times (the median is reported):

- raw: pypdfium2 in this process: open, every page's text (`get_text_range`), close
  (timed alternately with the next one, so that other load on the machine hits both alike);
- sandbox warm: `SandboxedParser.parse()` with a warm child that has already parsed a PDF
  (the steady state of a worker): request, extraction in the child, answer, decoding;
- sandbox cold: a new parser each time: start an interpreter, import PDFium, parse;
- child start-up: a new interpreter to its "ready" message (no format imported yet).

Prints the figures and appends them to bench/RESULTS.md with the date, the machine and the
load average. Compare the ratios within one run: absolute times here are noisy.

    .venv/bin/python bench/parsing.py                 # 400 pages, 5 runs
    .venv/bin/python bench/parsing.py --pages 50 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from threadline.ingestion import SandboxedParser  # noqa: E402
from threadline.ingestion.detect import PDF  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
SENTENCE = "The committee reviewed the quarterly figures and approved the budget for {n}. "


def make_pdf(path: Path, pages: int, lines: int) -> int:
    """Write the PDF; returns its number of text characters per page (roughly)."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    drawing = canvas.Canvas(str(path), pagesize=A4)
    for page in range(pages):
        for line in range(lines):
            drawing.drawString(40, 800 - 18 * line, SENTENCE.format(n=page * lines + line))
        drawing.showPage()
    drawing.save()
    return lines * len(SENTENCE.format(n=1000))


def raw_pdfium(path: Path) -> int:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(path))
    chars = 0
    try:
        for index in range(len(pdf)):
            page = pdf[index]
            textpage = page.get_textpage()
            chars += len(textpage.get_text_range())
            textpage.close()
            page.close()
    finally:
        pdf.close()
    return chars


def timed(function: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


async def timed_async(function: Callable[[], Awaitable[object]], runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await function()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


async def sandbox_figures(path: Path, runs: int) -> dict[str, float]:
    def fresh() -> SandboxedParser:
        return SandboxedParser(timeout_seconds=600, memory_mb=1024, max_pages=100_000, ocr=False)

    warm = fresh()
    await warm.parse(path, PDF, path.name)  # PDFium imported, the child back in the pool
    raw_samples, warm_samples = [], []
    for _ in range(runs):  # interleaved, so that load on the machine hits both alike
        raw_samples.append(timed(lambda: raw_pdfium(path), 1))
        warm_samples.append(await timed_async(lambda: warm.parse(path, PDF, path.name), 1))
    await warm.aclose()

    async def cold() -> None:
        parser = fresh()
        await parser.parse(path, PDF, path.name)
        await parser.aclose()

    async def start_only() -> None:
        parser = SandboxedParser(600, 1024, 100_000, ocr=False, pool_size=1)
        await parser.warm_up()
        await parser.aclose()

    cold_s = await timed_async(cold, runs)
    start_s = await timed_async(start_only, runs)
    return {
        "raw": statistics.median(raw_samples),
        "warm": statistics.median(warm_samples),
        "cold": cold_s,
        "start": start_s,
    }


def machine() -> str:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"nproc {os.cpu_count()}, {cpu}, Python {platform.python_version()}"


def commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--pages", type=int, default=400)
    options.add_argument("--lines", type=int, default=40)
    options.add_argument("--runs", type=int, default=5)
    args = options.parse_args()
    load_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.pdf"
        chars_per_page = make_pdf(path, args.pages, args.lines)
        raw_pdfium(path)  # import PDFium and warm the page cache outside the timing
        figures = asyncio.run(sandbox_figures(path, args.runs))
        raw_s = figures["raw"]
    load_end = " ".join(f"{x:.2f}" for x in os.getloadavg())
    pages = args.pages
    rows = [
        ("raw pypdfium2 (in process)", raw_s),
        ("sandbox, warm child", figures["warm"]),
        ("sandbox, cold child (start + import + parse)", figures["cold"]),
    ]
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        f"\n## parsing.py — {now}\n",
        f"- machine: {machine()}; commit {commit()}",
        f"- load average at start: {load_start}, at end: {load_end}",
        f"- PDF: {pages} pages of {args.lines} lines (~{chars_per_page} chars/page); "
        f"median of {args.runs} runs",
        "",
        "| path | seconds | pages/s | vs raw |",
        "|---|---:|---:|---:|",
    ]
    out += [
        f"| {name} | {seconds:.3f} | {pages / seconds:,.0f} | {raw_s / seconds:.0%} |"
        for name, seconds in rows
    ]
    out += [
        "",
        f"- child start-up (spawn to ready, no format imported): {figures['start'] * 1000:.0f} ms",
    ]
    print("\n".join(out))
    with RESULTS.open("a") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
