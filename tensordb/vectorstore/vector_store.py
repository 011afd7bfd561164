"""VectorStore: document chunks with text, metadata, embedding and id, searchable with Deep Memory.

The API follows Deep Lake v3's ``VectorStore`` so its tutorials port over by
changing the import. Everything is a thin layer over a :class:`Dataset` and TQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from query_lang import ast

from ..core import Dataset, dataset, empty, load
from ..errors import SampleError, TensorDBError
from . import filters
from .embeddings import embed_documents, embed_queries

TENSORS = ("text", "metadata", "embedding", "id")
DEFAULT_RETURN = ("text", "metadata", "id")
#: distance_metric → (TQL function, is it a similarity (higher is closer)?, does it take a difference?)
METRICS: dict[str, tuple[str, bool, bool]] = {
    "cos": ("cosine_similarity", True, False),
    "dot": ("dot", True, False),
    "l2": ("l2_norm", False, True),
    "l1": ("l1_norm", False, True),
    "max": ("linf_norm", False, True),
}


class VectorStore:
    """A store of document chunks at ``path`` (a directory or ``mem://name``).

    ``embedding_function`` embeds text for ``add`` and ``search``: a callable from a
    list of strings to vectors, or an object with ``embed_documents``/``embed_query``.
    Without one, ``add`` and ``search`` need explicit embeddings.
    """

    def __init__(
        self,
        path: str,
        embedding_function: Any = None,
        read_only: bool = False,
        overwrite: bool = False,
        **_deeplake_compat: Any,
    ):
        self.embedding_function = embedding_function
        if overwrite:
            self.dataset: Dataset = empty(path, overwrite=True)
        elif read_only:
            self.dataset = load(path, read_only=True)
        else:
            self.dataset = dataset(path)
        if not read_only:
            self._ensure_tensors()
        self._id_rows: tuple[tuple[str, ...], dict[str, int]] | None = None
        self._deep_memory = None

    def _ensure_tensors(self) -> None:
        ds = self.dataset
        existing = set(ds._state.tensors)
        if existing and not set(TENSORS) <= existing:
            raise TensorDBError(f"{ds.path} is not a vector store: it lacks tensors {sorted(set(TENSORS) - existing)}")
        if not existing:
            with ds:
                ds.create_tensor("text", htype="text")
                ds.create_tensor("metadata", htype="json")
                ds.create_tensor("embedding", htype="embedding", dtype="float32")
                ds.create_tensor("id", htype="id")

    # -- properties ------------------------------------------------------------------------------
    @property
    def deep_memory(self):
        """Train, watch and evaluate Deep Memory models of this store."""
        if self._deep_memory is None:
            from ..deep_memory.api import DeepMemory

            self._deep_memory = DeepMemory(self)
        return self._deep_memory

    def __len__(self) -> int:
        return len(self.dataset)

    def summary(self) -> str:
        """Print and return the dataset summary."""
        return self.dataset.summary()

    def close(self) -> None:
        self.dataset.close()

    # -- embeddings ------------------------------------------------------------------------------
    def _function(self, override: Any) -> Any:
        fn = override or self.embedding_function
        if fn is None:
            raise TensorDBError(
                "no embedding_function: pass one to VectorStore(...) or to this call, or give embeddings"
            )
        return fn

    def _dim(self) -> int | None:
        return self.dataset.embedding.meta.dim

    def _embed_queries(self, queries: list[str], embedding_function: Any = None) -> np.ndarray:
        return embed_queries(self._function(embedding_function), queries, self._dim())

    def _corpus(self) -> tuple[list[str], np.ndarray]:
        """All ids and embeddings, in row order."""
        if len(self.dataset) == 0:
            raise TensorDBError("the vector store is empty: add documents first")
        return self.dataset.id.numpy(aslist=True), self.dataset.embedding.numpy()

    # -- writes ----------------------------------------------------------------------------------
    def add(
        self,
        text: Sequence[str] | None = None,
        metadata: Sequence[Mapping[str, Any]] | None = None,
        embedding_data: Sequence[str] | None = None,
        embedding: Any = None,
        id: Sequence[str] | None = None,
        embedding_function: Any = None,
        return_ids: bool = True,
    ) -> list[str] | None:
        """Add chunks in one atomic step; embeds ``embedding_data`` (or ``text``) unless ``embedding`` is given."""
        columns = {
            "text": text,
            "metadata": metadata,
            "embedding_data": embedding_data,
            "embedding": embedding,
            "id": id,
        }
        lengths = {k: len(v) for k, v in columns.items() if v is not None}
        if not lengths:
            raise SampleError("add: nothing to add; give text, embedding_data or embedding")
        if len(set(lengths.values())) > 1:
            raise SampleError(f"add: arguments have different lengths {lengths}; expected one value per chunk")
        n = next(iter(lengths.values()))
        if embedding is None:
            source = embedding_data if embedding_data is not None else text
            if source is None:
                raise SampleError("add: give embedding, or embedding_data/text to embed")
            embedding = embed_documents(self._function(embedding_function), source, self._dim())
        ids = [str(uuid.uuid4()) for _ in range(n)] if id is None else list(id)
        self._check_new_ids(ids)
        self.dataset.extend(
            {
                "text": list(text) if text is not None else [None] * n,
                "metadata": list(metadata) if metadata is not None else [{} for _ in range(n)],
                "embedding": np.asarray(embedding, dtype=np.float32)
                if not isinstance(embedding, np.ndarray)
                else embedding,
                "id": ids,
            }
        )
        return ids if return_ids else None

    def _check_new_ids(self, ids: list[str]) -> None:
        bad = [i for i in ids if not isinstance(i, str) or not i]
        if bad:
            raise SampleError(f"add: ids must be non-empty strings, got {bad[0]!r}")
        if len(set(ids)) != len(ids):
            raise SampleError("add: ids contain duplicates")
        taken = [i for i in ids if i in self._id_index()]
        if taken:
            raise SampleError(f"add: ids already in the store: {taken[:5]}")

    def _id_index(self) -> dict[str, int]:
        """id → row, rebuilt only when the id tensor changed."""
        keys = self.dataset._tensor_state("id").chunk_keys
        if self._id_rows is None or self._id_rows[0] != keys:
            ids = self.dataset.id.numpy(aslist=True)
            self._id_rows = (keys, {doc_id: row for row, doc_id in enumerate(ids)})
        return self._id_rows[1]

    def _rows_for(self, ids: Sequence[str] | None, filter: Any, what: str) -> np.ndarray:
        if ids is not None:
            index = self._id_index()
            missing = [i for i in ids if i not in index]
            if missing:
                raise SampleError(f"{what}: ids not in the store: {missing[:5]}")
            return np.array(sorted(index[i] for i in ids), dtype=np.int64)
        if filter is not None:
            return np.sort(self._filtered_rows(filter))
        raise SampleError(f"{what}: give ids or a filter")

    def delete(self, ids: Sequence[str] | None = None, filter: Any = None, delete_all: bool = False) -> bool:
        """Delete chunks by id, by filter, or all of them; one atomic step."""
        if delete_all:
            rows = np.arange(len(self.dataset))
        else:
            rows = self._rows_for(ids, filter, "delete")
        if len(rows):
            self.dataset.pop(rows.tolist())
        return True

    def update_embedding(
        self,
        ids: Sequence[str] | None = None,
        filter: Any = None,
        embedding_function: Any = None,
        embedding_source_tensor: str = "text",
    ) -> None:
        """Recompute the embeddings of some chunks from ``embedding_source_tensor``."""
        rows = self._rows_for(ids, filter, "update_embedding")
        if not len(rows):
            return
        texts = self.dataset[embedding_source_tensor][rows].numpy(aslist=True)
        vectors = embed_documents(self._function(embedding_function), texts, self._dim())
        self.dataset.embedding[rows] = vectors

    # -- search ----------------------------------------------------------------------------------
    def _filtered_rows(self, filter: Any) -> np.ndarray:
        if callable(filter):
            rows = [i for i, row in enumerate(self._rows_as_dicts()) if filter(row)]
            return np.array(rows, dtype=np.int64)
        where = filters.where_expression(filter)
        view = self.dataset.query(ast.Query(select=(ast.Star(),), where=where))
        return view._selected_rows()

    def _rows_as_dicts(self):
        ds = self.dataset
        for text, meta, doc_id in zip(
            ds.text.numpy(aslist=True), ds.metadata.numpy(aslist=True), ds.id.numpy(aslist=True), strict=True
        ):
            yield {"text": text, "metadata": meta, "id": doc_id}

    def search(
        self,
        embedding_data: str | None = None,
        embedding_function: Any = None,
        embedding: Any = None,
        k: int = 4,
        distance_metric: str = "cos",
        query: str | None = None,
        filter: Mapping[str, Any] | str | Callable[[dict], bool] | None = None,
        return_tensors: Sequence[str] | None = None,
        return_view: bool = False,
        deep_memory: bool = False,
        **_deeplake_compat: Any,
    ) -> dict[str, list] | Any:
        """Top-``k`` chunks for a query text, a query vector, or a whole TQL ``query``.

        Returns ``{"text": [...], "metadata": [...], "id": [...], "score": [...]}``
        (``return_tensors`` picks the columns) or the result view with ``return_view``.
        """
        if len(self.dataset) == 0:
            raise TensorDBError("search on an empty vector store: add documents first")
        if query is not None:
            if embedding_data is not None or embedding is not None or filter is not None:
                raise SampleError("search: a TQL query cannot be combined with embedding_data, embedding or filter")
            view = self.dataset.query(query)
        else:
            view = self._vector_search(
                embedding_data, embedding_function, embedding, k, distance_metric, filter, deep_memory
            )
        if return_view:
            return view
        names = list(return_tensors) if return_tensors is not None else [t for t in DEFAULT_RETURN if t in view.tensors]
        out = {name: view[name].numpy(aslist=True) for name in names}
        if "score" in view._virtual:
            out["score"] = [float(s) for s in view.score.numpy()]
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in out.items()}

    def _vector_search(self, embedding_data, embedding_function, embedding, k, distance_metric, filter, deep_memory):
        if not isinstance(k, int) or k < 1:
            raise SampleError(f"search: k must be a positive int, got {k!r}")
        if distance_metric not in METRICS:
            raise SampleError(f"search: distance_metric must be one of {list(METRICS)}, got {distance_metric!r}")
        if embedding is None:
            if embedding_data is None:
                raise SampleError("search: give embedding_data (text to embed), embedding, or query")
            text = embedding_data if isinstance(embedding_data, str) else embedding_data[0]
            vector = self._embed_queries([text], embedding_function)[0]
        else:
            vector = np.asarray(embedding, dtype=np.float32).reshape(-1)
            if vector.shape[0] != self._dim():
                raise SampleError(f"search: query embedding has dimension {vector.shape[0]}, expected {self._dim()}")
            if not np.isfinite(vector).all():
                raise SampleError("search: query embedding contains NaN or Inf")
        if deep_memory:
            if distance_metric != "cos":
                raise SampleError("search: deep_memory=True ranks by cosine; use distance_metric='cos'")
            function, similar, difference = "deepmemory_distance", True, False
        else:
            function, similar, difference = METRICS[distance_metric]
        array = ast.ArrayLiteral(tuple(float(x) for x in vector))
        column = ast.Column("embedding")
        args = (ast.Binary("-", column, array),) if difference else (column, array)
        score = ast.OrderKey(ast.Call(function, args), descending=similar)
        if callable(filter):
            rows = self._filtered_rows(filter)
            target = self.dataset[rows]
            where = None
        else:
            target, where = self.dataset, filters.where_expression(filter)
        return target.query(ast.Query(select=(ast.Star(),), where=where, order_by=(score,), limit=k))
