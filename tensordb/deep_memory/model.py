"""The Deep Memory model: a query-side linear map plus a sparse document memory.

Score of document ``j`` (embedding ``d_j``) for query ``q``::

    q'      = (q / ||q||) @ A                               # transform_queries
    s(q, j) = q' . d_j / ||d_j||  +  q' . M[mem(j)]         # score_block

``A`` is a ``(dim, dim)`` matrix (identity when untrained, so ``s`` is then cosine
similarity), ``M`` holds one learned correction vector per *memory* document, i.e. a
document that was relevant to some training query, looked up by document id
(``mem(j) = -1`` means no memory: the second term is absent).

Training (:mod:`.training`) scores with ``q'`` scaled to unit length. Inference leaves
that scaling out: it multiplies all of one query's scores by the same positive factor,
so rankings do not change, and without it both ``A`` and ``M`` can move to the
document side::

    s(q, j) = (q / ||q||) . F_j / ||d_j||,   F_j = (d_j + ||d_j|| M[mem(j)]) @ Aᵀ   # fold_block

A scan folds each block once (:mod:`.folding` caches the result) and then scores it
against the normalised query with one product, exactly like cosine search; a block
that is not folded is scored from the transformed query plus a sparse memory term.

Inference is pure numpy; torch is only imported by :mod:`.training`.
Persistence is ``to_state() -> (arrays, params)`` / ``from_state(arrays, params)``: no
pickle, arrays are plain float32, params are JSON-serialisable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

FORMAT_VERSION = 1
_EPS = 1e-12


def _normalize_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    # Zero vectors stay zero instead of becoming NaN.
    return x / np.maximum(norms, _EPS)


def _cosine_scores(q_prime: np.ndarray, doc_block: np.ndarray, doc_norms: np.ndarray | None,
                   unit_rows: bool) -> np.ndarray:
    """``(m, n)`` scores ``q' . d_j / ||d_j||`` (float32; a single query gives ``m = 1``)."""
    single = q_prime.ndim == 1
    # Single queries take the gemv path and divide in place: same passes as cosine.
    scores = (doc_block @ q_prime)[None, :] if single else q_prime @ doc_block.T
    if unit_rows:
        return scores
    if doc_norms is None:
        doc_norms = np.linalg.norm(doc_block, axis=1)
    doc_norms = np.asarray(doc_norms, dtype=np.float32)
    if doc_norms.size and doc_norms.min() < _EPS:
        # Zero rows score 0 instead of NaN; the check is one cheap reduction.
        doc_norms = np.maximum(doc_norms, _EPS)
    scores /= doc_norms
    return scores


def _rows_with_memory(memory_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, memory rows)``: the rows of a :meth:`DeepMemoryModel.memory_index` that carry memory."""
    memory_index = np.asarray(memory_index)
    rows = np.flatnonzero(memory_index >= 0)
    return rows, memory_index[rows]


class DeepMemoryModel:
    """Query transform ``A`` (dim × dim) and sparse memory ``M`` (len(memory_ids) × dim).

    Attributes:
        dim: embedding dimension.
        query_matrix: float32 ``(dim, dim)``; ``q' = (q / ||q||) @ query_matrix``.
        memory_ids: document ids that carry a memory vector, row order of
            ``memory_vectors``.
        memory_vectors: float32 ``(len(memory_ids), dim)``.
        metadata: JSON-serialisable training information (metrics, seconds...).
    """

    def __init__(
        self,
        query_matrix: np.ndarray,
        memory_ids: Sequence[str] = (),
        memory_vectors: np.ndarray | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        query_matrix = np.ascontiguousarray(query_matrix, dtype=np.float32)
        assert query_matrix.ndim == 2 and query_matrix.shape[0] == query_matrix.shape[1]
        dim = query_matrix.shape[0]
        ids = [str(i) for i in memory_ids]
        if memory_vectors is None:
            memory_vectors = np.zeros((len(ids), dim), dtype=np.float32)
        memory_vectors = np.ascontiguousarray(memory_vectors, dtype=np.float32)
        assert memory_vectors.shape == (len(ids), dim), memory_vectors.shape
        if len(set(ids)) != len(ids):
            raise ValueError("memory_ids must be unique")
        self.dim = dim
        self.query_matrix = query_matrix
        self.memory_ids = ids
        self.memory_vectors = memory_vectors
        self.metadata: dict[str, Any] = dict(metadata or {})
        self._memory_pos = {doc_id: i for i, doc_id in enumerate(ids)}
        self._is_identity: bool | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def identity(cls, dim: int) -> DeepMemoryModel:
        """A model that changes no ranking (plain cosine similarity)."""
        return cls(np.eye(dim, dtype=np.float32))

    @property
    def is_identity(self) -> bool:
        """Whether this model ranks exactly as cosine similarity does."""
        if self._is_identity is None:
            self._is_identity = bool(
                np.array_equal(self.query_matrix, np.eye(self.dim, dtype=np.float32))
                and not np.any(self.memory_vectors)
            )
        return self._is_identity

    # ------------------------------------------------------------------ inference
    @staticmethod
    def unit_queries(q: np.ndarray) -> np.ndarray:
        """``(m, d)`` or ``(d,)`` queries scaled to unit length, float32 (zero stays zero)."""
        q = np.array(q, dtype=np.float32)
        if q.ndim == 1:
            # One query per search: skip the general row-norm machinery.
            q /= max(float(np.sqrt(q @ q)), _EPS)
            return q
        return _normalize_rows(q).astype(np.float32, copy=False)

    def transform_queries(self, q: np.ndarray) -> np.ndarray:
        """``(m, d)`` or ``(d,)`` queries → transformed queries ``q' = unit(q) @ A``, float32."""
        q = np.asarray(q)
        assert q.shape[-1] == self.dim, (q.shape, self.dim)
        return self.unit_queries(q) @ self.query_matrix

    def memory_index(self, doc_ids: Sequence[str]) -> np.ndarray:
        """Map document ids to memory rows: int64 array, ``-1`` where there is no memory.

        Storage engines compute this once per chunk (or keep it as a column) and pass it
        to :meth:`score_block`.
        """
        get = self._memory_pos.get
        return np.fromiter((get(str(i), -1) for i in doc_ids), dtype=np.int64, count=len(doc_ids))

    def memory_scores(self, q_prime: np.ndarray) -> np.ndarray:
        """``q' . M`` for every memory vector: ``(k,)`` or ``(m, k)``.

        Compute once per query and pass to every :meth:`score_block` call, so the
        memory costs one ``k × d`` product per query however many blocks are scanned.
        """
        q_prime = np.asarray(q_prime, dtype=np.float32)
        return q_prime @ self.memory_vectors.T

    def fold_block(
        self,
        doc_block: np.ndarray,
        memory_rows: tuple[np.ndarray, np.ndarray] | None = None,
        doc_norms: np.ndarray | None = None,
        unit_rows: bool = False,
    ) -> np.ndarray:
        """``doc_block`` with the model folded in: rows ``F_j = (d_j + ||d_j|| M[mem(j)]) @ Aᵀ``.

        ``score_block(unit_queries(q), F, norms, unit_rows=unit_rows)``, with ``norms`` the
        row norms of ``doc_block`` (not of ``F``), then gives the same scores as
        ``score_block(transform_queries(q), doc_block, ...)`` with the memory, at the cost
        of a cosine product. ``memory_rows`` is ``(rows, memory rows)`` as for
        :meth:`score_block`; ``None`` means no row has memory.
        """
        block = np.array(doc_block, dtype=np.float32, copy=True)
        if memory_rows is not None and memory_rows[0].size:
            rows, mi = memory_rows
            vectors = self.memory_vectors[mi]
            if not unit_rows:
                norms = np.linalg.norm(block[rows], axis=1) if doc_norms is None else np.asarray(doc_norms)[rows]
                # score_block divides by max(norm, eps); scale alike so zero rows keep their memory.
                vectors = vectors * np.maximum(norms, _EPS).astype(np.float32)[:, None]
            block[rows] += vectors
        return block @ self.query_matrix.T

    def score_block(
        self,
        q_prime: np.ndarray,
        doc_block: np.ndarray,
        doc_norms: np.ndarray | None = None,
        memory_index: np.ndarray | None = None,
        memory_scores: np.ndarray | None = None,
        memory_rows: tuple[np.ndarray, np.ndarray] | None = None,
        unit_rows: bool = False,
    ) -> np.ndarray:
        """Exact model scores for one block of documents (higher = better).

        Args:
            q_prime: output of :meth:`transform_queries`, ``(d,)`` or ``(m, d)``;
                :meth:`unit_queries` when ``doc_block`` comes from :meth:`fold_block`.
            doc_block: ``(n, d)`` raw document embeddings (need not be unit norm), or
                their :meth:`fold_block` (then without memory arguments).
            doc_norms: ``(n,)`` precomputed row norms; computed when ``None``.
            memory_index: ``(n,)`` ints from :meth:`memory_index`, ``-1`` for rows
                without memory; ``None`` means no row has memory.
            memory_scores: optional :meth:`memory_scores` of ``q_prime``, to avoid
                recomputing it per block.
            memory_rows: ``(rows, memory rows)``, the nonnegative part of ``memory_index``
                precomputed (a scan caches it per chunk); replaces ``memory_index``.
            unit_rows: every row of ``doc_block`` is known to have norm 1, so
                ``doc_norms`` is not needed.

        Returns:
            float32 ``(n,)`` for a single query or ``(m, n)`` for a batch.
        """
        q_prime = np.asarray(q_prime, dtype=np.float32)
        doc_block = np.asarray(doc_block, dtype=np.float32)
        single = q_prime.ndim == 1
        q2 = q_prime[None, :] if single else q_prime
        assert q2.shape[1] == self.dim and doc_block.shape[1] == self.dim
        scores = _cosine_scores(q_prime, doc_block, doc_norms, unit_rows)
        if memory_rows is None and memory_index is not None and len(self.memory_ids):
            memory_rows = _rows_with_memory(memory_index)
        if memory_rows is not None and len(self.memory_ids) and memory_rows[0].size:
            self._add_memory(scores, q2, memory_rows, memory_scores, single)
        return scores[0] if single else scores

    def _add_memory(self, scores: np.ndarray, q2: np.ndarray, memory_rows: tuple[np.ndarray, np.ndarray],
                    memory_scores: np.ndarray | None, single: bool) -> None:
        """Add ``q' . M[mem(j)]`` to the scores (``(m, n)``, in place) of the rows that carry memory."""
        rows, mi = memory_rows
        if memory_scores is not None and single:
            scores[0, rows] += np.asarray(memory_scores, dtype=np.float32)[mi]
        elif memory_scores is not None:
            ms = np.asarray(memory_scores, dtype=np.float32).reshape(len(q2), -1)
            scores[:, rows] += ms[:, mi]
        else:
            # Only the few memory rows of this block pay for the correction.
            scores[:, rows] += q2 @ self.memory_vectors[mi].T

    def search(
        self,
        queries: np.ndarray,
        doc_embeddings: np.ndarray,
        doc_ids: Sequence[str],
        k: int = 10,
        block_size: int = 65536,
    ) -> list[list[str]]:
        """Brute-force top-k ids per query (reference implementation for evaluation)."""
        ids = np.asarray([str(i) for i in doc_ids], dtype=object)
        return [ids[rows].tolist() for rows, _ in self.scored_search(queries, doc_embeddings, ids, k, block_size)]

    def scored_search(
        self,
        queries: np.ndarray,
        doc_embeddings: np.ndarray,
        doc_ids: Sequence[str],
        k: int = 10,
        block_size: int = 65536,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Brute-force top-k per query: the rows, best first, and their scores."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        qp = self.transform_queries(queries)
        mem = self.memory_index(np.asarray([str(i) for i in doc_ids], dtype=object))
        norms = np.linalg.norm(doc_embeddings, axis=1)
        n = len(mem)
        k = min(k, n)
        results: list[tuple[np.ndarray, np.ndarray]] = []
        for start in range(0, len(qp), 256):
            ms = self.memory_scores(qp[start : start + 256])
            scores = np.empty((min(256, len(qp) - start), n), dtype=np.float32)
            for b in range(0, n, block_size):
                sl = slice(b, b + block_size)
                scores[:, sl] = self.score_block(qp[start : start + 256], doc_embeddings[sl], norms[sl], mem[sl], ms)
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            for row, cand in zip(scores, top, strict=True):
                # Stable tie-break on position keeps identity ranking deterministic.
                order = cand[np.lexsort((cand, -row[cand]))]
                results.append((order, row[order].astype(np.float64)))
        return results

    # ------------------------------------------------------------------ persistence
    def to_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """``(arrays, params)``: float32 arrays and JSON-serialisable params."""
        arrays = {
            "query_matrix": self.query_matrix.copy(),
            "memory_vectors": self.memory_vectors.copy(),
        }
        params = {
            "format_version": FORMAT_VERSION,
            "kind": "deep_memory.linear_query+sparse_memory",
            "dim": self.dim,
            "memory_ids": list(self.memory_ids),
            "metadata": self.metadata,
        }
        return arrays, params

    @classmethod
    def from_state(cls, arrays: Mapping[str, np.ndarray], params: Mapping[str, Any]) -> DeepMemoryModel:
        version = params.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"unsupported Deep Memory format_version {version!r}")
        model = cls(
            arrays["query_matrix"],
            params.get("memory_ids", []),
            arrays["memory_vectors"],
            params.get("metadata"),
        )
        if model.dim != params.get("dim", model.dim):
            raise ValueError("Deep Memory state: dim does not match query_matrix")
        return model

    def __repr__(self) -> str:
        return f"DeepMemoryModel(dim={self.dim}, memory={len(self.memory_ids)})"
