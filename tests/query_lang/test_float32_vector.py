"""A float32 query vector stays a float32 array from the AST to the kernels, with the same results."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from query_lang import MemorySource, execute, execute_many, parse, plan_query, to_sql
from query_lang import ast as A

DIM = 16


def _query(vector, function: str = "cosine_similarity", where: A.Expr | None = None, limit: int = 7) -> A.Query:
    column, array = A.Column("embedding"), A.ArrayLiteral(A.Float32Vector(vector))
    if function == "l2":
        call = A.Call("l2_norm", (A.Binary("-", column, array),))
    else:
        call = A.Call(function, (column, array))
    return A.Query(select=(A.Star(),), where=where, order_by=(A.OrderKey(call, function != "l2"),), limit=limit)


def _text_form(q: A.Query) -> A.Query:
    """The same query as the parser reads it back from text (the values as Python floats)."""
    return parse(to_sql(q))


def _source(dtype=np.float32, htype="embedding", rows=300, seed=0):
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((rows, DIM)).astype(dtype)
    if htype == "embedding":
        emb /= np.linalg.norm(emb, axis=1, keepdims=True).astype(dtype)
    return MemorySource({"embedding": emb, "group": rng.integers(0, 4, rows)},
                        {"embedding": htype}, batch_size=64)


def test_the_vector_is_a_read_only_copy_equal_to_its_tuple():
    v = np.arange(4, dtype=np.float32) / 3
    fv = A.Float32Vector(v)
    v[0] = 99  # the caller's array may change afterwards; the AST does not
    assert fv.array.dtype == np.float32 and not fv.array.flags.writeable and fv.array[0] == 0
    as_floats = tuple(float(x) for x in np.arange(4, dtype=np.float32) / 3)
    assert A.ArrayLiteral(fv) == A.ArrayLiteral(as_floats)
    assert hash(A.ArrayLiteral(fv)) == hash(A.ArrayLiteral(as_floats))
    assert fv == A.Float32Vector(fv.array) and fv != A.Float32Vector(fv.array + 1)
    assert fv[1:3] == as_floats[1:3] and fv[2] == as_floats[2] and len(fv) == 4
    with pytest.raises(ValueError, match="1-d"):
        A.Float32Vector(np.zeros((2, 2)))


def test_it_prints_and_reads_back_as_the_same_query():
    q = _query(np.random.default_rng(3).standard_normal(DIM).astype(np.float32))
    assert _text_form(q) == q
    assert to_sql(_text_form(q)) == to_sql(q)


@pytest.mark.parametrize("function", ["cosine_similarity", "dot"])
def test_vector_functions_get_the_float32_array_itself(function):
    q = _query(np.ones(DIM, dtype=np.float32), function)
    key = plan_query(q, _source()).order[0][0]
    value = key.children[1].value
    assert value.dtype == np.float32 and value is q.order_by[0].expr.args[1].values.array


def test_elsewhere_an_array_literal_is_float64_as_in_text():
    q = _query(np.full(DIM, 0.1, dtype=np.float32), "l2")
    minus = plan_query(q, _source()).order[0][0].children[0]
    assert minus.children[1].value.dtype == np.float64


@pytest.mark.parametrize("function", ["cosine_similarity", "dot", "l2"])
@pytest.mark.parametrize("dtype,htype", [(np.float32, "embedding"), (np.float16, "embedding"),
                                         (np.float64, "generic"), (np.float32, "generic")])
@pytest.mark.parametrize("filtered", [False, True])
def test_scores_are_bit_identical_to_the_text_form(function, dtype, htype, filtered):
    source = _source(dtype, htype)
    where = A.Binary("==", A.Column("group"), A.Literal(2)) if filtered else None
    vector = np.random.default_rng(5).standard_normal(DIM).astype(np.float32)
    q = _query(vector, function, where)
    got, want = execute(q, source), execute(_text_form(q), source)
    assert got.rows.tolist() == want.rows.tolist()
    assert np.array_equal(got.virtual["score"], want.virtual["score"])
    assert got.virtual["score"].dtype == want.virtual["score"].dtype


def test_a_unit_query_against_unit_rows_matches_numpy_cosine():
    source = _source()
    emb = source.take("embedding", np.arange(len(source)))
    vector = np.random.default_rng(9).standard_normal(DIM).astype(np.float32)
    vector /= np.linalg.norm(vector)
    result = execute(_query(vector, limit=len(source)), source)
    expected = (emb @ vector) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(vector))
    np.testing.assert_allclose(result.virtual["score"], expected[result.rows], rtol=1e-5, atol=1e-6)


def test_batched_searches_mixing_float32_and_text_vectors_match_all_text():
    source = _source()
    rng = np.random.default_rng(11)
    queries = [_query(rng.standard_normal(DIM).astype(np.float32)) for _ in range(4)]
    mixed = [queries[0], to_sql(queries[1]), queries[2], to_sql(queries[3])]
    texts = [to_sql(q) for q in queries]
    for got, want in zip(execute_many(mixed, source), execute_many(texts, source), strict=True):
        assert got.rows.tolist() == want.rows.tolist()
        assert np.array_equal(got.virtual["score"], want.virtual["score"])


def test_an_all_constant_call_folds_as_in_text():
    v = A.ArrayLiteral(A.Float32Vector(np.linspace(-1, 1, DIM, dtype=np.float32)))
    for fn in ("cosine_similarity", "dot"):
        q = A.Query(select=(A.SelectItem(A.Call(fn, (v, v)), "s"),), limit=1)
        got, want = execute(q, _source()), execute(_text_form(q), _source())
        assert np.array_equal(got.virtual["s"], want.virtual["s"])


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float32, DIM, elements=st.floats(-1e3, 1e3, width=32)),
       st.sampled_from(["cosine_similarity", "dot", "l2"]))
def test_any_float32_vector_scores_as_its_text_form(vector, function):
    source = _source(rows=100)
    q = _query(vector, function)
    got, want = execute(q, source), execute(_text_form(q), source)
    assert got.rows.tolist() == want.rows.tolist()
    assert np.array_equal(got.virtual["score"], want.virtual["score"], equal_nan=True)
