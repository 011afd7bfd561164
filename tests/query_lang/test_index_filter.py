"""An indexed WHERE gives exactly the rows a scan gives (query_lang level, no tensordb).

``IndexedMemorySource`` wraps a :class:`MemorySource` and answers ``key_dictionary`` for a set
of indexed keys the way tensordb's key indexes do: distinct values with an identity that keeps
1, 1.0 and True apart (all NaNs one entry), code -1 for lists/dicts at a path, code -1 for rows
the index has not seen ("fresh" rows, picked at random), and stale dictionary entries that no
row uses any more (values of rows whose chunk was rewritten). Random data and random WHERE
trees must then give ``execute(q, indexed).rows == execute(q, plain).rows``, errors included.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tql_strategies import tql_literal

from query_lang import Batch, ColumnInfo, MemorySource, TQLError, execute, parse, plan_query
from query_lang.source import KeyDictionary

Path = tuple[str, ...]

#: The keys the wrapped source has indexes for: JSON paths in ``metadata``, and three scalar columns.
INDEXED: frozenset[tuple[str, Path]] = frozenset({
    ("metadata", ("group",)), ("metadata", ("a", "b")), ("metadata", ("a",)), ("metadata", ("tags",)),
    ("metadata", ()), ("x", ()), ("n", ()), ("t", ()),
})
HTYPES = {"metadata": "json", "t": "text", "s": "text", "x": "generic", "n": "generic", "y": "generic"}


def _identity(value: Any) -> tuple[str, Any] | None:
    """Dictionary identity as tensordb keys it: type name + value, NaN one entry; None for lists/dicts."""
    if value is None or isinstance(value, (bool, int, str)):
        return type(value).__name__, value
    if isinstance(value, float):
        return ("float", "nan") if math.isnan(value) else ("float", value)
    return None


def _value_at(value: Any, path: Path) -> Any:
    for name in path:
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    return value


def naive_key_dictionary(values: Any, known: np.ndarray, stale: Sequence[Any],
                         order: np.random.Generator) -> KeyDictionary:
    """Distinct values of the ``known`` rows (plus ``stale`` unused ones) in a shuffled order, and codes."""
    n = len(values)
    codes = np.full(n, -1, dtype=np.int64)
    if isinstance(values, np.ndarray):
        pool = np.concatenate([values[known], np.asarray(stale, dtype=values.dtype)])
        distinct, inverse = np.unique(pool, return_inverse=True)  # NaNs collapse into one entry, as in tensordb
        perm = order.permutation(len(distinct))
        position = np.empty(len(distinct), dtype=np.int64)
        position[perm] = np.arange(len(distinct))
        codes[known] = position[inverse.reshape(-1)[: int(known.sum())]]
        return KeyDictionary(distinct[perm], codes)
    entries: dict[tuple[str, Any], Any] = {}
    for i in np.flatnonzero(known):
        key = _identity(values[i])
        if key is not None:
            entries.setdefault(key, values[i])
    for v in stale:
        key = _identity(v)
        if key is not None:
            entries.setdefault(key, v)
    keys = list(entries)
    keys = [keys[j] for j in order.permutation(len(keys))]
    code_of = {k: j for j, k in enumerate(keys)}
    for i in np.flatnonzero(known):
        key = _identity(values[i])
        if key is not None:
            codes[i] = code_of[key]
    return KeyDictionary([entries[k] for k in keys], codes)


class IndexedMemorySource:
    """A :class:`MemorySource` plus ``key_dictionary`` for the keys in :data:`INDEXED`."""

    def __init__(self, base: MemorySource, columns: dict[str, Any], fresh: dict[str, np.ndarray],
                 stale: dict[tuple[str, Path], list[Any]], seed: int) -> None:
        """``fresh[column]`` marks rows the column's index has not seen; ``stale`` adds unused dictionary entries."""
        self.base = base
        self.owner = base.owner
        self.lookups: list[tuple[str, Path]] = []
        rng = np.random.default_rng(seed)
        self.dictionaries: dict[tuple[str, Path], KeyDictionary] = {}
        for column, path in sorted(INDEXED):  # sorted: the same shuffles in every process
            raw = columns[column]
            values = raw if isinstance(raw, np.ndarray) else [_value_at(v, path) if path else v for v in raw]
            known = ~fresh[column]
            self.dictionaries[column, path] = naive_key_dictionary(values, known, stale.get((column, path), []), rng)

    def __len__(self) -> int:
        return len(self.base)

    def column_names(self) -> list[str]:
        return self.base.column_names()

    def column_info(self, name: str) -> ColumnInfo:
        return self.base.column_info(name)

    def scan(self, columns: Sequence[str], rows: np.ndarray | None = None) -> Iterator[Batch]:
        return self.base.scan(columns, rows)

    def take(self, column: str, rows: np.ndarray) -> Any:
        return self.base.take(column, rows)

    def key_dictionary(self, column: str, path: tuple[str, ...]) -> KeyDictionary | None:
        self.lookups.append((column, path))
        return self.dictionaries.get((column, tuple(path)))


# -- data -------------------------------------------------------------------------------------------

# Small pools so that constants often hit stored values; the ints/floats include the corners where
# identity matters (1 / 1.0 / True, -0.0 / 0.0, 2**53 + 1 / 2.0**53, NaN).
JSON_SCALARS = [0, 1, 2, -1, 7, 2**53 + 1, 2**63 - 1, 1.0, 0.0, -0.0, 2.5, -3.25, 2.0**53, math.nan, math.inf,
                True, False, None, "1", "a", "ab", "A", "", "a%b", "b_c", "it's"]
json_scalars = st.one_of(st.sampled_from(JSON_SCALARS), st.integers(-5, 5),
                         st.floats(-10, 10, allow_nan=False), st.text("ab1%", max_size=3))
json_containers = st.one_of(st.lists(json_scalars, max_size=3), st.dictionaries(st.sampled_from(["b", "c"]),
                                                                                   json_scalars, max_size=2))
json_values = st.one_of(json_scalars, json_scalars, json_containers)
_MISSING = object()


@st.composite
def metadata_rows(draw) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return None
    row: dict[str, Any] = {}
    for key, values in (("group", json_values), ("tags", st.one_of(json_containers, json_scalars)),
                        ("other", json_scalars),
                        ("a", st.one_of(st.dictionaries(st.sampled_from(["b", "c"]), json_values, max_size=2),
                                        json_values))):
        value = draw(st.one_of(st.just(_MISSING), values))
        if value is not _MISSING:
            row[key] = value
    return row


FLOATS = [0.0, -0.0, 1.0, 2.5, -1.0, 7.0, math.nan, math.inf, -math.inf, 1e300]
TEXTS = ["", "a", "ab", "A", "b", "abc", "1", "10", "%", "a_c", "it's", "ü"]
float_values = st.one_of(st.sampled_from(FLOATS), st.floats(-10, 10, allow_nan=False))
int_values = st.one_of(st.sampled_from([0, 1, -1, 2, 7, 2**62]), st.integers(-10, 10))
text_values = st.one_of(st.sampled_from(TEXTS), st.none(), st.text("ab%_1", max_size=4))


@st.composite
def tables(draw, max_rows: int = 40) -> dict[str, Any]:
    n = draw(st.integers(0, max_rows))
    return {
        "metadata": draw(st.lists(metadata_rows(), min_size=n, max_size=n)),
        "x": np.asarray(draw(st.lists(float_values, min_size=n, max_size=n)), dtype=np.float64),
        "n": np.asarray(draw(st.lists(int_values, min_size=n, max_size=n)), dtype=np.int64),
        "y": np.asarray(draw(st.lists(float_values, min_size=n, max_size=n)), dtype=np.float64),
        "t": draw(st.lists(text_values, min_size=n, max_size=n)),
        "s": draw(st.lists(text_values, min_size=n, max_size=n)),
    }


# -- WHERE texts ------------------------------------------------------------------------------------

JSON_KEYS = ["metadata['group']", "metadata['a']['b']", "metadata['a']", "metadata['tags']", "metadata"]
OTHER_JSON_KEYS = ["metadata['other']", "metadata['a']['c']", "metadata['group']['b']"]
NUMERIC_KEYS = ["x", "n"]
TEXT_KEYS = ["t"]
NOT_INDEXED = ["y", "s"]
# Arithmetic around a key is still a predicate on that one key.
DERIVED_KEYS = ["x * 2", "-n", "n + 1", "len(t)", "metadata['group'] + 1"]

SAME_KEY_LEAVES = ["x == x", "x != x", "x * x > 4", "n BETWEEN -1 AND n", "metadata['group'] == metadata['group']",
                   "metadata['group'] != metadata['group']", "contains(t, t)", "t < t", "x + row_number() > 5",
                   "row_number() < 7", "metadata['a']['b'] IN (metadata['a']['b'], 1)"]
# TQL has no NaN or infinity literal.
constants = st.one_of(st.sampled_from(JSON_SCALARS[:-1] + [0.5, 3]), st.sampled_from(TEXTS),
                      st.integers(-3, 8)).filter(lambda v: not (isinstance(v, float) and not math.isfinite(v)))
# Constants that type-check against a number or against text (TQL refuses text vs number at bind time).
numeric_constants = st.one_of(st.sampled_from([0, 1, -1, 2, 7, 1.0, 2.5, -0.0, True, False, None, 2**62, 1e300]),
                              st.integers(-3, 8))
text_constants = st.one_of(st.sampled_from(TEXTS), st.none())
patterns = st.one_of(st.sampled_from(["a%", "%b", "_", "%", "a_", "%\\%%", "1%", "", "A%", "it's"]),
                     st.text("ab%_1", max_size=4))


@st.composite
def leaves(draw) -> str:
    kind = draw(st.sampled_from(["json", "json", "numeric", "text", "other", "derived", "two", "same", "const"]))
    if kind == "json":
        key, value = draw(st.sampled_from(JSON_KEYS)), constants
    elif kind == "numeric":
        key, value = draw(st.sampled_from(NUMERIC_KEYS)), numeric_constants
    elif kind == "text":
        key, value = draw(st.sampled_from(TEXT_KEYS)), text_constants
    elif kind == "other":
        key = draw(st.sampled_from(NOT_INDEXED + OTHER_JSON_KEYS))
        value = text_constants if key == "s" else numeric_constants if key == "y" else constants
    elif kind == "derived":
        key, value = draw(st.sampled_from(DERIVED_KEYS)), numeric_constants
    elif kind == "two":  # two keys in one leaf: no single index can answer it
        a, b = draw(st.sampled_from([("x", "y"), ("x", "n"), ("metadata['group']", "metadata['a']['b']"),
                                     ("t", "s"), ("metadata['group']", "metadata['other']")]))
        return f"{a} {draw(st.sampled_from(['==', '!=', '<', '>=']))} {b}"
    else:
        return draw(st.sampled_from(["true", "false", "1 == 1", "null IS NULL"]))
    mismatched = draw(st.integers(0, 9)) == 0  # now and then a constant of any type, and any predicate
    if mismatched:
        value = constants
    lit = lambda: tql_literal(draw(value))  # noqa: E731
    forms = ["cmp", "cmp", "rcmp", "in", "between", "null"]
    if mismatched or value is not numeric_constants:  # LIKE and contains() take text (or JSON)
        forms += ["like", "contains"]
    form = draw(st.sampled_from(forms))
    negate = draw(st.booleans())
    if form == "cmp":
        return f"{key} {draw(st.sampled_from(['==', '!=', '<', '<=', '>', '>=', '=', '<>']))} {lit()}"
    if form == "rcmp":
        return f"{lit()} {draw(st.sampled_from(['==', '<', '>=']))} {key}"
    if form == "in":
        items = ", ".join(lit() for _ in range(draw(st.integers(1, 3))))
        return f"{key} {'NOT IN' if negate else 'IN'} ({items})"
    if form == "between":
        return f"{key} {'NOT BETWEEN' if negate else 'BETWEEN'} {lit()} AND {lit()}"
    if form == "null":
        return f"{key} IS {'NOT NULL' if negate else 'NULL'}"
    if form == "like":
        op = draw(st.sampled_from(["LIKE", "ILIKE"]))
        return f"{key} {'NOT ' if negate else ''}{op} {tql_literal(draw(patterns))}"
    return f"contains({key}, {lit()})"


_SCHEMA = MemorySource({"metadata": [{}], "x": np.zeros(1), "n": np.zeros(1, np.int64), "y": np.zeros(1),
                        "t": [""], "s": [""]}, HTYPES)


def folds_to_constant(where: str) -> bool:
    """Whether TQL folds a WHERE part to a constant (``true``, ``1 == 1``, ``t == null``...)."""
    try:
        return plan_query(parse("select * where " + where), _SCHEMA).where.const
    except TQLError:
        return False


def wheres(max_leaves: int = 6) -> st.SearchStrategy[str]:
    # NOT over a constant part (NOT true, NOT (t == null)) is left to
    # test_not_over_a_constant_part_gives_the_rows_a_scan_gives, which fails today; here it would hide the rest.
    def extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.lists(children, min_size=2, max_size=3).map(lambda p: "(" + " AND ".join(p) + ")"),
            st.lists(children, min_size=2, max_size=3).map(lambda p: "(" + " OR ".join(p) + ")"),
            children.filter(lambda c: not folds_to_constant(c)).map(lambda c: f"NOT ({c})"),
        )
    return st.recursive(leaves(), extend, max_leaves=max_leaves)


def outcome(query: str, source: Any) -> tuple[str, Any]:
    """The rows a query gives, or the error it raises (type and message)."""
    try:
        return "rows", execute(query, source).rows.tolist()
    except TQLError as e:
        return type(e).__name__, str(e)


def sources(data: st.DataObject) -> tuple[MemorySource, IndexedMemorySource]:
    columns = data.draw(tables(), label="columns")
    n = len(columns["x"])
    batch_size = data.draw(st.integers(1, 8), label="batch_size")
    # Each column's index has its own fresh rows (appended after its build, or in a rewritten chunk).
    fresh = {c: np.asarray(data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n), label=f"fresh {c}"),
                           dtype=int) == 0 for c in ("metadata", "x", "n", "t")}
    stale = {("metadata", ("group",)): data.draw(st.lists(json_scalars, max_size=3), label="stale_json"),
             ("x", ()): data.draw(st.lists(st.sampled_from(FLOATS), max_size=2), label="stale_x"),
             ("t", ()): data.draw(st.lists(text_values, max_size=2), label="stale_t")}
    seed = data.draw(st.integers(0, 2**16), label="dictionary_order")
    plain = MemorySource(columns, HTYPES, batch_size=batch_size)
    indexed = IndexedMemorySource(MemorySource(columns, HTYPES, batch_size=batch_size), columns, fresh, stale, seed)
    return plain, indexed


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(data=st.data())
def test_indexed_where_gives_the_rows_a_scan_gives(data: st.DataObject) -> None:
    plain, indexed = sources(data)
    for _ in range(3):
        query = "select * where " + data.draw(wheres(), label="where")
        assert outcome(query, indexed) == outcome(query, plain), query


@SETTINGS
@given(data=st.data())
def test_indexed_where_with_order_by_limit_and_subqueries_gives_the_scans_rows_in_order(data: st.DataObject) -> None:
    plain, indexed = sources(data)
    order = data.draw(st.sampled_from(["", " order by x", " order by x DESC", " order by n DESC, x", " order by t",
                                       " order by t DESC, n", " order by y DESC", " order by metadata['group']"]))
    limit = data.draw(st.integers(0, 12))
    offset = data.draw(st.sampled_from(["", " OFFSET 2"]))
    query = f"select * where {data.draw(wheres(), label='where')}{order} limit {limit}{offset}"
    assert outcome(query, indexed) == outcome(query, plain), query
    # The same WHERE below or above a subquery (merged into one level, or run over its materialised rows).
    inner, outer = data.draw(wheres(3), label="inner"), data.draw(wheres(3), label="outer")
    for query in (f"select * from (select * where {inner}) where {outer}{order} limit {limit}",
                  f"select * from (select * where {inner} order by x limit {limit + 5}) where {outer}"):
        assert outcome(query, indexed) == outcome(query, plain), query


# -- the property is not vacuous: the index is consulted and its answer is what counts ------------

def _small_sources(codes: np.ndarray | None) -> tuple[MemorySource, IndexedMemorySource]:
    meta = [{"group": 1}, {"group": 1.0}, {"group": True}, {"group": "1"}, {"group": [1]}, None, {"group": math.nan}]
    columns = {"metadata": meta, "x": np.arange(7.0), "n": np.arange(7), "y": np.zeros(7),
               "t": list("abcdefg"), "s": list("abcdefg")}
    plain = MemorySource(columns, HTYPES, batch_size=3)
    fresh = {c: np.zeros(7, bool) for c in ("metadata", "x", "n", "t")}
    indexed = IndexedMemorySource(MemorySource(columns, HTYPES, batch_size=3), columns, fresh, {}, 0)
    if codes is not None:
        values = indexed.dictionaries["metadata", ("group",)].values
        indexed.dictionaries["metadata", ("group",)] = KeyDictionary(values, codes)
    return plain, indexed


def test_the_naive_dictionary_keeps_1_1point0_and_true_apart_and_nans_together() -> None:
    d = naive_key_dictionary([1, 1.0, True, "1", [1], None, math.nan, math.nan, {"b": 1}, -0.0, 0.0],
                             np.ones(11, bool), [], np.random.default_rng(0))
    by_code = {int(c): d.values[c] for c in d.codes if c >= 0}
    assert len(d.values) == 7  # 1, 1.0, True, "1", None, NaN, -0.0 (== 0.0)
    assert (d.codes[[4, 8]] == -1).all() and d.codes[6] == d.codes[7] and d.codes[9] == d.codes[10]
    assert [type(by_code[int(c)]) for c in d.codes[:4]] == [int, float, bool, str]
    x = naive_key_dictionary(np.array([1.0, math.nan, math.nan, 2.0]), np.array([1, 1, 1, 0], bool), [5.0],
                             np.random.default_rng(1))
    assert sorted(x.values[~np.isnan(x.values)].tolist()) == [1.0, 5.0] and np.isnan(x.values).sum() == 1
    assert x.codes[3] == -1 and x.codes[1] == x.codes[2] and np.isnan(x.values[x.codes[1]])


def test_the_index_is_consulted_and_its_codes_decide() -> None:
    plain, indexed = _small_sources(None)
    query = "select * where metadata['group'] == 1 and x >= 0"
    assert outcome(query, indexed) == outcome(query, plain) == ("rows", [0, 1, 2])
    assert ("metadata", ("group",)) in indexed.lookups and ("x", ()) in indexed.lookups
    # A dictionary that lies (every row coded as the string "1") changes the answer: the index is used.
    d = indexed.dictionaries["metadata", ("group",)]
    string_one = next(i for i, v in enumerate(d.values) if v == "1")
    _, lying = _small_sources(np.full(7, string_one))
    assert outcome(query, lying) == ("rows", [])
    assert outcome("select * where metadata['group'] == '1'", lying) == ("rows", list(range(7)))


def test_not_over_a_constant_part_gives_the_rows_a_scan_gives() -> None:
    # Found by the property above: with any key_dictionary on the source, a constant-folded NOT raised
    # TQLExecutionError("IndexError: tuple index out of range") in index_filter._answer (the folded node has no
    # children), where the scan answers normally.
    plain, indexed = _small_sources(None)
    for where in ["NOT true", "NOT (NOT (true))", "NOT (1 == 1)", "NOT (true OR false)", "NOT (t == null)",
                  "metadata['group'] == 1 AND NOT false", "x >= 3 OR NOT (null IS NULL)"]:
        query = f"select * where {where}"
        assert outcome(query, indexed) == outcome(query, plain), query
