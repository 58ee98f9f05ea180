"""The routing run of bench/gateway.py (`--failover`): Threadline in front of two upstreams,
one of which fails 20 % of its requests (HTTP 500 before the first token), vs the same
server in front of two healthy ones.

Two fake upstream processes (tests/fake_upstream.py: 32 tokens, 20 ms apart; the second
with `--fail-every 5`) and one `threadline serve` with two models of two upstreams each,
weights 1:1, `retry = { attempts = 2, backoff_ms = 0 }`:

    healthy   upstreams: the healthy upstream twice (two names, one process)
    failover  upstreams: the healthy upstream and the flaky one

Per model, streamed Chat with AI requests (gateway.py's verified streams: every token in
order, a SUCCESS record, a proper end) at one concurrency level, and reports the success
rate (target: 100 %) and TTFT p50/p99, and the failover run's TTFT overhead over the healthy
run (a failed first attempt costs one more round trip to the other upstream). Each
upstream's requests and failures, as GET /api/admin/upstreams tells them, are printed to
show that the planned failures happened.

    .venv/bin/python bench/gateway.py --failover --streams 200 --levels 10
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path

import gateway as gw
import httpx

FAIL_EVERY = 5  # the flaky upstream fails every 5th request: 20 %


def _upstream(fail_every: int) -> tuple[subprocess.Popen[str], str]:
    args = ["--tokens", str(gw.TOKENS), "--delay", str(gw.DELAY), "--fail-every", str(fail_every)]
    proc = subprocess.Popen(
        [sys.executable, "-m", gw.UPSTREAM_MODULE, *args],
        cwd=gw.ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.kill()
        raise RuntimeError(f"fake upstream did not start (said {url!r})")
    return proc, url


def _config(healthy: str, flaky: str) -> str:
    def model(name: str, first: str, second: str) -> str:
        return (
            f'[models."{name}"]\n'
            'provider = "openai-compatible"\n'
            f'upstream_model = "{gw.UPSTREAM_MODEL}"\n'
            "upstreams = [\n"
            f'  {{ base_url = "{first}", name = "one", weight = 1 }},\n'
            f'  {{ base_url = "{second}", name = "two", weight = 1 }},\n'
            "]\n"
            "retry = { attempts = 2, backoff_ms = 0 }\n"
            "circuit = { failures = 5, open_seconds = 5 }\n"
            "continue_on_failure = true\n"
            "credits = { input_per_1k = 150, output_per_1k = 600 }\n\n"
        )

    return (
        'default_model = "healthy"\n\n'
        + model("healthy", healthy, healthy)
        + model("failover", healthy, flaky)
    )


async def _measure(server: gw.Processes, concurrency: int, count: int) -> dict[str, gw.Level]:
    url = server.server_url + "/api/chat-with-ai?isStreaming=true"
    levels: dict[str, gw.Level] = {}
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=200)) as client:
        for model in ("healthy", "failover"):
            body = json.dumps({"model": model, "promptObject": {"prompt": gw.PROMPT}}).encode()

            def stream(_: int, body: bytes = body) -> Awaitable[gw.Sample]:
                return gw.threadline_stream(client, url, body, server.key)

            await gw.run_level(stream, concurrency, max(concurrency, 5))  # warm-up
            samples, wall = await gw.run_level(stream, concurrency, count)
            levels[model] = gw.Level(model, concurrency, samples, wall)
        state = await client.get(
            server.server_url + "/api/admin/upstreams", headers={"API-KEY": server.key}
        )
    if state.status_code == 200:
        for model in state.json()["models"]:
            for up in model["upstreams"]:
                print(
                    f"  {model['model']}/{up['name']}: {up['requests']} requests, "
                    f"{up['failures']} failed, circuit {up['circuit']}"
                )
    return levels


def run(concurrency: int, count: int, append: bool) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="threadline-failover-"))
    procs: list[subprocess.Popen[str]] = []
    server = gw.Processes(workdir, {"THREADLINE_LOG_LEVEL": "WARNING"})
    info = gw.machine()
    info["load_start"] = gw.loadavg()
    try:
        healthy, healthy_url = _upstream(0)
        procs.append(healthy)
        flaky, flaky_url = _upstream(FAIL_EVERY)
        procs.append(flaky)
        server.start_server(_config(healthy_url, flaky_url))
        started = time.perf_counter()
        levels = asyncio.run(_measure(server, concurrency, count))
        elapsed = time.perf_counter() - started
    finally:
        server.stop()
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    info["load_end"] = gw.loadavg()
    lines = _report(levels, concurrency, elapsed, info)
    print("\n".join(lines))
    if append:
        with gw.RESULTS.open("a") as f:
            f.write("\n".join(lines) + "\n")
        print(f"\nappended to {gw.RESULTS.relative_to(gw.ROOT)}")
    failover = levels["failover"]
    return 0 if failover.failed == 0 else 1


def _report(
    levels: dict[str, gw.Level], concurrency: int, elapsed: float, info: dict[str, str]
) -> list[str]:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    healthy, failover = levels["healthy"], levels["failover"]
    out = [
        f"\n## gateway.py --failover — {now}\n",
        f"- machine: nproc {info['nproc']}, {info['cpu']}, Python {info['python']}; "
        f"commit {info['commit']}; load average {info['load_start']} -> {info['load_end']}",
        f"- two upstreams per model, weights 1:1; `failover`: the second fails every "
        f"{FAIL_EVERY}th request (500); concurrency {concurrency}, "
        f"{len(healthy.samples)} streams per model ({elapsed:.0f} s in all)",
        "",
        "| model | streams | failed | success | TTFT p50 ms | TTFT p99 ms | streams/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for level in (healthy, failover):
        rate = 100 * len(level.ok) / len(level.samples) if level.samples else 0.0
        out.append(
            f"| {level.path} | {len(level.samples)} | {level.failed} | {rate:.1f} % | "
            f"{gw._ms(level.ttft(0.5))} | {gw._ms(level.ttft(0.99))} | "
            f"{level.streams_per_s:.1f} |"
        )
    overheads = []
    for q, label in ((0.5, "p50"), (0.99, "p99")):
        a, b = healthy.ttft(q), failover.ttft(q)
        if a is not None and b is not None:
            overheads.append(f"TTFT {label} overhead {(b - a) * 1000:+.1f} ms")
    rate = 100 * len(failover.ok) / len(failover.samples) if failover.samples else 0.0
    verdict = "PASS" if failover.failed == 0 else "MISS"
    out += [
        "",
        f"- {', '.join(overheads)}",
        f"- success with a flaky upstream: {rate:.1f} % (target 100 %): **{verdict}**",
    ]
    if failover.errors():
        out.append(f"- failures: {failover.errors()}")
    return out
