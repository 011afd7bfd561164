"""An indexed WHERE on a real dataset gives exactly the rows of the same dataset without indexes.

Each example builds two identical datasets (small chunks, so many of them), gives one of them a
json index and scalar indexes, then changes both the same way: rows appended after the build
(fresh), rows popped and rows updated (their chunks rewritten, so the index holds deleted
entries). Random WHERE texts, with and without ORDER BY + LIMIT, must then select the same rows
in the same order from both, or fail with the same error.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tensordb
from query_lang import MemorySource, TQLError, parse, plan_query
from tensordb.core.index_search import IndexAccess
from tensordb.errors import TensorDBError
from tests.query_lang.tql_strategies import tql_literal

from .helpers import mem_path

CHUNK_BYTES = 1024  # the smallest chunk size: a few hundred rows make many chunks
JSON_PATHS = ["group", ["a", "b"], "a"]

# -- data (numpy-seeded, so building stays fast; the WHERE texts come from hypothesis) -------------

JSON_SCALARS = [0, 1, 2, -1, 7, 2**53 + 1, 2**63 - 1, 1.0, 0.0, -0.0, 2.5, -3.25, 2.0**53,
                True, False, None, "1", "a", "ab", "A", "", "a%b", "b_c", "it's"]
FLOATS = [0.0, -0.0, 1.0, 2.5, -1.0, 7.0, math.nan, math.inf, -math.inf, 1e300]
TEXTS = ["", "a", "ab", "A", "b", "abc", "1", "10", "%", "a_c", "it's", "ü", None]


def _json_value(rng: np.random.Generator) -> Any:
    roll = rng.integers(10)
    if roll < 7:
        return JSON_SCALARS[rng.integers(len(JSON_SCALARS))]
    if roll < 9:
        return [JSON_SCALARS[rng.integers(len(JSON_SCALARS))] for _ in range(rng.integers(3))]
    return {"b": JSON_SCALARS[rng.integers(len(JSON_SCALARS))]}


def _metadata(rng: np.random.Generator) -> dict[str, Any] | None:
    if rng.integers(10) == 0:
        return None
    row: dict[str, Any] = {}
    if rng.integers(4):
        row["group"] = _json_value(rng)
    if rng.integers(4):
        row["a"] = {"b": _json_value(rng)} if rng.integers(3) else _json_value(rng)
    if rng.integers(2):
        row["other"] = _json_value(rng)
    return row


def _rows(rng: np.random.Generator, first_rid: int, n: int) -> dict[str, Any]:
    return {
        "rid": np.arange(first_rid, first_rid + n, dtype=np.int64),
        "metadata": [_metadata(rng) for _ in range(n)],
        "x": np.asarray([FLOATS[i] for i in rng.integers(len(FLOATS), size=n)], dtype=np.float64),
        "n": rng.integers(-3, 8, size=n).astype(np.int64),
        "y": rng.normal(size=n).round(1),
        "t": [TEXTS[i] for i in rng.integers(len(TEXTS), size=n)],
    }


def build_pair(seed: int) -> tuple[Any, Any]:
    """(indexed dataset, the same dataset without indexes), after appends, pops and updates."""
    rng = np.random.default_rng(seed)
    pair = []
    for _ in range(2):
        ds = tensordb.empty(mem_path("ixf"))
        ds.create_tensor("rid", htype="generic", dtype="int64", max_chunk_size=CHUNK_BYTES)
        ds.create_tensor("metadata", htype="json", max_chunk_size=CHUNK_BYTES)
        ds.create_tensor("x", htype="generic", dtype="float64", max_chunk_size=CHUNK_BYTES)
        ds.create_tensor("n", htype="generic", dtype="int64", max_chunk_size=CHUNK_BYTES)
        ds.create_tensor("y", htype="generic", dtype="float64", max_chunk_size=CHUNK_BYTES)
        ds.create_tensor("t", htype="text", max_chunk_size=CHUNK_BYTES)
        pair.append(ds)
    first, fresh = int(rng.integers(150, 400)), int(rng.integers(1, 80))
    batches = [_rows(rng, 0, first), _rows(rng, first, fresh)]
    pops = sorted({int(i) for i in rng.integers(0, first + fresh, size=rng.integers(1, 6))}, reverse=True)
    left = first + fresh - len(pops)
    updates = [(str(rng.choice(["metadata", "x", "n", "t"])), int(rng.integers(left)), _rows(rng, -1, 1))
               for _ in range(rng.integers(1, 8))]
    for i, ds in enumerate(pair):
        ds.extend(batches[0])
        if i == 0:
            ds.metadata.create_index("meta", kind="json", paths=JSON_PATHS)
            ds.x.create_index("xi", kind="scalar")
            ds.n.create_index("ni", kind="scalar")
            ds.t.create_index("ti", kind="scalar")
        ds.extend(batches[1])
        for row in pops:
            ds.pop(row)
        for tensor, row, value in updates:
            ds[tensor][row] = value[tensor][0]
    return pair[0], pair[1]


# -- WHERE texts ------------------------------------------------------------------------------------

JSON_KEYS = ["metadata['group']", "metadata['a']['b']", "metadata['a']"]
OTHER_KEYS = ["metadata['other']", "metadata['a']['c']", "y"]
constants = st.one_of(st.sampled_from(JSON_SCALARS + [0.5, 3]), st.sampled_from(TEXTS), st.integers(-3, 8))
numeric_constants = st.one_of(st.sampled_from([0, 1, -1, 2, 7, 1.0, 2.5, -0.0, True, False, None, 1e300]),
                              st.integers(-3, 8))
text_constants = st.sampled_from(TEXTS)
patterns = st.one_of(st.sampled_from(["a%", "%b", "_", "%", "a_", "1%", "", "A%", "it's"]),
                     st.text("ab%_1", max_size=4))


@st.composite
def leaves(draw) -> str:
    kind = draw(st.sampled_from(["json", "json", "numeric", "text", "other", "derived", "two"]))
    if kind == "json":
        key, value = draw(st.sampled_from(JSON_KEYS)), constants
    elif kind == "numeric":
        key, value = draw(st.sampled_from(["x", "n"])), numeric_constants
    elif kind == "text":
        key, value = "t", text_constants
    elif kind == "other":
        key = draw(st.sampled_from(OTHER_KEYS))
        value = numeric_constants if key == "y" else constants
    elif kind == "derived":
        key, value = draw(st.sampled_from(["x * 2", "-n", "len(t)", "metadata['group'] + 1"])), numeric_constants
    else:
        a, b = draw(st.sampled_from([("x", "y"), ("x", "n"), ("metadata['group']", "metadata['a']['b']")]))
        return f"{a} {draw(st.sampled_from(['==', '!=', '<', '>=']))} {b}"
    mismatched = draw(st.integers(0, 9)) == 0  # now and then a constant of any type, and any predicate
    if mismatched:
        value = constants
    lit = lambda: tql_literal(draw(value))  # noqa: E731
    forms = ["cmp", "cmp", "in", "between", "null"]
    if mismatched or value is not numeric_constants:
        forms += ["like", "contains"]
    form, negate = draw(st.sampled_from(forms)), draw(st.booleans())
    if form == "cmp":
        return f"{key} {draw(st.sampled_from(['==', '!=', '<', '<=', '>', '>=']))} {lit()}"
    if form == "in":
        return f"{key} {'NOT IN' if negate else 'IN'} ({', '.join(lit() for _ in range(draw(st.integers(1, 3))))})"
    if form == "between":
        return f"{key} {'NOT BETWEEN' if negate else 'BETWEEN'} {lit()} AND {lit()}"
    if form == "null":
        return f"{key} IS {'NOT NULL' if negate else 'NULL'}"
    if form == "like":
        return f"{key} {'NOT LIKE' if negate else 'LIKE'} {tql_literal(draw(patterns))}"
    return f"contains({key}, {lit()})"


_SCHEMA = MemorySource({"rid": np.zeros(1, np.int64), "metadata": [{}], "x": np.zeros(1), "n": np.zeros(1, np.int64),
                        "y": np.zeros(1), "t": [""]}, {"metadata": "json", "t": "text"})


def _not_constant(where: str) -> bool:
    """False for a part TQL folds to a constant (``t == null``): NOT over one fails today, see the last test."""
    try:
        return not plan_query(parse("select * where " + where), _SCHEMA).where.const
    except TQLError:
        return True


wheres = st.recursive(leaves(), lambda c: st.one_of(
    st.lists(c, min_size=2, max_size=3).map(lambda p: "(" + " AND ".join(p) + ")"),
    st.lists(c, min_size=2, max_size=3).map(lambda p: "(" + " OR ".join(p) + ")"),
    c.filter(_not_constant).map(lambda w: f"NOT ({w})"),
), max_leaves=6)


def outcome(ds: Any, query: str) -> tuple[str, Any]:
    """The rids a query selects, in order, or the error it raises (type and message)."""
    try:
        return "rids", ds.query(query).rid.numpy().reshape(-1).tolist()
    except (TQLError, TensorDBError) as e:
        return type(e).__name__, str(e)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), data=st.data())
def test_indexed_dataset_where_gives_the_rows_of_the_dataset_without_indexes(seed: int, data: st.DataObject) -> None:
    indexed, plain = build_pair(seed)
    described = indexed.indexes
    assert set(described) == {"meta", "xi", "ni", "ti"} and plain.indexes == {}
    # Every index has fresh rows; a pop or update may miss the chunks of one tensor, but not of all.
    assert all(d["fresh_rows"] > 0 for d in described.values()), described
    assert any(d["deleted_rows"] > 0 for d in described.values()), described
    for _ in range(4):
        query = "select * where " + data.draw(wheres, label="where")
        assert outcome(indexed, query) == outcome(plain, query), query
    order = data.draw(st.sampled_from(["x", "x DESC", "n DESC, rid", "t", "t DESC, x", "y"]), label="order")
    limit = data.draw(st.integers(0, 30), label="limit")
    query = f"select * where {data.draw(wheres, label='where')} order by {order} limit {limit}"
    assert outcome(indexed, query) == outcome(plain, query), query


def test_the_key_indexes_answer_the_where(monkeypatch: pytest.MonkeyPatch) -> None:
    answered: list[tuple[str, tuple[str, ...]]] = []
    original = IndexAccess.key_dictionary

    def spy(self: IndexAccess, column: str, path: tuple[str, ...]) -> Any:
        found = original(self, column, path)
        if found is not None:
            answered.append((column, path))
        return found

    monkeypatch.setattr(IndexAccess, "key_dictionary", spy)
    indexed, plain = build_pair(1)
    query = "select * where metadata['group'] IN (1, 'a') or x > 2 or t LIKE 'a%' or n == 3 or metadata['a']['b'] == 0"
    assert outcome(indexed, query) == outcome(plain, query)
    assert set(answered) == {("metadata", ("group",)), ("x", ()), ("t", ()), ("n", ()), ("metadata", ("a", "b"))}
    assert len(outcome(plain, query)[1]) > 0


def test_not_over_a_constant_part_of_a_where_works_on_a_dataset() -> None:
    # Found with the query_lang property: every dataset source has key_dictionary, so a constant-folded NOT
    # (NOT true, NOT (x == null)) raises TQLExecutionError("IndexError: tuple index out of range") in
    # query_lang/index_filter.py, on any dataset, with or without indexes, and on views.
    indexed, plain = build_pair(2)
    rids = plain.rid.numpy().reshape(-1).tolist()
    groups = [m.get("group") if isinstance(m, dict) else None for m in plain.metadata.numpy(aslist=True)]
    ones = [r for r, g in zip(rids, groups, strict=True) if type(g) in (int, float, bool) and g == 1]
    assert ones
    for ds in (indexed, plain):
        assert outcome(ds, "select * where NOT false") == ("rids", rids)
        assert outcome(ds, "select * where NOT true") == ("rids", [])
        assert outcome(ds, "select * where metadata['group'] == 1 AND NOT (x == null)") == ("rids", ones)
