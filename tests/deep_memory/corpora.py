"""Corpora for Deep Memory tests that need no VectorStore."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

import tensordb


@dataclass
class ArrayCorpus:
    """A corpus that is just arrays beside a dataset: ids, document embeddings, and query embeddings by text."""

    dataset: tensordb.Dataset
    ids: list[str]
    embeddings: np.ndarray
    queries: dict[str, np.ndarray]

    def ids_and_embeddings(self) -> tuple[list[str], np.ndarray]:
        return list(self.ids), self.embeddings

    def embed_queries(self, texts: list[str], embedding_function: Any = None) -> np.ndarray:
        return np.stack([self.queries[t] for t in texts])


def rotated_queries(rng: np.random.Generator, n_docs: int, dim: int, n_q: int,
                    noise: float = 0.6) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """Unit documents, their ids, and queries that are noisy partial rotations of a target document each
    (cosine ranks them poorly; a learned transform helps): ``(docs, ids, queries, targets)``."""
    docs = rng.standard_normal((n_docs, dim)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    # Partial rotation: cosine still carries some signal but is far from perfect.
    rot, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    mix = 0.3 * np.eye(dim) + 0.7 * rot
    targets = rng.integers(0, n_docs, n_q)
    queries = docs[targets] @ mix.T + noise * rng.standard_normal((n_q, dim)) / np.sqrt(dim)
    return docs, [f"doc{i}" for i in range(n_docs)], queries.astype(np.float32), targets
