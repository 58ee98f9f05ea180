"""Streaming gateway benchmark: Threadline's streaming chat vs the upstream it fronts.

A fake OpenAI-compatible upstream (tests/fake_upstream.py, its own process) streams 32 tokens
20 ms apart. Threadline (`python -m threadline serve`, its own process, SQLite under a temp
dir, rate limit off, a key made with `threadline keys create`) has one `openai-compatible`
model pointing at it; each client worker chats in its own conversation (history on). This
process is the client (httpx AsyncClients, see SHARD) and measures, per stream:

- TTFT: request sent -> first text. Through Threadline: the first `event: content` frame of
  `POST /api/chat-with-ai?isStreaming=true`; directly: the first delta chunk with text from
  `POST /v1/chat/completions` (`stream: true`). At c=50, also OpenAI's Responses stream
  through Threadline (`POST /v1/responses`, `stream: true`, the first
  `response.output_text.delta`; verified by its `response.completed`; each worker in its own
  OpenAI conversation, as the chat-with-ai path), as a third path reported beside the other
  two (its streams/s as a ratio to direct).
- total: request sent -> end of the response body.
- completed streams per second over the level (successful streams / wall time), and the CPU
  time each process (server, upstream, client) used per stream, which is less sensitive to
  other work on the machine than the latencies are.

at concurrency 1, 50 and 200 (30/300/600 streams, 10/100/200 with --quick), each level after
a warm-up, direct first then Threadline. Every stream is verified: all 32 tokens in order and
a proper end (`done` event after a SUCCESS `result` / `[DONE]` after finish_reason "stop");
anything else counts as failed. Prints the figures, the overheads and PASS/MISS per target of
issue 2, and appends them to bench/RESULTS.md. Both processes are stopped on exit, error or not.

    .venv/bin/python bench/gateway.py             # full run, appends to bench/RESULTS.md
    .venv/bin/python bench/gateway.py --quick     # smaller counts (smoke test)
    .venv/bin/python bench/gateway.py --levels 50 --profile /tmp/tl.svg   # py-spy on server
    .venv/bin/python bench/gateway.py --levels 50 --cprofile /tmp/tl.prof # cProfile, CPU time
    .venv/bin/python bench/gateway.py --failover  # one of two upstreams fails 20 % (failover.py)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from gateway_servers import (  # noqa: F401 (soak.py, stall.py, failover.py use them as gw.*)
    MODEL,
    ROOT,
    UPSTREAM_MODEL,
    UPSTREAM_MODULE,
    Processes,
    Profiler,
    cpu_seconds,
    loadavg,
    server_processes,
    tree_cpu_seconds,
    wait_all_started,
)

RESULTS = ROOT / "bench" / "RESULTS.md"

TOKENS = 32  # what the targets are defined for; --tokens/--delay change them for experiments
DELAY = 0.02


def expected_text(tokens: int) -> str:
    """The text the fake upstream streams for `tokens` tokens (Reply(tokens=N).pieces())."""
    return "".join(("" if i == 0 else " ") + f"word{i}" for i in range(tokens))


EXPECTED_TEXT = expected_text(TOKENS)
PROMPT = "Write thirty-two words, please."

FULL_COUNTS = {1: 30, 50: 300, 200: 600}
QUICK_COUNTS = {1: 10, 50: 100, 200: 200}

# Targets of issue 2 (2-core machine shared by client, upstream and server).
C1_TTFT_OVERHEAD_MS = 3.0
C50_THROUGHPUT_RATIO = 0.85
C50_TTFT_OVERHEAD_MS = 100.0


# ---------------------------------------------------------------------------- measurements


@dataclass
class Sample:
    ok: bool
    ttft: float | None  # seconds
    total: float  # seconds
    error: str | None = None


@dataclass
class Level:
    path: str  # "direct" or "threadline"
    concurrency: int
    samples: list[Sample]
    wall: float  # seconds
    warmup_failed: int = 0
    cpu: dict[str, float] = field(default_factory=dict)  # process -> CPU seconds used

    def cpu_ms_per_stream(self, who: str) -> float | None:
        used = self.cpu.get(who)
        return None if used is None or not self.samples else used * 1000 / len(self.samples)

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.ok]

    @property
    def failed(self) -> int:
        return len(self.samples) - len(self.ok)

    @property
    def streams_per_s(self) -> float:
        return len(self.ok) / self.wall if self.wall > 0 else 0.0

    def ttft(self, q: float) -> float | None:
        return _quantile([s.ttft for s in self.ok if s.ttft is not None], q)

    def total(self, q: float) -> float | None:
        return _quantile([s.total for s in self.ok], q)

    def errors(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for s in self.samples:
            if not s.ok:
                key = s.error or "?"
                counts[key] = counts.get(key, 0) + 1
        return counts


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    if q == 0.5:
        return statistics.median(values)
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[round(q * 100) - 1]


def _frames(buffer: bytearray) -> list[bytes]:
    """Pop the complete SSE frames (blank-line separated) off the front of `buffer`."""
    out = []
    while (end := buffer.find(b"\n\n")) >= 0:
        out.append(bytes(buffer[:end]))
        del buffer[: end + 2]
    return out


def _fields(frame: bytes) -> tuple[str | None, str | None]:
    """(event, data) of one SSE frame; comments (`: ping`) give (None, None)."""
    event = data = None
    for line in frame.decode().split("\n"):
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data = line[5:].lstrip() if data is None else data + "\n" + line[5:].lstrip()
    return event, data


async def direct_stream(client: httpx.AsyncClient, url: str, body: bytes) -> Sample:
    """One chat completion straight from the upstream, verified."""
    start = time.perf_counter()
    ttft: float | None = None
    parts: list[str] = []
    finish = None
    done = False
    try:
        async with client.stream("POST", url, content=body, headers=_JSON) as response:
            if response.status_code != 200:
                await response.aread()
                return Sample(
                    False, None, time.perf_counter() - start, f"HTTP {response.status_code}"
                )
            buffer = bytearray()
            async for chunk in response.aiter_raw():
                buffer += chunk
                for frame in _frames(buffer):
                    _, data = _fields(frame)
                    if data is None:
                        continue
                    if data == "[DONE]":
                        done = True
                        continue
                    payload = json.loads(data)
                    for choice in payload.get("choices") or ():
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            if ttft is None:
                                ttft = time.perf_counter() - start
                            parts.append(text)
                        finish = choice.get("finish_reason") or finish
    except (httpx.HTTPError, ValueError) as exc:
        return Sample(False, ttft, time.perf_counter() - start, type(exc).__name__)
    total = time.perf_counter() - start
    return _verdict(ttft, total, parts, done and finish == "stop", "no [DONE] / finish_reason")


@dataclass
class _Read:
    """What one verified stream through Threadline has shown so far."""

    start: float
    ttft: float | None = None
    parts: list[str] = field(default_factory=list)
    ended: bool = False  # the dialect's successful end, with the expected text
    error: str | None = None

    def text(self, piece: str) -> None:
        if self.ttft is None:
            self.ttft = time.perf_counter() - self.start
        self.parts.append(piece)


async def _sse_sample(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: dict[str, str],
    on_frame: Callable[[_Read, str | None, str | None], None],
    why: str,
) -> Sample:
    """One streamed request through Threadline; `on_frame` reads each SSE frame (its event
    and data) into the `_Read`; `why` names a missing successful end."""
    read = _Read(time.perf_counter())
    try:
        async with client.stream("POST", url, content=body, headers=headers) as response:
            if response.status_code != 200:
                await response.aread()
                return Sample(
                    False, None, time.perf_counter() - read.start, f"HTTP {response.status_code}"
                )
            buffer = bytearray()
            async for chunk in response.aiter_raw():
                buffer += chunk
                for frame in _frames(buffer):
                    on_frame(read, *_fields(frame))
    except (httpx.HTTPError, ValueError, KeyError, IndexError) as exc:
        return Sample(False, read.ttft, time.perf_counter() - read.start, type(exc).__name__)
    total = time.perf_counter() - read.start
    if read.error:
        return Sample(False, read.ttft, total, read.error)
    return _verdict(read.ttft, total, read.parts, read.ended, why)


async def threadline_stream(client: httpx.AsyncClient, url: str, body: bytes, key: str) -> Sample:
    """One streamed Chat with AI through Threadline, verified."""
    result_ok = False

    def on_frame(read: _Read, event: str | None, data: str | None) -> None:
        nonlocal result_ok
        if event == "content" and data is not None:
            read.text(json.loads(data)["content"])
        elif event == "result" and data is not None:
            record = json.loads(data)["aiRecord"]
            result = record.get("aiRecordDetail", {}).get("resultObject")
            result_ok = record.get("status") == "SUCCESS" and result == [EXPECTED_TEXT]
        elif event == "done":
            read.ended = result_ok
        elif event == "error":
            read.error = "error event: " + str(data)[:120]

    headers = {**_JSON, "API-KEY": key}
    return await _sse_sample(client, url, body, headers, on_frame, "no SUCCESS result / done event")


async def responses_stream(client: httpx.AsyncClient, url: str, body: bytes, key: str) -> Sample:
    """One streamed OpenAI Responses request through Threadline (`POST /v1/responses`,
    `stream: true`), verified: the text deltas, then `response.completed` with that text."""

    def on_frame(read: _Read, event: str | None, data: str | None) -> None:
        if event == "response.output_text.delta" and data is not None:
            read.text(json.loads(data)["delta"])
        elif event == "response.completed" and data is not None:
            output = json.loads(data)["response"]["output"]
            read.ended = output[0]["content"][0]["text"] == EXPECTED_TEXT
        elif event in ("response.failed", "response.incomplete", "error"):
            read.error = f"{event}: " + str(data)[:120]

    headers = {**_JSON, "Authorization": f"Bearer {key}"}
    return await _sse_sample(
        client, url, body, headers, on_frame, "no response.completed with the text"
    )


def _verdict(ttft: float | None, total: float, parts: list[str], ended: bool, why: str) -> Sample:
    if len(parts) != TOKENS or "".join(parts) != EXPECTED_TEXT:
        return Sample(False, ttft, total, f"truncated ({len(parts)}/{TOKENS} tokens)")
    if not ended:
        return Sample(False, ttft, total, why)
    return Sample(True, ttft, total)


_JSON = {"content-type": "application/json"}

StreamFn = Callable[[int], Awaitable[Sample]]  # worker index -> one verified stream


async def run_level(stream: StreamFn, concurrency: int, count: int) -> tuple[list[Sample], float]:
    """`count` streams by `concurrency` workers; returns the samples and the wall time."""
    samples: list[Sample] = []
    issued = 0

    async def worker(index: int) -> None:
        nonlocal issued
        while issued < count:
            issued += 1
            samples.append(await stream(index))

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return samples, time.perf_counter() - start


# ---------------------------------------------------------------------------- the run


@dataclass
class Run:
    levels: list[tuple[int, int]]
    results: dict[tuple[str, int], Level] = field(default_factory=dict)


async def benchmark(
    procs: Processes,
    levels: list[tuple[int, int]],
    stateless: bool,
    profile: Path | None,
    profile_level: int,
    profile_args: str,
    scaled: Processes | None = None,
) -> Run:
    """`scaled`: a second server on the same upstream, run with `serve --workers N`: its
    path ("workers") is measured at every level beside the single process's."""
    run = Run(levels)
    most = max(c for c, _ in levels)
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(c) for c in _clients(most)]
        direct_url = procs.upstream_url + "/chat/completions"
        direct_body = json.dumps(
            {
                "model": UPSTREAM_MODEL,
                "messages": [{"role": "user", "content": PROMPT}],
                "stream": True,
                "stream_options": {"include_usage": True},
                "max_tokens": 512,
            }
        ).encode()

        chat_url = procs.server_url + "/api/chat-with-ai?isStreaming=true"
        bodies = await _chat_bodies(clients[0], procs, most, stateless)

        def direct(worker: int) -> Awaitable[Sample]:
            return direct_stream(clients[worker // SHARD], direct_url, direct_body)

        def through(worker: int) -> Awaitable[Sample]:
            client = clients[worker // SHARD]
            return threadline_stream(client, chat_url, bodies[worker], procs.key)

        responses_url = procs.server_url + "/v1/responses"
        responses_bodies = await _responses_bodies(clients[0], procs, most, stateless)

        def responses(worker: int) -> Awaitable[Sample]:
            client = clients[worker // SHARD]
            return responses_stream(client, responses_url, responses_bodies[worker], procs.key)

        scaled_url = (
            "" if scaled is None else scaled.server_url + "/api/chat-with-ai?isStreaming=true"
        )
        scaled_bodies = (
            [] if scaled is None else await _chat_bodies(clients[0], scaled, most, stateless)
        )

        def across(worker: int) -> Awaitable[Sample]:
            assert scaled is not None
            client = clients[worker // SHARD]
            return threadline_stream(client, scaled_url, scaled_bodies[worker], scaled.key)

        for concurrency, count in levels:
            paths: list[tuple[str, StreamFn]] = [("direct", direct), ("threadline", through)]
            if scaled is not None:
                paths.append(("workers", across))
            if concurrency == RESPONSES_LEVEL and scaled is None:  # c=50, not in a --workers run
                paths.append(("responses", responses))
            for path, stream in paths:
                warm, _ = await run_level(stream, concurrency, max(concurrency, 5))
                profiling = profile is not None and path == "threadline"
                profiling = profiling and concurrency == profile_level
                assert procs.server is not None
                ctx: contextlib.AbstractContextManager[Any] = (
                    Profiler(profile, procs.server.pid, profile_args)
                    if profiling
                    else contextlib.nullcontext()
                )
                server = procs.server if path != "workers" or scaled is None else scaled.server
                assert server is not None
                pids = {"server": server.pid, "upstream": procs.upstream_pid, "client": None}
                before = {who: tree_cpu_seconds(pid) for who, pid in pids.items()}
                with ctx:
                    samples, wall = await run_level(stream, concurrency, count)
                used = {who: tree_cpu_seconds(pid) - before[who] for who, pid in pids.items()}
                level = Level(path, concurrency, samples, wall, sum(not s.ok for s in warm), used)
                run.results[(path, concurrency)] = level
                print(f"  {_row(level)}", flush=True)
    return run


RESPONSES_LEVEL = 50  # the level at which the Responses stream is measured too

SHARD = 10
"""Workers per httpx client. httpcore's pool scans every pooled connection (with a poll()
syscall per idle one) on each request start and response close, so one client with a pool of
200 connections spends most of the client's CPU there; shards of 10 keep the client light so
that it measures the server rather than itself (same for both paths)."""


def _clients(workers: int) -> list[httpx.AsyncClient]:
    verify = ssl.create_default_context()  # built once: each client would load the CA file
    limits = httpx.Limits(max_connections=SHARD + 5, max_keepalive_connections=SHARD + 5)
    timeout = httpx.Timeout(120.0, connect=30.0, pool=120.0)
    count = (workers + SHARD - 1) // SHARD
    return [httpx.AsyncClient(limits=limits, timeout=timeout, verify=verify) for _ in range(count)]


async def _chat_bodies(
    client: httpx.AsyncClient, procs: Processes, workers: int, stateless: bool
) -> list[bytes]:
    """One request body per worker; each worker chats in its own conversation (history on)."""
    if stateless:
        body = {"type": "UNIFY_CHAT_WITH_AI", "model": MODEL, "promptObject": {"prompt": PROMPT}}
        return [json.dumps(body).encode()] * workers
    headers = {"API-KEY": procs.key}
    semaphore = asyncio.Semaphore(20)

    async def create(i: int) -> bytes:
        async with semaphore:
            r = await client.post(
                procs.server_url + "/api/conversations",
                headers=headers,
                json={"type": "UNIFY_CHAT_WITH_AI", "title": f"bench {i}", "model": MODEL},
            )
        r.raise_for_status()
        prompt = {"prompt": PROMPT, "conversationId": r.json()["conversation"]["uuid"]}
        body = {"type": "UNIFY_CHAT_WITH_AI", "model": MODEL, "promptObject": prompt}
        return json.dumps(body).encode()

    return list(await asyncio.gather(*(create(i) for i in range(workers))))


async def _responses_bodies(
    client: httpx.AsyncClient, procs: Processes, workers: int, stateless: bool
) -> list[bytes]:
    """One Responses request body per worker, each in its own OpenAI conversation (history
    on, as the chat-with-ai path); stateless: not stored."""
    if stateless:
        body = {"model": MODEL, "input": PROMPT, "stream": True, "store": False}
        return [json.dumps(body).encode()] * workers
    headers = {"Authorization": f"Bearer {procs.key}"}
    semaphore = asyncio.Semaphore(20)

    async def create(i: int) -> bytes:
        async with semaphore:
            r = await client.post(
                procs.server_url + "/v1/conversations",
                headers=headers,
                json={"metadata": {"bench": str(i)}},
            )
        r.raise_for_status()
        body = {"model": MODEL, "input": PROMPT, "stream": True, "conversation": r.json()["id"]}
        return json.dumps(body).encode()

    return list(await asyncio.gather(*(create(i) for i in range(workers))))


# ---------------------------------------------------------------------------- reporting


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


HEADER = (
    f"{'path':<10} {'conc':>4} {'streams':>7} {'failed':>6} {'TTFT p50':>9} {'TTFT p99':>9} "
    f"{'total p50':>9} {'total p99':>9} {'streams/s':>9}  CPU ms/stream srv/up/client"
)


def _row(level: Level) -> str:
    return (
        f"{level.path:<10} {level.concurrency:>4} {len(level.samples):>7} {level.failed:>6} "
        f"{_ms(level.ttft(0.5)):>9} {_ms(level.ttft(0.99)):>9} {_ms(level.total(0.5)):>9} "
        f"{_ms(level.total(0.99)):>9} {level.streams_per_s:>9.1f}  {_cpu(level)}"
    )


def _cpu(level: Level) -> str:
    return "/".join(
        "-" if (v := level.cpu_ms_per_stream(who)) is None else f"{v:.1f}"
        for who in ("server", "upstream", "client")
    )


@dataclass
class Verdicts:
    lines: list[str]  # overheads per level
    targets: list[tuple[str, str, str]]  # (target, measured, PASS/MISS/n/a)


def evaluate(run: Run) -> Verdicts:
    lines = []
    overhead: dict[int, float | None] = {}
    ratio: dict[int, float | None] = {}
    workers_at: dict[int, tuple[float | None, float | None, Level]] = {}
    for concurrency, _ in run.levels:
        d, t = run.results[("direct", concurrency)], run.results[("threadline", concurrency)]
        dt50, tt50 = d.ttft(0.5), t.ttft(0.5)
        dt99, tt99 = d.ttft(0.99), t.ttft(0.99)
        dtot, ttot = d.total(0.5), t.total(0.5)
        overhead[concurrency] = (tt50 - dt50) * 1000 if tt50 is not None and dt50 else None
        ratio[concurrency] = t.streams_per_s / d.streams_per_s if d.streams_per_s else None
        p99 = (tt99 - dt99) * 1000 if tt99 is not None and dt99 is not None else None
        tot = (ttot - dtot) * 1000 if ttot is not None and dtot is not None else None
        lines.append(
            f"c={concurrency}: p50 TTFT overhead {_signed(overhead[concurrency])} ms "
            f"(p99 {_signed(p99)} ms), p50 total overhead {_signed(tot)} ms, "
            f"Threadline streams/s = {_pct(ratio[concurrency])} of direct, "
            f"failed: direct {d.failed}, threadline {t.failed}"
        )
        r = run.results.get(("responses", concurrency))
        if r is not None:
            r50 = r.ttft(0.5)
            r_overhead = (r50 - dt50) * 1000 if r50 is not None and dt50 else None
            r_ratio = r.streams_per_s / d.streams_per_s if d.streams_per_s else None
            lines.append(
                f"c={concurrency}: Responses stream p50 TTFT overhead {_signed(r_overhead)} ms, "
                f"streams/s = {_pct(r_ratio)} of direct, failed: {r.failed}"
            )
        w = run.results.get(("workers", concurrency))
        if w is not None:
            w50, w99 = w.ttft(0.5), w.ttft(0.99)
            w_overhead = (w50 - dt50) * 1000 if w50 is not None and dt50 else None
            w_p99 = (w99 - dt99) * 1000 if w99 is not None and dt99 is not None else None
            w_ratio = w.streams_per_s / d.streams_per_s if d.streams_per_s else None
            workers_at[concurrency] = (w_ratio, w_p99, w)
            lines.append(
                f"c={concurrency}: serve --workers: p50 TTFT overhead {_signed(w_overhead)} ms "
                f"(p99 {_signed(w_p99)} ms), streams/s = {_pct(w_ratio)} of direct, "
                f"failed: {w.failed}"
            )
        for path, level in (("direct", d), ("threadline", t), ("responses", r), ("workers", w)):
            if level is None:
                continue
            if level.failed or level.warmup_failed:
                lines.append(
                    f"    {path} c={concurrency} failures: {level.errors()} "
                    f"(warm-up failed: {level.warmup_failed})"
                )

    def check(ok: bool | None) -> str:
        return "n/a" if ok is None else ("PASS" if ok else "MISS")

    c1, c50, c200 = overhead.get(1), overhead.get(50), run.results.get(("threadline", 200))
    r50 = ratio.get(50)
    targets = [
        (
            f"c=1 p50 TTFT overhead <= {C1_TTFT_OVERHEAD_MS:g} ms",
            f"{_signed(c1)} ms",
            check(None if c1 is None else c1 <= C1_TTFT_OVERHEAD_MS),
        ),
        (
            f"c=50 streams/s >= {C50_THROUGHPUT_RATIO:.0%} of direct",
            _pct(r50),
            check(None if r50 is None else r50 >= C50_THROUGHPUT_RATIO),
        ),
        (
            f"c=50 p50 TTFT overhead <= {C50_TTFT_OVERHEAD_MS:g} ms",
            f"{_signed(c50)} ms",
            check(None if c50 is None else c50 <= C50_TTFT_OVERHEAD_MS),
        ),
        (
            "c=200 no failed or truncated stream",
            _failures(c200),
            check(None if c200 is None else c200.failed == 0 and c200.warmup_failed == 0),
        ),
    ]
    if 200 in workers_at:  # issue 13: several API processes at c=200
        w_ratio, w_p99, w = workers_at[200]
        targets += [
            (
                f"c=200 --workers streams/s >= {WORKERS_THROUGHPUT_RATIO:.0%} of direct",
                _pct(w_ratio),
                check(None if w_ratio is None else w_ratio >= WORKERS_THROUGHPUT_RATIO),
            ),
            (
                f"c=200 --workers p99 TTFT overhead <= {WORKERS_P99_OVERHEAD_MS:g} ms",
                f"{_signed(w_p99)} ms",
                check(None if w_p99 is None else w_p99 <= WORKERS_P99_OVERHEAD_MS),
            ),
            (
                "c=200 --workers no failed stream",
                _failures(w),
                check(w.failed == 0 and w.warmup_failed == 0),
            ),
        ]
    return Verdicts(lines, targets)


WORKERS_THROUGHPUT_RATIO = 0.90  # issue 13's targets for `serve --workers 2` at c=200
WORKERS_P99_OVERHEAD_MS = 50.0


def _failures(level: Level | None) -> str:
    if level is None:
        return "-"
    warm = f" (+{level.warmup_failed} in warm-up)" if level.warmup_failed else ""
    return f"{level.failed} failed of {len(level.samples)}{warm}"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = _git("rev-parse", "--short", "HEAD") or "unknown"
    if _git("status", "--porcelain", "--untracked-files=no", "--", "src"):
        commit += " (src/ has uncommitted changes)"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "commit": commit,
        "server_stack": server_stack(),
    }


def server_stack() -> str:
    """What `threadline serve` runs on here: uvicorn picks uvloop and httptools if importable
    (the `fast` extra); the server inherits this interpreter and environment."""
    import importlib.util

    fast = [m for m in ("uvloop", "httptools") if importlib.util.find_spec(m) is not None]
    loop = "uvloop" if "uvloop" in fast else "asyncio"
    http = "httptools" if "httptools" in fast else "h11"
    return f"{loop} + {http}"


def _git(*args: str) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else ""
    return ""


def append_results(run: Run, verdicts: Verdicts, info: dict[str, str], mode: str) -> None:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        f"\n## gateway.py — {now} — {mode}\n",
        f"- machine: nproc {info['nproc']}, {info['cpu']}, Python {info['python']}, "
        f"{info['platform']}",
        f"- commit: {info['commit']}; server on {info['server_stack']}",
        f"- load average (1/5/15 min) at start: {info['load_start']}, at end: {info['load_end']} "
        "(other work on the machine skews absolute figures)",
        f"- upstream: {TOKENS} tokens, {DELAY * 1000:g} ms apart; streams per level: "
        + ", ".join(f"c={c}: {n}" for c, n in run.levels),
        "",
        "| path | conc | streams | failed | TTFT p50 ms | TTFT p99 ms | total p50 ms "
        "| total p99 ms | streams/s | CPU ms/stream server/upstream/client |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for concurrency, _ in run.levels:
        for path in ("direct", "threadline", "workers"):
            if (path, concurrency) not in run.results:
                continue
            lv = run.results[(path, concurrency)]
            out.append(
                f"| {path} | {concurrency} | {len(lv.samples)} | {lv.failed} | "
                f"{_ms(lv.ttft(0.5))} | {_ms(lv.ttft(0.99))} | {_ms(lv.total(0.5))} | "
                f"{_ms(lv.total(0.99))} | {lv.streams_per_s:.1f} | {_cpu(lv)} |"
            )
    out += ["", *[f"- {line.strip()}" for line in verdicts.lines], ""]
    out += ["| target | measured | result |", "|---|---|---|"]
    out += [f"| {t} | {m} | **{r}** |" for t, m, r in verdicts.targets]
    if not RESULTS.exists():
        RESULTS.write_text(
            "# Benchmark results\n\nAppended by the scripts in bench/ (see bench/README.md). "
            "Absolute times on shared machines are noisy: compare the ratios of one run.\n"
            "CPU ms/stream: CPU time (user + system) each process used during a level, divided "
            "by its streams.\n"
        )
    with RESULTS.open("a") as f:
        f.write("\n".join(out) + "\n")


# ---------------------------------------------------------------------------- main


def main() -> int:
    global TOKENS, DELAY, EXPECTED_TEXT
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer streams per level")
    parser.add_argument(
        "--levels", default="1,50,200", help="comma-separated concurrency levels (1,50,200)"
    )
    parser.add_argument("--streams", type=int, default=None, help="streams per level (override)")
    parser.add_argument(
        "--stateless", action="store_true", help="no conversationId (no history, no messages)"
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the server, e.g. THREADLINE_LOG_LEVEL=WARNING",
    )
    parser.add_argument("--profile", type=Path, help="py-spy output (.svg, .json, else raw)")
    parser.add_argument("--profile-level", type=int, default=50)
    parser.add_argument(
        "--cprofile",
        type=Path,
        help="run the server under cProfile (CPU time of its main thread), stats to this file",
    )
    parser.add_argument(
        "--profile-args",
        default="--rate 100 --gil",
        help="py-spy record options (default: '--rate 100 --gil': time holding the GIL)",
    )
    parser.add_argument("--tokens", type=int, default=TOKENS, help="tokens per stream")
    parser.add_argument("--delay", type=float, default=DELAY, help="seconds between tokens")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="also run a second server with `serve --workers N` beside the single process",
    )
    parser.add_argument("--no-append", action="store_true", help="do not write bench/RESULTS.md")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (server log, db)")
    parser.add_argument(
        "--failover",
        action="store_true",
        help="the routing run (bench/failover.py): two upstreams, one failing 20 %%, vs healthy",
    )
    args = parser.parse_args()
    if args.failover:
        import failover  # bench/failover.py, beside this script

        level = int(args.levels.split(",")[0]) if args.levels != "1,50,200" else 10
        return failover.run(level, args.streams or 200, append=not args.no_append)

    TOKENS, DELAY, EXPECTED_TEXT = args.tokens, args.delay, expected_text(args.tokens)
    counts = QUICK_COUNTS if args.quick else FULL_COUNTS
    levels = []
    for raw in args.levels.split(","):
        c = int(raw)
        levels.append((c, args.streams or counts.get(c, 3 * c)))
    server_env = dict(item.split("=", 1) for item in args.server_env)

    # SIGTERM (e.g. a CI timeout) unwinds through `finally`, which stops the processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with it ignored
    workdir = Path(tempfile.mkdtemp(prefix="threadline-bench-"))
    scaled: Processes | None = None
    procs = Processes(workdir, server_env, args.cprofile and args.cprofile.resolve())
    info = machine()
    info["load_start"] = loadavg()
    print(
        f"machine: nproc {info['nproc']}, {info['cpu']}, Python {info['python']}; "
        f"commit {info['commit']}; server on {info['server_stack']}; "
        f"load average {info['load_start']}"
    )
    try:
        procs.start_upstream(TOKENS, DELAY)
        procs.start_server()
        if args.workers > 1:  # the same upstream, its own data dir and key
            (workdir / "workers").mkdir()
            scaled = Processes(workdir / "workers", server_env)
            scaled.upstream_url = procs.upstream_url
            scaled.start_server(workers=args.workers)
        assert procs.server is not None and procs.upstream is not None
        print(
            f"upstream {procs.upstream_url} (pid {procs.upstream.pid}), "
            f"threadline {procs.server_url} (pid {procs.server.pid}), workdir {workdir}"
        )
        print(HEADER, flush=True)
        run = asyncio.run(
            benchmark(
                procs,
                levels,
                args.stateless,
                args.profile,
                args.profile_level,
                args.profile_args,
                scaled,
            )
        )
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the server and the upstream", file=sys.stderr)
        return 130
    finally:
        if scaled is not None:
            scaled.stop()
        procs.stop()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    info["load_end"] = loadavg()
    verdicts = evaluate(run)
    print()
    print(HEADER)
    for concurrency, _ in levels:
        for path in ("direct", "threadline", "workers"):
            if (path, concurrency) in run.results:
                print(_row(run.results[(path, concurrency)]))
    print()
    for line in verdicts.lines:
        print(line)
    print()
    for target, measured, result in verdicts.targets:
        print(f"{result:<5} {target:<40} measured {measured}")
    print(f"load average at start {info['load_start']}, at end {info['load_end']}")
    mode = "quick" if args.quick else "full"
    if args.stateless:
        mode += ", stateless (no conversation)"
    if args.workers > 1:
        mode += f", beside `serve --workers {args.workers}` (path `workers`, SQLite)"
    if (TOKENS, DELAY) != (32, 0.02):
        mode += f", {TOKENS} tokens {DELAY * 1000:g} ms apart (targets are for 32 / 20 ms)"
    if server_env:
        mode += ", server env " + " ".join(f"{k}={v}" for k, v in server_env.items())
    if args.profile or args.cprofile:
        written = args.profile or args.cprofile
        print(f"\nprofile written to {written} (figures skewed by the profiler: not appended)")
    elif not args.no_append:
        append_results(run, verdicts, info, mode)
        print(f"\nappended to {RESULTS.relative_to(ROOT)}")
    return 0 if all(r != "MISS" for _, _, r in verdicts.targets) else 1


if __name__ == "__main__":
    sys.exit(main())
