"""OCR engines compared on the same scanned pages: characters right and pages per second.

Makes its own scans (so the truth is known): pages of ordinary prose set in a serif and a
sans font at 10-12 pt, rendered at 300 dpi, turned by a fraction of a degree, blurred and
speckled a little as a cheap office scanner would. Each page becomes an image-only PDF that
goes through the real path, the sandboxed parser, once per engine.

"Characters right" is 1 - (edit distance / length of the truth), whitespace squeezed on both
sides, over all pages together. Pages/s is wall-clock through the sandbox, one page at a time
(the default pool, one file in flight), after a warm-up file per engine.

Usage: python bench/ocr.py [--pages N]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import platform
import random
import re
import shutil
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

from threadline.ingestion.sandbox import SandboxedParser

SENTENCES = (
    "the invoice was paid on time and the balance carried forward to the next quarter",
    "our auditors reviewed every receipt against the ledger before the meeting in march",
    "shipping costs rose by 12 percent while the price of paper fell for a third year",
    "please return the signed contract to the office at 42 harbour street by friday",
    "the committee approved a budget of 18,500 euros for repairs to the north wing",
    "a copy of this letter has been sent to the tenants and to the building manager",
)
WORDS = [word for sentence in SENTENCES for word in sentence.split(" ")]
FONTS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
)
DPI = 300
A4 = (2480, 3508)


def page_text(rng: random.Random, lines: int) -> list[str]:
    out = []
    for _ in range(lines):
        words = [rng.choice(WORDS) for _ in range(rng.randint(9, 12))]
        words[0] = words[0].capitalize()
        out.append(" ".join(words) + rng.choice((".", ",", ";", ":")))
    return out


def scan(lines: list[str], rng: random.Random, font_path: str | None, points: int) -> Image.Image:
    size = round(points * DPI / 72)
    font = ImageFont.truetype(font_path, size) if font_path else ImageFont.load_default(size=size)
    image = Image.new("L", A4, 255)
    draw = ImageDraw.Draw(image)
    y = 300
    for line in lines:
        draw.text((250, y), line, fill=20, font=font)
        y += round(size * 1.6)
    image = image.rotate(rng.uniform(-0.6, 0.6), fillcolor=255, resample=Image.Resampling.BICUBIC)
    image = image.filter(ImageFilter.GaussianBlur(0.8))
    speckle = Image.effect_noise(A4, 18)
    return Image.blend(image, speckle, 0.12)


def image_pdf(image: Image.Image, path: Path) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format="PDF", resolution=DPI)
    path.write_bytes(buffer.getvalue())


def squeeze(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, left in enumerate(a, 1):
        current = [i]
        for j, right in enumerate(b, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (left != right))
            )
        previous = current
    return previous[-1]


def make_pages(directory: Path, count: int) -> list[tuple[Path, str]]:
    rng = random.Random(14)
    fonts = [f for f in FONTS if Path(f).exists()] or [None]
    pages = []
    for number in range(count):
        lines = page_text(rng, 22)
        image = scan(lines, rng, fonts[number % len(fonts)], (10, 11, 12)[number % 3])
        path = directory / f"scan-{number}.pdf"
        image_pdf(image, path)
        pages.append((path, squeeze(" ".join(lines))))
    return pages


async def run_engine(engine: str, pages: list[tuple[Path, str]]) -> tuple[float, float]:
    parser = SandboxedParser(
        timeout_seconds=300, memory_mb=2048, max_pages=10, ocr=True, ocr_engine=engine
    )
    try:
        await parser.parse(pages[0][0], "application/pdf", "warm-up.pdf")
        errors = total = 0
        started = time.perf_counter()
        for path, truth in pages:
            document = await parser.parse(path, "application/pdf", path.name)
            read = squeeze(" ".join(page.text for page in document.pages))
            errors += distance(read, truth)
            total += len(truth)
        seconds = time.perf_counter() - started
    finally:
        await parser.aclose()
    return 1 - errors / total, len(pages) / seconds


async def main() -> None:
    options = argparse.ArgumentParser()
    options.add_argument("--pages", type=int, default=6)
    count = options.parse_args().pages
    with tempfile.TemporaryDirectory() as folder:
        pages = make_pages(Path(folder), count)
        engines = ["rapidocr"] + (["tesseract"] if shutil.which("tesseract") else [])
        rows = []
        for engine in engines:
            right, rate = await run_engine(engine, pages)
            rows.append(f"| {engine} | {right:.1%} | {rate:.2f} |")
    table = "\n".join(["| engine | characters right | pages/s |", "|---|---|---|", *rows])
    print(table)
    stamp = f"{dt.date.today()} {platform.machine()}, {count} pages A4 300 dpi"
    with Path(__file__).with_name("RESULTS.md").open("a") as results:
        results.write(f"\n## ocr.py — {stamp}\n\n{table}\n")


if __name__ == "__main__":
    asyncio.run(main())
