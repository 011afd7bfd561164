"""Vector functions, ordering rules, subqueries, caching and custom functions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from query_lang import (
    Arg,
    CallContext,
    Function,
    MemorySource,
    TQLTypeError,
    ValueType,
    execute,
    function_names,
    parse,
    plan_query,
    register_function,
    unregister_function,
)
from query_lang.derived import DERIVED_CACHE


def _arr(v: np.ndarray) -> str:
    return "ARRAY[" + ", ".join(repr(float(x)) for x in v) + "]"


def _cos(emb: np.ndarray, q: np.ndarray) -> np.ndarray:
    e = emb.astype(np.float64)
    with np.errstate(all="ignore"):
        return e @ q / (np.linalg.norm(e, axis=1) * np.linalg.norm(q))


def test_cosine_topk_matches_numpy(src: MemorySource) -> None:
    emb = src.take("embedding", np.arange(len(src)))
    q = np.linspace(-1, 1, 8)
    r = execute(f"select * order by cosine_similarity(embedding, {_arr(q)}) desc limit 5", src)
    expected = np.argsort(-np.nan_to_num(_cos(emb, q), nan=-np.inf), kind="stable")[:5]
    assert r.rows.tolist() == expected.tolist()
    assert r.columns[-1] == "score"
    np.testing.assert_allclose(r.virtual["score"], _cos(emb, q)[expected], rtol=1e-5)
    plan = plan_query(parse(f"select * order by cosine_similarity(embedding, {_arr(q)}) desc "
                            "limit 5"), src)
    assert plan.strategy == "topk" and plan.vector_fast_path


def test_zero_vector_and_nan_sort_last_both_directions(src: MemorySource) -> None:
    q = _arr(np.ones(8))
    for direction in ("asc", "desc"):
        r = execute(f"select * order by cosine_similarity(embedding, {q}) {direction}", src)
        assert r.rows[-1] == 3 and np.isnan(r.virtual["score"][-1])
        assert not np.isnan(r.virtual["score"][:-1]).any()
        r = execute(f"select * order by cosine_similarity(embedding, {q}) {direction} limit 50",
                    src)
        assert r.rows[-1] == 3
    zero = execute("select * order by cosine_similarity(embedding, ARRAY[0,0,0,0,0,0,0,0]) "
                   "desc limit 4", src)
    assert zero.rows.tolist() == [0, 1, 2, 3]  # all NaN: ties broken by row position


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from([0.0, 1.0, -1.0, 2.5, np.nan, np.inf, -np.inf]), min_size=0,
                max_size=30),
       st.integers(1, 8), st.integers(0, 35), st.booleans())
def test_topk_equals_full_sort(values: list[float], bs: int, k: int, desc: bool) -> None:
    src = MemorySource({"s": np.asarray(values, dtype=np.float64)}, batch_size=bs)
    d = "desc" if desc else "asc"
    full = execute(f"select * order by s {d}", src).rows
    top = execute(f"select * order by s {d} limit {k}", src).rows
    assert top.tolist() == full[:k].tolist()
    finite = [i for i in full if not np.isnan(values[i])]
    assert full.tolist()[: len(finite)] == finite
    keys = [(-values[i] if desc else values[i], i) for i in finite]
    assert keys == sorted(keys)


def test_precomputed_norms_are_used(src: MemorySource) -> None:
    # Unit-norm storage + unit query: the fast path returns plain dot products.
    emb = np.eye(4, dtype=np.float32)
    s = MemorySource({"embedding": emb}, {"embedding": "embedding"}, batch_size=3)
    r = execute("select * order by cosine_similarity(embedding, ARRAY[0, 1, 0, 0]) desc limit 2",
                s)
    assert r.rows.tolist() == [1, 0] and r.virtual["score"].tolist() == [1.0, 0.0]


def test_vector_functions(src: MemorySource) -> None:
    emb = src.take("embedding", np.arange(len(src))).astype(np.float64)
    q = np.arange(8.0)
    r = execute(f"select dot(embedding, {_arr(q)}) as d, l1_norm(embedding) as l1, "
                f"l2_norm(embedding - {_arr(q)}) as l2, linf_norm(embedding) as li, "
                f"embedding[2] as e2", src)
    np.testing.assert_allclose(r.virtual["d"], emb @ q, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(r.virtual["l1"], np.abs(emb).sum(1), rtol=1e-5)
    np.testing.assert_allclose(r.virtual["l2"], np.linalg.norm(emb - q, axis=1), rtol=1e-5)
    np.testing.assert_allclose(r.virtual["li"], np.abs(emb).max(1), rtol=1e-5)
    np.testing.assert_allclose(r.virtual["e2"], emb[:, 2], rtol=1e-6)
    boxes = MemorySource({"boxes": np.arange(24.0).reshape(3, 4, 2)}, batch_size=2)
    r = execute("select boxes[:, 1] as c, boxes[1:3] as s, shape(boxes) as sh", boxes)
    np.testing.assert_array_equal(r.virtual["c"], np.arange(24.0).reshape(3, 4, 2)[:, :, 1])
    assert r.virtual["s"].shape == (3, 2, 2) and r.virtual["sh"].tolist() == [[4, 2]] * 3


def test_subquery_alias_filter_then_order(src: MemorySource) -> None:
    emb = src.take("embedding", np.arange(len(src)))
    q = np.linspace(1, 2, 8)
    cos = _cos(emb, q)
    r = execute(f"select * from (select *, cosine_similarity(embedding, {_arr(q)}) as score) "
                f"where score > 0.2 order by score desc", src)
    expected = [i for i in np.argsort(-np.nan_to_num(cos, nan=-9), kind="stable") if cos[i] > 0.2]
    assert r.rows.tolist() == expected and "score" in r.columns
    np.testing.assert_allclose(r.virtual["score"], cos[expected], rtol=1e-5)


def test_materialised_subquery(src: MemorySource) -> None:
    r = execute("select id, row_number() as r from (select * order by labels desc, id limit 10) "
                "where metadata['group'] = 1 offset 1", src)
    inner = sorted(range(50), key=lambda i: (-(i % 5), f"id{i}"))[:10]
    expected = [i for i in inner if i % 4 == 1][1:]
    assert r.rows.tolist() == expected and r.virtual["r"].tolist() == expected
    assert r.columns == ["id", "r"]


def test_json_text_list_functions(src: MemorySource) -> None:
    r = execute("select len(text) as n, len(metadata['tags']) as nt, shape(image)[0] as h "
                "where contains(text, 'dogs') and contains(metadata['tags'], 'b') "
                "and any(image > 0) and all(image == 1)", src)
    expected = [i for i in range(50) if i % 3 == 0 and i % 3 == 2]
    assert r.rows.tolist() == expected  # never both
    r = execute("select len(text) as n, len(metadata['tags']) as nt, shape(image)[0] as h "
                "where contains(metadata['tags'], 'b') order by h desc, row_number() limit 3",
                src)
    assert r.rows.tolist() == [2, 5, 8]
    assert r.virtual["h"].tolist() == [3, 3, 3] and r.virtual["nt"].tolist() == [2, 2, 2]
    r = execute("select * where metadata['missing']['x'] = 1 or metadata['group'] > 5", src)
    assert len(r) == 0


def test_derived_values_cached_across_queries(src: MemorySource) -> None:
    DERIVED_CACHE.clear()
    q = "select * where metadata['group'] = 2"
    first = execute(q, src)
    misses = DERIVED_CACHE.misses
    hits = DERIVED_CACHE.hits
    second = execute(q, src)
    assert first.rows.tolist() == second.rows.tolist() == [i for i in range(50) if i % 4 == 2]
    assert DERIVED_CACHE.misses == misses and DERIVED_CACHE.hits > hits


def test_limit_without_order_stops_early() -> None:
    class Counting(MemorySource):
        batches = 0

        def scan(self, columns, rows=None):  # noqa: ANN001, ANN201
            for b in super().scan(columns, rows):
                Counting.batches += 1
                yield b

    s = Counting({"x": np.arange(1000)}, batch_size=10)
    r = execute("select * where x >= 5 limit 3 offset 2", s)
    assert r.rows.tolist() == [7, 8, 9] and Counting.batches == 1


def test_filter_runs_before_scoring() -> None:
    seen: list[int] = []

    class Spy(Function):
        name = "spy_score"
        min_args = max_args = 1
        vector_score = True

        def check(self, args: list[Arg]) -> ValueType:
            return ValueType("number")

        def evaluate(self, args: list[Any], ctx: CallContext) -> np.ndarray:
            seen.extend(ctx.rows.tolist())
            return np.asarray(args[0], dtype=np.float64)

    register_function(Spy())
    try:
        s = MemorySource({"x": np.arange(100)}, batch_size=16)
        r = execute("select * where x < 10 order by spy_score(x) desc limit 3", s)
        assert r.rows.tolist() == [9, 8, 7] and sorted(seen) == list(range(10))
    finally:
        unregister_function("spy_score")


def test_custom_function_with_extra_column_and_cache(src: MemorySource) -> None:
    class IdWeighted(Function):
        """Like deepmemory_distance: needs the 'id' column and a per-executor cache."""

        name = "id_weighted"
        min_args = max_args = 2
        extra_columns = ("id",)
        vector_score = True

        def check(self, args: list[Arg]) -> ValueType:
            if args[0].type.kind != "array" or not args[1].is_const:
                raise TQLTypeError("id_weighted(embedding, ARRAY[...])")
            return ValueType("number")

        def evaluate(self, args: list[Any], ctx: CallContext) -> np.ndarray:
            ctx.cache["calls"] = ctx.cache.get("calls", 0) + 1
            ids = np.asarray([int(s[2:]) for s in ctx.column("id")], dtype=np.float64)
            return np.asarray(args[0], np.float64) @ args[1] + ids

    register_function(IdWeighted())
    try:
        assert "id_weighted" in function_names()
        plan = plan_query(parse("select * order by id_weighted(embedding, ARRAY[0,0,0,0,0,0,0,0])"
                                " desc limit 3"), src)
        assert "id" in plan.scan_columns and plan.vector_fast_path
        r = execute("select * order by id_weighted(embedding, ARRAY[0,0,0,0,0,0,0,0]) desc "
                    "limit 3", src)
        assert r.rows.tolist() == [49, 48, 47]
        with pytest.raises(TQLTypeError, match="id_weighted"):
            execute("select * order by id_weighted(text, ARRAY[1]) limit 1", src)
        with pytest.raises(ValueError, match="already registered"):
            register_function(IdWeighted())
    finally:
        unregister_function("id_weighted")


def test_no_from_select_star_and_computed_outputs(src: MemorySource) -> None:
    r = execute("select *, labels * 2 + 1 as l, 'k' as k, NULL as z limit 2", src)
    assert r.columns == ["id", "text", "metadata", "embedding", "labels", "image", "l", "k", "z"]
    assert r.virtual["l"].tolist() == [1, 3] and r.virtual["k"] == ["k", "k"]
    assert r.virtual["z"] == [None, None]
    r = execute("select text as t where labels between 1 and 2 and id in ('id1', 'id7')", src)
    assert r.rows.tolist() == [1, 7] and r.virtual["t"] == ["doc 1 about cats", "doc 7 about cats"]
