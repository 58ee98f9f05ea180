"""Stall benchmark: does one tenant's big work hold up everyone else's requests?

A real server (`python -m threadline serve`, its own process, default settings: SQLite under
a temp dir, the local ONNX embedder, the sandboxed parser; rate limit off so that the tenant's
50 uploads are not refused) with one `openai-compatible` model on the fake upstream
(tests/fake_upstream.py, its own process). A poller process asks `GET /healthz` every 10 ms
(a fresh request when the last one answered, at most one at a time) while another tenant
sends, one workload at a time, each on a fresh server:

- `text-45mb`: a 45 MB text file that is one unpunctuated paragraph (`documents.max_file_bytes`
  is 50 MB), uploaded and ingested: parsed, chunked (~40k chunks), embedded, indexed;
- `tiny-messages`: `POST /v1/chat/completions` bodies at `max_body_bytes` (1 MiB) made of
  one-word messages (~30k), five in a row;
- `pdf-100`: a 100-page PDF (made with reportlab), uploaded and ingested;
- `uploads-50`: 50 concurrent uploads of 200 kB text files, all ingested.

The window of a workload runs from its first request until its last document is COMPLETE (or
FAILED, or --ingest-timeout passed). Prints /healthz p50/p99/max per workload against the
targets of issue 12 (p99 <= 50 ms, max <= 250 ms) and appends them to bench/RESULTS.md
(unless --no-append). Both processes are stopped on exit, error or not.

    .venv/bin/python bench/stall.py               # full sizes, appends to bench/RESULTS.md
    .venv/bin/python bench/stall.py --quick       # smaller sizes (smoke test)
    .venv/bin/python bench/stall.py --quick --no-append --only tiny-messages,pdf-100
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import io
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway import RESULTS, Processes, cpu_seconds, loadavg, machine

P99_TARGET_MS = 50.0
MAX_TARGET_MS = 250.0
POLL_SECONDS = 0.01

FULL = {"text_bytes": 45 * 1024 * 1024, "pdf_pages": 100, "uploads": 50, "upload_bytes": 200_000}
QUICK = {"text_bytes": 1024 * 1024, "pdf_pages": 20, "uploads": 10, "upload_bytes": 50_000}
MAX_BODY_BYTES = 1_048_576  # the server's default max_body_bytes


# ---------------------------------------------------------------------------- the poller


def _poll(url: str, conn: Connection) -> None:
    """In its own process: GET url every POLL_SECONDS until told to stop; send back the
    (start, latency) pairs. A failed request counts as its time to fail."""
    samples: list[tuple[float, float]] = []
    with httpx.Client(timeout=60) as client:
        conn.send("ready")
        while not conn.poll():
            started = time.monotonic()
            with contextlib.suppress(httpx.HTTPError):
                client.get(url)
            samples.append((started, time.monotonic() - started))
            time.sleep(max(0.0, POLL_SECONDS - (time.monotonic() - started)))
    conn.recv()
    conn.send(samples)


class Poller:
    def __init__(self, url: str) -> None:
        context = mp.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_poll, args=(url, child), daemon=True)

    def __enter__(self) -> Poller:
        self._process.start()
        self._conn.recv()
        return self

    def stop(self) -> list[tuple[float, float]]:
        self._conn.send("stop")
        samples: list[tuple[float, float]] = self._conn.recv()
        self._process.join(10)
        return samples

    def __exit__(self, *exc: object) -> None:
        if self._process.is_alive():
            self._process.kill()


# ---------------------------------------------------------------------------- workloads


@dataclass
class Outcome:
    name: str
    what: str
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds
    notes: list[str] = field(default_factory=list)
    server_cpu: float = 0.0  # CPU seconds the server process used in the window
    timeout: float = 0.0  # seconds to wait for a document to be ingested

    def q(self, quantile: float) -> float | None:
        if not self.latencies:
            return None
        if quantile >= 1:
            return max(self.latencies)
        if len(self.latencies) < 2:
            return self.latencies[0]
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[
            round(quantile * 100) - 1
        ]

    @property
    def passed(self) -> bool | None:
        p99, top = self.q(0.99), self.q(1.0)
        if p99 is None or top is None:
            return None
        return p99 * 1000 <= P99_TARGET_MS and top * 1000 <= MAX_TARGET_MS


def unpunctuated(size: int) -> bytes:
    """One paragraph of distinct-ish words, no sentence end, no newline."""
    block = " ".join(f"word{i % 9973}x{i % 13}" for i in range(20_000)).encode() + b" "
    return (block * (size // len(block) + 1))[:size]


def pdf(pages: int) -> bytes:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    out = io.BytesIO()
    page = canvas.Canvas(out, pagesize=A4)
    for number in range(pages):
        y = 800
        for line in range(45):
            page.drawString(40, y, f"Page {number + 1} line {line}: the keeper lights the lamp.")
            y -= 17
        page.showPage()
    page.save()
    return out.getvalue()


class Tenant:
    def __init__(self, client: httpx.AsyncClient, base: str, key: str, timeout: float) -> None:
        self.client = client
        self.base = base
        self.headers = {"API-KEY": key}
        self.timeout = timeout

    async def upload(self, name: str, data: bytes, mime: str) -> str:
        files = {"asset": (name, data, mime)}
        r = await self.client.post(self.base + "/api/assets", headers=self.headers, files=files)
        r.raise_for_status()
        return str(r.json()["asset"]["uuid"])

    async def ingested(self, asset_id: str) -> str:
        """The asset's final status (or RUNNING when --ingest-timeout passed)."""
        deadline = time.monotonic() + self.timeout
        status = "RUNNING"
        while time.monotonic() < deadline:
            r = await self.client.get(f"{self.base}/api/assets/{asset_id}", headers=self.headers)
            status = r.json()["asset"]["status"]
            if status != "RUNNING":
                break
            await asyncio.sleep(0.5)
        return status

    async def chat(self, body: bytes) -> int:
        r = await self.client.post(
            self.base + "/v1/chat/completions",
            content=body,
            headers={**self.headers, "content-type": "application/json"},
        )
        return r.status_code


def tiny_messages_body(model: str) -> bytes:
    """A chat completion at (just under) max_body_bytes, made of one-word messages."""
    one = json.dumps({"role": "user", "content": "hi"}) + ", "
    head, tail = f'{{"model": "{model}", "messages": [', "]}"
    count = (MAX_BODY_BYTES - len(head) - len(tail)) // len(one)
    messages = ", ".join([json.dumps({"role": "user", "content": "hi"})] * count)
    body = (head + messages + tail).encode()
    assert len(body) <= MAX_BODY_BYTES, len(body)
    return body


Workload = Callable[[Tenant], Awaitable[list[str]]]  # returns notes


def workloads(sizes: dict[str, int], model: str) -> dict[str, tuple[str, Workload]]:
    async def text(t: Tenant) -> list[str]:
        data = unpunctuated(sizes["text_bytes"])
        status = await t.ingested(await t.upload("long.txt", data, "text/plain"))
        return [f"document {status}"]

    async def tiny(t: Tenant) -> list[str]:
        body = tiny_messages_body(model)
        codes = [await t.chat(body) for _ in range(5)]
        return [f"{len(body)} bytes, HTTP {codes}"]

    async def pdf_pages(t: Tenant) -> list[str]:
        data = pdf(sizes["pdf_pages"])
        status = await t.ingested(await t.upload("book.pdf", data, "application/pdf"))
        return [f"{len(data) // 1024} kB PDF, document {status}"]

    async def many(t: Tenant) -> list[str]:
        data = unpunctuated(sizes["upload_bytes"])
        ids = await asyncio.gather(
            *(t.upload(f"part{i}.txt", data, "text/plain") for i in range(sizes["uploads"]))
        )
        statuses = await asyncio.gather(*(t.ingested(i) for i in ids))
        counts = {s: statuses.count(s) for s in sorted(set(statuses))}
        return [f"documents {counts}"]

    mb = sizes["text_bytes"] / 1024 / 1024
    return {
        "text-45mb": (f"{mb:g} MB unpunctuated text upload, ingested", text),
        "tiny-messages": ("5 x /v1/chat/completions at max_body_bytes of tiny messages", tiny),
        "pdf-100": (f"{sizes['pdf_pages']}-page PDF upload, ingested", pdf_pages),
        "uploads-50": (
            f"{sizes['uploads']} concurrent {sizes['upload_bytes'] // 1000} kB uploads, ingested",
            many,
        ),
    }


async def _measure(procs: Processes, outcome: Outcome, work: Workload | None, idle: float) -> None:
    """Poll /healthz while `work` runs (or for `idle` seconds): the outcome's window."""
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits) as client:
        tenant = Tenant(client, procs.server_url, procs.key, outcome.timeout)
        pid = procs.server.pid if procs.server else None
        with Poller(procs.server_url + "/healthz") as poller:
            cpu = cpu_seconds(pid)
            started = time.monotonic()
            try:
                if work is None:
                    await asyncio.sleep(idle)
                else:
                    outcome.notes = await work(tenant)
            except (httpx.HTTPError, KeyError, ValueError) as error:
                outcome.notes = [f"workload failed: {error!r}"]
            outcome.seconds = time.monotonic() - started
            outcome.server_cpu = cpu_seconds(pid) - cpu
            outcome.latencies = [lat for _, lat in poller.stop()]


def run_all(chosen: list[str], sizes: dict[str, int], ingest_seconds: float) -> list[Outcome]:
    """Each workload on a fresh server and upstream (nothing left over from the one before:
    a big document still embedding would be measured as the next workload's stall); the
    first server is also measured idle."""
    from gateway import MODEL

    outcomes = []
    table = workloads(sizes, MODEL)
    for index, name in enumerate(chosen):
        what, work = table[name]
        with tempfile.TemporaryDirectory(prefix="threadline-stall-") as tmp:
            procs = Processes(Path(tmp), server_env={})
            try:
                procs.start_upstream()
                procs.start_server()
                if index == 0:
                    idle = Outcome("idle", "nothing else running (5 s)")
                    asyncio.run(_measure(procs, idle, None, 5.0))
                    outcomes.append(idle)
                    _print(idle)
                outcome = Outcome(name, what, timeout=ingest_seconds)
                asyncio.run(_measure(procs, outcome, work, 0.0))
            finally:
                procs.stop()
        outcomes.append(outcome)
        _print(outcome)
    return outcomes


# ---------------------------------------------------------------------------- reporting


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def _verdict(outcome: Outcome) -> str:
    passed = outcome.passed
    return "n/a" if passed is None or outcome.name == "idle" else ("PASS" if passed else "MISS")


def _print(o: Outcome) -> None:
    print(
        f"{o.name:<14} polls {len(o.latencies):>6}  p50 {_ms(o.q(0.5)):>7} ms  "
        f"p99 {_ms(o.q(0.99)):>7} ms  max {_ms(o.q(1.0)):>8} ms  {_verdict(o):<4}  "
        f"{o.seconds:7.1f} s  server CPU {o.server_cpu:6.1f} s  {'; '.join(o.notes)}",
        flush=True,
    )


def append_results(outcomes: list[Outcome], info: dict[str, str], mode: str) -> None:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        f"\n## stall.py — {now} — {mode}\n",
        f"- machine: nproc {info['nproc']}, {info['cpu']}, Python {info['python']}, "
        f"{info['platform']}",
        f"- commit: {info['commit']}; server on {info['server_stack']}",
        f"- load average (1/5/15 min) at start: {info['load_start']}, at end: {info['load_end']} "
        "(other work on the machine skews absolute figures)",
        f"- /healthz polled every {POLL_SECONDS * 1000:g} ms from its own process; targets "
        f"p99 <= {P99_TARGET_MS:g} ms and max <= {MAX_TARGET_MS:g} ms per workload",
        "",
        "| workload | what | seconds | server CPU s | polls | p50 ms | p99 ms | max ms | result "
        "| notes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for o in outcomes:
        out.append(
            f"| {o.name} | {o.what} | {o.seconds:.1f} | {o.server_cpu:.1f} | {len(o.latencies)} | "
            f"{_ms(o.q(0.5))} | "
            f"{_ms(o.q(0.99))} | {_ms(o.q(1.0))} | {_verdict(o)} | {'; '.join(o.notes)} |"
        )
    with RESULTS.open("a") as f:
        f.write("\n".join(out) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke test)")
    parser.add_argument("--no-append", action="store_true", help="do not append to RESULTS.md")
    parser.add_argument(
        "--only", default="text-45mb,tiny-messages,pdf-100,uploads-50", help="workloads, in order"
    )
    parser.add_argument(
        "--ingest-timeout", type=float, default=1800.0, help="seconds to wait for a document"
    )
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(chosen) - set(workloads(sizes, "m"))
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    info = machine()
    info["load_start"] = loadavg()
    print(
        f"machine: nproc {info['nproc']}, {info['cpu']}; commit {info['commit']}; "
        f"load average {info['load_start']}",
        flush=True,
    )
    outcomes = run_all(chosen, sizes, args.ingest_timeout)
    info["load_end"] = loadavg()
    misses = [o.name for o in outcomes if _verdict(o) == "MISS"]
    print(f"targets: p99 <= {P99_TARGET_MS:g} ms, max <= {MAX_TARGET_MS:g} ms; missed: {misses}")
    if not args.no_append:
        append_results(outcomes, info, "quick" if args.quick else "full")
        print(f"appended to {RESULTS}")
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
