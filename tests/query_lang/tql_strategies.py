"""Hypothesis strategies generating TQL ASTs (in the parser's normal form)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from query_lang import ast as A

names = st.sampled_from(["a", "b", "text", "embedding", "metadata", "select", "my col", "x1"])
numbers = st.one_of(
    st.integers(-(2**63) + 1, 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)
literals = st.one_of(
    numbers,
    st.text(alphabet=st.characters(blacklist_characters="\x00"), max_size=8),
    st.booleans(),
    st.none(),
).map(A.Literal)
index_items = st.one_of(
    st.integers(-5, 5),
    st.text(alphabet="abc'\" ", max_size=4),
    st.builds(A.Slice, st.none() | st.integers(-3, 3), st.none() | st.integers(-3, 3),
              st.none() | st.integers(1, 3)),
)


def _not_numeric_literal(e: A.Expr) -> bool:
    return not (isinstance(e, A.Literal) and type(e.value) in (int, float))


def _exprs(children: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(
        st.builds(A.Index, children, st.lists(index_items, min_size=1, max_size=2).map(tuple)),
        st.builds(A.Call, st.sampled_from(["len", "cosine_similarity", "row_number", "f"]),
                  st.lists(children, max_size=3).map(tuple)),
        st.builds(A.Unary, st.just("-"), children.filter(_not_numeric_literal)),
        st.builds(A.Unary, st.just("NOT"), children),
        st.builds(A.Binary, st.sampled_from(["+", "-", "*", "/", "==", "!=", "<", "<=", ">",
                                             ">="]), children, children),
        st.builds(A.BoolOp, st.sampled_from(["AND", "OR"]),
                  st.lists(children, min_size=2, max_size=3).map(tuple)),
        st.builds(A.InList, children, st.lists(children, min_size=1, max_size=3).map(tuple),
                  st.booleans()),
        st.builds(A.Between, children, children, children, st.booleans()),
        st.builds(A.Like, children, children, st.booleans(), st.booleans()),
        st.builds(A.IsNull, children, st.booleans()),
    )


exprs = st.recursive(
    st.one_of(literals, names.map(A.Column),
              st.lists(numbers, max_size=4).map(lambda v: A.ArrayLiteral(tuple(v)))),
    _exprs,
    max_leaves=8,
)
select_items = st.one_of(st.just(A.Star()), st.builds(A.SelectItem, exprs, st.none() | names))


def _queries(inner: st.SearchStrategy | None) -> st.SearchStrategy:
    return st.builds(
        A.Query,
        st.lists(select_items, min_size=1, max_size=3).map(tuple),
        st.none() if inner is None else st.none() | inner,
        st.none() | exprs,
        st.lists(st.builds(A.OrderKey, exprs, st.booleans()), max_size=2).map(tuple),
        st.none() | st.integers(0, 10**6),
        st.none() | st.integers(0, 10**6),
    )


queries = _queries(_queries(None))


def tql_literal(value: Any) -> str:
    """A Python scalar as a TQL literal (negative numbers as a minus and the literal)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value) if value >= 0 else f"-{-value!r}"
