"""Embedding functions: the built-in offline one, and adapters for user-supplied ones.

A user's ``embedding_function`` is either a callable from a list of strings to
vectors, or an object with ``embed_documents`` and ``embed_query`` (LangChain's
``Embeddings``). :func:`embed_documents` / :func:`embed_query` accept both and
validate what comes back.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import SampleError

_TOKEN = re.compile(r"[a-z0-9]+")


class HashingEmbedding:
    """A deterministic, offline bag-of-features embedding: no download, no model.

    Word unigrams, word bigrams and character trigrams are hashed into ``dim``
    buckets with a sign bit (the hashing trick), weighted by sublinear term
    frequency, and L2-normalised. Lexical overlap becomes cosine similarity, which
    is enough for demos and tests, and leaves plenty for Deep Memory to learn.
    """

    def __init__(self, dim: int = 256):
        if dim < 8:
            raise ValueError(f"HashingEmbedding dim must be at least 8, got {dim}")
        self.dim = dim

    def __repr__(self) -> str:
        return f"HashingEmbedding(dim={self.dim})"

    def _features(self, text: str) -> list[str]:
        words = _TOKEN.findall(text.lower())
        feats = list(words)
        feats += [f"{a} {b}" for a, b in zip(words, words[1:])]
        for w in words:
            padded = f"#{w}#"
            feats += [padded[i : i + 3] for i in range(len(padded) - 2)]
        return feats

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            counts: dict[int, float] = {}
            for feat in self._features(str(text)):
                h = zlib.crc32(feat.encode("utf-8"))
                bucket = h % self.dim
                counts[bucket] = counts.get(bucket, 0.0) + (1.0 if (h >> 31) & 1 else -1.0)
            for bucket, value in counts.items():
                out[row, bucket] = np.sign(value) * np.log1p(abs(value))
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)

    __call__ = embed

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        return self.embed(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed([text])[0].tolist()


EmbeddingFunction = Callable[[list[str]], Any] | Any


def describe_function(fn: Any) -> str:
    """How an error names an embedding function: its own repr if its class defines one, else its name."""
    if type(fn).__repr__ is not object.__repr__:
        return repr(fn)
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def _as_matrix(vectors: Any, count: int, what: str, dim: int | None, fn: Any = None) -> np.ndarray:
    try:
        matrix = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise SampleError(f"{what}: embedding function returned something that is not a list of vectors: {e}") from None
    if matrix.ndim != 2 or len(matrix) != count:
        raise SampleError(f"{what}: embedding function returned shape {matrix.shape}, expected ({count}, dim)")
    if dim is not None and matrix.shape[1] != dim:
        got = matrix.shape[1]
        raise SampleError(
            f"{what}: the embedding function {describe_function(fn)} returned vectors of dimension {got}, "
            f"but the store's embeddings have dimension {dim}: embed with the model the store was built with "
            f"(one with {dim}-dimensional output), or put {got}-dimensional embeddings in a new store"
        )
    if not np.isfinite(matrix).all():
        bad = int(np.argmin(np.isfinite(matrix).all(axis=1)))
        raise SampleError(f"{what}: embedding function returned NaN or Inf for item {bad}")
    return matrix


def embed_documents(fn: EmbeddingFunction, texts: Sequence[str], dim: int | None = None) -> np.ndarray:
    """Embed documents with a callable or an ``embed_documents`` object; validates the result."""
    texts = [str(t) for t in texts]
    if not texts:
        return np.zeros((0, dim or 0), dtype=np.float32)
    raw = fn.embed_documents(texts) if hasattr(fn, "embed_documents") else fn(texts)
    return _as_matrix(raw, len(texts), "embed documents", dim, fn)


def embed_queries(fn: EmbeddingFunction, queries: Sequence[str], dim: int | None = None) -> np.ndarray:
    """Embed queries with ``embed_query`` when the object has it, else the callable."""
    queries = [str(q) for q in queries]
    if hasattr(fn, "embed_query"):
        raw = [fn.embed_query(q) for q in queries]
    else:
        raw = fn(queries)
    return _as_matrix(raw, len(queries), "embed queries", dim, fn)
