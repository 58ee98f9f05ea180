"""A PDF page as a PNG, rendered by pypdfium2 in a child process.

Why a child: the PDF is an untrusted upload, and pdfium is C code. As for parsing (see
`child.py`), rendering runs in a fresh interpreter that first limits its address space, CPU
time and open files, and is killed after RENDER_SECONDS; a hostile page costs that child,
never the server. The child writes the PNG to its stdout and nothing to disk; the caller
stores it. `python -m threadline.ingestion.page_render PDF PAGE WIDTH` (page from 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import sys
from pathlib import Path

from threadline.domain.errors import Unprocessable

MiB = 1024 * 1024
MEMORY_MB = 1024
CPU_SECONDS = 20
RENDER_SECONDS = 30.0  # wall time, the child killed after it
MAX_SIDE = 4000  # pixels: no page, however its box is declared, renders larger


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_MB * MiB, MEMORY_MB * MiB))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))


def render(pdf: Path, page_number: int, width: int) -> bytes:
    """The PNG bytes of one page, `width` pixels wide (at most MAX_SIDE on either side)."""
    import io

    import pypdfium2

    document = pypdfium2.PdfDocument(str(pdf))
    try:
        page = document[page_number - 1]
        page_width, page_height = page.get_size()
        scale = min(width / max(page_width, 1.0), MAX_SIDE / max(page_height, 1.0))
        image = page.render(scale=max(scale, 0.05)).to_pil()
        out = io.BytesIO()
        image.save(out, format="PNG", optimize=False)
        return out.getvalue()
    finally:
        document.close()


def main(argv: list[str]) -> int:
    _limit()
    pdf, page, width = Path(argv[0]), int(argv[1]), int(argv[2])
    sys.stdout.buffer.write(render(pdf, page, width))
    sys.stdout.buffer.flush()
    return 0


async def render_page(pdf: Path, page: int, width: int) -> bytes:
    """Render in a child process, off the event loop; Unprocessable when it did not work."""
    env = {k: os.environ[k] for k in ("PATH", "PYTHONPATH", "TMPDIR") if k in os.environ}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "threadline.ingestion.page_render",
        str(pdf),
        str(page),
        str(width),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
    )
    try:
        png, _ = await asyncio.wait_for(process.communicate(), RENDER_SECONDS)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise Unprocessable(f"page {page} took too long to render") from None
    if process.returncode != 0 or not png.startswith(b"\x89PNG"):
        raise Unprocessable(f"page {page} could not be rendered")
    return png


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
