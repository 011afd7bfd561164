"""What Deep Memory trains and evaluates on: a corpus of documents, not a particular store.

A :class:`~tensordb.vectorstore.VectorStore` is one; anything with a dataset (where
jobs and models are kept), the documents' ids and embeddings, and a way to embed
query texts is another.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from ..core import Dataset


@runtime_checkable
class DocumentCorpus(Protocol):
    """Documents Deep Memory can learn to rank.

    A corpus may also have ``lexical_rankings(texts, depth) -> list[Ranking] | None``: each text's
    BM25 ranking (document ids, best first), or None without a text index. Training then also
    learns how hybrid search fuses the model with BM25 (:mod:`.fusion`).
    """

    #: The dataset that stores Deep Memory's jobs and models.
    dataset: Dataset

    def ids_and_embeddings(self) -> tuple[list[str], np.ndarray]:
        """Every document's id and embedding ``(n, d)``, in the same order."""
        ...

    def embed_queries(self, texts: Sequence[str], embedding_function: Any = None) -> np.ndarray:
        """Query texts as an ``(len(texts), d)`` matrix (``embedding_function`` overrides the corpus's own)."""
        ...


@runtime_checkable
class TextCorpus(DocumentCorpus, Protocol):
    """A corpus that can also hand out its documents' texts (what query generation reads)."""

    def ids_and_texts(self) -> tuple[list[str], list[str]]:
        """Every document's id and text, in the same order."""
        ...
