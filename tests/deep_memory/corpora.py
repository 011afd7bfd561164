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
