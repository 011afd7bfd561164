"""``deepmemory_distance(embedding, ARRAY[...])``: Deep Memory inside the TQL scan.

Registered in query_lang's function registry when tensordb is imported. The
query is transformed once per query; each batch then costs one matrix-vector
product over the stored embeddings, exactly like cosine similarity, plus a
correction for the few rows that carry memory (found via their ``id``).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from query_lang.errors import TQLExecutionError, TQLTypeError
from query_lang.functions import Arg, CallContext, Function, check_same_dim, register_function
from query_lang.vtypes import NUMBER, ValueType

from .jobs import JobStore

_JOB_STORES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_MEMORY_ROWS: OrderedDict[Hashable, tuple[np.ndarray, np.ndarray]] = OrderedDict()
_MEMORY_ROWS_ENTRIES = 1024


def jobs_of(dataset: Any) -> JobStore:
    """The one JobStore of a dataset handle (shared by the API and the scan)."""
    store = _JOB_STORES.get(dataset)
    if store is None:
        store = _JOB_STORES[dataset] = JobStore(dataset)
    return store


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

    def evaluate(self, args: list[Any], ctx: CallContext) -> np.ndarray:
        dataset = getattr(ctx.source, "dataset", None)
        latest = jobs_of(dataset).latest_model() if dataset is not None else None
        if latest is None:
            raise TQLExecutionError(
                "deepmemory_distance: this dataset has no trained Deep Memory model; "
                "train one with vs.deep_memory.train(...) first"
            )
        job_id, model = latest
        # Query vectors are constants of the execution: each is transformed once, on its first batch.
        key = (job_id, id(args[1]))
        cached = ctx.cache.get(key)
        if cached is None or cached[0] is not args[1]:
            prepared = model.prepare_query(np.asarray(args[1], dtype=np.float32).ravel())
            cached = ctx.cache[key] = (args[1], prepared)
        q_prime, memory_scores = cached[1]
        block = np.asarray(args[0])
        memory_rows = self._memory_rows(job_id, model, ctx)
        column = ctx.arg_columns[0]
        scores = model.score_block(q_prime, block, ctx.l2_norms(column), memory_scores=memory_scores,
                                   memory_rows=memory_rows, unit_rows=ctx.unit_norm(column))
        return scores.astype(np.float64, copy=False)

    @staticmethod
    def _memory_rows(job_id: str, model: Any, ctx: CallContext) -> tuple[np.ndarray, np.ndarray] | None:
        """The batch rows that carry memory, and their memory rows; cached per chunk across queries."""
        if not model.memory_ids:
            return None
        batch_key = ctx.cache_key("id")
        key = None if batch_key is None else (job_id, batch_key, ctx.n)
        cached = _MEMORY_ROWS.get(key) if key is not None else None
        if cached is not None:
            _MEMORY_ROWS.move_to_end(key)
            return cached
        index = model.memory_index(ctx.column("id"))
        rows = np.flatnonzero(index >= 0)
        found = (rows, index[rows])
        if key is not None:
            _MEMORY_ROWS[key] = found
            while len(_MEMORY_ROWS) > _MEMORY_ROWS_ENTRIES:
                _MEMORY_ROWS.popitem(last=False)
        return found


def register() -> None:
    """Add ``deepmemory_distance`` to the TQL registry (idempotent)."""
    register_function(DeepMemoryDistance(), replace=True)
