"""``deepmemory_distance(embedding, ARRAY[...])``: Deep Memory inside the TQL scan.

Registered in query_lang's function registry when tensordb is imported. A block
of the scan is scored from a cached copy with the model folded in (:mod:`.folding`):
one matrix-vector product against the normalised query, exactly like cosine
similarity. A block the cache cannot hold is scored from the transformed query plus
a correction for the rows that carry memory (found via their ``id``).
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from query_lang.cache import BoundedCache
from query_lang.errors import TQLExecutionError, TQLTypeError
from query_lang.functions import Arg, CallContext, Function, IndexQuery, check_same_dim, register_function
from query_lang.source import ScanSource
from query_lang.vtypes import NUMBER, ValueType

from ..core import Dataset
from .folding import FOLDED_BLOCKS
from .jobs import JobStore
from .model import DeepMemoryModel

_JOB_STORES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
#: Candidates an index search fetches per result row for Deep Memory: the memory documents are added
#: anyway, and the rest rank as under cosine, so a small margin covers the index's own misses.
INDEX_OVERFETCH = 2
#: How many chunks' memory rows are kept, process-wide (bounded by count: each entry is small).
MEMORY_ROWS_ENTRIES = 1024
#: (job, id-chunk identity, rows) → the chunk rows that carry memory and their memory rows.
MEMORY_ROWS: BoundedCache[Hashable, tuple[np.ndarray, np.ndarray]] = BoundedCache(
    sys.maxsize, max_entries=MEMORY_ROWS_ENTRIES
)


def jobs_of(dataset: Dataset) -> JobStore:
    """The one JobStore of a dataset handle (shared by the API and the scan)."""
    store = _JOB_STORES.get(dataset)
    if store is None:
        store = _JOB_STORES[dataset] = JobStore(dataset)
    return store


class _PreparedQuery:
    """One query vector: normalised at once, transformed only if a block needs it."""

    def __init__(self, model: DeepMemoryModel, vector: np.ndarray) -> None:
        self._model = model
        self.unit = model.unit_queries(vector)
        self._transformed: np.ndarray | None = None

    def transformed(self) -> np.ndarray:
        if self._transformed is None:
            self._transformed = self._model.transform_queries(self.unit)
        return self._transformed


class DeepMemoryDistance(Function):
    """Similarity under the latest trained Deep Memory model (higher is closer)."""

    name = "deepmemory_distance"
    min_args = max_args = 2
    extra_columns = ("id",)
    vector_score = True
    pure = False  # the result follows the latest trained model, not only the arguments

    def check(self, args: Sequence[Arg]) -> ValueType:
        check_same_dim(self.name, args[0], args[1])
        if args[0].is_const or not args[1].is_const:
            raise TQLTypeError(
                f"{self.name} expects (embedding tensor, ARRAY[...]), got ({args[0].text}, {args[1].text})"
            )
        return NUMBER

    def index_query(self, vector: np.ndarray, column: str, source: ScanSource) -> IndexQuery | None:
        """Search a cosine index with the transformed query, plus every document that carries memory.

        The transform applies to the query only, so an index of the stored embeddings stays valid:
        a document without memory scores ``q' . d / |d|``, a cosine ranking under ``q'``. Documents
        with memory are always scored; the candidates are then scored exactly by :meth:`evaluate`.
        """
        owner = source.owner
        if not isinstance(owner, Dataset) or not _has_cosine_index(owner, column):
            return None  # nothing to search: the scan needs neither the transform nor the memory rows
        latest = jobs_of(owner).latest_model()
        if latest is None or np.asarray(vector).shape != (latest[1].dim,):
            return None  # the scan then raises its clear error (no trained model; another dimension)
        job_id, model = latest
        if model.is_identity:
            return IndexQuery("cosine", vector, descending=True)
        transformed = model.transform_queries(np.asarray(vector, dtype=np.float32))
        memory = self._memory_positions(job_id, model, source)
        return IndexQuery("cosine", transformed, descending=True, extra_rows=memory, overfetch=INDEX_OVERFETCH)

    @staticmethod
    def _memory_positions(job_id: str, model: DeepMemoryModel, source: ScanSource) -> np.ndarray | None:
        """Positions of the rows whose id carries memory (per-chunk results cached across queries)."""
        if not model.memory_ids:
            return None
        found = [batch.rows[_batch_memory_rows(job_id, model, batch.cache_keys.get("id"), len(batch.rows),
                                               lambda batch=batch: batch.values["id"])[0]]
                 for batch in source.scan(["id"])]
        return np.concatenate(found) if found else np.empty(0, dtype=np.int64)

    def shared_state(self, owner: object | None) -> str | None:
        """The job whose model this process scores with (its latest completed one), or "" for none."""
        if not isinstance(owner, Dataset):
            return None
        latest = jobs_of(owner).latest_model()
        return "" if latest is None else latest[0]

    def use_shared_state(self, owner: object | None, state: Any) -> None:
        if isinstance(owner, Dataset) and isinstance(state, str):
            jobs_of(owner).use_model(state or None)

    def evaluate(self, args: list[Any], ctx: CallContext) -> np.ndarray:
        owner = ctx.source.owner if ctx.source is not None else None
        # Only a dataset keeps Deep Memory jobs: any other source has no model to score with.
        latest = jobs_of(owner).latest_model() if isinstance(owner, Dataset) else None
        if latest is None:
            raise TQLExecutionError(
                "deepmemory_distance: this dataset has no trained Deep Memory model; "
                "train one with vs.deep_memory.train(...) first"
            )
        job_id, model = latest
        query = self._query(job_id, model, args[1], ctx)
        block = np.asarray(args[0])
        column = ctx.arg_columns[0]
        if block.ndim != 2 or block.shape[1] != model.dim:
            raise TQLExecutionError(
                f"deepmemory_distance: the trained model expects {model.dim}-d vectors, "
                f"got {column or 'a column'} with rows of shape {block.shape[1:]}"
            )
        norms, unit = ctx.l2_norms(column), ctx.unit_norm(column)
        if norms is None and not unit:
            # A folded block is scored with the norms of the stored rows, never its own.
            norms = np.linalg.norm(block.astype(np.float32, copy=False), axis=1)
        if model.is_identity:
            return model.score_block(query.unit, block, norms, unit_rows=unit).astype(np.float64, copy=False)
        folded = self._folded(job_id, model, ctx, block, norms, unit)
        if folded is not None:
            scores = model.score_block(query.unit, folded, norms, unit_rows=unit)
        else:
            memory_rows = self._memory_rows(job_id, model, ctx)
            scores = model.score_block(query.transformed(), block, norms, memory_rows=memory_rows, unit_rows=unit)
        return scores.astype(np.float64, copy=False)

    @staticmethod
    def _query(job_id: str, model: DeepMemoryModel, vector: Any, ctx: CallContext) -> _PreparedQuery:
        # Query vectors are constants of the execution: each is prepared once, on its first batch.
        key = (job_id, id(vector))
        cached = ctx.cache.get(key)
        if cached is None or cached[0] is not vector:
            cached = ctx.cache[key] = (vector, _PreparedQuery(model, np.asarray(vector).ravel()))
        return cached[1]

    @classmethod
    def _folded(cls, job_id: str, model: DeepMemoryModel, ctx: CallContext, block: np.ndarray,
                norms: np.ndarray | None, unit: bool) -> np.ndarray | None:
        """The batch's embeddings with the model folded in, when the batch has a data identity
        and the cache can hold them."""
        embedding_key = ctx.cache_key(ctx.arg_columns[0] or "")
        id_key = ctx.cache_key("id") if model.memory_ids else None
        if embedding_key is None or (model.memory_ids and id_key is None):
            return None
        in_use = ctx.cache.setdefault("folded blocks in use", set())
        key = (job_id, embedding_key, id_key)

        def fold() -> np.ndarray:
            return model.fold_block(block, cls._memory_rows(job_id, model, ctx), norms, unit_rows=unit)

        folded = FOLDED_BLOCKS.get_or_fold(key, block.shape[0] * model.dim * 4, fold, in_use)
        in_use.add(key)
        return folded

    @staticmethod
    def _memory_rows(job_id: str, model: DeepMemoryModel, ctx: CallContext) -> tuple[np.ndarray, np.ndarray] | None:
        """The batch rows that carry memory, and their memory rows; cached per chunk across queries."""
        if not model.memory_ids:
            return None
        return _batch_memory_rows(job_id, model, ctx.cache_key("id"), ctx.n, lambda: ctx.column("id"))


def _batch_memory_rows(job_id: str, model: DeepMemoryModel, id_key: Hashable | None, n: int,
                       ids: Callable[[], Any]) -> tuple[np.ndarray, np.ndarray]:
    """The rows of one batch whose id carries memory, and their memory rows, cached by the batch's ``id``
    identity (``id_key``); ``ids()`` reads the batch's ids, only on a miss."""
    key = None if id_key is None else (job_id, id_key, n)
    cached = None if key is None else MEMORY_ROWS.get(key)
    if cached is not None:
        return cached
    index = model.memory_index(ids())
    rows = np.flatnonzero(index >= 0)
    found = (rows, index[rows])
    if key is not None:
        MEMORY_ROWS.put(key, found, found[0].nbytes + found[1].nbytes)
    return found


def _has_cosine_index(dataset: Dataset, column: str) -> bool:
    return any(info["tensor"] == column and info.get("metric") == "cosine" for info in dataset.indexes.values())


def register() -> None:
    """Add ``deepmemory_distance`` to the TQL registry (idempotent)."""
    register_function(DeepMemoryDistance(), replace=True)
