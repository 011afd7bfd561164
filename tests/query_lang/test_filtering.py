"""Filter-first scanning: merged batches of passing rows, and what is cached across queries."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from query_lang import MemorySource, execute, register_function, unregister_function
from query_lang.derived import DERIVED_CACHE
from query_lang.filtering import MERGE_ROWS
from query_lang.functions import Arg, CallContext, Function
from query_lang.vtypes import ValueType


class _BatchSizes(Function):
    """A score that records how many rows each call sees."""

    name = "batch_sizes_probe"
    min_args = max_args = 1
    vector_score = True
    seen: list[int] = []

    def check(self, args: list[Arg]) -> ValueType:
        return ValueType("number")

    def evaluate(self, args: list[Any], ctx: CallContext) -> np.ndarray:
        self.seen.append(ctx.n)
        return np.asarray(args[0], dtype=np.float64)


@pytest.fixture
def probe():
    _BatchSizes.seen = []
    register_function(_BatchSizes())
    yield _BatchSizes
    unregister_function(_BatchSizes.name)


def _source(n: int = 40_000, batch_size: int = 1000) -> MemorySource:
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((n, 8)).astype(np.float32)
    meta = [{"g": i % 10} for i in range(n)]
    return MemorySource({"embedding": emb, "metadata": meta, "x": np.arange(n)},
                        htypes={"embedding": "embedding", "metadata": "json"}, batch_size=batch_size)


def test_sparse_passing_rows_are_merged_into_large_batches(probe):
    src = _source()
    r = execute("select * where metadata['g'] == 3 order by batch_sizes_probe(x) desc limit 5", src)
    assert r.rows.tolist() == [39993, 39983, 39973, 39963, 39953]
    assert sum(probe.seen) == 4000
    # 100 passing rows per source batch: merged 8 batches at a time instead of 40 calls of 100.
    assert len(probe.seen) < 10 and max(probe.seen) >= 800


def test_dense_passing_batches_are_not_held_back(probe):
    src = _source(n=3 * MERGE_ROWS, batch_size=MERGE_ROWS)
    execute("select * where x >= 0 order by batch_sizes_probe(x) desc limit 1", src)
    assert probe.seen == [MERGE_ROWS] * 3


def test_a_repeated_where_reuses_passing_rows_and_gathered_vectors():
    src = _source()
    q = np.random.default_rng(1).standard_normal(8)
    text = ("select * where metadata['g'] == 3 order by cosine_similarity(embedding, ARRAY["
            + ", ".join(map(repr, q.tolist())) + "]) desc limit 4")
    DERIVED_CACHE.clear()
    first = execute(text, src)
    misses = DERIVED_CACHE.misses
    second = execute(text, src)
    assert DERIVED_CACHE.misses == misses  # passing rows and gathered embeddings both hit
    assert first.rows.tolist() == second.rows.tolist()
    emb = src.take("embedding", np.arange(len(src))).astype(np.float64)
    scores = emb @ q / np.linalg.norm(emb, axis=1) / np.linalg.norm(q)
    scores[np.arange(len(src)) % 10 != 3] = -np.inf
    assert second.rows.tolist() == np.argsort(-scores, kind="stable")[:4].tolist()


def test_a_where_over_outside_state_is_never_cached():
    state = {"cut": 5}

    class Below(Function):
        name = "below_state"
        min_args = max_args = 1
        pure = False  # reads ``state``, not only its argument

        def check(self, args: list[Arg]) -> ValueType:
            return ValueType("bool")

        def evaluate(self, args: list[Any], ctx: CallContext) -> np.ndarray:
            return np.asarray(args[0]) < state["cut"]

    register_function(Below())
    try:
        src = MemorySource({"x": np.arange(20), "m": [{"a": i} for i in range(20)]},
                           htypes={"m": "json"}, batch_size=4)
        text = "select * where below_state(x) and m['a'] >= 0 order by x desc limit 3"
        assert execute(text, src).rows.tolist() == [4, 3, 2]
        state["cut"] = 10
        assert execute(text, src).rows.tolist() == [9, 8, 7]
    finally:
        unregister_function("below_state")
