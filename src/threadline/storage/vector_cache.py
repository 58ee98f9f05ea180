"""Exact cosine search over documents' chunk vectors held in memory (`exact_vectors.py`).

A query against a conversation's documents is a matrix-vector product over their chunks,
which numpy does in well under a millisecond per 10k chunks of 384 dimensions. Reading and
decoding those vectors from the database for every query would cost far more, so each
document's float32 matrix (rows unit length) stays in memory, least recently used first out
past a byte budget.

An entry is keyed by (document, embedder) and stamped with the document's `chunks_version`,
which every `replace_chunks` bumps in the same transaction as the chunks. A query reads the
versions of its documents first and reloads an entry whose stamp differs, so an entry is
never used after another process (or another store object) replaced or deleted the chunks.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from threadpoolctl import ThreadpoolController

__all__ = ["DocumentVectors", "VectorCache", "normalised", "top_k"]

_blas_lock = threading.Lock()
_blas: ThreadpoolController | None = None


def _single_threaded_blas() -> Any:
    """A context in which BLAS uses one thread. A matrix-vector product of a few thousand
    rows takes ~0.2 ms on one thread, and ~10 ms when OpenBLAS spreads it over the cores of
    a busy machine (its threads spin and wait on each other)."""
    global _blas
    if _blas is None:
        _blas = ThreadpoolController()
    return _blas.limit(limits=1, user_api="blas")


Matrix = npt.NDArray[np.float32]
Ids = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class DocumentVectors:
    version: int
    chunk_ids: Ids  # (n,)
    matrix: Matrix  # (n, dim), rows of unit length (zero rows stay zero)

    @property
    def nbytes(self) -> int:
        return int(self.matrix.nbytes + self.chunk_ids.nbytes) + 200


def normalised(matrix: Matrix) -> Matrix:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(matrix / norms, dtype=np.float32)


def from_blobs(
    version: int,
    chunk_ids: Sequence[int],
    blobs: Sequence[bytes],
    *,
    dtype: str = "<f4",
    header: int = 0,
) -> DocumentVectors:
    """Vectors as stored (already unit length) to a cache entry: each blob is `header`
    bytes, then the vector's float32 values in `dtype`'s byte order."""
    if not blobs:
        return DocumentVectors(version, np.empty(0, np.int64), np.empty((0, 0), np.float32))
    raw = np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(len(blobs), -1)[:, header:]
    matrix = np.ascontiguousarray(raw).view(dtype).astype(np.float32, copy=False)
    return DocumentVectors(version, np.asarray(chunk_ids, dtype=np.int64), matrix)


# A scope of at least this many documents is searched as one stacked matrix: one product
# instead of one per document (their Python overhead adds up: ~10 ms for 2,000 documents).
STACK_FROM = 32
STACKED_SCOPES = 2


class VectorCache:
    """Per-document entries within `max_bytes`, and the stacked matrices of the last
    `STACKED_SCOPES` big scopes (each within `max_bytes` too: memory can reach about
    three times `max_bytes` when big scopes are searched)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[int, str], DocumentVectors] = OrderedDict()
        self._bytes = 0
        self._stacked: OrderedDict[tuple[Any, ...], DocumentVectors] = OrderedDict()

    def get(self, document_id: int, embedder: str, version: int) -> DocumentVectors | None:
        key = (document_id, embedder)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.version != version:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, document_id: int, embedder: str, entry: DocumentVectors) -> None:
        key = (document_id, embedder)
        self._drop(key)
        if entry.nbytes > self.max_bytes:
            return
        self._entries[key] = entry
        self._bytes += entry.nbytes
        while self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def forget(self, document_id: int) -> None:
        for key in [k for k in self._entries if k[0] == document_id]:
            self._drop(key)

    def _drop(self, key: tuple[int, str]) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.nbytes

    def stacked(
        self, embedder: str, dim: int, entries: dict[int, DocumentVectors]
    ) -> list[DocumentVectors]:
        """What to search for a scope: its entries of dimension `dim`, stacked into one
        (cached while the scope's documents and their versions stay the same) when there
        are many."""
        live = [(d, e) for d, e in sorted(entries.items()) if e.matrix.shape[1:] == (dim,)]
        live = [(d, e) for d, e in live if len(e.chunk_ids)]
        if len(live) < STACK_FROM:
            return [e for _, e in live]
        key = (embedder, dim, tuple((d, e.version) for d, e in live))
        found = self._stacked.get(key)
        if found is not None:
            self._stacked.move_to_end(key)
            return [found]
        stacked = DocumentVectors(
            0,
            np.concatenate([e.chunk_ids for _, e in live]),
            np.concatenate([e.matrix for _, e in live]),
        )
        if stacked.nbytes <= self.max_bytes:
            self._stacked[key] = stacked
            while len(self._stacked) > STACKED_SCOPES:
                self._stacked.popitem(last=False)
        return [stacked]

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)


def top_k(entries: Iterable[DocumentVectors], query: Matrix, k: int) -> list[tuple[int, float]]:
    """The `k` (chunk id, cosine similarity) pairs of highest similarity, best first.
    `query` is a unit vector; entries of another dimension are skipped."""
    scores: list[Matrix] = []
    ids: list[Ids] = []
    dim = query.shape[0]
    with _blas_lock, _single_threaded_blas():
        for entry in entries:
            if len(entry.chunk_ids) and entry.matrix.shape[1] == dim:
                scores.append(entry.matrix @ query)
                ids.append(entry.chunk_ids)
    if not scores or k <= 0:
        return []
    all_scores = np.concatenate(scores) if len(scores) > 1 else scores[0]
    all_ids = np.concatenate(ids) if len(ids) > 1 else ids[0]
    if len(all_scores) > k:
        best = np.argpartition(-all_scores, k - 1)[:k]
    else:
        best = np.arange(len(all_scores))
    # Ties are broken by chunk id, so equal vectors come back in a stable order.
    order = best[np.lexsort((all_ids[best], -all_scores[best]))]
    return [(int(all_ids[i]), float(all_scores[i])) for i in order]
