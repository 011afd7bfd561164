"""Executor results against a plain-Python reference on random datasets."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from query_lang import MemorySource, execute

WORDS = ["apple", "Apricot", "banana", "cherry", "", None]


@st.composite
def datasets(draw: Any) -> tuple[MemorySource, list[dict[str, Any]]]:
    n = draw(st.integers(0, 40))
    a = draw(st.lists(st.integers(-5, 5), min_size=n, max_size=n))
    f = draw(st.lists(st.sampled_from([-1.5, 0.0, 0.5, 2.0, math.nan]), min_size=n, max_size=n))
    t = draw(st.lists(st.sampled_from(WORDS), min_size=n, max_size=n))
    k = draw(st.lists(st.sampled_from([None, 1, 2, 3]), min_size=n, max_size=n))
    m = [{} if v is None else {"k": v} for v in k]
    src = MemorySource(
        {"a": np.asarray(a, dtype=np.int64), "f": np.asarray(f, dtype=np.float64), "t": t,
         "m": m},
        {"t": "text", "m": "json"},
        batch_size=draw(st.integers(1, 16)),
    )
    rows = [{"a": a[i], "f": f[i], "t": t[i], "mk": k[i]} for i in range(n)]
    return src, rows


def _num(c: Any) -> str:
    return str(c)


def _cmp(op: str, x: Any, y: Any) -> bool:
    if x is None or y is None or (isinstance(x, float) and math.isnan(x)):
        return False
    return {"=": x == y, "!=": x != y, "<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[op]


ops = st.sampled_from(["=", "!=", "<", "<=", ">", ">="])
atoms = st.one_of(
    st.tuples(st.sampled_from(["a", "f"]), ops, st.integers(-3, 3)).map(
        lambda x: (f"{x[0]} {x[1]} {x[2]}", lambda r, x=x: _cmp(x[1], r[x[0]], x[2]))),
    st.tuples(ops, st.integers(0, 3)).map(
        lambda x: (f"m['k'] {x[0]} {x[1]}", lambda r, x=x: _cmp(x[0], r["mk"], x[1]))),
    st.sampled_from(WORDS[:-1]).map(
        lambda w: (f"t = '{w}'", lambda r, w=w: r["t"] == w)),
    st.sampled_from(["a%", "%an%", "_pple", "%"]).map(
        lambda p: (f"t LIKE '{p}'", lambda r, p=p: r["t"] is not None and re.fullmatch(
            p.replace("%", ".*").replace("_", "."), r["t"], re.S) is not None)),
    st.sampled_from(["a%", "%AN%"]).map(
        lambda p: (f"t ILIKE '{p}'", lambda r, p=p: r["t"] is not None and re.fullmatch(
            p.replace("%", ".*"), r["t"], re.S | re.I) is not None)),
    st.lists(st.integers(-3, 3), min_size=1, max_size=3).map(
        lambda v: (f"a IN ({', '.join(map(str, v))})", lambda r, v=v: r["a"] in v)),
    st.tuples(st.integers(-2, 1), st.integers(0, 3)).map(
        lambda b: (f"f BETWEEN {b[0]} AND {b[1]}",
                   lambda r, b=b: _cmp(">=", r["f"], b[0]) and _cmp("<=", r["f"], b[1]))),
    st.just(("t IS NULL", lambda r: r["t"] is None)),
    st.just(("m['k'] IS NOT NULL", lambda r: r["mk"] is not None)),
    st.just(("contains(t, 'an')", lambda r: r["t"] is not None and "an" in r["t"])),
    st.just(("a * 2 - 1 > f", lambda r: _cmp(">", r["a"] * 2 - 1, r["f"]))),
)


def _combine(children: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(
        children.map(lambda c: (f"NOT ({c[0]})", lambda r, c=c: not c[1](r))),
        st.tuples(children, children).map(
            lambda p: (f"({p[0][0]}) AND ({p[1][0]})", lambda r, p=p: p[0][1](r) and p[1][1](r))),
        st.tuples(children, children).map(
            lambda p: (f"({p[0][0]}) OR ({p[1][0]})", lambda r, p=p: p[0][1](r) or p[1][1](r))),
    )


conditions = st.recursive(atoms, _combine, max_leaves=4)
order_keys = st.lists(
    st.tuples(st.sampled_from(["a", "f", "t", "m['k']"]), st.booleans()), max_size=3)


def _reference(rows: list[dict[str, Any]], cond: Any, keys: list[tuple[str, bool]],
               limit: int | None, offset: int | None) -> list[int]:
    idx = [i for i, r in enumerate(rows) if cond is None or cond(rows[i])]
    field = {"a": "a", "f": "f", "t": "t", "m['k']": "mk"}
    for name, desc in reversed(keys):
        col = field[name]

        def is_null(i: int, col: str = col) -> bool:
            v = rows[i][col]
            return v is None or (isinstance(v, float) and math.isnan(v))

        present = sorted((i for i in idx if not is_null(i)), key=lambda i, c=col: rows[i][c],
                         reverse=desc)
        idx = present + [i for i in idx if is_null(i)]
    start = offset or 0
    return idx[start:] if limit is None else idx[start : start + limit]


@settings(max_examples=150, deadline=None)
@given(datasets(), st.none() | conditions, order_keys, st.none() | st.integers(0, 12),
       st.none() | st.integers(0, 12))
def test_matches_reference(data: Any, cond: Any, keys: Any, limit: Any, offset: Any) -> None:
    src, rows = data
    q = "select *"
    if cond is not None:
        q += f" where {cond[0]}"
    if keys:
        q += " order by " + ", ".join(f"{k} {'desc' if d else 'asc'}" for k, d in keys)
    if limit is not None:
        q += f" limit {limit}"
    if offset is not None:
        q += f" offset {offset}"
    result = execute(q, src)
    expected = _reference(rows, None if cond is None else cond[1], keys, limit, offset)
    assert result.rows.tolist() == expected, q
    assert result.columns[:4] == ["a", "f", "t", "m"]


@settings(max_examples=60, deadline=None)
@given(datasets(), conditions, st.none() | st.integers(0, 12))
def test_subquery_and_projection_match_reference(data: Any, cond: Any, limit: Any) -> None:
    src, rows = data
    q = (f"select a, t, a * 10 as a10, m['k'] as mk from (select * where {cond[0]}) "
         f"order by a desc, f")
    if limit is not None:
        q += f" limit {limit}"
    result = execute(q, src)
    expected = _reference(rows, cond[1], [("a", True), ("f", False)], limit, None)
    assert result.rows.tolist() == expected
    assert result.columns == ["a", "t", "a10", "mk"]
    assert result.virtual["a10"].tolist() == [rows[i]["a"] * 10 for i in expected]
    assert result.virtual["mk"] == [rows[i]["mk"] for i in expected]
