"""LangChain vector store backed by a tensordb VectorStore, with Deep Memory and TQL.

>>> db = TensorDB.from_texts(texts, embedding, path="./my_store")
>>> db.similarity_search("question", k=4, deep_memory=True)
>>> db.as_retriever(search_kwargs={"k": 4, "deep_memory": True}).invoke("question")

Search methods also take ``filter`` (a metadata dict, a TQL WHERE string, or a
callable on ``{"text", "metadata", "id"}`` rows), ``distance_metric`` and
``tql="select ..."`` to run a whole TQL query instead of a vector search.

``mode="text"`` ranks by BM25 and ``mode="hybrid"`` fuses BM25 with the vector search
(``fusion="rrf"|"convex"``, ``alpha``, ``rrf_k``, ``sparse_top_k``); both need a bm25 index
on the store's text:

>>> db = TensorDB.from_texts(texts, embedding, path="./my_store", text_index="english")
>>> db.similarity_search("question", k=4, mode="hybrid", alpha=0.7)
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

try:
    import langchain_core  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised by simulating a missing package
    from ._common import missing_dependency

    raise missing_dependency("langchain-core", "langchain", e) from e

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore as LangChainVectorStore

from ..deep_memory.fusion import RRF_K
from ..errors import SampleError, TensorDBError
from ..vectorstore.vector_store import VectorStore
from ._common import open_store
from .mmr import maximal_marginal_relevance

__all__ = ["TensorDB"]

_SIMILARITIES = ("cos", "dot")
#: Search modes (the VectorStore's): vector search, BM25 text search, and both fused.
_MODES = ("vector", "text", "hybrid")


class TensorDB(LangChainVectorStore):
    """A LangChain vector store on a tensordb VectorStore.

    ``path`` is a directory, ``mem://name``, an open :class:`tensordb.VectorStore`, or None
    for a fresh in-memory store.
    ``embedding`` embeds texts and queries (and Deep Memory training questions).
    Scores from ``similarity_search_with_score`` are similarities (higher is closer)
    for ``cos``/``dot`` and Deep Memory, distances (lower is closer) for ``l2``/``l1``/``max``.
    """

    def __init__(
        self,
        path: str | VectorStore | None = None,
        embedding: Embeddings | None = None,
        *,
        overwrite: bool = False,
        read_only: bool = False,
        distance_metric: str = "cos",
        **kwargs: Any,
    ) -> None:
        self._embedding = embedding
        self.vectorstore = open_store(path, embedding, overwrite=overwrite, read_only=read_only, **kwargs)
        self.distance_metric = distance_metric

    @property
    def embeddings(self) -> Embeddings | None:
        return self._embedding

    @property
    def deep_memory(self) -> Any:
        """The underlying store's Deep Memory (``train``, ``wait``, ``status``, ``evaluate``)."""
        return self.vectorstore.deep_memory

    def close(self) -> None:
        """Close the underlying dataset (releases its write lock)."""
        self.vectorstore.close()

    # -- writes --------------------------------------------------------------------------------
    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed and add texts in one atomic step; an id already stored is replaced (it keeps its row).

        If any text fails (an embedding with NaN or the wrong dimension, metadata that is not
        JSON, an id given twice), nothing is written and the stored documents stay as they were.
        """
        texts = list(texts)
        if not texts:
            return []
        if metadatas is not None and len(metadatas) != len(texts):
            raise ValueError(f"got {len(metadatas)} metadatas for {len(texts)} texts")
        if ids is not None and len(ids) != len(texts):
            raise ValueError(f"got {len(ids)} ids for {len(texts)} texts")
        ids = [str(i) if i else str(uuid.uuid4()) for i in (ids or [None] * len(texts))]
        metadata = [dict(m or {}) for m in metadatas] if metadatas is not None else [{} for _ in texts]
        embeddings = None
        if self._embedding is not None:
            embeddings = self._embedding.embed_documents(texts)
        return self.vectorstore.upsert(text=texts, metadata=metadata, embedding=embeddings, id=ids)

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete by ``ids`` (unknown ids are skipped), by ``filter=...``, or everything with ``delete_all=True``."""
        vs = self.vectorstore
        if kwargs.get("delete_all"):
            return vs.delete(delete_all=True)
        if ids is None and kwargs.get("filter") is None:
            raise ValueError("delete: give ids, filter=... or delete_all=True")
        if not len(vs):
            return True
        if ids is not None:
            return vs.delete(ids=list(ids), missing="skip")
        return vs.delete(filter=kwargs["filter"])

    # -- reads ---------------------------------------------------------------------------------
    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The stored documents with these ids: in the order asked, each id once, unknown ids skipped.

        Looked up in the store's id index, so the cost grows with ``len(ids)``, not ``len(ids) × rows``.
        """
        vs = self.vectorstore
        if not ids or not len(vs):
            return []
        found = vs.get(ids=list(ids), missing="skip")
        return [Document(page_content=t or "", metadata=m or {}, id=i)
                for t, m, i in zip(found["text"], found["metadata"], found["id"], strict=True)]

    def _search(
        self,
        query: str | None = None,
        embedding: list[float] | None = None,
        k: int = 4,
        filter: dict[str, Any] | str | Callable[[dict], bool] | None = None,
        deep_memory: bool = False,
        tql: str | None = None,
        distance_metric: str | None = None,
        with_embeddings: bool = False,
        mode: str = "vector",
        fusion: str | None = None,
        alpha: float | None = None,
        rrf_k: int = RRF_K,
        sparse_top_k: int | None = None,
        **unknown: Any,
    ) -> tuple[list[tuple[Document, float]], list[Any]]:
        if unknown:
            raise TypeError(f"TensorDB search got unexpected keyword arguments {sorted(unknown)}")
        if mode not in _MODES:
            raise SampleError(f"TensorDB search: mode must be one of {list(_MODES)}, got {mode!r}")
        vs = self.vectorstore
        if not len(vs):
            return [], []
        tensors = ["text", "metadata", "id"] + (["embedding"] if with_embeddings else [])
        modes = {"mode": mode, "fusion": fusion, "alpha": alpha, "rrf_k": rrf_k, "sparse_top_k": sparse_top_k}
        if tql is not None:
            result = vs.search(query=tql, filter=filter, return_tensors=tensors, **modes)
            return self._documents(result), result.get("embedding", [])
        if mode != "vector" and query is None:
            raise SampleError(f"TensorDB search: mode={mode!r} ranks by the query text; a search by vector needs "
                              f"it too: pass query='...'")
        if mode == "text":
            # BM25 alone: the text is the whole query (a vector, e.g. from an MMR search, plays no part).
            embedding_data, embedding = query, None
        else:
            if embedding is None and self._embedding is None and vs.embedding_function is None:
                raise TensorDBError("TensorDB has no embedding: pass embedding=... to TensorDB(...)")
            # A vector search embeds the text unless given the vector; hybrid also needs the text for its BM25 side.
            embedding_data = query if embedding is None or mode == "hybrid" else None
        result = vs.search(
            embedding_data=embedding_data,
            embedding=embedding,
            k=k,
            distance_metric=distance_metric or self.distance_metric,
            filter=filter,
            deep_memory=deep_memory,
            return_tensors=tensors,
            **modes,
        )
        return self._documents(result), result.get("embedding", [])

    @staticmethod
    def _documents(result: dict[str, list]) -> list[tuple[Document, float]]:
        scores = result.get("score") or [math.nan] * len(result["id"])
        return [
            (Document(page_content=t or "", metadata=m or {}, id=i), float(s))
            for t, m, i, s in zip(result["text"], result["metadata"], result["id"], scores)
        ]

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        """The ``k`` documents best matching ``query``.

        Keyword arguments: ``filter``, ``deep_memory``, ``tql``, ``distance_metric``, and the search
        mode: ``mode="vector"`` (the default), ``"text"`` (BM25) or ``"hybrid"`` (both fused; with
        ``fusion="rrf"|"convex"``, ``alpha`` (1: vector only, 0: text only), ``rrf_k``, ``sparse_top_k``).
        Text and hybrid need a bm25 index on the store's text (``TensorDB(..., text_index="english")``).
        """
        return [doc for doc, _ in self._search(query=query, k=k, **kwargs)[0]]

    def similarity_search_with_score(self, query: str, k: int = 4, **kwargs: Any) -> list[tuple[Document, float]]:
        """Like :meth:`similarity_search`, with each document's score (NaN when a ``tql`` query computes none).

        The score is the mode's: the vector similarity or distance, the BM25 score, or the fused score.
        """
        return self._search(query=query, k=k, **kwargs)[0]

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4, **kwargs: Any) -> list[Document]:
        """The ``k`` documents closest to a query vector; ``mode="hybrid"`` also takes the text as ``query=...``."""
        return [doc for doc, _ in self._search(embedding=embedding, k=k, **kwargs)[0]]

    def similarity_search_by_vector_with_score(
        self, embedding: list[float], k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Like :meth:`similarity_search_by_vector`, with scores."""
        return self._search(embedding=embedding, k=k, **kwargs)[0]

    def max_marginal_relevance_search(
        self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5, **kwargs: Any
    ) -> list[Document]:
        """``k`` documents picked by maximal marginal relevance among the ``fetch_k`` best matches.

        The candidates come from the search ``mode`` (and its keyword arguments); diversity is measured on
        the embeddings either way.
        """
        if self._embedding is None:
            raise TensorDBError("max_marginal_relevance_search needs an embedding: pass embedding=... to TensorDB(...)")
        vector = self._embedding.embed_query(query)
        return self.max_marginal_relevance_search_by_vector(vector, k, fetch_k, lambda_mult, query=query, **kwargs)

    def max_marginal_relevance_search_by_vector(
        self, embedding: list[float], k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5, **kwargs: Any
    ) -> list[Document]:
        """MMR over the ``fetch_k`` candidates closest to a query vector (ranked by Deep Memory if asked)."""
        candidates, vectors = self._search(embedding=embedding, k=max(fetch_k, k), with_embeddings=True, **kwargs)
        if not candidates:
            return []
        picked = maximal_marginal_relevance(embedding, vectors, k=k, lambda_mult=lambda_mult)
        return [candidates[i][0] for i in picked]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        if self.distance_metric in _SIMILARITIES:
            return lambda score: min(1.0, max(0.0, (1.0 + score) / 2.0))
        if self.distance_metric == "l2":
            return self._euclidean_relevance_score_fn
        return lambda distance: 1.0 / (1.0 + distance)

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        path: str | VectorStore | None = None,
        overwrite: bool = False,
        **kwargs: Any,
    ) -> TensorDB:
        """A store at ``path`` (None: in memory; ``overwrite=True`` to start empty) holding ``texts``."""
        db = cls(path, embedding, overwrite=overwrite, **kwargs)
        db.add_texts(texts, metadatas, ids=ids)
        return db
