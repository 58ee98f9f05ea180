"""Side by side: the server CPU per stream of this tree's code (B) against another revision's
(A), both driven at the same time through one upstream.

Why it exists: `gateway.py`'s CPU column moves by ±20 % with what else runs on this 2-core
machine, more than most changes to the chat path are worth. Two servers measured in the same
seconds share that noise, so their ratio shows a change of a few percent. Each round drives
both with `--concurrency` streams each (the same verified chat-with-ai streams as gateway.py)
and prints each server's CPU per stream and B/A; the median of the rounds is the result.

    .venv/bin/python bench/gateway_ab.py --base 1e46b60            # 5 rounds of 400 streams
    .venv/bin/python bench/gateway_ab.py --base main --concurrency 50 --rounds 9
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import gateway as gw


def export(revision: str, into: Path) -> Path:
    """`src/` of `revision` (git archive), under `into`."""
    archive = subprocess.run(
        ["git", "-C", str(gw.ROOT), "archive", revision, "src"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


async def side_by_side(sources: dict[str, Path], concurrency: int, count: int, rounds: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="gateway-ab-"))
    upstream = gw.Processes(work, {})
    servers: dict[str, gw.Processes] = {}
    try:
        upstream.start_upstream(gw.TOKENS, gw.DELAY)
        for name, src in sources.items():
            (work / name).mkdir()
            env = {"PYTHONPATH": str(src.resolve()), "THREADLINE_LOG_LEVEL": "WARNING"}
            server = gw.Processes(work / name, env)
            server.upstream_url = upstream.upstream_url
            server.start_server()
            servers[name] = server
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(c) for c in gw._clients(2 * concurrency)]
            streams = {
                name: await _streams(clients, server, concurrency, offset=n * concurrency)
                for n, (name, server) in enumerate(servers.items())
            }
            ratios = [
                await _round(r, servers, streams, concurrency, count) for r in range(rounds + 1)
            ]
        print(f"median B/A over {rounds} rounds: {statistics.median(ratios[1:]):.3f}")
    finally:
        for server in servers.values():
            server.stop()
        upstream.stop()
        shutil.rmtree(work, ignore_errors=True)


StreamFn = Callable[[int], Awaitable[gw.Sample]]


async def _streams(clients: list, server: gw.Processes, concurrency: int, offset: int) -> StreamFn:
    bodies = await gw._chat_bodies(clients[0], server, concurrency, False)
    url = server.server_url + "/api/chat-with-ai?isStreaming=true"

    def stream(worker: int) -> Awaitable[gw.Sample]:
        client = clients[(offset + worker) // gw.SHARD]
        return gw.threadline_stream(client, url, bodies[worker], server.key)

    return stream


async def _round(
    number: int,
    servers: dict[str, gw.Processes],
    streams: dict[str, StreamFn],
    concurrency: int,
    count: int,
) -> float:
    before = {name: gw.cpu_seconds(s.server.pid) for name, s in servers.items() if s.server}
    levels = await asyncio.gather(
        *(gw.run_level(streams[name], concurrency, count) for name in servers)
    )
    ms = {
        name: 1000 * (gw.cpu_seconds(s.server.pid) - before[name]) / count
        for name, s in servers.items()
        if s.server
    }
    # A ReadError now and then is the keep-alive race (a connection idle while the other
    # server finishes its level, closed by uvicorn as the next request goes out), on A and B.
    failed = {
        name: errors
        for name, (samples, _) in zip(servers, levels, strict=True)
        if (errors := [s.error for s in samples if not s.ok])
    }
    tag = "warm-up" if number == 0 else f"round {number}"
    ratio = ms["B"] / ms["A"]
    print(
        f"{tag}: A {ms['A']:.2f} ms/stream, B {ms['B']:.2f} ms/stream, B/A {ratio:.3f}, "
        f"failed {failed}, load {gw.loadavg()}",
        flush=True,
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the revision measured as A (git)")
    parser.add_argument("--concurrency", type=int, default=100, help="streams at once, each")
    parser.add_argument("--streams", type=int, default=400, help="streams per round, each")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds after a warm-up")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gateway-ab-base-") as base:
        sources = {"A": export(args.base, Path(base)), "B": gw.ROOT / "src"}
        asyncio.run(side_by_side(sources, args.concurrency, args.streams, args.rounds))


if __name__ == "__main__":
    main()
